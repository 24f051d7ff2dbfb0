"""De-identification: the Basic Application Level Confidentiality Profile and its options
(PS3.15 Annex E), applied to a pydicom data set from Table E.1-1 (``dicom/deid_table.py``).

Per attribute, the action of the Basic Profile column applies unless a chosen option's column
names another (a ``K`` of any chosen option wins over a ``C``; PS3.15 E.3). The actions
(PS3.15 E.3, Table E.1-1 legend):

- ``X`` remove; ``Z`` zero length; ``D`` a dummy value of the VR (the patient's pseudonym for
  Patient ID and Patient's Name); ``U`` a UID derived from the original by HMAC-SHA-256 with the
  site secret, as ``2.25.<decimal>`` (PS3.5 B.2), so the same input always maps to the same
  output and references stay consistent across instances, studies and calls; ``K`` keep.
- The combined actions choose what keeps the IOD valid: ``Z/D``, ``X/D`` and ``X/Z/D`` give
  ``D``, ``X/Z`` gives ``Z``, ``X/Z/U*`` keeps the sequence with its UIDs replaced.
- ``C`` clean: dates (DA, DT) shifted by the patient's offset (Retain Longitudinal Temporal
  Information with Modified Dates; times are kept, the offset being whole days); text with the
  identifying values of the data set (names, IDs, birth date, institution...) removed; a
  sequence kept with its items de-identified and their text cleaned; overlay and curve data
  kept and the instance flagged for review (pixels of a bitmap cannot be cleaned here).
- A sequence whose action is ``D`` keeps its items, de-identified, with every free text value
  in them replaced by a dummy (a dummy structure, so Type 1 content stays present).

Attributes not in the table are kept (nested ones too, within sequences the walk visits),
except group lengths (retired; they would no longer be right).
Private attributes are removed, except under the Retain Safe Private Option (PS3.15 E.3.10):
then those of Table E.3.10-1 (``dicom/safe_private_table.py``) are kept with the Private
Creator elements of their blocks (and no other), a private attribute being known by its
group, its Private Creator and the low byte of its element, whatever block it is in (PS3.5
7.8.1); a kept sequence has its items de-identified, a kept UID is replaced like any other
(``U``, unless Retain UIDs). Overlays (60xx) are removed as whole groups, curves (50xx) too.
The result carries Patient Identity Removed, De-identification Method (Code Sequence, CID 7050)
and Longitudinal Temporal Information Modified (PS3.3 C.7.1.1, C.12.1).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from vesalius.dicom.deid_table import EDITION, TABLE_E1_1
from vesalius.dicom.safe_private_table import TABLE_E3_10_1
from vesalius.errors import QueryError

#: CID 7050 (De-identification Method), scheme DCM: the profile and each option.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[str, tuple[str, str]] = {
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_device": ("113109", "Retain Device Identity Option"),
    "retain_institution": ("113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "modify_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}
#: The Table E.1-1 column each option chooses.
OPTION_COLUMNS: dict[str, str] = {
    "retain_uids": "uids",
    "retain_device": "device",
    "retain_institution": "institution",
    "retain_patient_characteristics": "patient_characteristics",
    "retain_full_dates": "full_dates",
    "modify_dates": "modified_dates",
    "clean_descriptors": "descriptors",
    "clean_structured_content": "structured_content",
    "clean_graphics": "graphics",
    "retain_safe_private": "safe_private",
}
#: Table E.3.10-1 as (group, Private Creator, element low byte): what the Retain Safe Private
#: Option keeps.
SAFE_PRIVATE = frozenset((group, creator, low) for group, low, creator, *_ in TABLE_E3_10_1)

TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})
DUMMY_TEXT = "ANONYMIZED"
DUMMY: dict[str, str | int | float | bytes] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "PN": "ANONYMOUS",
    "UR": "http://example.invalid",
    "DS": "0",
    "IS": "0",
}
OB_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
#: Tags the engine writes itself (PS3.3 C.12.1, C.7.6.1).
PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
#: Values whose occurrences are removed from text by a ``C`` (Clean Descriptors etc.).
_IDENTIFYING = (
    0x00100010,  # Patient's Name
    0x00100020,  # Patient ID
    0x00101000,  # Other Patient IDs
    0x00101001,  # Other Patient Names
    0x00100030,  # Patient's Birth Date
    0x00101040,  # Patient's Address
    0x00080050,  # Accession Number
    0x00080090,  # Referring Physician's Name
    0x00081050,  # Performing Physician's Name
    0x00081070,  # Operators' Name
    0x00080080,  # Institution Name
    0x00080081,  # Institution Address
    0x00101060,  # Patient's Mother's Birth Name
    0x00102154,  # Patient's Telephone Numbers
)


@dataclass(frozen=True)
class Options:
    """The options of the profile chosen (PS3.15 E.3.1-E.3.11; Clean Pixel Data and Clean
    Recognizable Visual Features are not offered: see the module's docstring)."""

    retain_uids: bool = False
    retain_device: bool = False
    retain_institution: bool = False
    retain_patient_characteristics: bool = False
    retain_full_dates: bool = False
    modify_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    retain_safe_private: bool = False

    def __post_init__(self) -> None:
        if self.retain_full_dates and self.modify_dates:
            raise QueryError("choose full dates or modified dates, not both (PS3.15 E.3.6)")

    def chosen(self) -> tuple[str, ...]:
        return tuple(name for name in OPTION_COLUMNS if getattr(self, name))

    def columns(self) -> tuple[str, ...]:
        return tuple(OPTION_COLUMNS[name] for name in self.chosen())

    def codes(self) -> list[tuple[str, str]]:
        """The CID 7050 codes of the profile and the chosen options."""
        return [BASIC_PROFILE_CODE, *(OPTION_CODES[name] for name in self.chosen())]

    def method(self) -> str:
        """De-identification Method (0012,0063), LO: at most 64 characters."""
        names = {
            "retain_uids": "UIDs",
            "retain_device": "device",
            "retain_institution": "institution",
            "retain_patient_characteristics": "patient",
            "retain_full_dates": "dates",
            "modify_dates": "moddates",
            "clean_descriptors": "cleandesc",
            "clean_structured_content": "cleansc",
            "clean_graphics": "cleangr",
            "retain_safe_private": "safepriv",
        }
        chosen = "+".join(names[n] for n in self.chosen())
        return (f"PS3.15 E.1 Basic {EDITION}" + (f" {chosen}" if chosen else ""))[:64]


def resolve(actions: dict[str, str], columns: Iterable[str]) -> str:
    """The action for one attribute of Table E.1-1 under the chosen option columns: a ``K`` of
    a chosen option, else its ``C``, else the Basic Profile's action."""
    chosen = {actions[c] for c in columns if c in actions}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return actions["basic"]


def effective(action: str) -> str:
    """The one action a combined action becomes here (see the module's docstring)."""
    if action in ("Z/D", "X/D", "X/Z/D"):
        return "D"
    if action == "X/Z":
        return "Z"
    if action == "X/Z/U*":
        return "U"
    return action


@dataclass(frozen=True)
class Rules:
    """Table E.1-1 resolved for a set of options: an action per tag, and for the repeating
    groups (curves 50xx, overlays 60xx); whether safe private attributes are kept, and the
    action for a kept private UID."""

    by_tag: dict[int, str]
    curve: str
    overlay_data: str
    overlay_comments: str
    safe_private: bool = False
    private_uid: str = "U"

    @classmethod
    def for_options(cls, options: Options) -> Rules:
        columns = options.columns()
        by_tag: dict[int, str] = {}
        repeating: dict[str, str] = {}
        for tag, _name, actions in TABLE_E1_1:
            action = effective(resolve(actions, columns))
            if tag == "private":
                continue
            if "X" in tag:
                repeating[tag] = action
            else:
                by_tag[int(tag, 16)] = action
        return cls(
            by_tag,
            repeating["50XXXXXX"],
            repeating["60XX3000"],
            repeating["60XX4000"],
            safe_private=options.retain_safe_private,
            private_uid="K" if options.retain_uids else "U",
        )


# ---------------------------------------------------------------------------------------------
# Keyed values: UIDs, pseudonyms, date offsets


def _mac(secret: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(secret, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()


def remap_uid(secret: bytes, uid: str) -> str:
    """The replacement of ``uid``: ``2.25.`` and 128 bits of HMAC-SHA-256 as a decimal (PS3.5
    B.2; at most 44 characters). UIDs the standard defines (``1.2.840.10008.``) are kept."""
    uid = uid.strip()
    if not uid or uid.startswith("1.2.840.10008."):
        return uid
    return "2.25." + str(int.from_bytes(_mac(secret, "uid", uid)[:16], "big"))


def pseudonym(secret: bytes, patient_id: str, issuer: str = "") -> str:
    """The patient's pseudonym (the new Patient ID and Patient's Name): the same for the same
    patient at every call with the same secret."""
    digest = _mac(secret, "patient", f"{issuer}\0{patient_id}")
    return "ANON" + digest[:6].hex().upper()


def date_offset(secret: bytes, patient_id: str, issuer: str = "") -> int:
    """Days a patient's dates move (into the past, 1 to 10 years), the same for all their
    studies, so intervals within the patient are kept (PS3.15 E.3.6)."""
    digest = _mac(secret, "dates", f"{issuer}\0{patient_id}")
    return -(365 + int.from_bytes(digest[:4], "big") % 3288)


def shift_date(value: str, days: int) -> str | None:
    """A DA value ``YYYYMMDD`` moved by ``days``; None when it is not a full date."""
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        moved = date(int(value[:4]), int(value[4:6]), int(value[6:])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return moved.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str | None:
    """A DT value moved by ``days`` (its date part; time and offset kept)."""
    value = value.strip()
    moved = shift_date(value[:8], days)
    return None if moved is None else moved + value[8:]


# ---------------------------------------------------------------------------------------------
# The walk


@dataclass
class Keys:
    """What a de-identification derives its values from: the site secret, the patient's
    pseudonym and date offset, and the identifying values text is cleaned of."""

    secret: bytes
    patient_pseudonym: str
    days: int
    identifying: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What :func:`deidentify` did that a person should know."""

    review: list[str] = field(default_factory=list)


def identifying_values(ds: Dataset) -> tuple[str, ...]:
    """The identifying strings of ``ds`` whose occurrences a ``C`` removes from text: names
    (and their components), IDs, the birth date, the institution."""
    found: set[str] = set()
    for tag in _IDENTIFYING:
        elem = ds.get(tag)
        if elem is None or elem.VR == "SQ" or elem.value is None:
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        for value in values:
            text = str(value).strip()
            if not text:
                continue
            found.add(text)
            for part in text.replace("=", "^").split("^"):
                if len(part.strip()) >= 2:
                    found.add(part.strip())
    return tuple(sorted(found, key=len, reverse=True))


def clean_text(text: str, identifying: Iterable[str]) -> str:
    """``text`` with every (case-insensitive) occurrence of an identifying value removed."""
    lowered = text
    for value in identifying:
        start = 0
        while (at := lowered.lower().find(value.lower(), start)) >= 0:
            lowered = lowered[:at] + "***" + lowered[at + len(value) :]
            start = at + 3
    return lowered


def private_creator(ds: Dataset, tag: int) -> str | None:
    """The Private Creator (PS3.5 7.8.1) reserving the block of private ``tag`` in ``ds``, or
    None (no creator element: an orphan, which no table can call safe)."""
    group, element = tag >> 16, tag & 0xFFFF
    if element < 0x1000:
        return None
    elem = ds.get((group << 16) | (element >> 8))
    if elem is None or elem.value is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).rstrip(" \0")


def safe_private_tags(ds: Dataset) -> frozenset[int]:
    """The private tags of ``ds`` (this level) that Table E.3.10-1 calls safe, with the Private
    Creator elements of their blocks: matched by group, creator and element low byte, so a
    block moved to another number is still known (PS3.5 7.8.1)."""
    kept: set[int] = set()
    for tag in list(ds.keys()):
        group, element = tag >> 16, tag & 0xFFFF
        if not group % 2 or element < 0x1000:
            continue
        creator = private_creator(ds, tag)
        if creator and (group, creator, element & 0xFF) in SAFE_PRIVATE:
            kept.update((int(tag), (group << 16) | (element >> 8)))
    return frozenset(kept)


def _dummy(elem: DataElement, keys: Keys) -> object:
    if elem.tag in (PATIENT_ID, PATIENT_NAME):
        return keys.patient_pseudonym
    vr = elem.VR
    if vr == "UI":
        return _remap(elem.value, keys)
    if vr in DUMMY:
        return DUMMY[vr]
    if vr in TEXT_VRS:
        return DUMMY_TEXT
    if vr in OB_VRS:
        return b"\x00\x00"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"):
        return 0
    return None


def _remap(value: object, keys: Keys) -> object:
    if value is None:
        return None
    if isinstance(value, str):
        return remap_uid(keys.secret, value)
    return [remap_uid(keys.secret, str(v)) for v in value]  # type: ignore[attr-defined]


def _values(elem: DataElement) -> list[str]:
    if elem.value is None or elem.value == "":
        return []
    return [str(v) for v in elem.value] if elem.VM > 1 else [str(elem.value)]


def _set(elem: DataElement, values: list[str]) -> None:
    elem.value = values[0] if len(values) == 1 else values


def _clean(elem: DataElement, keys: Keys, outcome: Outcome) -> None:
    vr = elem.VR
    if vr == "DA":
        _set(elem, [shift_date(v, keys.days) or str(DUMMY["DA"]) for v in _values(elem)])
    elif vr == "DT":
        _set(elem, [shift_datetime(v, keys.days) or str(DUMMY["DT"]) for v in _values(elem)])
    elif vr in TEXT_VRS and elem.value is not None:
        _set(elem, [clean_text(v, keys.identifying) for v in _values(elem)])


class _Walker:
    def __init__(self, rules: Rules, keys: Keys, outcome: Outcome) -> None:
        self.rules = rules
        self.keys = keys
        self.outcome = outcome

    def walk(self, ds: Dataset, text: str = "") -> None:
        """Apply the rules to ``ds``; ``text`` is how free text not in the table is treated
        inside a sequence that is cleaned (``C``) or dummied (``D``)."""
        kept = safe_private_tags(ds) if self.rules.safe_private else frozenset()
        for tag in list(ds.keys()):
            elem = ds.get(tag)
            if elem is None:
                continue  # removed with its overlay group
            if tag in kept:
                self.safe_private(elem, text)
            else:
                self.element(ds, BaseTag(tag), elem, text)

    def safe_private(self, elem: DataElement, text: str) -> None:
        """A private attribute of Table E.3.10-1, or its block's Private Creator: kept; a
        sequence's items walked, a UID replaced (unless Retain UIDs)."""
        if elem.VR == "SQ":
            for item in elem.value:
                self.walk(item, text)
        elif elem.VR == "UI" and self.rules.private_uid == "U":
            elem.value = _remap(elem.value, self.keys)

    def element(self, ds: Dataset, tag: BaseTag, elem: DataElement, text: str) -> None:
        group = tag.group
        if tag.is_private or (tag.element == 0 and group > 2):
            del ds[tag]  # private, or a group length (retired, PS3.5 7.2) no longer right
            return
        if 0x5000 <= group <= 0x50FF and not group % 2:
            action = self.rules.curve
        elif 0x6000 <= group <= 0x60FF and not group % 2:
            if tag.element == 0x3000:
                action = self.rules.overlay_data
                if action == "X":
                    for other in [e.tag for e in ds if e.tag.group == group]:
                        del ds[other]
                    return
            elif tag.element == 0x4000:
                action = self.rules.overlay_comments
            else:
                return
        else:
            found = self.rules.by_tag.get(int(tag))
            if found is None:
                self.untabled(elem, text)
                return
            action = found
        self.apply(ds, tag, elem, action, text)

    def untabled(self, elem: DataElement, text: str) -> None:
        """An attribute Table E.1-1 does not list: kept (its items walked)."""
        if elem.VR == "SQ":
            for item in elem.value:
                self.walk(item, text)
        elif text == "D" and elem.VR in TEXT_VRS and elem.value:
            elem.value = _dummy(elem, self.keys)
        elif text == "C" and (elem.VR in TEXT_VRS or elem.VR in ("DA", "DT")):
            _clean(elem, self.keys, self.outcome)

    def apply(self, ds: Dataset, tag: BaseTag, elem: DataElement, action: str, text: str) -> None:
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif action == "U":
            if elem.VR == "SQ":
                for item in elem.value:
                    self.walk(item, text)
            else:
                elem.value = _remap(elem.value, self.keys)
        elif action == "D":
            if elem.VR == "SQ":
                for item in elem.value:
                    self.walk(item, "D")
            else:
                elem.value = _dummy(elem, self.keys)
        elif action == "C":
            if elem.VR == "SQ":
                for item in elem.value:
                    self.walk(item, text or "C")
            elif elem.VR in OB_VRS:
                self.outcome.review.append(f"{elem.name} kept by a Clean option")
            else:
                _clean(elem, self.keys, self.outcome)
        elif action == "K" and elem.VR == "SQ":
            for item in elem.value:
                self.walk(item, text)


def deidentify(ds: Dataset, options: Options, keys: Keys) -> Outcome:
    """De-identify ``ds`` in place (its File Meta follows the new SOP Instance UID) and mark it
    as de-identified (PS3.3 C.7.1.1: Patient Identity Removed, De-identification Method and
    its Code Sequence; C.12.1: Longitudinal Temporal Information Modified)."""
    outcome = Outcome()
    if not keys.identifying:
        keys.identifying = identifying_values(ds)
    _Walker(Rules.for_options(options), keys, outcome).walk(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = options.method()
    method_codes = Sequence()
    for value, meaning in options.codes():
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        method_codes.append(item)
    ds.DeidentificationMethodCodeSequence = method_codes
    if options.modify_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    elif options.retain_full_dates:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle"):
            if keyword in meta:
                delattr(meta, keyword)
        for tag in [e.tag for e in meta if e.tag.is_private]:
            del meta[tag]
    return outcome


# ---------------------------------------------------------------------------------------------
# Burned-in annotation (PS3.15 E.3.1, Clean Pixel Data is not done here: such instances are
# flagged for review)

#: SOP classes that commonly carry text in their pixels: ultrasound, secondary capture (screen
#: captures), encapsulated documents, video and visible light photography.
_BURNED_IN_CLASS_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.6.",  # ultrasound
    "1.2.840.10008.5.1.4.1.1.3.1",  # ultrasound multi-frame
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture (all)
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF, CDA, STL...
    "1.2.840.10008.5.1.4.1.1.77.1.",  # visible light (endoscopy, photography, video)
)
_BURNED_IN_MODALITIES = frozenset({"US", "OT", "XC", "ES", "DOC", "SC", "GM", "SM"})


def burned_in_reason(ds: Dataset) -> str | None:
    """Why ``ds`` needs a person to look at its pixels before release, or None: Burned In
    Annotation (0028,0301) is YES, or it is absent and the SOP class or modality commonly
    carries burned-in text."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "Burned In Annotation is YES"
    if flag == "NO":
        return None
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if any(sop_class.startswith(p) for p in _BURNED_IN_CLASS_PREFIXES):
        return "Burned In Annotation absent; its SOP class often carries burned-in text"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in _BURNED_IN_MODALITIES:
        return f"Burned In Annotation absent; modality {modality} often carries burned-in text"
    return None
