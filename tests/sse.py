"""``GET /api/v1/events`` read by a test: a stream on a thread, its events so far."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from conftest import wait_until


@dataclass
class Stream:
    """``GET /api/v1/events`` read on a thread: the events so far, and the raw text."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=60)) as client,
                client.stream(
                    "GET",
                    self.url + "/api/v1/events",
                    headers={"Accept": "text/event-stream", **self.headers},
                ) as answer,
            ):
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                kind = ""
                for line in answer.iter_lines():
                    self.text.append(line)
                    self.opened.set()
                    if line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        self.events.append((kind, json.loads(line.removeprefix("data: "))))
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def has(self, kind: str, **wanted: Any) -> bool:
        return any(
            k == kind and all(data.get(key) == value for key, value in wanted.items())
            for k, data in list(self.events)
        )


def open_stream(url: str, headers: dict[str, str]) -> tuple[Stream, threading.Thread]:
    stream = Stream(url, headers)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    wait_until(stream.opened.is_set, what="the event stream's first lines")
    return stream, thread
