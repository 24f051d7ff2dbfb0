"""Query and retrieve from a remote AE: the admin UI's Query/Retrieve page and the REST API.

A query is a C-FIND (PS3.4 C.4.1, Study Root) answered synchronously within a timeout; a
retrieve is a job of kind ``retrieve``: a C-MOVE with this archive's own AE as destination (the
peer must know our AE title, host and port), or a C-GET, whose sub-operations come back on the
same association and are ingested as they arrive (PS3.4 C.4.2, C.4.3). The protocol is the
DIMSE adapter's: the wiring injects the finder (:data:`RemoteFinder`) and registers the job's
handler (``dimse/remote.py``); this service checks, audits and queues.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.datadict import tag_for_keyword

from vesalius.dicom.uids import check_uid
from vesalius.errors import NotFoundError, QueryError, VesaliusError
from vesalius.identity import Identity
from vesalius.services.jobs import JobRow, JobService
from vesalius.services.oversight import Oversight
from vesalius.services.peers import Peer, PeerDirectory
from vesalius.services.policy import Resource

#: The job kind of a retrieve from a remote AE.
KIND = "retrieve"
Level = Literal["study", "series"]
Method = Literal["move", "get"]
#: A match as the API answers it: values keyed by DICOM keyword (PN as its text, multiple
#: values as a list, IS/US/UL as numbers).
Match = dict[str, Any]

#: Return keys asked for at each level besides the ones given (PS3.4 C.6.2.1.2; the
#: Number of … Related keys are optional for an SCP to support, so they may come back empty).
RETURN_KEYS: dict[str, tuple[str, ...]] = {
    "study": (
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "series": (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "BodyPartExamined",
        "SeriesDate",
        "NumberOfSeriesRelatedInstances",
    ),
}
#: Attributes of the identifier that are not the caller's to set (PS3.4 C.4.1.1.3).
_NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "Item"})
_KEYWORD = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")


@dataclass(frozen=True)
class RemoteMatches:
    """What a remote query found: the matches, and whether there were more than allowed
    (then the C-FIND was cancelled, PS3.4 C.4.1.2.3)."""

    items: list[Match]
    truncated: bool = False


#: The DIMSE part of a query: (peer, level, identifier keys as ``Keyword=value``, most
#: matches) -> the matches. :class:`~vesalius.errors.PeerError` when the peer fails or does
#: not answer in time; :class:`~vesalius.errors.QueryError` for keys it cannot encode.
RemoteFinder = Callable[[Peer, str, Sequence[str], int], RemoteMatches]


class RemoteService:
    """Queries remote AEs and queues retrieves from them (see the module's text)."""

    def __init__(
        self,
        peers: PeerDirectory,
        jobs: JobService,
        *,
        oversight: Oversight,
        finder: RemoteFinder | None = None,
        max_matches: int = 1000,
    ) -> None:
        self.peers = peers
        self.jobs = jobs
        self.oversight = oversight
        #: The C-FIND SCU (the wiring's); None: querying remote AEs is not available.
        self.finder = finder
        self.max_matches = max_matches

    def peer(self, name: str) -> Peer:
        """The known peer named ``name`` (or with that AE title); 404 when none."""
        found = self.peers.by_name(name) or self.peers.by_ae(name)
        if found is None:
            raise NotFoundError(f"no known peer {name!r}")
        return found

    def targets(self, who: Identity) -> list[Peer]:
        """The known peers, for choosing one to query, retrieve from or send to (their
        names and AE titles are no secret to whoever may query; administering them is
        ``PeerDirectory``'s, for administrators)."""
        self.oversight.check(who, "query")
        return sorted(self.peers.all(), key=lambda peer: peer.name.lower())

    def query(
        self, name: str, level: Level, keys: Mapping[str, str], who: Identity
    ) -> RemoteMatches:
        """C-FIND on the peer ``name`` at ``level`` (``study`` or ``series``, Study Root)
        with matching keys ``keys`` (keyword: value, DICOM matching rules: ``*`` and ``?``
        wildcards, ``from-to`` date ranges, PS3.4 C.2.2.2); the other keys of
        :data:`RETURN_KEYS` are asked for empty."""
        self.oversight.check(who, "query", Resource(details={"peer": name}))
        peer = self.peer(name)
        if self.finder is None:
            raise NotFoundError("querying remote AEs is not available in this process")
        if level not in RETURN_KEYS:
            raise QueryError("level must be study or series")
        specs = query_keys(level, keys)
        try:
            found = self.finder(peer, level, specs, self.max_matches)
        except VesaliusError as exc:
            self.oversight.record(
                "remote-query",
                who,
                "failure",
                peer=peer.name,
                destination=peer.ae_title,
                destination_host=peer.host,
                level=level,
                criteria={k: v for k, v in keys.items() if v},
                reason=exc.message,
            )
            raise
        self.oversight.record(
            "remote-query",
            who,
            peer=peer.name,
            destination=peer.ae_title,
            destination_host=peer.host,
            level=level,
            criteria={k: v for k, v in keys.items() if v},
            matches=len(found.items),
            truncated=found.truncated,
            study_uids=sorted({str(m.get("StudyInstanceUID", "")) for m in found.items} - {""}),
        )
        return found

    def retrieve(
        self,
        name: str,
        study_uid: str,
        who: Identity,
        *,
        series_uid: str | None = None,
        method: Method = "move",
    ) -> JobRow:
        """Queue a retrieve of a study (or one of its series) from the peer ``name`` into
        this archive, by C-MOVE to our own AE or by C-GET."""
        study_uid = check_uid(study_uid, "StudyInstanceUID")
        if series_uid:
            series_uid = check_uid(series_uid, "SeriesInstanceUID")
        if method not in ("move", "get"):
            raise QueryError("method must be move or get")
        resource = Resource(
            (study_uid,),
            (series_uid,) if series_uid else (),
            details={"source": name, "method": method},
        )
        self.oversight.check(who, "store", resource)  # the instances join this archive
        peer = self.peer(name)
        payload = {
            "peer": peer.name,
            "study_uid": study_uid,
            "series_uid": series_uid or "",
            "method": method,
        }
        return self.jobs.submit(KIND, payload, who, resource)


def query_keys(level: str, keys: Mapping[str, str]) -> list[str]:
    """The identifier's keys as ``Keyword=value``: the matching keys given (keywords only;
    400 for anything else), then the level's return keys not given. A series query needs
    the study's UID (Study Root, PS3.4 C.4.1.2.1)."""
    specs: list[str] = []
    for keyword, value in keys.items():
        if not _KEYWORD.match(keyword):
            raise QueryError(f"key {keyword!r}: give a DICOM keyword")
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise QueryError(f"key {keyword!r}: unknown keyword")
        if tag >> 16 < 0x0008 or keyword in _NOT_KEYS:
            raise QueryError(f"key {keyword}: not a matching key (the level is set by level)")
        if not isinstance(value, str):
            raise QueryError(f"key {keyword}: give its value as text")
        if any(ord(c) < 0x20 and c not in "\x1b" for c in value) or len(value) > 1024:
            raise QueryError(f"key {keyword}: control characters or over 1024 characters")
        specs.append(f"{keyword}={value}")
    given = set(keys)
    specs += [f"{keyword}=" for keyword in RETURN_KEYS[level] if keyword not in given]
    if level == "series" and not str(keys.get("StudyInstanceUID", "")).strip():
        raise QueryError("a series query needs StudyInstanceUID")
    return specs
