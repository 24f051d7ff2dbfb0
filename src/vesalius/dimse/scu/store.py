"""C-STORE as service user (PS3.4 B.2): ``vesalius send``.

Files are proposed each in its own transfer syntax, one presentation context per (SOP class,
transfer syntax), at most 128 per association (more associations when needed), and sent as
they are: the data set after the File Meta streams from the file PDU by PDU, bit for bit, with
memory flat whatever its size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from vesalius.dicom.structure import dataset_offset
from vesalius.dimse import commands
from vesalius.dimse.association import Aborted, Association, Released
from vesalius.dimse.contexts import build_context
from vesalius.dimse.scu.link import (
    MAX_CONTEXTS,
    ScuOptions,
    Status,
    context_for,
    open_link,
)
from vesalius.dimse.status_codes import SUCCESS, WARNING
from vesalius.errors import InvalidDataError, PeerError
from vesalius.settings import Modality


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
        if category == SUCCESS:
            return "success"
        if category == WARNING:
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


def send_file(link: Association, context: int, item: StoreItem, timeout: float) -> Status:
    """One C-STORE of ``item`` on ``context``, its data set streamed from the file."""
    message_id = link.next_message_id()
    request = commands.encode(
        [
            (commands.COMMAND_FIELD, commands.C_STORE_RQ),
            (commands.MESSAGE_ID, message_id),
            (commands.PRIORITY, 0),
            (commands.DATA_SET_TYPE, commands.DATA_SET),
            (commands.AFFECTED_SOP_CLASS, item.sop_class_uid),
            (commands.AFFECTED_SOP_INSTANCE, item.sop_instance_uid),
        ]
    )
    offset = dataset_offset(item.path)
    with open(item.path, "rb", buffering=0) as handle:
        size = handle.seek(0, 2) - offset
        handle.seek(offset)
        link.send(context, request, file=(handle, size))
    answer = link.receive(timeout=timeout).command
    if answer.field != commands.C_STORE_RSP or answer.us(commands.RESPONDED_TO) != message_id:
        raise PeerError(f"unexpected {answer.name} instead of the C-STORE-RSP")
    return Status.of("C-STORE", answer)


def _send_batch(
    link: Association,
    batch: Sequence[StoreItem],
    timeout: float,
    on_outcome: Callable[[StoreOutcome], None],
) -> None:
    for position, item in enumerate(batch):
        context = context_for(link, *item.pair)
        if context is None:
            on_outcome(
                StoreOutcome(
                    item,
                    None,
                    f"peer did not accept {UID(item.sop_class_uid).name} in "
                    f"{UID(item.transfer_syntax_uid).name}",
                )
            )
            continue
        try:
            status = send_file(link, context, item, timeout)
        except (Aborted, Released, PeerError) as exc:
            for rest in batch[position:]:
                on_outcome(StoreOutcome(rest, None, f"association ended: {exc}"))
            return
        except (OSError, InvalidDataError) as exc:
            on_outcome(StoreOutcome(item, None, f"{type(exc).__name__}: {exc}"))
            continue
        on_outcome(StoreOutcome(item, status))


def store_files(
    peer: Modality,
    options: ScuOptions,
    items: Sequence[StoreItem],
    on_outcome: Callable[[StoreOutcome], None],
) -> None:
    """C-STORE every file to the peer, reporting each outcome as it happens."""
    for pairs, batch in association_batches(items):
        contexts = [build_context(sop, [syntax]) for sop, syntax in pairs]
        try:
            link = open_link(peer, options, contexts)
        except PeerError as exc:
            for item in batch:
                on_outcome(StoreOutcome(item, None, exc.message))
            continue
        try:
            _send_batch(link, batch, options.dimse_timeout, on_outcome)
        except BaseException:
            link.abort()
            raise
        link.release()
