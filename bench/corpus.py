"""Synthetic corpora, generated once with deterministic seeds and cached on disk.

* ``ct``: CT series of 512x512 16-bit slices (a body phantom with noise), one study per patient;
* ``small``: many small 64x64 images in many studies, for index-bound work (queries, per-instance
  overhead), with names, dates and modalities drawn from fixed lists;
* ``big``: one multi-frame object, streamed to disk, never held in memory.

Every UID is derived from the seed (``generate_uid`` with entropy sources), so a corpus written
twice is the same. A corpus folder holds ``manifest.json``, written last: a folder without it,
or with other parameters, is regenerated. No patient data is involved anywhere.
"""

from __future__ import annotations

import calendar
import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
_SOP_BY_MODALITY = {"CT": CT_IMAGE, "MR": MR_IMAGE, "CR": CR_IMAGE}
MANIFEST = "manifest.json"
_GENERATOR = 2  # bump when the generated content changes, to invalidate caches

SURNAMES = [
    "ADAMS",
    "BAKER",
    "CARTER",
    "DAVIS",
    "EVANS",
    "FISCHER",
    "GARCIA",
    "HUGHES",
    "IBANEZ",
    "JONES",
    "KOWALSKI",
    "LAMBERT",
    "MARTIN",
    "NGUYEN",
    "OKAFOR",
    "PETERS",
    "QUINN",
    "ROSSI",
    "SMITH",
    "TANAKA",
    "URBAN",
    "VARGAS",
    "WAGNER",
    "XAVIER",
    "YOUNG",
    "ZIMMER",
]
GIVEN = [
    "ALEX",
    "BOB",
    "CLARA",
    "DINA",
    "EMIL",
    "FRIDA",
    "GUS",
    "HANNA",
    "IVO",
    "JUNE",
    "KAI",
    "LENA",
    "MILO",
    "NORA",
    "OTTO",
    "PIA",
]
MODALITIES = ("CT", "MR", "CR", "US", "DX", "MG", "PT", "NM")
MODALITY_WEIGHTS = (0.25, 0.2, 0.15, 0.1, 0.1, 0.08, 0.07, 0.05)
FIRST_DATE = date(2015, 1, 1)
DATE_SPAN_DAYS = 3652


@dataclass(frozen=True)
class Query:
    """One benchmark query on the small corpus, with its expected number of matches.

    ``level`` and ``keys`` make the C-FIND identifier (Study Root); ``qido_path`` and
    ``qido_params`` the QIDO-RS request (PS3.18 10.6). ``keys`` is None when DIMSE cannot
    express the query (C-FIND has no paging).
    """

    name: str
    title: str
    level: str
    keys: dict[str, str] | None
    qido_path: str
    qido_params: dict[str, str]
    expected: int


@dataclass
class Corpus:
    """A generated corpus: its files, their total size and what the scenarios need to know."""

    kind: str
    root: Path
    params: dict[str, Any]
    files: list[str]
    total_bytes: int
    studies: list[dict[str, Any]] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [self.root / name for name in self.files]

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def megabytes(self) -> float:
        return self.total_bytes / 1e6


@dataclass(frozen=True)
class Sizes:
    """How big each corpus is: the full issue sizes, or tiny ones for a smoke run."""

    ct_patients: int = 5
    ct_slices: int = 100
    ct_matrix: int = 512
    small_studies: int = 2000
    small_per_study: int = 10
    small_matrix: int = 64
    big_frames: int = 1024  # frames of 1024x1024 8-bit: 1 MiB each
    index_instances: int = 1_000_000  # scenario 6: rows in the index, no files
    seed: int = 20240601

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            ct_patients=2,
            ct_slices=4,
            small_studies=12,
            small_per_study=2,
            big_frames=4,
            index_instances=20_000,
        )


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def _load_cached(root: Path, kind: str, params: dict[str, Any]) -> Corpus | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if data.get("kind") != kind or data.get("params") != params:
        return None
    return Corpus(
        kind,
        root,
        params,
        list(data["files"]),
        int(data["total_bytes"]),
        list(data.get("studies", [])),
        [Query(**q) for q in data.get("queries", [])],
    )


def _save(corpus: Corpus) -> Corpus:
    document = {
        "kind": corpus.kind,
        "params": corpus.params,
        "files": corpus.files,
        "total_bytes": corpus.total_bytes,
        "studies": corpus.studies,
        "queries": [asdict(q) for q in corpus.queries],
    }
    tmp = corpus.root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(corpus.root / MANIFEST)
    return corpus


