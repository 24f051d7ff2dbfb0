"""Shared by the query tests: a small known corpus, a scratch database per backend, findscu.

The corpus holds seven patients (ASCII, Latin-1, UTF-8 and ISO 2022 IR 87 Japanese names),
eight studies, nine series and twelve instances with values chosen to tell every matching rule
apart. UIDs are fixed (``study_uid(1)``...) so tests name what they expect.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bench.tools import dcmtk_tool
from pydicom import dcmread
from pydicom.dataset import Dataset

from conftest import RunningServer
from synth import MR_IMAGE_STORAGE, SECONDARY_CAPTURE_STORAGE, make_instance

ROOT = "1.2.826.0.1.3680043.10.1138"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def study_uid(n: int) -> str:
    return f"{ROOT}.1.{n}"


def series_uid(n: int) -> str:
    return f"{ROOT}.2.{n}"


def sop_uid(series: int, n: int) -> str:
    return f"{ROOT}.3.{series}.{n}"


JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"
LATIN1 = "Buc^Jérôme"
CHINESE = "Wang^XiaoDong=王^小東"

PATIENTS: dict[str, dict[str, Any]] = {
    "P1": {
        "PatientID": "DOE-1",
        "PatientName": "Doe^John",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
    },
    "P2": {
        "PatientID": "SMITH-2",
        "IssuerOfPatientID": "HOSP",
        "PatientName": "Smith^Jane",
        "PatientBirthDate": "19851231",
        "PatientSex": "F",
    },
    "P3": {
        "PatientID": "YAMADA-3",
        "PatientName": JAPANESE,
        "SpecificCharacterSet": ["", "ISO 2022 IR 87"],
    },
    "P4": {"PatientID": "BUC-4", "PatientName": LATIN1, "SpecificCharacterSet": "ISO_IR 100"},
    "P5": {"PatientID": "WANG-5", "PatientName": CHINESE, "SpecificCharacterSet": "ISO_IR 192"},
    "P6": {"PatientID": "ID_1%", "PatientName": "Percent^Pat"},
    "P7": {"PatientID": "IDX1Y", "PatientName": "Other^Pat"},
}

#: (patient, study number, study attributes, [(series number, attributes, instance count)])
STUDIES: list[tuple[str, int, dict[str, Any], list[tuple[int, dict[str, Any], int]]]] = [
    (
        "P1",
        1,
        {
            "StudyDate": "20240105",
            "StudyTime": "101500",
            "AccessionNumber": "ACC1",
            "StudyID": "S1",
            "StudyDescription": "CT chest",
            "ReferringPhysicianName": "Welby^Marcus",
        },
        [
            (
                1,
                {
                    "Modality": "CT",
                    "SeriesNumber": 1,
                    "SeriesDate": "20240105",
                    "SeriesTime": "1016",
                    "BodyPartExamined": "CHEST",
                    "StationName": "CT01",
                    "InstitutionName": "General Hospital",
                    "PerformedProcedureStepStartDate": "20240105",
                    "PerformedProcedureStepStartTime": "101530",
                    "RequestAttributesSequence": [
                        {"RequestedProcedureID": "RP100", "ScheduledProcedureStepID": "SPS100"}
                    ],
                },
                3,
            ),
            (2, {"Modality": "MR", "SeriesNumber": 2, "sop_class_uid": MR_IMAGE_STORAGE}, 1),
        ],
    ),
    (
        "P1",
        2,
        {
            "StudyDate": "20240107",
            "StudyTime": "083000",
            "AccessionNumber": "ACC2",
            "StudyDescription": "Follow-up 50%_done",
            "ReferringPhysicianName": "welby^marcus",
        },
        [(3, {"Modality": "OT", "sop_class_uid": SECONDARY_CAPTURE_STORAGE}, 1)],
    ),
    (
        "P2",
        3,
        {
            "StudyDate": "20231231",
            "StudyTime": "235959",
            "AccessionNumber": "ACC3",
            "StudyDescription": "MR brain",
            "ReferringPhysicianName": "House^Gregory",
        },
        [
            (
                4,
                {
                    "Modality": "MR",
                    "sop_class_uid": MR_IMAGE_STORAGE,
                    "RequestAttributesSequence": [{"RequestedProcedureID": "RP200"}],
                },
                2,
            )
        ],
    ),
    (
        "P3",
        4,
        {"StudyDate": "20240110", "StudyTime": "0900", "StudyDescription": "CT head"},
        [(5, {"Modality": "CT"}, 1)],
    ),
    ("P4", 5, {"StudyDate": "20240111", "StudyDescription": "Thorax"}, [(6, {}, 1)]),
    ("P5", 6, {"StudyDate": "20240112", "StudyDescription": "Abdomen"}, [(7, {}, 1)]),
    ("P6", 7, {"StudyDate": "20240113"}, [(8, {}, 1)]),
    ("P7", 8, {"StudyDate": "20240113"}, [(9, {}, 1)]),
]

ALL_STUDIES = {study_uid(n) for _, n, _, _ in STUDIES}


def corpus_attributes() -> Iterator[dict[str, Any]]:
    """The attributes of every corpus instance, ready for :func:`synth.make_instance`."""
    for patient, study, study_attrs, series_list in STUDIES:
        for series, series_attrs, count in series_list:
            for n in range(1, count + 1):
                yield {
                    **PATIENTS[patient],
                    "StudyInstanceUID": study_uid(study),
                    "StudyTime": "120000",
                    **study_attrs,
                    "SeriesInstanceUID": series_uid(series),
                    "SeriesNumber": None,
                    **series_attrs,
                    "SOPInstanceUID": sop_uid(series, n),
                    "InstanceNumber": n,
                    "ContentDate": "20240105",
                    "ContentTime": f"1016{n:02d}",
                }


def write_corpus(folder: Path) -> list[Path]:
    """Write the corpus as Part 10 files into ``folder``."""
    paths = []
    for i, attrs in enumerate(corpus_attributes()):
        path = folder / f"corpus-{i:03d}.dcm"
        make_instance(path, **attrs)
        paths.append(path)
    return paths


def run_tool(tool: str, *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run a DCMTK tool with TCP_NODELAY=1; output decoded leniently (responses in Latin-1 or
    ISO 2022 are printed as raw bytes)."""
    exe = dcmtk_tool(tool)
    if exe is None:
        pytest.fail(f"{tool} not found: install Debian's dcmtk package")
    proc = subprocess.run(
        [exe, *args],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return proc.returncode, output


def store(server: RunningServer, files: Sequence[Path]) -> None:
    """Send ``files`` to ``server`` with storescu, all in one association."""
    code, output = run_tool("storescu", *server.address, *map(str, files))
    assert code == 0, output
    assert server.catalog.count_instances() >= len(files)


_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")
_COMMENT = re.compile(r"\(0000,0902\) LO \[(.*?)\]")


@dataclass
class FindOutcome:
    """What findscu saw: every response status in order (the last is final), the pending
    identifiers (read back from ``--extract`` files) and the final Error Comment."""

    statuses: list[int]
    responses: list[Dataset]
    error_comment: str = ""
    output: str = field(default="", repr=False)

    @property
    def final(self) -> int:
        return self.statuses[-1]

    def values(self, keyword: str) -> list[Any]:
        return [r.get(keyword) for r in self.responses]

    def uids(self, keyword: str) -> set[str]:
        return {str(r.get(keyword)) for r in self.responses}


def findscu(
    server: RunningServer,
    workdir: Path,
    *keys: str,
    model: str = "-S",
    query_file: Path | None = None,
    options: Sequence[str] = (),
) -> FindOutcome:
    """Run DCMTK findscu (``-S`` Study Root, ``-P`` Patient Root) with ``-k`` ``keys``."""
    out = workdir / f"rsp-{uuid.uuid4().hex[:8]}"
    out.mkdir(parents=True)
    args = ["-d", model, "-X", "-od", str(out), *options]
    for key in keys:
        args += ["-k", key]
    args += server.address
    if query_file is not None:
        args.append(str(query_file))
    code, output = run_tool("findscu", *args)
    statuses = [int(s, 16) for s in _STATUS.findall(output)]
    assert statuses, f"findscu exited {code} without a response\n{output[-3000:]}"
    comments = _COMMENT.findall(output)
    responses = [dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]
    return FindOutcome(statuses, responses, comments[-1].strip() if comments else "", output)


def query_file(path: Path, **keys: Any) -> Path:
    """Write a C-FIND identifier (keyword -> value, None for zero-length) as a Part 10 file,
    text encoded in its SpecificCharacterSet (for findscu's ``dcmfile-in``)."""
    make = Dataset()
    for keyword, value in keys.items():
        setattr(make, keyword, value)
    make.ensure_file_meta()
    make.file_meta.TransferSyntaxUID = EXPLICIT_VR_LE
    make.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    make.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}.9.{uuid.uuid4().int % 10**12}"
    make.save_as(path, enforce_file_format=True)
    return path
