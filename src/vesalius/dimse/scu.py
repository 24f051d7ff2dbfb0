"""DIMSE service user: associations to a peer and the operations behind the operator commands.

C-ECHO (PS3.7 9.1.5), C-STORE (PS3.4 B.2), C-FIND (PS3.4 C.4.1), C-MOVE (C.4.2) and C-GET
(C.4.3). Every association sets TCP_NODELAY on its socket. Data sets are sent from their files
and received into files, never decoded, once :func:`configure_streaming` has run.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom import status as _status
from pynetdicom.presentation import PresentationContext

from vesalius.dicom.model import LEVELS
from vesalius.dicom.uids import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    VERIFICATION,
    is_valid_uid,
)
from vesalius.dimse.pynetdicom_tuning import (
    IMPLEMENTATION_VERSION,
    configure_library,
    drop_partial,
)
from vesalius.dimse.status import failure
from vesalius.dimse.transport import bound_send_queue, set_nodelay
from vesalius.errors import (
    InvalidDataError,
    InvalidUIDError,
    OutOfResourcesError,
    PeerError,
    QueryError,
)
from vesalius.settings import Modality, Settings

log = logging.getLogger(__name__)

#: An A-ASSOCIATE-RQ carries at most 128 presentation contexts (odd IDs 1-255, PS3.8 9.3.2.2).
MAX_CONTEXTS = 128
Model = Literal["patient", "study"]
_QR_MODELS: dict[str, dict[str, str]] = {
    "patient": {"find": PATIENT_ROOT_FIND, "move": PATIENT_ROOT_MOVE, "get": PATIENT_ROOT_GET},
    "study": {"find": STUDY_ROOT_FIND, "move": STUDY_ROOT_MOVE, "get": STUDY_ROOT_GET},
}
UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)

#: Storage SOP classes a C-GET proposes by default (PS3.4 B.5), most common first: images,
#: then non-image objects (proposed uncompressed only).
COMMON_IMAGE_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3",  # Digital Intra-Oral X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
)
COMMON_OTHER_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
)
#: Compressed transfer syntaxes offered for image classes, most common first (PS3.5 A.4).
COMMON_COMPRESSED: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
)

_SERVICE_STATUSES: dict[str, dict[int, tuple[str, str]]] = {
    "C-ECHO": _status.VERIFICATION_SERVICE_CLASS_STATUS,
    "C-STORE": _status.STORAGE_SERVICE_CLASS_STATUS,
    "C-FIND": _status.QR_FIND_SERVICE_CLASS_STATUS,
    "C-MOVE": _status.QR_MOVE_SERVICE_CLASS_STATUS,
    "C-GET": _status.QR_GET_SERVICE_CLASS_STATUS,
}


def configure_streaming(receive_dir: Path) -> None:
    """Process-wide: send data sets from their files and receive them into files in
    ``receive_dir`` (pynetdicom's chunked modes), as the server does."""
    receive_dir.mkdir(parents=True, exist_ok=True)
    configure_library(str(receive_dir))


# ---------------------------------------------------------------------------------------------
# Statuses and associations


@dataclass(frozen=True)
class Status:
    """A DIMSE response status (PS3.7 C); ``code`` None means no response arrived."""

    service: str
    code: int | None
    comment: str = ""

    @classmethod
    def from_dataset(cls, service: str, ds: Dataset) -> Status:
        code = ds.get("Status")
        comment = str(ds.get("ErrorComment", "") or "").strip()
        return cls(service, None if code is None else int(code), comment)

    @property
    def category(self) -> str:
        """Success, Warning, Failure, Cancel, Pending, or "No response"."""
        if self.code is None:
            return "No response"
        return str(_status.code_to_category(self.code))

    @property
    def ok(self) -> bool:
        return self.category == _status.STATUS_SUCCESS

    def __str__(self) -> str:
        if self.code is None:
            return "no response (association aborted or timed out)"
        table = _SERVICE_STATUSES.get(self.service, _status.GENERAL_STATUS)
        _, meaning = table.get(self.code, _status.GENERAL_STATUS.get(self.code, ("", "")))
        text = f"0x{self.code:04X} ({self.category}{': ' + meaning if meaning else ''})"
        return f"{text}: {self.comment}" if self.comment else text


@dataclass(frozen=True)
class ScuOptions:
    """How we associate: our (calling) AE title, PDU size and timeouts."""

    ae_title: str
    max_pdu: int = 262144
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, ae_title: str | None = None) -> ScuOptions:
        return cls(
            ae_title or settings["dicom.ae_title"],
            settings["dicom.max_pdu"],
            settings["dicom.acse_timeout"],
            settings["dicom.dimse_timeout"],
            settings["dicom.network_timeout"],
        )


