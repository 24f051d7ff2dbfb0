"""DIMSE requests sent over our own requestor (``vesalius.dimse.requestor``), for tests that
need exact control of what goes on the wire: a command naming another SOP class than its
context, a file sent as it is, an echo on an association kept open."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from vesalius.dicom.structure import dataset_offset
from vesalius.dicom.uids import VERIFICATION
from vesalius.dimse import commands
from vesalius.dimse.association import Association


def echo(link: Association) -> int | None:
    """C-ECHO on the Verification context; the response status."""
    context = next(c for c in link.contexts.values() if c.abstract_syntax == VERIFICATION)
    request = commands.encode(
        [
            (commands.AFFECTED_SOP_CLASS, VERIFICATION),
            (commands.COMMAND_FIELD, commands.C_ECHO_RQ),
            (commands.MESSAGE_ID, link.next_message_id()),
            (commands.DATA_SET_TYPE, commands.NO_DATA_SET),
        ]
    )
    link.send(context.id, request)
    return link.receive().command.us(commands.STATUS)


def store(link: Association, path: Path, sop_class: str | None = None) -> tuple[int | None, str]:
    """C-STORE of the data set of Part 10 file ``path``, as it is, on the first context of
    its SOP class (else the first context); the command names ``sop_class`` (default: the
    data set's). The response status and Error Comment."""
    ds = dcmread(path, stop_before_pixels=True)
    contexts = list(link.contexts.values())
    context = next((c for c in contexts if c.abstract_syntax == ds.SOPClassUID), contexts[0])
    request = commands.encode(
        [
            (commands.AFFECTED_SOP_CLASS, sop_class or ds.SOPClassUID),
            (commands.COMMAND_FIELD, commands.C_STORE_RQ),
            (commands.MESSAGE_ID, link.next_message_id()),
            (commands.PRIORITY, 0),
            (commands.DATA_SET_TYPE, commands.DATA_SET),
            (commands.AFFECTED_SOP_INSTANCE, ds.SOPInstanceUID),
        ]
    )
    offset = dataset_offset(path)
    with open(path, "rb") as handle:
        size = handle.seek(0, 2) - offset
        handle.seek(offset)
        link.send(context.id, request, file=(handle, size))
    answer = link.receive().command
    return answer.us(commands.STATUS), answer.text(commands.ERROR_COMMENT)
