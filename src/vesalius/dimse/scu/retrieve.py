"""C-MOVE and C-GET as service user (PS3.4 C.4.2, C.4.3): ``vesalius move`` and ``get``.

A C-GET's matches come back on the same association as C-STORE sub-operations, which we
accept as Storage SCP on the contexts negotiated with SCP/SCU Role Selection (PS3.7 D.3.3.4):
each data set is written as it arrives into a file (never decoded or held in memory) and moved
to ``--out`` under its SOP Instance UID, once that is known to be a UID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vesalius.dicom.uids import is_valid_uid
from vesalius.dimse import commands
from vesalius.dimse.association import Association, Message, decode_data_set
from vesalius.dimse.contexts import PresentationContext, build_context
from vesalius.dimse.scu.find import UNCOMPRESSED, Model, qr_context, send_request
from vesalius.dimse.scu.link import MAX_CONTEXTS, ScuOptions, Status, associate
from vesalius.dimse.status import failure_status
from vesalius.errors import InvalidUIDError, OutOfResourcesError, PeerError
from vesalius.settings import Modality

log = logging.getLogger(__name__)

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
        return not self.status.pending

    @property
    def total(self) -> int | None:
        if self.remaining is None:
            return None
        return self.remaining + self.completed + self.failed + self.warning

    @classmethod
    def of(
        cls, service: str, command: commands.Command, identifier: Dataset | None
    ) -> RetrieveResponse:
        raw = identifier.get("FailedSOPInstanceUIDList") if identifier is not None else None
        if isinstance(raw, MultiValue | list | tuple):
            failed_uids = tuple(str(v).strip("\0 ") for v in raw)
        else:
            failed_uids = tuple(v.strip("\0 ") for v in str(raw or "").split("\\") if v.strip())
        return cls(
            Status.of(service, command),
            command.us(commands.REMAINING),
            command.us(commands.COMPLETED) or 0,
            command.us(commands.FAILED) or 0,
            command.us(commands.WARNING) or 0,
            failed_uids,
        )


def _responses(
    link: Association,
    service: str,
    field: int,
    message_id: int,
    syntax: str,
    options: ScuOptions,
    on_store: Callable[[Message], None] | None = None,
) -> Iterator[RetrieveResponse]:
    """The responses to a C-MOVE/C-GET, until the final one; C-STORE sub-operations arriving
    in between (C-GET) go to ``on_store``."""
    while True:
        message = link.receive(timeout=options.dimse_timeout)
        answer = message.command
        if answer.field == commands.C_STORE_RQ and on_store is not None:
            on_store(message)
            continue
        if answer.field != field or answer.message_id_responded != message_id:
            raise PeerError(f"unexpected {answer.name} during a {service}")
        found = decode_data_set(message.data, syntax) if message.data else None
        response = RetrieveResponse.of(service, answer, found)
        yield response
        if response.final:
            return


def move(
    peer: Modality, options: ScuOptions, identifier: Dataset, model: Model, destination: str
) -> Iterator[RetrieveResponse]:
    """C-MOVE: the peer sends the matches to ``destination``; yield each response (pending
    counts, then the final status with the Failed SOP Instance UID List)."""
    with associate(peer, options, [qr_context("move", model)]) as link:
        extra: list[tuple[int, commands.Value]] = [(commands.MOVE_DESTINATION, destination)]
        message_id, _, syntax = send_request(link, "move", model, identifier, extra)
        yield from _responses(link, "C-MOVE", commands.C_MOVE_RSP, message_id, syntax, options)


class Role(NamedTuple):
    """An SCP/SCU Role Selection item (PS3.7 D.3.3.4): our roles for a SOP class."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


