"""De-identification for the REST API, over ``services/anonymize.py`` (PS3.15 Annex E): into a
new study in the archive as a job (kind ``anonymize``, action ``export``, with progress), or as
a ZIP streamed to the client while it is made (:meth:`DeidentifyService.stream`), never held
whole in memory or on disk."""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vesalius.dicom.deid import Options, remap_uid
from vesalius.errors import CancelledError, NotFoundError, QueryError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.corrections import study_state
from vesalius.index.lookup import RetrieveKeys, find_instances
from vesalius.services.anonymize import AnonymizeService
from vesalius.services.jobs import JobContext, JobFailed, JobRow, JobService
from vesalius.services.oversight import Oversight
from vesalius.services.policy import Resource

KIND = "anonymize"
#: The options (``dicom.deid.Options`` fields) a client may choose.
OPTIONS = tuple(Options.__dataclass_fields__)
#: Bytes gathered before a piece of the ZIP goes to the client; pieces waiting at most.
PIECE = 256 << 10
WAITING = 8


@dataclass(frozen=True)
class Submitted:
    """A de-identification into the archive: the new study's UID and the job making it."""

    study_uid: str
    job: JobRow


def options_of(names: list[str] | tuple[str, ...]) -> Options:
    """The :class:`Options` named (400 for an unknown one or a contradiction)."""
    unknown = sorted(set(names) - set(OPTIONS))
    if unknown:
        raise QueryError(f"unknown option(s) {', '.join(unknown)}: use {', '.join(OPTIONS)}")
    return Options(**{name: True for name in names})


class DeidentifyService:
    """Runs :class:`AnonymizeService` for the API (see the module's text)."""

    def __init__(
        self,
        catalog: Catalog,
        anonymize: AnonymizeService,
        *,
        oversight: Oversight,
        jobs: JobService,
    ) -> None:
        self.catalog = catalog
        self.anonymize = anonymize
        self.oversight = oversight
        self.jobs = jobs
        jobs.register(KIND, self._run, "export")

    def _check(self, study_uid: str, who: Identity) -> None:
        self.oversight.check(who, "export", Resource((study_uid,)))
        labels = self.oversight.visible_labels(who)
        with self.catalog.read() as conn:
            state = study_state(conn, study_uid)
        if state is None or (labels is not None and not self._visible(study_uid, labels)):
            raise NotFoundError(f"no study {study_uid} in the archive")

    def _visible(self, study_uid: str, labels: frozenset[str]) -> bool:
        with self.catalog.read() as conn:
            found = find_instances(
                conn, RetrieveKeys("STUDY", study_uids=(study_uid,)), 1, labels=labels
            )
        return bool(found)

    def submit(
        self, study_uid: str, names: list[str], include_burned_in: bool, who: Identity
    ) -> Submitted:
        """Queue the de-identification of ``study_uid`` into a new study of the archive."""
        options = options_of(names)
        if options.retain_uids:
            raise QueryError(
                "a study keeping its UIDs cannot be a new study in the same archive: download it"
            )
        self._check(study_uid, who)
        self.oversight.check(who, "store")  # the new study is stored as the submitter
        new_uid = remap_uid(self.anonymize.secret.value(), study_uid)
        payload = {
            "study_uid": study_uid,
            "options": list(options.chosen()),
            "include_burned_in": include_burned_in,
        }
        job = self.jobs.submit(KIND, payload, who, Resource((study_uid,)))
        return Submitted(new_uid, job)

    def _run(self, context: JobContext) -> str:
        payload = context.payload
        try:
            options = options_of(list(payload.get("options", [])))
        except QueryError as exc:
            raise JobFailed(exc.message) from exc
        result = self.anonymize.anonymize(
            str(payload["study_uid"]),
            context.who,
            options,
            include_burned_in=bool(payload.get("include_burned_in")),
            progress=lambda done, total: context.progress(done, total),
        )
        text = f"{result.written} instance(s) written into study {result.new_study_uid}"
        if result.excluded:
            text += f"; {result.excluded} left out (pixels may show text: review them)"
        return text

    def stream(self, study_uid: str, names: list[str], who: Identity) -> Iterator[bytes]:
        """The de-identified study as a ZIP, piece by piece. What refuses the request (policy,
        options, not found) is raised before the first piece, so the caller can answer it."""
        options = options_of(names)
        self._check(study_uid, who)
        pipe = _Pipe()

        def produce() -> None:
            try:
                self.anonymize.anonymize(study_uid, who, options, zip_stream=pipe)  # type: ignore[arg-type]
                pipe.finish()
            except BaseException as exc:
                pipe.fail(exc)

        threading.Thread(target=produce, name="anonymize-zip", daemon=True).start()
        first = pipe.take()  # raises what failed before anything was written
        return _pieces(first, pipe)


def _pieces(first: bytes | None, pipe: _Pipe) -> Iterator[bytes]:
    try:
        piece = first
        while piece is not None:
            yield piece
            piece = pipe.take()
    finally:
        pipe.abandon()


class _Pipe(io.RawIOBase):
    """A write-only stream whose bytes a reader takes in pieces (bounded: the writer waits
    for a slow client); not seekable, so zipfile writes data descriptors."""

    def __init__(self) -> None:
        self._pieces: queue.Queue[Any] = queue.Queue(WAITING)
        self._buffer = bytearray()
        self._gone = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += data
        if len(self._buffer) >= PIECE:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def _put(self, item: Any) -> None:
        while True:
            if self._gone.is_set():
                raise CancelledError("the client went away")
            try:
                self._pieces.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        self._put(None)

    def fail(self, exc: BaseException) -> None:
        if not self._gone.is_set():
            with contextlib.suppress(CancelledError):  # nobody left to tell
                self._put(exc)

    def take(self) -> bytes | None:
        item = self._pieces.get()
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def abandon(self) -> None:
        self._gone.set()
