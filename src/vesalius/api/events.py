"""Live updates: the archive's events as server-sent events (``text/event-stream``, HTML Living
Standard, "Server-sent events").

Events: ``job`` (a Job, as ``GET /jobs/{id}`` answers it, on each change of state or progress)
and ``study`` (``{"study_uid", "change": "stored"|"deleted"|"corrected"}``, at most one per
study per second), each only to an identity that may see it (``services/live.py``). A comment
line every :data:`KEEP_ALIVE` seconds keeps proxies from closing an idle stream; ``retry:``
tells the browser when to reconnect. The stream ends when the server begins to stop
(``web/serving.py``, :data:`~vesalius.web.serving.STOPPING`), so it never holds the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header
from starlette.requests import Request
from starlette.responses import StreamingResponse

from vesalius.api.deps import ArchiveDep, Who
from vesalius.api.jobs import job_model
from vesalius.errors import NotAcceptableError, VesaliusError
from vesalius.identity import Identity
from vesalius.services.live import LiveEvent, LiveEvents
from vesalius.web.serving import stopping_event

router = APIRouter()

#: Seconds between keep-alive comments on an idle stream.
KEEP_ALIVE = 15.0
#: Milliseconds the browser waits before reconnecting (the ``retry:`` field).
RETRY_MS = 3000
#: Events held for a client that reads too slowly; past that the stream ends (it reconnects).
BACKLOG = 1000
MEDIA_TYPE = "text/event-stream"


class LiveUnavailableError(VesaliusError):
    """This server was built without live updates."""

    http_status = 503


def _frame(live: LiveEvents, number: int, event: LiveEvent) -> str:
    """One event in the stream's format: ``id``, ``event`` and one ``data`` line (JSON)."""
    if event.job is not None:
        data = job_model(event.job, live.jobs.action_for(event.job.kind)).model_dump_json()
    else:
        data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {number}\nevent: {event.kind}\ndata: {data}\n\n"


async def _stream(
    live: LiveEvents, request: Request, who: Identity, first: int
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(BACKLOG + 1)

    def put(event: LiveEvent) -> None:  # on the event loop
        if queue.qsize() < BACKLOG:
            queue.put_nowait(event)
        elif queue.qsize() == BACKLOG:
            queue.put_nowait(None)  # too far behind: end the stream

    def deliver(event: LiveEvent) -> None:  # on the hub's thread
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
            loop.call_soon_threadsafe(put, event)

    listener = live.listen(who, deliver)
    stopping = stopping_event(request.scope)
    stop = asyncio.ensure_future(stopping.wait()) if stopping is not None else None
    numbers = itertools.count(first)
    try:
        yield f"retry: {RETRY_MS}\n: live updates of jobs and studies\n\n"
        while True:
            getter = asyncio.ensure_future(queue.get())
            waiting = {getter} if stop is None else {getter, stop}
            done, _ = await asyncio.wait(
                waiting, timeout=KEEP_ALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
            if stop is not None and stop in done:
                yield ": the server is stopping\n\n"
                return
            if getter in done:
                event = getter.result()
                if event is None:
                    return
                yield _frame(live, next(numbers), event)
            else:
                yield ": keep-alive\n\n"
    finally:
        live.leave(listener)
        if stop is not None:
            stop.cancel()


@router.get(
    "/events",
    response_class=StreamingResponse,
    summary="Live updates (server-sent events)",
    description="A ``text/event-stream`` of ``job`` events (a Job, on each change of state "
    "or progress) and ``study`` events (``{study_uid, change}``, change ``stored``, "
    "``deleted`` or ``corrected``; at most one per study per second), each only for what the "
    "caller may see. Comment lines keep an idle stream alive; ``Last-Event-ID`` is accepted "
    "(missed events are not replayed: reload the lists on reconnect). Needs ``read``, and "
    "``Accept: text/event-stream`` (as ``EventSource`` sends; anything else: 406, so a client "
    "that reads a response to its end does not wait forever).",
    responses={
        200: {
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "The stream (never ends by itself).",
        },
        406: {"description": "The request did not name text/event-stream in Accept."},
        503: {"description": "Live updates are not available on this server."},
    },
)
def events(
    archive: ArchiveDep,
    who: Who,
    request: Request,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="The last event's id (after a reconnect); ids continue from it.",
        ),
    ] = None,
) -> StreamingResponse:
    accepted = {part.split(";")[0].strip() for part in request.headers.get("accept", "").split(",")}
    if MEDIA_TYPE not in accepted:
        raise NotAcceptableError(
            f"this is a stream that never ends by itself: ask for it with Accept: {MEDIA_TYPE}"
        )
    live = archive.live
    if live is None:
        raise LiveUnavailableError("live updates are not available on this server")
    archive.jobs.oversight.check(who, "read")  # refused before the stream starts
    first = int(last_event_id) + 1 if last_event_id and last_event_id.isdigit() else 1
    return StreamingResponse(
        _stream(live, request, who, min(first, 2**53)),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
