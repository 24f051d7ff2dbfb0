"""The DICOMDIR of a file set (PS3.10 7.2, PS3.3 F: the Basic Directory IOD), written record
by record onto a seekable file: PATIENT, STUDY, SERIES and IMAGE records depth first, each
record's offsets (PS3.3 F.3.2.1: from the first byte of the file, the preamble's) patched in
once the record they point at is written. So a directory of any size is built holding only
the open chain of one patient's records, never the whole file set.

Encoding: Explicit VR Little Endian, the File Meta Information of PS3.10 7.1 (Media Storage
Directory Storage, 1.2.840.10008.1.3.10), records as items of defined length in a sequence of
undefined length. File IDs (PS3.10 8.5, 8.2): at most 8 components of 1 to 8 characters of
``A-Z 0-9 _``; :func:`file_id_component` makes them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import DIRECTORY_RECORDERS
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from vesalius.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: PS3.10 8.2: the characters of a File ID component; 8.5: at most 8 of them, 8 components.
FILE_ID_CHARACTERS = re.compile(r"^[A-Z0-9_]{1,8}$")
MAX_COMPONENTS = 8
#: Value lengths (characters) of the VRs used here (PS3.5 6.2); longer index values are cut.
_MAX_LENGTH = {"AE": 16, "CS": 16, "DA": 8, "IS": 12, "LO": 64, "PN": 64, "SH": 16, "TM": 14}
_LONG_VRS = {"OB", "SQ", "UN", "UT", "UC", "UR", "OW"}
#: Record levels: where each record type sits in the tree (PS3.3 F.4).
LEVELS = {"PATIENT": 0, "STUDY": 1, "SERIES": 2}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")

Value = str | int | bytes | Sequence[str]


def file_id_component(prefix: str, number: int) -> str:
    """A File ID component: ``prefix`` (one letter) and ``number`` in at most 8 characters
    (e.g. ``I0000012``)."""
    text = f"{prefix}{number:0{8 - len(prefix)}d}"
    if not FILE_ID_CHARACTERS.match(text):
        raise ValueError(f"{text!r} is not a File ID component (PS3.10 8.2)")
    return text


def element(tag: int, vr: str, value: Value) -> bytes:
    """One data element, Explicit VR Little Endian (PS3.5 7.1.2), padded to an even length
    (UI with NUL, text with space)."""
    if isinstance(value, bytes):
        body = value + b"\0" * (len(value) % 2)
    elif vr == "UL":
        body = struct.pack("<I", int(value))  # type: ignore[arg-type]
    elif vr == "US":
        body = struct.pack("<H", int(value))  # type: ignore[arg-type]
    else:
        values = [value] if isinstance(value, (str, int)) else list(value)
        body = "\\".join(str(v) for v in values).encode("utf-8")
        if len(body) % 2:
            body += b"\0" if vr == "UI" else b" "
    group, number = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, number, vr.encode(), 0, len(body)) + body
    return struct.pack("<HH2sH", group, number, vr.encode(), len(body)) + body


def text(value: str, vr: str) -> str:
    """An index value made fit for ``vr``: control characters and backslashes (the value
    separator) become spaces, cut to the VR's length, trailing spaces dropped."""
    clean = _CONTROL.sub(" ", value or "").strip()
    return clean[: _MAX_LENGTH.get(vr, 64)].rstrip()


@dataclass
class _Open:
    """A written record whose offsets may still be patched: where the values of its "next"
    and "lower" fields are."""

    next_at: int
    lower_at: int


