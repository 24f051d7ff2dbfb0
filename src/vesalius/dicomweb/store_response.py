"""The Store Instances Response Module of STOW-RS (PS3.18 Annex I, Table I.1-1), and the
status and Warning header that go with it (PS3.18 10.5.3)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from vesalius.dicomweb.requests import dicom_json
from vesalius.dicomweb.xml import native_model

DICOM_XML = "application/dicom+xml"
#: Failure Reason (0008,1197) values (PS3.18 Table I.2-2).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
#: Warning Reason (0008,1196) values (PS3.18 Table I.2-1): Elements Discarded, for a copy of
#: an instance already stored with other content (the stored copy is kept).
ELEMENTS_DISCARDED = 0xB006


@dataclass(frozen=True)
class Stored:
    """An instance now in the archive (Referenced SOP Sequence item)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    outcome: str

    @property
    def warning(self) -> int | None:
        """The Warning Reason of this instance, if any."""
        return ELEMENTS_DISCARDED if self.outcome == "discarded" else None


@dataclass(frozen=True)
class Failed:
    """A part that was not stored; UIDs are empty when the part could not be read."""

    reason: int
    message: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


def _sequence(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": list(items)}


def _uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _reference(sop_class: str, sop_instance: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item["00081150"] = _uid(sop_class)
    if sop_instance:
        item["00081155"] = _uid(sop_instance)
    return item


def response_module(results: list[Stored | Failed], root: str, study: str | None) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table I.1-1) as DICOM JSON.

    Stored instances go in Referenced SOP Sequence with their Retrieve URL; failures whose SOP
    Instance UID could be read go in Failed SOP Sequence, others (a part that is not DICOM at
    all) in Other Failures Sequence, each with its Failure Reason. The top Retrieve URL (type 2)
    is the study's when every stored instance is in one study (as with a study in the path),
    else empty.
    """
    stored = [r for r in results if isinstance(r, Stored)]
    failed = [r for r in results if isinstance(r, Failed) and r.sop_instance_uid]
    others = [r for r in results if isinstance(r, Failed) and not r.sop_instance_uid]
    studies = {r.study_uid for r in stored}
    target = (study or studies.pop()) if len(studies) == 1 else None
    module: dict[str, Any] = {
        "00081190": {"vr": "UR", "Value": [f"{root}/studies/{target}"]} if target else {"vr": "UR"}
    }
    if failed:
        module["00081198"] = _sequence(
            {
                **_reference(r.sop_class_uid, r.sop_instance_uid),
                "00081197": {"vr": "US", "Value": [r.reason]},
            }
            for r in failed
        )
    if stored:
        module["00081199"] = _sequence(
            {
                **_reference(r.sop_class_uid, r.sop_instance_uid),
                "00081190": {
                    "vr": "UR",
                    "Value": [
                        f"{root}/studies/{r.study_uid}/series/{r.series_uid}"
                        f"/instances/{r.sop_instance_uid}"
                    ],
                },
                **({"00081196": {"vr": "US", "Value": [r.warning]}} if r.warning else {}),
            }
            for r in stored
        )
    if others:
        module["0008119A"] = _sequence(
            {"00081197": {"vr": "US", "Value": [r.reason]}} for r in others
        )
    return module


def status_code(results: list[Stored | Failed]) -> int:
    """PS3.18 Table 10.5.3-1: 200 all stored without warnings, 202 some stored or some with
    warnings, 409 none."""
    stored = [r for r in results if isinstance(r, Stored)]
    if len(stored) == len(results) and not any(r.warning for r in stored):
        return 200
    return 202 if stored else 409


def warning_header(results: list[Stored | Failed]) -> dict[str, str] | None:
    """A Warning header naming the first failure, else the first warning (PS3.18 10.5.3.2
    recommends one)."""
    for r in results:
        if isinstance(r, Failed):
            text = r.message.replace('"', "'").encode("ascii", "replace").decode()[:200]
            return {"Warning": f'299 vesalius "{r.reason:04X}: {text}"'}
    for r in results:
        if isinstance(r, Stored) and r.warning:
            return {
                "Warning": f'299 vesalius "{r.warning:04X}: instance {r.sop_instance_uid} is '
                'stored already with other content; the stored copy is kept"'
            }
    return None


def answer(
    module: dict[str, Any], status: int, media_type: str, headers: dict[str, str] | None
) -> Response:
    if media_type == DICOM_XML:
        return Response(native_model(module), status, headers, media_type=DICOM_XML)
    return dicom_json(module, status, headers)