def describe_peer(peer: Modality) -> str:
    return f"{peer.ae_title}@{peer.host}:{peer.port}"


def _refusal(assoc: Any, peer: Modality) -> str:
    who = describe_peer(peer)
    answer: Any = getattr(assoc.acceptor, "primitive", None)
    if assoc.is_rejected and getattr(answer, "result", None) in (0x01, 0x02):
        return (
            f"{who} rejected the association: {answer.reason_str} "
            f"({answer.result_str}, {answer.source_str})"
        )
    if assoc.is_rejected:
        return f"{who} accepted none of the proposed presentation contexts"
    return f"no association with {who} (connection refused, aborted or timed out)"


def open_association(
    peer: Modality,
    options: ScuOptions,
    contexts: Sequence[PresentationContext],
    *,
    roles: Sequence[Any] = (),
    handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
) -> Any:
    """Request an association (PS3.8 7.1); raise :class:`PeerError` unless it is established."""
    if not 0 < len(contexts) <= MAX_CONTEXTS:
        raise ValueError(f"between 1 and {MAX_CONTEXTS} presentation contexts, not {len(contexts)}")
    ae = AE(ae_title=options.ae_title)
    ae.implementation_version_name = IMPLEMENTATION_VERSION
    ae.maximum_pdu_size = options.max_pdu
    ae.acse_timeout = options.acse_timeout
    ae.dimse_timeout = options.dimse_timeout
    ae.network_timeout = options.network_timeout
    assoc = ae.associate(
        peer.host,
        peer.port,
        contexts=list(contexts),
        ae_title=peer.ae_title,
        ext_neg=list(roles) or None,
        evt_handlers=[
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_ABORTED, drop_partial),
            (evt.EVT_CONN_CLOSE, drop_partial),
            *handlers,
        ],
    )
    if not assoc.is_established:
        raise PeerError(_refusal(assoc, peer))
    return assoc


def close_association(assoc: Any, *, abort: bool = False) -> None:
    """Release (PS3.8 7.2) or abort (7.3) an association if it is still up."""
    if assoc.is_established:
        if abort:
            assoc.abort()
        else:
            assoc.release()


@contextlib.contextmanager
def associate(
    peer: Modality,
    options: ScuOptions,
    contexts: Sequence[PresentationContext],
    *,
    roles: Sequence[Any] = (),
    handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
) -> Iterator[Any]:
    """An established association, released at the end (aborted when the body fails)."""
    assoc = open_association(peer, options, contexts, roles=roles, handlers=handlers)
    try:
        yield assoc
    except BaseException:
        close_association(assoc, abort=True)
        raise
    close_association(assoc)


# ---------------------------------------------------------------------------------------------
# C-ECHO


def echo(peer: Modality, options: ScuOptions) -> Status:
    """Verify end-to-end communication with the peer (PS3.4 A, PS3.7 9.1.5)."""
    with associate(peer, options, [build_context(VERIFICATION)]) as assoc:
        return Status.from_dataset("C-ECHO", assoc.send_c_echo())


# ---------------------------------------------------------------------------------------------
# C-STORE