@dataclass
class DicomdirWriter:
    """Writes a DICOMDIR onto ``out`` (seekable, empty): :meth:`start`, :meth:`add` each
    record depth first (a PATIENT, its STUDYs, each one's SERIES, each one's leaf records),
    then :meth:`finish`."""

    out: BinaryIO
    instance_uid: str
    file_set_id: str = "VESALIUS"
    records: int = 0
    _chain: list[_Open] = field(default_factory=list)
    _first_root_at: int = 0
    _last_root_at: int = 0
    _first_root: int = 0

    def start(self) -> None:
        meta = b"".join(
            (
                element(0x00020001, "OB", b"\0\1"),
                element(0x00020002, "UI", MEDIA_DIRECTORY_STORAGE),
                element(0x00020003, "UI", self.instance_uid),
                element(0x00020010, "UI", EXPLICIT_VR_LITTLE_ENDIAN),
                element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
                element(0x00020013, "SH", IMPLEMENTATION_VERSION),
            )
        )
        self.out.write(b"\0" * 128 + b"DICM")
        self.out.write(element(0x00020000, "UL", len(meta)) + meta)
        self.out.write(element(0x00041130, "CS", text(self.file_set_id, "CS")))
        self._first_root_at = self.out.tell() + 8
        self.out.write(element(0x00041200, "UL", 0))
        self._last_root_at = self.out.tell() + 8
        self.out.write(element(0x00041202, "UL", 0))
        self.out.write(element(0x00041212, "US", 0))  # File-set Consistency Flag: none
        self.out.write(struct.pack("<HH2sHI", 0x0004, 0x1220, b"SQ", 0, 0xFFFFFFFF))

    def add(
        self,
        record_type: str,
        keys: Sequence[bytes],
        *,
        file_id: Sequence[str] = (),
        sop_class_uid: str = "",
        sop_instance_uid: str = "",
        transfer_syntax_uid: str = "",
        character_set: str = "",
    ) -> None:
        """Write one record of ``record_type`` with its ``keys`` (encoded elements in tag
        order, after group 0004 and Specific Character Set); a record with ``file_id``
        references that file (PS3.3 F.3.2.2)."""
        depth = LEVELS.get(record_type, len(LEVELS))
        if depth > len(self._chain):
            raise ValueError(f"a {record_type} record needs its parent records first")
        head = [
            element(0x00041400, "UL", 0),
            element(0x00041410, "US", 0xFFFF),
            element(0x00041420, "UL", 0),
            element(0x00041430, "CS", record_type),
        ]
        if file_id:
            if len(file_id) > MAX_COMPONENTS or not all(
                FILE_ID_CHARACTERS.match(c) for c in file_id
            ):
                raise ValueError(f"{file_id!r} is not a File ID (PS3.10 8.5)")
            head += [
                element(0x00041500, "CS", list(file_id)),
                element(0x00041510, "UI", sop_class_uid),
                element(0x00041511, "UI", sop_instance_uid),
                element(0x00041512, "UI", transfer_syntax_uid),
            ]
        if character_set:
            head.append(element(0x00080005, "CS", character_set))
        body = b"".join(head) + b"".join(keys)
        offset = self.out.tell()
        self.out.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(body)))
        start = self.out.tell()
        self.out.write(body)
        record = _Open(next_at=start + 8, lower_at=start + 8 + 12 + 10)
        # link it: from its previous sibling, or from its parent when it is the first child
        if depth < len(self._chain):
            self._patch(self._chain[depth].next_at, offset)
            del self._chain[depth:]
        elif depth:
            self._patch(self._chain[depth - 1].lower_at, offset)
        if depth == 0:
            if not self._first_root:
                self._first_root = offset
                self._patch(self._first_root_at, offset)
            self._patch(self._last_root_at, offset)
        self._chain.append(record)
        self.records += 1

    def finish(self) -> None:
        self.out.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))

    def _patch(self, at: int, value: int) -> None:
        end = self.out.tell()
        self.out.seek(at)
        self.out.write(struct.pack("<I", value))
        self.out.seek(end)


# -- records of non-image instances (PS3.3 F.4, F.5) -------------------------------------------

