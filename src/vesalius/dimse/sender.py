"""The ``send`` job: stored instances go to a known peer as C-STORE sub-operations over one
association we open, exactly as C-MOVE sends them (``dimse/retrieve.py``: the same
presentation contexts, the same converter for a peer that accepts only uncompressed syntaxes,
streamed from the stored file). Queued by ``services/sending.py``; the wiring registers
:func:`send_handler` with the job service.

Progress is reported after each instance and a cancel takes effect between two. An attempt that
leaves instances unsent (the peer unreachable, refusing, failing some) fails and is retried with
backoff; a retry sends everything again (a peer keeps one copy of an instance it receives twice,
PS3.4 B.2.3), so the job is at-least-once. A peer or study that no longer exists fails the job at
once.
"""

from __future__ import annotations

import logging

from vesalius.dimse.association import Aborted, Association, Released
from vesalius.dimse.config import DimseConfig
from vesalius.dimse.retrieve import SubOperations, open_destination
from vesalius.errors import NotFoundError, PeerError
from vesalius.services.archive import Archive
from vesalius.services.jobs import (
    Handler,
    JobCancelled,
    JobContext,
    JobError,
    JobFailed,
    payload_keys,
)
from vesalius.services.retrieve import RetrieveTally

log = logging.getLogger(__name__)


def send_handler(archive: Archive, config: DimseConfig) -> Handler:
    """The handler of ``send`` jobs of ``archive``, calling as ``config.ae_title``."""

    def run(context: JobContext) -> str:
        return _send(archive, config, context)

    return run


def _send(archive: Archive, config: DimseConfig, context: JobContext) -> str:
    try:
        peer = archive.sending.peer(str(context.payload["peer"]))
    except NotFoundError as exc:
        raise JobFailed(exc.message) from exc
    keys = payload_keys(context.payload)
    plan = archive.retrieve.plan(keys, context.who, "send", peer.ae_title)
    if not plan.instances:
        with archive.retrieve.transfer(plan):
            pass
        raise JobFailed("nothing stored matches (deleted since?)")
    total = len(plan.instances)
    context.progress(0, total, f"connecting to {peer.ae_title}", force=True)
    with archive.retrieve.transfer(plan) as tally:
        try:
            link = open_destination(config, peer, plan.instances)
        except PeerError as exc:
            raise JobError(exc.message) from exc
        subops = SubOperations(link, tally, archive.retrieve.open)
        try:
            for position, instance in enumerate(plan.instances):
                try:
                    context.progress(position, total, _summary(tally, total))
                except JobCancelled:
                    tally.cancelled = True
                    raise
                subops.send(instance)
            context.progress(total, total, _summary(tally, total), force=True)
        except (Aborted, Released) as exc:
            raise JobError(f"{peer.ae_title} ended the association: {exc}") from exc
        finally:
            _close(link)
    if tally.failed:
        shown = ", ".join(subops.failed_uids[:3])
        raise JobError(f"{_summary(tally, total)}; failed: {shown}")
    return _summary(tally, total) + f" to {peer.ae_title}"


def _summary(tally: RetrieveTally, total: int) -> str:
    text = f"{tally.completed + tally.warning} of {total} sent"
    if tally.warning:
        text += f" ({tally.warning} with warnings)"
    if tally.failed:
        text += f", {tally.failed} failed"
    return text


def _close(link: Association) -> None:
    try:
        link.release()
    except Exception as exc:  # the peer went away: nothing left to release
        log.debug("release: %s", exc)