@dataclass(frozen=True)
class StoreItem:
    """A Part 10 file to send, described by its File Meta (PS3.10 7.1)."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str

    @property
    def pair(self) -> tuple[str, str]:
        return self.sop_class_uid, self.transfer_syntax_uid


def read_store_item(path: Path) -> StoreItem:
    """Describe a file to send from its File Meta, checked against the data set's own SOP
    Class and Instance UIDs (PS3.10 7.1), which become the C-STORE's Affected SOP Class and
    Instance UIDs (PS3.7 9.1.1); pixel data is not read. :class:`InvalidDataError` when the
    file is not Part 10 or the two disagree."""
    try:
        ds = dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID"],
        )
    except InvalidDicomError as exc:
        raise InvalidDataError("not a DICOM Part 10 file") from exc
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise InvalidDataError(f"cannot parse the file: {type(exc).__name__}") from exc
    meta = ds.file_meta

    def text(source: Dataset, keyword: str) -> str:
        return str(source.get(keyword, "") or "").strip("\0 ")

    sop_class, sop_instance = (
        text(meta, "MediaStorageSOPClassUID"),
        text(meta, "MediaStorageSOPInstanceUID"),
    )
    syntax = text(meta, "TransferSyntaxUID")
    if not (sop_class and sop_instance and syntax):
        raise InvalidDataError("File Meta lacks the SOP class, instance or transfer syntax UID")
    if (text(ds, "SOPClassUID"), text(ds, "SOPInstanceUID")) != (sop_class, sop_instance):
        raise InvalidDataError("File Meta SOP Class/Instance UID differs from the data set's")
    return StoreItem(path, sop_class, sop_instance, syntax)


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one file: the peer's status, or a reason it was not sent."""

    item: StoreItem
    status: Status | None
    reason: str = ""

    @property
    def category(self) -> Literal["success", "warning", "failure"]:
        if self.status is None:
            return "failure"
        category = self.status.category
        if category == _status.STATUS_SUCCESS:
            return "success"
        if category == _status.STATUS_WARNING:
            return "warning"
        return "failure"

    def __str__(self) -> str:
        return str(self.status) if self.status is not None else f"not sent: {self.reason}"


def association_batches(
    items: Sequence[StoreItem], limit: int = MAX_CONTEXTS
) -> list[tuple[list[tuple[str, str]], list[StoreItem]]]:
    """Group files by (SOP class, transfer syntax), at most ``limit`` pairs per association:
    each file is proposed in its own transfer syntax, so it is sent exactly as stored."""
    pairs = list(dict.fromkeys(item.pair for item in items))
    batches = []
    for start in range(0, len(pairs), limit):
        chosen = pairs[start : start + limit]
        wanted = set(chosen)
        batches.append((chosen, [item for item in items if item.pair in wanted]))
    return batches


def _send_batch(
    assoc: Any, batch: Sequence[StoreItem], on_outcome: Callable[[StoreOutcome], None]
) -> None:
    accepted = {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
    }
    message_ids = itertools.cycle(range(1, 65536))
    for item in batch:
        if item.pair not in accepted:
            on_outcome(
                StoreOutcome(
                    item,
                    None,
                    f"peer did not accept {UID(item.sop_class_uid).name} in "
                    f"{UID(item.transfer_syntax_uid).name}",
                )
            )
            continue
        if not assoc.is_established:
            on_outcome(StoreOutcome(item, None, "association ended"))
            continue
        try:
            rsp = assoc.send_c_store(item.path, msg_id=next(message_ids))
        except (OSError, ValueError, AttributeError, RuntimeError) as exc:
            on_outcome(StoreOutcome(item, None, f"{type(exc).__name__}: {exc}"))
            continue
        on_outcome(StoreOutcome(item, Status.from_dataset("C-STORE", rsp)))


def store_files(
    peer: Modality,
    options: ScuOptions,
    items: Sequence[StoreItem],
    on_outcome: Callable[[StoreOutcome], None],
) -> None:
    """C-STORE every file to the peer (PS3.4 B.2), reporting each outcome as it happens.

    With ``STORE_SEND_CHUNKED_DATASET`` (:func:`configure_streaming`) each data set streams
    from its file in PDU-sized pieces, bit for bit as stored.
    """
    for pairs, batch in association_batches(items):
        contexts = [build_context(sop, [syntax]) for sop, syntax in pairs]
        try:
            assoc = open_association(peer, options, contexts)
        except PeerError as exc:
            for item in batch:
                on_outcome(StoreOutcome(item, None, exc.message))
            continue
        try:
            bound_send_queue(assoc)
            _send_batch(assoc, batch, on_outcome)
        except BaseException:
            close_association(assoc, abort=True)
            raise
        close_association(assoc)


# ---------------------------------------------------------------------------------------------
# Identifiers (findscu-style keys)