#: SOP Class keywords (PS3.6 Annex A) whose record type is not IMAGE, by exact keyword.
_RECORD_BY_KEYWORD = {
    "KeyObjectSelectionDocumentStorage": "KEY OBJECT DOC",
    "BasicStructuredDisplayStorage": "PRESENTATION",
    "ProcedureLogStorage": "SR DOCUMENT",
    "SpectaclePrescriptionReportStorage": "SR DOCUMENT",
    "MacularGridThicknessAndVolumeReportStorage": "SR DOCUMENT",
    "RTDoseStorage": "RT DOSE",
    "RTStructureSetStorage": "RT STRUCTURE SET",
    "RTPlanStorage": "RT PLAN",
    "RTIonPlanStorage": "RT PLAN",
    "MRSpectroscopyStorage": "SPECTROSCOPY",
    "RawDataStorage": "RAW DATA",
    "SpatialFiducialsStorage": "FIDUCIAL",
    "RealWorldValueMappingStorage": "VALUE MAP",
    "StereometricRelationshipStorage": "STEREOMETRIC",
    "SurfaceSegmentationStorage": "SURFACE",
    "TractographyResultsStorage": "TRACT",
    "ContentAssessmentResultsStorage": "ASSESSMENT",
}
#: ... and by a part of the keyword, in this order.
_RECORD_BY_PART = (
    ("SRStorage", "SR DOCUMENT"),
    ("PresentationState", "PRESENTATION"),
    ("Waveform", "WAVEFORM"),
    ("Encapsulated", "ENCAP DOC"),
    ("TreatmentRecord", "RT TREAT RECORD"),
    ("TreatmentSummaryRecord", "RT TREAT RECORD"),
    ("SpatialRegistration", "REGISTRATION"),
    ("MeasurementsStorage", "MEASUREMENT"),
    ("SurfaceScan", "SURFACE SCAN"),
)


def record_type(sop_class_uid: str) -> str:
    """The Directory Record Type of an instance of ``sop_class_uid`` below a SERIES record
    (PS3.3 Table F.4-1): IMAGE unless the class is one of the non-image objects."""
    keyword = UID(sop_class_uid).keyword if sop_class_uid else ""
    if keyword in _RECORD_BY_KEYWORD:
        return _RECORD_BY_KEYWORD[keyword]
    for part, kind in _RECORD_BY_PART:
        if part in keyword:
            return kind
    return "IMAGE"


def file_record_keys(kind: str, fh: BinaryIO) -> list[bytes]:
    """:func:`record_keys` of the Part 10 file open in ``fh`` (its header only is read)."""
    try:
        ds = dcmread(fh, stop_before_pixels=True, defer_size=1 << 16)
    except (InvalidDicomError, ValueError, EOFError) as exc:
        raise ValueError(f"the file cannot be read: {exc}") from exc
    return record_keys(kind, ds)


def record_keys(kind: str, ds: Dataset) -> list[bytes]:
    """The keys of a ``kind`` record (not IMAGE) from the instance's header ``ds`` (PS3.3 F.5,
    as pydicom's recorders read them), encoded with a Specific Character Set of ISO_IR 192
    where a value is not ASCII. A Content Sequence keeps only the concept modifiers of the
    document title (HAS CONCEPT MOD items: F.5.24, F.5.27), never the whole document.
    ValueError when the instance lacks a Type 1 key."""
    record = DIRECTORY_RECORDERS[kind](ds)
    if "ContentSequence" in record:
        modifiers = [
            item
            for item in record.ContentSequence
            if item.get("RelationshipType", "") == "HAS CONCEPT MOD"
        ]
        if modifiers:
            record.ContentSequence = modifiers
        else:
            del record.ContentSequence
    if not all(str(e.value).isascii() for e in record.iterall() if e.VR != "SQ"):
        record.SpecificCharacterSet = "ISO_IR 192"
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False  # explicit VR little endian
    write_dataset(out, record)
    return [out.getvalue()]
