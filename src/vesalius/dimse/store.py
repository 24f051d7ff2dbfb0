"""Verification and C-STORE SCP (PS3.4 A, B.2): received data sets go to ingest as files.

The association writes each incoming data set straight to a file in our staging folder
(:meth:`vesalius.dimse.association.Association.receive`), so no data set is decoded or held in
memory here; the ingest service moves that file into storage by rename, and the success status
is sent only after the index row is committed.
"""

from __future__ import annotations

from vesalius.dicom.uids import STORAGE_SOP_CLASS_UIDS
from vesalius.dimse import commands
from vesalius.dimse.association import Association, Message
from vesalius.dimse.config import ScpContext
from vesalius.dimse.status import SUCCESS, failure_status
from vesalius.errors import ForbiddenError, OutOfResourcesError
from vesalius.identity import Identity
from vesalius.services.archive import Archive

#: Warning: Elements Discarded (PS3.4 B.2.3): the instance is stored already with other
#: content, and the stored copy is kept (``ingest.duplicate_policy = "keep"``).
ELEMENTS_DISCARDED = 0xB006
#: Error: Data Set does not match SOP Class (PS3.4 B.2.3): the command names another storage
#: SOP class than the presentation context it came on; or Refused: SOP Class not supported
#: (PS3.7 C.5.2) when the class it names is no storage class at all.
WRONG_CLASS = 0xA900
CLASS_NOT_SUPPORTED = 0x0122


def peer_identity(assoc: Association) -> Identity:
    """The calling AE and address behind ``assoc``, and how it was authenticated."""
    return Identity.ae(assoc.calling_ae, assoc.peer_address, method=assoc.method)


def handle_echo(scp: ScpContext, assoc: Association, message: Message) -> None:
    """C-ECHO-RQ: answer Success (PS3.7 9.1.5), or Refused: Not Authorized (0x0124) when the
    policy denies the caller verification."""
    status, comment = SUCCESS, ""
    try:
        scp.archive.oversight.check(peer_identity(assoc), "echo")
    except ForbiddenError as exc:
        status, comment = failure_status(exc, "C-ECHO")
    extra = [(commands.ERROR_COMMENT, comment or None)]
    rsp = commands.response(message.command, commands.C_ECHO_RSP, status, extra=extra)
    assoc.send(message.context.id, rsp)


def handle_store(scp: ScpContext, assoc: Association, message: Message) -> None:
    """C-STORE-RQ: ingest the received file and answer with its status (PS3.4 B.2.3)."""
    status, comment = store_received(scp.archive, message, peer_identity(assoc))
    extra = [(commands.ERROR_COMMENT, comment or None)]
    rsp = commands.response(message.command, commands.C_STORE_RSP, status, extra=extra)
    assoc.send(message.context.id, rsp)


def store_received(archive: Archive, message: Message, who: Identity) -> tuple[int, str]:
    """Ingest the data set of a C-STORE-RQ (received into a staging file) as ``who``: the
    status and Error Comment to answer (PS3.4 B.2.3). Also the C-STORE sub-operations of a
    C-GET we asked for (``dimse/remote.py``)."""
    request = message.command
    status, comment = SUCCESS, ""
    if message.staging_error is not None:
        status, comment = failure_status(OutOfResourcesError(message.staging_error), "C-STORE")
    elif message.path is None:
        status, comment = 0xA900, "C-STORE-RQ without a data set"
    elif request.text(commands.AFFECTED_SOP_CLASS) != message.context.abstract_syntax:
        message.path.unlink(missing_ok=True)
        if request.text(commands.AFFECTED_SOP_CLASS) in STORAGE_SOP_CLASS_UIDS:
            status, comment = WRONG_CLASS, "Affected SOP Class UID differs from the context's"
        else:
            status, comment = CLASS_NOT_SUPPORTED, "Affected SOP Class UID is not supported"
    else:
        try:
            result = archive.ingest.ingest_staged(
                message.path,
                who,
                expected_sop_class=message.context.abstract_syntax,
                expected_sop_instance=request.text(commands.AFFECTED_SOP_INSTANCE),
                digest=message.digest,
            )
        except Exception as exc:
            status, comment = failure_status(exc, "C-STORE")
        else:
            if result.outcome == "discarded":
                status, comment = ELEMENTS_DISCARDED, "already stored with other content: kept"
    return status, comment
