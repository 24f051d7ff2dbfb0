"""QIDO-RS: search for studies, series and instances (PS3.18 10.6, 8.3.4).

The same query engine as C-FIND (``services/query.py``): query parameters become a
:class:`~vesalius.services.query.Query` at the resource's level; paths below a study or series
pin its UID. ``{attributeID}`` is a keyword or an 8-digit hex tag, and ``Seq.Attr`` addresses a
sequence item's key; ``includefield`` (repeatable, comma-separated, or ``all``), ``fuzzymatching``,
``limit`` and ``offset`` are the standard's. Keys the index cannot match or return are ignored
and named in a ``Warning: 299`` header (PS3.18 8.3.4.3); a cut result list gets a Warning too.
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.datadict import keyword_for_tag
from starlette.requests import Request
from starlette.responses import Response

from vesalius.dicom.json_model import record_json, tag_and_vr
from vesalius.dicom.model import MODEL_LEVELS, Level
from vesalius.dicomweb.media import parse_accept
from vesalius.dicomweb.requests import DICOM_JSON, dicom_json, root_url
from vesalius.dicomweb.xml import xml_search_response
from vesalius.errors import NotAcceptableError, QueryError
from vesalius.services.archive import Archive
from vesalius.services.query import FilterValue, Query
from vesalius.web.requests import path_uid, who

#: Default return attributes per level, PS3.18 Table 10.6.3-3/-4/-5 (those the index holds).
DEFAULT_KEYS: dict[Level, tuple[str, ...]] = {
    "STUDY": (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDate",
        "SeriesTime",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "BodyPartExamined",
    ),
    "IMAGE": (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "AvailableTransferSyntaxUID",
    ),
}
#: QIDO-RS searches the Study Root levels (PS3.18 10.6).
_ORDER: tuple[Level, ...] = MODEL_LEVELS["STUDY"]
_CONTROL = {"includefield", "fuzzymatching", "limit", "offset"}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_MAX_LIMIT_TEXT = 9


def _keyword(attribute_id: str) -> str:
    """A keyword from a keyword or an 8-hex-digit tag (PS3.18 8.3.4.1)."""
    if _TAG.match(attribute_id):
        keyword = keyword_for_tag(int(attribute_id, 16))
        if not keyword:
            raise QueryError(f"unknown attribute tag {attribute_id}")
        return str(keyword)
    tag_and_vr(attribute_id)  # raises QueryError when unknown
    return attribute_id


def _integer(name: str, text: str) -> int:
    if not text.isdigit() or len(text) > _MAX_LIMIT_TEXT:
        raise QueryError(f"{name} must be a non-negative integer")
    return int(text)


def _boolean(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise QueryError(f"{name} must be true or false")
    return lowered == "true"


def _add_filter(filters: dict[str, FilterValue], name: str, value: str) -> None:
    if "." in name:
        seq_id, _, item_id = name.partition(".")
        if "." in item_id:
            raise QueryError(f"{name}: only one level of sequence matching is supported")
        seq, item = _keyword(seq_id), _keyword(item_id)
        if tag_and_vr(seq)[1] != "SQ":
            raise QueryError(f"{seq} is not a sequence")
        current = filters.get(seq)
        keys = dict(current) if isinstance(current, dict) else {}
        keys[item] = value
        filters[seq] = keys
        return
    keyword = _keyword(name)
    vr = tag_and_vr(keyword)[1]
    if vr == "SQ":
        raise QueryError(f"{keyword} is a sequence: match its items with {keyword}.Attribute")
    if vr == "UI":
        value = value.replace(",", "\\")  # UID list matching (PS3.18 8.3.4.1)
    previous = filters.get(keyword)
    if isinstance(previous, str) and previous and value:
        if vr != "UI":
            raise QueryError(f"{keyword} given more than once")
        value = previous + "\\" + value
    filters[keyword] = value


def build_query(
    level: Level,
    params: list[tuple[str, str]],
    pinned: dict[str, str],
    every_key: list[str] | None = None,
) -> Query:
    """The query that QIDO parameters ``params`` ask at ``level`` below the ``pinned`` UIDs;
    ``every_key`` is what ``includefield=all`` adds."""
    filters: dict[str, FilterValue] = dict(pinned)
    include: list[str] = []
    include_all = False
    limit = offset = 0
    fuzzy = False
    for name, value in params:
        if name == "includefield":
            for item in filter(None, (v.strip() for v in value.split(","))):
                if item.lower() == "all":
                    include_all = True
                else:
                    include.append(_keyword(item))
        elif name == "limit":
            limit = _integer(name, value)
        elif name == "offset":
            offset = _integer(name, value)
        elif name == "fuzzymatching":
            fuzzy = _boolean(name, value)
        elif name.lower() in _CONTROL:
            raise QueryError(f"query parameter {name} must be lower case")
        else:
            if name in pinned:
                raise QueryError(f"{name} is already given in the path")
            _add_filter(filters, name, value)
    depth = _ORDER.index(level)
    # A search across studies returns the parents' attributes too (PS3.18 10.6.3.3.1).
    levels = _ORDER[: depth + 1] if not pinned else _ORDER[len(pinned) : depth + 1]
    returned = [key for lvl in levels for key in DEFAULT_KEYS[lvl]]
    if include_all:
        returned += every_key or []
    returned += include
    query = Query(
        level,
        "STUDY",
        filters,
        tuple(dict.fromkeys(returned)),
        limit=limit,
        offset=offset,
        fuzzy=fuzzy,
        relational=True,
    )
    return query


def _records(archive: Archive, query: Query, request: Request) -> tuple[list[Any], list[str]]:
    result = archive.query.find(query, who(request))
    root = root_url(request)
    records: list[Any] = []
    for record in result:
        record.pop("QueryRetrieveLevel", None)
        record.pop("RetrieveAETitle", None)
        url = f"{root}/studies/{record['StudyInstanceUID']}"
        if query.level in ("SERIES", "IMAGE"):
            url += f"/series/{record['SeriesInstanceUID']}"
        if query.level == "IMAGE":
            url += f"/instances/{record['SOPInstanceUID']}"
        document = record_json(record)
        document["00081190"] = {"vr": "UR", "Value": [url]}
        records.append(document)
    warnings = []
    if result.unsupported:
        names = ", ".join(sorted(result.unsupported))
        warnings.append(f'299 vesalius "The following attributes are not supported: {names}"')
    if result.truncated:
        warnings.append(
            '299 vesalius "The number of results exceeded the maximum supported by the '
            'server. Additional results can be requested."'
        )
    return records, warnings


def _accepts_json(request: Request) -> bool:
    for accepted in parse_accept(request.headers.getlist("accept")):
        if accepted.media_type in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return True
        if accepted.media_type == "multipart/related" and accepted.part_type in (
            "application/dicom+xml",
            None,
        ):
            return False
    raise NotAcceptableError("search results can be returned as application/dicom+json only")


def search(archive: Archive, request: Request, level: Level) -> Response:
    """Run a QIDO-RS search at ``level`` for the path's pinned UIDs."""
    pinned: dict[str, str] = {}
    if "study" in request.path_params:
        pinned["StudyInstanceUID"] = path_uid(request, "study")
    if "series" in request.path_params:
        pinned["SeriesInstanceUID"] = path_uid(request, "series")
    params = list(request.query_params.multi_items())
    query = build_query(level, params, pinned, archive.query.supported_keys(level))
    as_json = _accepts_json(request)
    records, warnings = _records(archive, query, request)
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    if as_json:
        return dicom_json(records, headers=headers)
    return xml_search_response(records, headers)


def search_studies(archive: Archive, request: Request) -> Response:
    """``GET /studies`` (PS3.18 10.6.1)."""
    return search(archive, request, "STUDY")


def search_series(archive: Archive, request: Request) -> Response:
    """``GET /series`` and ``GET /studies/{study}/series``."""
    return search(archive, request, "SERIES")


def search_instances(archive: Archive, request: Request) -> Response:
    """``GET /instances``, ``…/studies/{study}/instances`` and ``…/series/{series}/instances``."""
    return search(archive, request, "IMAGE")
