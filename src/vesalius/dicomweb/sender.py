"""The ``send-dicomweb`` job: stored instances go to a peer's DICOMweb URL by STOW-RS
(PS3.18 10.5), queued by ``services/sending.py``; the wiring registers :func:`stow_handler`.

Each request carries a batch of instances as ``multipart/related; type="application/dicom"``
(PS3.18 8.6.1.2), each part the stored Part 10 file as it is, streamed from the blob store in
chunks: memory stays bounded whatever the instances' sizes. The length is known beforehand
(the index holds each file's size), so the request has a Content-Length, which every server
takes. The Store Instances Response (PS3.18 10.5.3, Annex I) says what became of each
instance: in the Referenced SOP Sequence (stored, perhaps with a Warning Reason), in the
Failed SOP Sequence (with its Failure Reason), or absent (failed). Progress is reported and a
cancel is seen between two batches. As for a C-STORE send, an attempt that leaves instances
unsent fails and is retried with backoff (a peer keeps one copy of what it receives twice);
a peer unknown, without a DICOMweb URL, or answering 4xx (other than 408, 409, 429) fails
the job at once.

A peer whose service needs a login gets it on every request: HTTP Basic (RFC 7617) or a bearer
token (RFC 6750), stored with the peer (``services/peers.py``, ``WebLogin``); redirects are not
followed, so the login goes nowhere else.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from vesalius.dicomweb.multipart import Part, content_type, new_boundary, stream
from vesalius.errors import NotFoundError
from vesalius.services.archive import Archive
from vesalius.services.jobs import (
    Handler,
    JobCancelled,
    JobContext,
    JobError,
    JobFailed,
    payload_keys,
)
from vesalius.services.peers import WebLogin
from vesalius.services.retrieve import InstanceLocation, RetrieveTally

log = logging.getLogger(__name__)

#: Instances per STOW-RS request, and stored bytes at most (a batch has one instance at
#: least): progress and cancel between batches; memory does not depend on either.
BATCH_INSTANCES = 50
BATCH_BYTES = 256 << 20
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
#: Store Instances Response attributes (PS3.18 Table I.1-1, I.2-1, I.2-2).
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
#: 4xx answers that may go away if tried again.
TRANSIENT = frozenset({408, 409, 429})


@dataclass
class BatchOutcome:
    """What the peer said of one request's instances, by SOP Instance UID."""

    stored: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


def shown(url: str) -> str:
    """``url`` without credentials, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def stow_handler(
    archive: Archive,
    *,
    timeout: float = 60.0,
    tls: Callable[[], ssl.SSLContext] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Handler:
    """The handler of ``send-dicomweb`` jobs of ``archive``: ``timeout`` seconds for the
    connection and between two reads or writes; ``tls`` the client context for https peers
    (else the system's authorities)."""

    def run(context: JobContext) -> str:
        verify: ssl.SSLContext | bool = tls() if tls is not None else True
        with httpx.Client(
            timeout=httpx.Timeout(timeout),
            verify=verify,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "Vesalius STOW-RS"},
        ) as client:
            return _send(archive, client, context)

    return run


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer TOKEN`` on each request (RFC 6750 2.1)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def auth_of(login: WebLogin) -> httpx.Auth | None:
    """How requests to a peer log in: its Basic or bearer login, or None (then a
    ``user:password@`` in the URL, if any, is sent as Basic by httpx)."""
    if login.kind == "basic":
        return httpx.BasicAuth(login.user, login.secret)
    if login.kind == "bearer":
        return BearerAuth(login.secret)
    return None