_KEY_PART = re.compile(
    r"^\(?(?:(?P<group>[0-9A-Fa-f]{4}),(?P<element>[0-9A-Fa-f]{4})|(?P<keyword>[A-Za-z]\w*))\)?"
    r"(?:\[(?P<index>\d+)\])?$"
)
_INT_VRS = {"US", "SS", "UL", "SL", "UV", "SV"}
_FLOAT_VRS = {"FL", "FD"}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _key_part(part: str, spec: str) -> tuple[BaseTag, int | None]:
    match = _KEY_PART.match(part.strip())
    if not match:
        raise QueryError(f"key {spec!r}: cannot read {part!r} (keyword or gggg,eeee)")
    if match["keyword"]:
        number = tag_for_keyword(match["keyword"])
        if number is None:
            raise QueryError(f"key {spec!r}: unknown keyword {match['keyword']!r}")
        tag = Tag(number)
    else:
        tag = Tag(int(match["group"], 16), int(match["element"], 16))
    return tag, None if match["index"] is None else int(match["index"])


def _vr(tag: BaseTag, spec: str) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        raise QueryError(f"key {spec!r}: {tag} is not in the data dictionary") from None
    return vr.split(" or ")[0]


def _typed(vr: str, value: str, spec: str) -> Any:
    if value == "":
        return None
    try:
        if vr in _INT_VRS:
            numbers = [int(v) for v in value.split("\\")]
            return numbers[0] if len(numbers) == 1 else numbers
        if vr in _FLOAT_VRS:
            floats = [float(v) for v in value.split("\\")]
            return floats[0] if len(floats) == 1 else floats
    except ValueError:
        raise QueryError(f"key {spec!r}: {vr} needs numbers") from None
    if vr in _BINARY_VRS or vr == "SQ" or vr == "AT":
        raise QueryError(f"key {spec!r}: a {vr} key can only be given empty")
    return value


def add_key(identifier: Dataset, spec: str) -> None:
    """Add one findscu-style key: ``Keyword=value``, ``gggg,eeee=value``, ``Seq[0].Keyword=``;
    an empty value (or no ``=``) asks for the attribute to be returned (PS3.4 C.2.2.1)."""
    path, _, value = spec.partition("=")
    parts = path.split(".")
    current = identifier
    for part in parts[:-1]:
        tag, index = _key_part(part, spec)
        if _vr(tag, spec) != "SQ":
            raise QueryError(f"key {spec!r}: {part} is not a sequence")
        if tag not in current or current[tag].value is None:
            current[tag] = DataElement(tag, "SQ", DicomSequence())
        items = current[tag].value
        while len(items) <= (index or 0):
            items.append(Dataset())
        current = items[index or 0]
    tag, index = _key_part(parts[-1], spec)
    if index is not None:
        raise QueryError(f"key {spec!r}: an item index needs a nested attribute after it")
    vr = _vr(tag, spec)
    if vr == "SQ":
        if value:
            raise QueryError(f"key {spec!r}: give a sequence's attributes as Seq[0].Keyword=")
        current[tag] = DataElement(tag, "SQ", DicomSequence())
        return
    current[tag] = DataElement(tag, vr, _typed(vr, value, spec))
    if not value.isascii() and "SpecificCharacterSet" not in identifier:
        identifier.SpecificCharacterSet = "ISO_IR 192"


def build_identifier(level: str, keys: Sequence[str]) -> Dataset:
    """A C-FIND/C-MOVE/C-GET identifier: Query/Retrieve Level plus the keys (PS3.4 C.4)."""
    if level.upper() not in LEVELS:
        raise QueryError(f"level must be one of {', '.join(LEVELS)}")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.upper()
    for spec in keys:
        add_key(identifier, spec)
    return identifier


def key_tag(spec: str) -> BaseTag:
    """The top-level attribute a key names (``Seq[0].Keyword=x`` names ``Seq``)."""
    path = spec.partition("=")[0]
    return _key_part(path.split(".")[0], spec)[0]


def key_keyword(tag: BaseTag) -> str:
    """The keyword of a tag, or its ``gggg,eeee`` form when it has none."""
    return str(keyword_for_tag(tag) or f"{tag.group:04X},{tag.element:04X}")


