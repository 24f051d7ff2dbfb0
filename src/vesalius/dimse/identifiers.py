"""Reading C-FIND, C-MOVE and C-GET identifiers (PS3.4 C.4.1.1.3, C.4.2.2.1, C.4.3.2.1) into
the protocol-neutral objects the services take: a :class:`~vesalius.services.query.Query` and
:class:`~vesalius.services.retrieve.RetrieveKeys`. The DICOMweb door reads its query parameters
into the same objects (``dicomweb/qido.py``, ``dicomweb/retrieve.py``)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from vesalius.dicom import values
from vesalius.dicom.identifier import read_keys
from vesalius.dicom.model import LEVELS, MODEL_LEVELS, UNIQUE_KEYS, Level, Model, level_of
from vesalius.dicom.uids import is_valid_uid
from vesalius.errors import DataSetMismatchError, QueryError, VesaliusError
from vesalius.services.query import SERVICE_KEYS, Query
from vesalius.services.retrieve import RetrieveKeys


def _level(text: str, model: Model) -> Level:
    """The Query/Retrieve Level of an identifier, which the model must have (0xA900)."""
    if not text.strip():
        raise DataSetMismatchError("QueryRetrieveLevel is missing")
    level = level_of(text, model)
    if level is None:
        raise DataSetMismatchError(
            f"QueryRetrieveLevel {text.strip().upper()[:16]} is not in {model} Root"
        )
    return level


def query_from_identifier(
    identifier: Dataset,
    model: Model,
    *,
    relational: bool = False,
    combined_datetime: bool = False,
    fuzzy: bool = False,
) -> Query:
    """The query a C-FIND identifier asks (PS3.4 C.4.1.1.3.1): its level and keys."""
    try:
        keys = read_keys(identifier)
    except VesaliusError:
        raise
    except Exception as exc:  # pydicom decodes lazily and may fail on any element
        raise QueryError(f"cannot decode the identifier: {type(exc).__name__}") from exc
    raw = keys.get("QueryRetrieveLevel")
    level = _level(raw if isinstance(raw, str) else "", model)
    filters = {k: v for k, v in keys.items() if k not in SERVICE_KEYS}
    return Query(
        level,
        model,
        filters,
        relational=relational,
        combined_datetime=combined_datetime,
        fuzzy=fuzzy,
    )


def _uid_list(identifier: Dataset, keyword: str) -> tuple[str, ...]:
    """The UIDs of a (possibly multi-valued) UI key; an empty value gives ``()``."""
    raw = identifier.get(keyword)
    if raw is None:
        return ()
    items = raw if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue" else [raw]
    uids = tuple(u for u in (str(v).strip("\0 ") for v in items) if u)
    for uid in uids:
        if not is_valid_uid(uid):
            raise DataSetMismatchError(f"{keyword} holds an invalid UID")
    return uids


def keys_from_identifier(identifier: Dataset, model: Model) -> RetrieveKeys:
    """The unique keys of a C-MOVE/C-GET identifier for the Patient or Study Root model.

    Only unique keys count (PS3.4 C.4.2.2.1): the level's (a list of UIDs, or the Patient ID),
    and optionally those of the levels above, which narrow the match; keys below the level
    are ignored. Raises :class:`DataSetMismatchError` (0xA900) when the level is missing or
    not in the model, or the key of the level is missing or malformed.
    """
    level = _level(values.text(identifier.get("QueryRetrieveLevel")), model)
    depth = LEVELS.index(level)
    patient_root = model == "PATIENT"
    patient_id = values.text(identifier.get("PatientID")) if patient_root else ""
    issuer = values.text(identifier.get("IssuerOfPatientID")) if patient_root else ""
    uids = {
        lvl: _uid_list(identifier, UNIQUE_KEYS[lvl]) if LEVELS.index(lvl) <= depth else ()
        for lvl in MODEL_LEVELS["STUDY"]
    }
    if level == "PATIENT" and not patient_id:
        raise DataSetMismatchError("PatientID is required at PATIENT level")
    if level != "PATIENT" and not uids[level]:
        raise DataSetMismatchError(f"{UNIQUE_KEYS[level]} is required at {level} level")
    return RetrieveKeys(
        level=level,
        patient_id=patient_id or None,
        issuer_of_patient_id=issuer or None,
        study_uids=uids["STUDY"],
        series_uids=uids["SERIES"],
        sop_instance_uids=uids["IMAGE"],
    )