def batches(instances: Sequence[InstanceLocation]) -> Iterator[list[InstanceLocation]]:
    """``instances`` in batches of :data:`BATCH_INSTANCES` and :data:`BATCH_BYTES` at most."""
    batch: list[InstanceLocation] = []
    size = 0
    for instance in instances:
        if batch and (len(batch) >= BATCH_INSTANCES or size + instance.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(instance)
        size += instance.size
    if batch:
        yield batch


def _send(archive: Archive, client: httpx.Client, context: JobContext) -> str:
    try:
        peer = archive.sending.peer(str(context.payload["peer"]))
    except NotFoundError as exc:
        raise JobFailed(exc.message) from exc
    if not peer.dicomweb_url:
        raise JobFailed(f"peer {peer.name} has no DICOMweb URL")
    url = peer.dicomweb_url
    login = auth_of(peer.dicomweb_login)
    if login is not None:
        client.auth = login
    keys = payload_keys(context.payload)
    plan = archive.retrieve.plan(keys, context.who, "send", peer.ae_title)
    if not plan.instances:
        with archive.retrieve.transfer(plan):
            pass
        raise JobFailed("nothing stored matches (deleted since?)")
    total = len(plan.instances)
    context.progress(0, total, f"sending to {shown(url)}", force=True)
    failures: dict[str, str] = {}
    with archive.retrieve.transfer(plan) as tally:
        done = 0
        for batch in batches(plan.instances):
            try:
                context.progress(done, total, _summary(tally, total))
            except JobCancelled:
                tally.cancelled = True
                raise
            outcome = _post(archive, client, url, batch)
            for instance in batch:
                uid = instance.sop_instance_uid
                if uid in outcome.failed:
                    tally.record(0xC000)
                    failures[uid] = outcome.failed[uid]
                elif uid in outcome.warned:
                    tally.record(0xB000, instance.size)
                else:
                    tally.record(0x0000, instance.size)
            done += len(batch)
        context.progress(total, total, _summary(tally, total), force=True)
    if tally.failed:
        shown_failures = "; ".join(f"{uid}: {why}" for uid, why in list(failures.items())[:3])
        raise JobError(f"{_summary(tally, total)}; failed: {shown_failures}")
    return _summary(tally, total) + f" to {shown(url)}"


def _post(
    archive: Archive, client: httpx.Client, url: str, batch: list[InstanceLocation]
) -> BatchOutcome:
    """One STOW-RS request with ``batch``; what the peer answered for each instance."""
    boundary = new_boundary()
    parts = (Part(DICOM, archive.retrieve.open_range(instance)) for instance in batch)
    length = _length(batch, boundary)
    try:
        response = client.post(
            f"{url}/studies",
            content=stream(parts, boundary),
            headers={
                "Content-Type": content_type(DICOM, boundary),
                "Content-Length": str(length),
                "Accept": DICOM_JSON,
            },
        )
    except httpx.HTTPError as exc:
        raise JobError(f"STOW-RS to {shown(url)}: {type(exc).__name__}: {exc}") from exc
    return _outcome(response, batch, url)


def _length(batch: list[InstanceLocation], boundary: str) -> int:
    """The body's length as :func:`~vesalius.dicomweb.multipart.stream` frames it."""
    head = len(f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode())
    closing = len(f"--{boundary}--\r\n".encode())
    return sum(head + instance.size + 2 for instance in batch) + closing


def _outcome(response: httpx.Response, batch: list[InstanceLocation], url: str) -> BatchOutcome:
    """Read a Store Instances Response (PS3.18 10.5.3): 200 all stored, 202 some failed or
    with warnings, 409 none stored; the body's sequences say which."""
    status = response.status_code
    uids = {instance.sop_instance_uid for instance in batch}
    body = _json(response)
    outcome = BatchOutcome()
    if body is not None:
        for item in _items(body, REFERENCED_SOP_SEQUENCE):
            uid = _text(item, REFERENCED_SOP_INSTANCE)
            if uid in uids:
                outcome.stored.add(uid)
                if _text(item, WARNING_REASON):
                    outcome.warned.add(uid)
        for item in _items(body, FAILED_SOP_SEQUENCE):
            uid = _text(item, REFERENCED_SOP_INSTANCE)
            if uid in uids:
                reason = _text(item, FAILURE_REASON)
                outcome.failed[uid] = f"failure reason {_hex(reason)}" if reason else "failed"
    if status in (200, 202, 409):
        if status == 200 and body is None:
            outcome.stored = set(uids)
        for uid in uids - outcome.stored - set(outcome.failed):
            outcome.failed[uid] = "not in the peer's answer"
        return outcome
    detail = f"STOW-RS to {shown(url)}: HTTP {status} {response.reason_phrase}"
    if status in (401, 403):
        detail += " (check the peer's DICOMweb login)"
    text = response.text.strip()[:200]
    if text and body is None:
        detail += f": {text}"
    if 400 <= status < 500 and status not in TRANSIENT:
        raise JobFailed(detail)
    raise JobError(detail)


def _json(response: httpx.Response) -> dict[str, Any] | None:
    """The response's DICOM JSON object, if it is one."""
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    return body if isinstance(body, dict) else None


def _items(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = body.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _text(item: dict[str, Any], tag: str) -> str:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    if isinstance(values, list) and values:
        return str(values[0])
    return ""


def _hex(reason: str) -> str:
    try:
        return f"0x{int(reason):04X}"
    except ValueError:
        return reason


def _summary(tally: RetrieveTally, total: int) -> str:
    text = f"{tally.completed + tally.warning} of {total} sent"
    if tally.warning:
        text += f" ({tally.warning} with warnings)"
    if tally.failed:
        text += f", {tally.failed} failed"
    return text