def qr_context(operation: Literal["find", "move", "get"], model: Model) -> PresentationContext:
    """The Query/Retrieve presentation context for an operation and information model."""
    return build_context(_QR_MODELS[model][operation], list(UNCOMPRESSED))


def qr_sop_class(operation: Literal["find", "move", "get"], model: Model) -> str:
    return _QR_MODELS[model][operation]


# ---------------------------------------------------------------------------------------------
# C-FIND


@dataclass(frozen=True)
class FindResponse:
    """One C-FIND response: a match (Pending, with identifier) or the final status."""

    status: Status
    identifier: Dataset | None

    @property
    def final(self) -> bool:
        return self.status.category != _status.STATUS_PENDING


def find(
    peer: Modality, options: ScuOptions, identifier: Dataset, model: Model
) -> Iterator[FindResponse]:
    """C-FIND (PS3.4 C.4.1): yield each match, then the final response."""
    with associate(peer, options, [qr_context("find", model)]) as assoc:
        for status, found in assoc.send_c_find(identifier, qr_sop_class("find", model)):
            response = FindResponse(Status.from_dataset("C-FIND", status), found)
            yield response
            if response.final:
                return


# ---------------------------------------------------------------------------------------------
# C-MOVE and C-GET


@dataclass(frozen=True)
class RetrieveResponse:
    """A C-MOVE/C-GET response: sub-operation counts and, at the end, failed instances."""

    status: Status
    remaining: int | None
    completed: int
    failed: int
    warning: int
    failed_uids: tuple[str, ...] = ()

    @property
    def final(self) -> bool:
        return self.status.category != _status.STATUS_PENDING

    @property
    def total(self) -> int | None:
        if self.remaining is None:
            return None
        return self.remaining + self.completed + self.failed + self.warning

    @classmethod
    def from_pair(
        cls, service: str, status: Dataset, identifier: Dataset | None
    ) -> RetrieveResponse:
        def count(keyword: str) -> int | None:
            value = status.get(keyword)
            return None if value is None else int(value)

        raw = identifier.get("FailedSOPInstanceUIDList") if identifier is not None else None
        if isinstance(raw, MultiValue | list | tuple):
            failed_uids = tuple(str(v).strip("\0 ") for v in raw)
        else:
            failed_uids = tuple(v.strip("\0 ") for v in str(raw or "").split("\\") if v.strip())
        return cls(
            Status.from_dataset(service, status),
            count("NumberOfRemainingSuboperations"),
            count("NumberOfCompletedSuboperations") or 0,
            count("NumberOfFailedSuboperations") or 0,
            count("NumberOfWarningSuboperations") or 0,
            failed_uids,
        )


def move(
    peer: Modality, options: ScuOptions, identifier: Dataset, model: Model, destination: str
) -> Iterator[RetrieveResponse]:
    """C-MOVE (PS3.4 C.4.2): the peer sends the matches to ``destination``; yield each
    response (pending counts, then the final status with the Failed SOP Instance UID List)."""
    with associate(peer, options, [qr_context("move", model)]) as assoc:
        responses = assoc.send_c_move(identifier, destination, qr_sop_class("move", model))
        for status, found in responses:
            response = RetrieveResponse.from_pair("C-MOVE", status, found)
            yield response
            if response.final:
                return


def get_contexts(
    model: Model,
    sop_classes: Sequence[str] | None = None,
    syntaxes: Sequence[str] | None = None,
) -> tuple[list[PresentationContext], list[Any]]:
    """Contexts and SCP/SCU Role Selection items (PS3.7 D.3.3.4) for a C-GET.

    One Query/Retrieve context; then, by default, for each storage SOP class one context with
    the uncompressed syntaxes, and the rest of the 128 one context per (image class, compressed
    syntax), most common first, so compressed instances can come back as stored.
    ``sop_classes`` replaces the default classes (all treated as image classes); ``syntaxes``
    replaces the default syntaxes: one context per (class, syntax), as many as fit.
    """
    images = list(sop_classes) if sop_classes else list(COMMON_IMAGE_CLASSES)
    others = [] if sop_classes else list(COMMON_OTHER_CLASSES)
    classes = list(dict.fromkeys(images + others))[: MAX_CONTEXTS - 1]
    contexts = [qr_context("get", model)]
    if syntaxes:
        pairs = [(uid, syntax) for syntax in syntaxes for uid in classes]
    else:
        contexts += [build_context(uid, list(UNCOMPRESSED)) for uid in classes]
        pairs = [(uid, syntax) for syntax in COMMON_COMPRESSED for uid in images]
    room = MAX_CONTEXTS - len(contexts)
    if syntaxes and len(pairs) > room:
        log.warning("C-GET: %d of %d contexts fit; name fewer classes", room, len(pairs))
    contexts += [build_context(uid, [syntax]) for uid, syntax in pairs[:room]]
    roles = [build_role(uid, scp_role=True) for uid in classes]
    return contexts, roles