def get_contexts(
    model: Model,
    sop_classes: Sequence[str] | None = None,
    syntaxes: Sequence[str] | None = None,
    *,
    needed: Sequence[str] = (),
) -> tuple[list[PresentationContext], list[Role]]:
    """Contexts and SCP/SCU Role Selection items for a C-GET, at most 128 (PS3.8 9.3.2.2).

    One Query/Retrieve context; then, by default, for each storage SOP class one context with
    the uncompressed syntaxes, and the rest of the 128 one context per (image class, compressed
    syntax), most common first, so compressed instances can come back as stored.
    ``sop_classes`` replaces the default classes (all treated as image classes); ``syntaxes``
    replaces the default syntaxes: one context per (class, syntax), as many as fit.
    ``needed``: the classes the retrieve is known to bring (asked of the peer first), proposed
    before all others, with the uncompressed and then the compressed syntaxes; the common
    classes fill what room is left.
    """
    images = list(sop_classes) if sop_classes else list(COMMON_IMAGE_CLASSES)
    others = [] if sop_classes else list(COMMON_OTHER_CLASSES)
    first = list(dict.fromkeys(needed))[: MAX_CONTEXTS - 1]
    classes = list(dict.fromkeys(first + images + others))[: MAX_CONTEXTS - 1]
    contexts = [qr_context("get", model)]
    if syntaxes:
        pairs = [(uid, syntax) for syntax in syntaxes for uid in classes]
    else:
        rest = [uid for uid in classes if uid not in first]
        contexts += [build_context(uid, list(UNCOMPRESSED)) for uid in first]
        contexts += [build_context(uid, [syntax]) for syntax in COMMON_COMPRESSED for uid in first][
            : MAX_CONTEXTS - len(contexts)
        ]
        contexts += [build_context(uid, list(UNCOMPRESSED)) for uid in rest][
            : MAX_CONTEXTS - len(contexts)
        ]
        pairs = [(uid, syntax) for syntax in COMMON_COMPRESSED for uid in images if uid in rest]
    room = MAX_CONTEXTS - len(contexts)
    if syntaxes and len(pairs) > room:
        log.warning("C-GET: %d of %d contexts fit; name fewer classes", room, len(pairs))
    contexts += [build_context(uid, [syntax]) for uid, syntax in pairs[:room]]
    proposed = {context.abstract_syntax for context in contexts[1:]}
    roles = [Role(uid, False, True) for uid in classes if uid in proposed]
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
    """The Storage SCP side of a C-GET (PS3.4 C.4.3.1): each data set arrives in a file in
    ``partial`` (``out_dir/.partial`` by default), written by the association as it comes,
    with File Meta for the context's transfer syntax; it is then moved to
    ``out_dir/<SOP Instance UID>.dcm``. A SOP Instance UID that is not a valid UID is refused
    (0xC000), so no peer-given name can leave ``out_dir``."""

    def __init__(
        self,
        out_dir: Path,
        on_file: Callable[[ReceivedFile], None] | None = None,
        partial: Path | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.on_file = on_file
        self.partial = partial or out_dir / ".partial"
        umask = os.umask(0o022)
        os.umask(umask)
        self.mode = 0o666 & ~umask  # temporary files are created 0600

    def stage(self) -> tuple[int, Path]:
        """A new file for an arriving data set (the association's ``staging``)."""
        self.partial.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.partial, prefix="rx-", suffix=".part")
        return fd, Path(name)

    def close(self) -> None:
        """Remove the partial folder if nothing is left in it."""
        with contextlib.suppress(OSError):
            self.partial.rmdir()

    def receive(self, link: Association, message: Message) -> None:
        """Keep one C-STORE sub-operation's data set and answer it (PS3.4 C.4.3.1.3)."""
        request = message.command
        uid = request.text(commands.AFFECTED_SOP_INSTANCE)
        sop_class = request.text(commands.AFFECTED_SOP_CLASS)
        syntax = message.context.transfer_syntax
        status, comment = 0x0000, ""
        try:
            if message.staging_error is not None:
                raise OutOfResourcesError(message.staging_error)
            if message.path is None:
                raise OutOfResourcesError("the data set was not received into a file")
            if not is_valid_uid(uid):
                raise InvalidUIDError("SOP Instance UID is not a valid UID")
            target = self.out_dir / f"{uid}.dcm"
            try:
                os.replace(message.path, target)
                os.chmod(target, self.mode)
            except OSError as exc:
                raise OutOfResourcesError(f"cannot write {target}: {exc.strerror}") from exc
        except Exception as exc:
            if message.path is not None:
                message.path.unlink(missing_ok=True)
            status, comment = failure_status(exc, "C-STORE (C-GET sub-operation)")
            self._notify(ReceivedFile(None, sop_class, uid, syntax, status, str(exc)))
        else:
            self._notify(ReceivedFile(target, sop_class, uid, syntax, 0x0000))
        answer = commands.response(
            request,
            commands.C_STORE_RSP,
            status,
            extra=[(commands.ERROR_COMMENT, comment or None)],
        )
        link.send(message.context.id, answer)

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
    """C-GET: the matches come back on this association as C-STORE sub-operations, kept by
    ``receiver``; yield each C-GET response."""
    contexts, roles = get_contexts(model, sop_classes, syntaxes)
    try:
        with associate(peer, options, contexts, roles=roles, staging=receiver.stage) as link:
            message_id, _, syntax = send_request(link, "get", model, identifier)
            yield from _responses(
                link,
                "C-GET",
                commands.C_GET_RSP,
                message_id,
                syntax,
                options,
                on_store=lambda message: receiver.receive(link, message),
            )
    finally:
        receiver.close()