def _fresh_dir(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def _phantom(matrix: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """A CT slice in stored values (HU + 1024): air, an elliptic body, a spine, noise."""
    yy, xx = np.mgrid[0:matrix, 0:matrix].astype(np.float32) / (matrix / 2) - 1.0
    hu = np.full((matrix, matrix), -1000.0, dtype=np.float32)
    scale = 0.85 + 0.1 * np.sin(z * np.pi)
    hu[(xx / (0.8 * scale)) ** 2 + (yy / (0.6 * scale)) ** 2 < 1] = 40.0
    hu[(xx - 0.3) ** 2 + (yy + 0.1) ** 2 < 0.02 + 0.01 * z] = 60.0  # an organ
    hu[xx**2 + (yy - 0.35) ** 2 < 0.012] = 700.0  # a vertebra
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    stored: np.ndarray = np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)
    return stored


def _image_module(ds: Dataset, pixels: np.ndarray, bits: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()


def ct_corpus(root: Path, sizes: Sizes) -> Corpus:
    """Corpus (a): ``ct_patients`` CT studies of ``ct_slices`` slices each."""
    params = {
        "patients": sizes.ct_patients,
        "slices": sizes.ct_slices,
        "matrix": sizes.ct_matrix,
        "seed": sizes.seed,
        "generator": _GENERATOR,
    }
    cached = _load_cached(root, "ct", params)
    if cached:
        return cached
    _fresh_dir(root)
    rng = np.random.default_rng(sizes.seed)
    files: list[str] = []
    studies: list[dict[str, Any]] = []
    total = 0
    for p in range(sizes.ct_patients):
        study_uid = _uid("ct-study", sizes.seed, p)
        series_uid = _uid("ct-series", sizes.seed, p)
        folder = root / f"P{p:03d}"
        folder.mkdir()
        study_bytes = 0
        for s in range(sizes.ct_slices):
            ds = Dataset()
            ds.SOPClassUID = CT_IMAGE
            ds.SOPInstanceUID = _uid("ct-image", sizes.seed, p, s)
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = _uid("ct-frame", sizes.seed, p)
            ds.PatientID = f"CT{p:04d}"
            ds.PatientName = f"PHANTOM^CT{p}"
            ds.PatientBirthDate = "19700101"
            ds.PatientSex = "O"
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
            ds.StudyTime = ds.SeriesTime = "101500"
            ds.ContentTime = f"1015{s % 60:02d}"
            ds.AccessionNumber = f"CTA{p:05d}"
            ds.StudyID = str(p + 1)
            ds.StudyDescription = "Synthetic CT phantom"
            ds.SeriesDescription = "Axial 1mm"
            ds.ReferringPhysicianName = "REFERRER^BENCH"
            ds.Modality = "CT"
            ds.Manufacturer = "Vesalius bench"
            ds.SeriesNumber = 1
            ds.InstanceNumber = s + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.ImagePositionPatient = [-250.0, -250.0, float(-s)]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.SliceThickness = 1.0
            ds.SliceLocation = float(-s)
            ds.PixelSpacing = [500.0 / sizes.ct_matrix, 500.0 / sizes.ct_matrix]
            ds.KVP = 120
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            z = s / max(1, sizes.ct_slices - 1)
            _image_module(ds, _phantom(sizes.ct_matrix, z, rng), 16)
            _file_meta(ds)
            name = f"P{p:03d}/IM{s:04d}.dcm"
            ds.save_as(root / name, enforce_file_format=True)
            size = (root / name).stat().st_size
            study_bytes += size
            files.append(name)
        total += study_bytes
        studies.append(
            {
                "PatientID": f"CT{p:04d}",
                "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series_uid,
                "instances": sizes.ct_slices,
                "bytes": study_bytes,
            }
        )
    return _save(Corpus("ct", root, params, files, total, studies))


def _small_studies(sizes: Sizes) -> list[dict[str, Any]]:
    """The study table of the small corpus: who, when, which modality."""
    rng = np.random.default_rng(sizes.seed + 1)
    patients = max(1, sizes.small_studies // 2)
    names = [
        f"{SURNAMES[int(rng.integers(len(SURNAMES)))]}^{GIVEN[int(rng.integers(len(GIVEN)))]}"
        for _ in range(patients)
    ]
    studies = []
    for s in range(sizes.small_studies):
        p = s % patients
        day = FIRST_DATE + timedelta(days=int(rng.integers(DATE_SPAN_DAYS)))
        modality = str(rng.choice(MODALITIES, p=MODALITY_WEIGHTS))
        studies.append(
            {
                "index": s,
                "PatientID": f"SM{p:06d}",
                "PatientName": names[p],
                "StudyDate": day.strftime("%Y%m%d"),
                "StudyTime": f"{int(rng.integers(7, 19)):02d}{int(rng.integers(60)):02d}00",
                "Modality": modality,
                "StudyInstanceUID": _uid("sm-study", sizes.seed, s),
                "series": min(2, sizes.small_per_study),
                "instances": sizes.small_per_study,
            }
        )
    return studies


def _small_queries(studies: list[dict[str, Any]]) -> list[Query]:
    """The benchmark queries, with expected counts computed from the study table."""
    probe = studies[len(studies) // 2]
    prefix = probe["PatientName"].split("^")[0][:3]
    month = probe["StudyDate"][:6]
    last = calendar.monthrange(int(month[:4]), int(month[4:]))[1]
    date_range = f"{month}01-{month}{last:02d}"
    offset = min(1000, len(studies) // 2)
    study_keys = {
        "StudyDate": "",
        "StudyTime": "",
        "AccessionNumber": "",
        "PatientName": "",
        "PatientID": "",
        "StudyDescription": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedInstances": "",
    }
    include = {"includefield": "00081030,00080060,00201208"}

    def count(pred: Any) -> int:
        return sum(1 for st in studies if pred(st))

    return [
        Query(
            "patient-id",
            "PatientID exact",
            "STUDY",
            {**study_keys, "PatientID": probe["PatientID"]},
            "/studies",
            {"PatientID": probe["PatientID"], **include},
            count(lambda st: st["PatientID"] == probe["PatientID"]),
        ),
        Query(
            "patient-name",
            f"PatientName wildcard ({prefix}*)",
            "STUDY",
            {**study_keys, "PatientName": f"{prefix}*"},
            "/studies",
            {"PatientName": f"{prefix}*", **include},
            count(lambda st: st["PatientName"].startswith(prefix)),
        ),
        Query(
            "study-date",
            "StudyDate range (1 month)",
            "STUDY",
            {**study_keys, "StudyDate": date_range},
            "/studies",
            {"StudyDate": date_range, **include},
            count(lambda st: st["StudyDate"][:6] == month),
        ),
        Query(
            "modality",
            "ModalitiesInStudy = MR",
            "STUDY",
            {**study_keys, "ModalitiesInStudy": "MR"},
            "/studies",
            {"ModalitiesInStudy": "MR", **include},
            count(lambda st: st["Modality"] == "MR"),
        ),
        Query(
            "page",
            f"100 studies at offset {offset}",
            "STUDY",
            None,
            "/studies",
            {"limit": "100", "offset": str(offset), **include},
            min(100, len(studies) - offset),
        ),
        Query(
            "series-of-study",
            "series of one study",
            "SERIES",
            {
                "StudyInstanceUID": probe["StudyInstanceUID"],
                "SeriesInstanceUID": "",
                "Modality": "",
                "SeriesNumber": "",
                "SeriesDescription": "",
                "NumberOfSeriesRelatedInstances": "",
            },
            f"/studies/{probe['StudyInstanceUID']}/series",
            {},
            probe["series"],
        ),
    ]


def small_corpus(root: Path, sizes: Sizes) -> Corpus:
    """Corpus (b): ``small_studies`` studies of ``small_per_study`` 64x64 images each."""
    params = {
        "studies": sizes.small_studies,
        "per_study": sizes.small_per_study,
        "matrix": sizes.small_matrix,
        "seed": sizes.seed,
        "generator": _GENERATOR,
    }
    cached = _load_cached(root, "small", params)
    if cached:
        return cached
    _fresh_dir(root)
    studies = _small_studies(sizes)
    rng = np.random.default_rng(sizes.seed + 2)
    m = sizes.small_matrix
    files: list[str] = []
    total = 0
    for st in studies:
        s = st["index"]
        folder = root / f"{s // 100:03d}"
        folder.mkdir(exist_ok=True)
        base = rng.integers(0, 4000, size=(m, m), dtype=np.uint16)
        for i in range(sizes.small_per_study):
            series = i % st["series"]
            ds = Dataset()
            ds.SOPClassUID = _SOP_BY_MODALITY.get(st["Modality"], SECONDARY_CAPTURE)
            ds.SOPInstanceUID = _uid("sm-image", sizes.seed, s, i)
            ds.StudyInstanceUID = st["StudyInstanceUID"]
            ds.SeriesInstanceUID = _uid("sm-series", sizes.seed, s, series)
            ds.PatientID = st["PatientID"]
            ds.PatientName = st["PatientName"]
            ds.PatientBirthDate = "19800101"
            ds.PatientSex = "F" if s % 2 else "M"
            ds.StudyDate = ds.SeriesDate = st["StudyDate"]
            ds.StudyTime = ds.SeriesTime = st["StudyTime"]
            ds.AccessionNumber = f"SA{s:07d}"
            ds.StudyID = str(s + 1)
            ds.StudyDescription = f"Synthetic {st['Modality']} study"
            ds.SeriesDescription = f"Series {series + 1}"
            ds.ReferringPhysicianName = "REFERRER^BENCH"
            ds.Modality = st["Modality"]
            ds.SeriesNumber = series + 1
            ds.InstanceNumber = i + 1
            if ds.SOPClassUID == SECONDARY_CAPTURE:
                ds.ConversionType = "WSD"
            _image_module(ds, base + np.uint16(i), 16)
            _file_meta(ds)
            name = f"{s // 100:03d}/{s:06d}_{i:03d}.dcm"
            ds.save_as(root / name, enforce_file_format=True)
            total += (root / name).stat().st_size
            files.append(name)
    corpus = Corpus("small", root, params, files, total, studies, _small_queries(studies))
    return _save(corpus)


def big_corpus(root: Path, sizes: Sizes) -> Corpus:
    """Corpus (c): one Multi-frame Grayscale Byte SC object of ``big_frames`` MiB, streamed."""
    params = {"frames": sizes.big_frames, "seed": sizes.seed, "generator": _GENERATOR}
    cached = _load_cached(root, "big", params)
    if cached:
        return cached
    _fresh_dir(root)
    frame = 1024 * 1024
    ds = Dataset()
    ds.SOPClassUID = MULTIFRAME_BYTE_SC
    ds.SOPInstanceUID = _uid("big-image", sizes.seed)
    ds.StudyInstanceUID = _uid("big-study", sizes.seed)
    ds.SeriesInstanceUID = _uid("big-series", sizes.seed)
    ds.PatientID = "BIG0001"
    ds.PatientName = "PHANTOM^BIG"
    ds.StudyDate = "20240115"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "BIGA1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.NumberOfFrames = sizes.big_frames
    ds.Rows = ds.Columns = 1024
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    _file_meta(ds)
    path = root / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    rng = np.random.default_rng(sizes.seed + 3)
    chunk = rng.integers(0, 256, size=frame, dtype=np.uint8).tobytes()
    length = frame * sizes.big_frames
    with open(path, "ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00" + length.to_bytes(4, "little"))
        for _ in range(sizes.big_frames):
            fh.write(chunk)
    study = {
        "PatientID": "BIG0001",
        "StudyInstanceUID": str(ds.StudyInstanceUID),
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "instances": 1,
        "bytes": path.stat().st_size,
    }
    return _save(Corpus("big", root, params, ["big.dcm"], path.stat().st_size, [study]))


class Corpora:
    """The three corpora under one folder, each generated on first use."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root = root
        self.sizes = sizes
        self._cache: dict[str, Corpus] = {}

    def get(self, kind: str) -> Corpus:
        if kind not in self._cache:
            makers = {"ct": ct_corpus, "small": small_corpus, "big": big_corpus}
            self._cache[kind] = makers[kind](self.root / kind, self.sizes)
        return self._cache[kind]

    def describe(self) -> dict[str, str]:
        """One line per corpus generated so far, for the report."""
        s = self.sizes
        words = {
            "ct": f"(a) {s.ct_patients * s.ct_slices} CT images {s.ct_matrix}x{s.ct_matrix} "
            f"16-bit, {s.ct_patients} patients with one study of {s.ct_slices} slices",
            "small": f"(b) {s.small_studies * s.small_per_study} images {s.small_matrix}x"
            f"{s.small_matrix} 16-bit in {s.small_studies} studies of {s.small_per_study}, "
            f"{max(1, s.small_studies // 2)} patients",
            "big": f"(c) one multi-frame object of {s.big_frames} frames 1024x1024 8-bit",
        }
        return {
            kind: f"{words[kind]}: {c.count} file{'s' if c.count > 1 else ''}, "
            f"{c.megabytes:,.0f} MB"
            for kind, c in self._cache.items()
        }