@dataclass(frozen=True)
class ReceivedFile:
    """One instance a C-GET brought back, with the status we answered."""

    path: Path | None
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    status: int
    reason: str = ""


class FileReceiver:
    """EVT_C_STORE handler for C-GET sub-operations (PS3.4 C.4.3.1): each data set is written,
    as received, to ``out_dir/<SOP Instance UID>.dcm`` with File Meta for the context's
    transfer syntax. A SOP Instance UID that is not a valid UID is refused (0xC000), so no
    peer-given name can leave ``out_dir``."""

    def __init__(
        self, out_dir: Path, on_file: Callable[[ReceivedFile], None] | None = None
    ) -> None:
        self.out_dir = out_dir
        self.on_file = on_file
        umask = os.umask(0o022)
        os.umask(umask)
        self.mode = 0o666 & ~umask  # temporary files are created 0600

    def _write(self, event: Any, target: Path) -> None:
        received = getattr(event.request, "_dataset_path", None)
        handle = getattr(event.request, "_dataset_file", None)
        if received is not None and handle is not None:  # STORE_RECV_CHUNKED_DATASET
            handle.close()
            try:
                os.replace(received, target)
            except OSError:
                shutil.move(received, target)
            os.chmod(target, self.mode)
            return
        part = target.with_name(target.name + ".part")
        with open(part, "wb") as fh:
            fh.write(event.encoded_dataset(include_meta=True))
        os.replace(part, target)

    def handle_store(self, event: Any) -> int | Dataset:
        request = event.request
        uid = str(request.AffectedSOPInstanceUID or "").strip("\0 ")
        sop_class = str(request.AffectedSOPClassUID or "").strip("\0 ")
        syntax = str(event.context.transfer_syntax)
        target: Path | None = None
        try:
            if not is_valid_uid(uid):
                raise InvalidUIDError("SOP Instance UID is not a valid UID")
            target = self.out_dir / f"{uid}.dcm"
            try:
                self._write(event, target)
            except OSError as exc:
                raise OutOfResourcesError(f"cannot write {target}: {exc.strerror}") from exc
        except Exception as exc:
            leftover = getattr(request, "_dataset_path", None)
            if leftover is not None:
                with contextlib.suppress(OSError):
                    Path(leftover).unlink()
            answer = failure(exc, "C-STORE (C-GET sub-operation)")
            self._notify(ReceivedFile(None, sop_class, uid, syntax, answer.Status, str(exc)))
            return answer
        self._notify(ReceivedFile(target, sop_class, uid, syntax, 0x0000))
        return 0x0000

    def _notify(self, received: ReceivedFile) -> None:
        if self.on_file is not None:
            self.on_file(received)


def get(
    peer: Modality,
    options: ScuOptions,
    identifier: Dataset,
    model: Model,
    receiver: FileReceiver,
    sop_classes: Sequence[str] | None = None,
    syntaxes: Sequence[str] | None = None,
) -> Iterator[RetrieveResponse]:
    """C-GET (PS3.4 C.4.3): the matches come back on this association as C-STORE
    sub-operations, written by ``receiver``; yield each C-GET response."""
    contexts, roles = get_contexts(model, sop_classes, syntaxes)
    handlers = [(evt.EVT_C_STORE, receiver.handle_store)]
    with associate(peer, options, contexts, roles=roles, handlers=handlers) as assoc:
        for status, found in assoc.send_c_get(identifier, qr_sop_class("get", model)):
            response = RetrieveResponse.from_pair("C-GET", status, found)
            yield response
            if response.final:
                return
