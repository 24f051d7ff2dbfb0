"""The de-identification engine (``dicom/deid.py``, PS3.15 Annex E): every attribute of Table
E.1-1 gets its action under the Basic Profile and under each option; UIDs map consistently
across instances and calls; dates keep their intervals; private attributes, overlays and curves
go, except the safe private attributes of Table E.3.10-1 under Retain Safe Private (known by
their Private Creator, in whatever block); burned-in annotation is recognised; and real
encodings (pydicom's test files) come out with no dciodvfy error they did not have."""

from __future__ import annotations

import re
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from synth import make_instance
from vesalius.dicom.deid import (
    OPTION_COLUMNS,
    Keys,
    Options,
    burned_in_reason,
    date_offset,
    deidentify,
    pseudonym,
    remap_uid,
    safe_private_tags,
    shift_date,
)
from vesalius.dicom.deid_table import TABLE_E1_1
from vesalius.dicom.safe_private_table import EDITION as SAFE_EDITION
from vesalius.dicom.safe_private_table import TABLE_E3_10_1
from vesalius.errors import QueryError

SECRET = b"0123456789abcdef0123456789abcdef"
SECRET_NAME = "Secretname"
TEXT = f"id {SECRET_NAME}"  # fits every text VR (SH: 16)
SAMPLES: dict[str, Any] = {
    "AE": "STATION1",
    "AS": "042Y",
    "CS": "VALUE",
    "DA": "20200315",
    "DT": "20200315101010",
    "TM": "101010",
    "DS": "1.5",
    "IS": "7",
    "PN": f"{SECRET_NAME}^Jane",
    "UI": "1.2.3.4.5.6",
    "UR": "http://example.org/a",
    "US": 5,
    "SS": 5,
    "UL": 5,
    "SL": 5,
    "FL": 1.5,
    "FD": 1.5,
    "OB": b"\x01\x02",
    "OW": b"\x01\x02",
    "UN": b"\x01\x02",
}
OPTION_SETS = [("basic", Options())] + [(name, Options(**{name: True})) for name in OPTION_COLUMNS]


def vr_of(tag: int) -> str:
    return dictionary_VR(tag).split(" or ")[0]


def sample(vr: str) -> Any:
    if vr == "SQ":
        item = Dataset()
        item.CodeMeaning = TEXT
        return Sequence([item])
    return SAMPLES.get(vr, TEXT)


def table_rows() -> list[tuple[int, str, dict[str, str]]]:
    return [
        (int(tag, 16), name, acts)
        for tag, name, acts in TABLE_E1_1
        if "X" not in tag and tag != "private"
    ]


def expected_action(actions: dict[str, str], option: str) -> str:
    """The standard's reading, independent of the engine: a chosen option's column replaces the
    basic action; the combined actions as the docs say (D where it may be, Z for X/Z)."""
    action = actions.get(OPTION_COLUMNS.get(option, ""), actions["basic"])
    return {"Z/D": "D", "X/D": "D", "X/Z/D": "D", "X/Z": "Z", "X/Z/U*": "U"}.get(action, action)


def keys() -> Keys:
    return Keys(SECRET, pseudonym(SECRET, "PID"), date_offset(SECRET, "PID"), (SECRET_NAME,))


def table_dataset() -> Dataset:
    ds = Dataset()
    for tag, _name, _actions in table_rows():
        ds.add_new(tag, vr_of(tag), sample(vr_of(tag)))
    return ds


def empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, Sequence) and len(value) == 0)


@pytest.mark.parametrize(("option", "options"), OPTION_SETS, ids=[n for n, _ in OPTION_SETS])
def test_every_attribute_of_table_e1_1_gets_its_action(option: str, options: Options) -> None:
    ds = table_dataset()
    k = keys()
    deidentify(ds, options, k)
    wrong = []
    for tag, name, actions in table_rows():
        action = expected_action(actions, option)
        vr = vr_of(tag)
        original = sample(vr)
        elem = ds.get(tag)
        value = None if elem is None else elem.value
        if action == "X":
            ok = elem is None
        elif action == "Z":
            ok = elem is not None and empty(value)
        elif action == "K":
            ok = elem is not None and (
                value == original
                if vr != "SQ"
                else [i.CodeMeaning for i in value] == [TEXT]  # kept, nothing to clean
            )
        elif action == "U":
            if vr == "SQ":
                ok = elem is not None and len(value) == 1
            else:
                ok = value == remap_uid(SECRET, original) and str(value).startswith("2.25.")
        elif action == "D":
            if vr == "SQ":
                ok = elem is not None and [i.CodeMeaning for i in value] == ["ANONYMIZED"]
            elif tag in (0x00100020, 0x00100010):
                ok = value == k.patient_pseudonym
            else:
                ok = elem is not None and not empty(value) and value != original
        elif action == "C":
            if vr == "DA":
                ok = value == shift_date(original, k.days)
            elif vr == "DT":
                ok = value == shift_date(original[:8], k.days) + original[8:]
            elif vr == "SQ":
                ok = [i.CodeMeaning for i in value] == ["id ***"]
            elif vr in ("LO", "LT", "SH", "ST", "UT", "UC", "PN"):
                ok = elem is not None and SECRET_NAME not in str(value)
            else:
                ok = value == original
        else:
            ok = False
        if not ok:
            wrong.append(f"{tag:08X} {name}: {action} gave {value!r}")
    assert wrong == []
    # the whole table was exercised, and the marks of PS3.3 C.12.1 are set
    assert len(table_rows()) > 600
    assert ds.PatientIdentityRemoved == "YES"
    codes = [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and len(codes) == 1 + len(options.chosen())


def test_modified_dates_mark_the_data_set_and_full_dates_exclude_them() -> None:
    ds = Dataset()
    ds.StudyDate = "20200101"
    deidentify(ds, Options(modify_dates=True), keys())
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.StudyDate != "20200101" and len(ds.StudyDate) == 8
    ds = Dataset()
    ds.StudyDate = "20200101"
    deidentify(ds, Options(retain_full_dates=True), keys())
    assert (ds.StudyDate, ds.LongitudinalTemporalInformationModified) == ("20200101", "UNMODIFIED")
    with pytest.raises(QueryError):
        Options(retain_full_dates=True, modify_dates=True)


def test_uids_map_consistently_across_instances_and_calls(tmp_path: Path) -> None:
    study, frame = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    a = make_instance(tmp_path / "a.dcm", StudyInstanceUID=study, FrameOfReferenceUID=frame)
    b = make_instance(tmp_path / "b.dcm", StudyInstanceUID=study, FrameOfReferenceUID=frame)
    ref = Dataset()
    ref.ReferencedSOPClassUID = a.SOPClassUID
    ref.ReferencedSOPInstanceUID = a.SOPInstanceUID
    b.ReferencedImageSequence = Sequence([ref])
    original_a = str(a.SOPInstanceUID)
    deidentify(a, Options(), keys())
    deidentify(b, Options(), keys())  # another call, same secret
    assert a.StudyInstanceUID == b.StudyInstanceUID != study
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID != frame
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == a.SOPClassUID  # a class UID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID != original_a
    assert a.SOPInstanceUID == remap_uid(SECRET, original_a)
    assert remap_uid(b"another secret, another mapping!", original_a) != a.SOPInstanceUID
    assert len(a.SOPInstanceUID) <= 64 and re.fullmatch(r"2\.25\.[1-9][0-9]*", a.SOPInstanceUID)
    # Retain UIDs keeps them
    c = make_instance(tmp_path / "c.dcm", StudyInstanceUID=study)
    deidentify(c, Options(retain_uids=True), keys())
    assert c.StudyInstanceUID == study


def test_date_shift_keeps_intervals_within_a_patient() -> None:
    days = date_offset(SECRET, "PID")
    assert days == date_offset(SECRET, "PID") and -3653 <= days <= -365
    assert date_offset(SECRET, "PID", "issuer") != days or date_offset(SECRET, "P2") != days
    first, second = Dataset(), Dataset()
    first.StudyDate, second.StudyDate = "20200101", "20200301"
    second.AcquisitionDateTime = "20200301235959.5+0100"
    for ds in (first, second):
        deidentify(ds, Options(modify_dates=True), keys())
    from datetime import date

    def parse(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    assert (parse(second.StudyDate) - parse(first.StudyDate)).days == 60
    assert second.AcquisitionDateTime[8:] == "235959.5+0100"
    assert second.AcquisitionDateTime[:8] == second.StudyDate


def test_private_attributes_overlays_and_curves_go() -> None:
    nested = dcmread(get_testdata_file("nested_priv_SQ.dcm"))
    assert any(e.tag.is_private for e in nested.iterall())
    deidentify(nested, Options(), keys())
    assert not any(e.tag.is_private for e in nested.iterall())

    overlay = dcmread(get_testdata_file("examples_overlay.dcm"))
    assert 0x60003000 in overlay
    overlay.add_new(0x50000005, "US", 2)  # a curve attribute (retired, 50xx)
    deidentify(overlay, Options(), keys())
    assert not [e for e in overlay if 0x5000 <= e.tag.group <= 0x60FF]
    kept = dcmread(get_testdata_file("examples_overlay.dcm"))
    outcome = deidentify(kept, Options(clean_graphics=True), keys())
    assert 0x60003000 in kept and outcome.review  # kept, and a person is told to look


def private_dataset() -> Dataset:
    """Safe and unsafe private attributes (Table E.3.10-1), in blocks other than the vendors'
    usual 0x10, beside a block whose creator is not in the table but whose element numbers are
    those of safe attributes, and an orphan without a creator."""
    ds = Dataset()
    ds.PatientName = f"{SECRET_NAME}^Jane"
    # group 0019: a foreign block at 0x10 (element 23 is safe only for GEMS_ACQU_01), and
    # GEMS_ACQU_01 moved to block 0x30: Table Speed (xx23) safe, xx10 not
    ds.add_new(0x00190010, "LO", "ACME PRIVATE")
    ds.add_new(0x00191023, "DS", "9.5")
    ds.add_new(0x00190030, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00193010, "LO", TEXT)
    ds.add_new(0x00193023, "DS", "18.75")
    ds.add_new(0x00193024, "DS", "0.5")
    ds.add_new(0x00195023, "DS", "1")  # an orphan: no (0019,0050)
    # group 2001: Philips Imaging DD 001 in block 0x45, a safe FL and an unsafe LO (xx20 is not
    # in the table); a safe sequence whose item holds a standard UID and private attributes
    ds.add_new(0x20010045, "LO", "Philips Imaging DD 001")
    ds.add_new(0x20014503, "FL", 1000.0)
    ds.add_new(0x20014520, "LO", TEXT)
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    item.add_new(0x20010011, "LO", "Philips Imaging DD 001")
    item.add_new(0x20011160, "SL", 3)  # MR Series Nr Of Stacks: safe
    item.add_new(0x20011120, "LO", TEXT)  # not safe
    ds.add_new(0x2001455F, "SQ", Sequence([item]))  # Stack Sequence: safe
    # group 0099: NQHeader in block 0x12: a safe UID (Analyzed Series UID)
    ds.add_new(0x00990012, "LO", "NQHeader")
    ds.add_new(0x00991202, "UI", "1.2.826.0.1.3680043.8.498.99")
    # group 0029: a block with nothing safe in it
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291010, "OB", b"\x01\x02")
    return ds


def test_table_e3_10_1_is_the_standards() -> None:
    rows = {(g, low, creator): (vr, meaning) for g, low, creator, vr, _vm, meaning in TABLE_E3_10_1}
    assert SAFE_EDITION == "2024c" and len(TABLE_E3_10_1) == 479
    assert rows[(0x7053, 0x00, "Philips PET Private Group")][0] == "DS"
    assert rows[(0x7053, 0x00, "Philips PET Private Group")][1].startswith("SUV Factor")
    assert rows[(0x0019, 0x23, "GEMS_ACQU_01")] == ("DS", "Table Speed [mm/rotation]")
    assert rows[(0x0043, 0x27, "GEMS_PARM_01")][0] == "SH"
    assert rows[(0x01F1, 0x26, "ELSCINT1")] == ("DS", "Pitch")
    assert rows[(0x2001, 0x5F, "Philips Imaging DD 001")] == ("SQ", "Stack Sequence")
    assert (0x0019, 0x10, "GEMS_ACQU_01") not in rows


def test_safe_private_attributes_are_known_by_creator_in_any_block() -> None:
    kept = safe_private_tags(private_dataset())
    assert kept == {
        0x00190030, 0x00193023, 0x00193024,
        0x20010045, 0x20014503, 0x2001455F,
        0x00990012, 0x00991202,
    }  # fmt: skip


def test_retain_safe_private_keeps_the_safe_ones_with_their_creators() -> None:
    plain = private_dataset()
    deidentify(plain, Options(), keys())
    assert not any(e.tag.is_private for e in plain.iterall())

    ds = private_dataset()
    deidentify(ds, Options(retain_safe_private=True), keys())
    private = {int(e.tag) for e in ds if e.tag.is_private}
    assert private == {
        0x00190030, 0x00193023, 0x00193024,
        0x20010045, 0x20014503, 0x2001455F,
        0x00990012, 0x00991202,
    }  # fmt: skip
    assert ds[0x00190030].value == "GEMS_ACQU_01" and ds[0x00193023].value == "18.75"
    assert ds[0x20014503].value == 1000.0
    # the kept sequence's item is de-identified: its UID replaced, its own unsafe private gone
    item = ds[0x2001455F].value[0]
    assert item.ReferencedSOPInstanceUID == remap_uid(SECRET, "1.2.3.4.5.6")
    assert {int(e.tag) for e in item if e.tag.is_private} == {0x20010011, 0x20011160}
    # a kept private UID is replaced like the standard ones, unless Retain UIDs
    assert ds[0x00991202].value == remap_uid(SECRET, "1.2.826.0.1.3680043.8.498.99")
    assert SECRET_NAME not in str(ds)
    codes = {(i.CodeValue, i.CodeMeaning) for i in ds.DeidentificationMethodCodeSequence}
    assert ("113111", "Retain Safe Private Option") in codes
    assert "113111" not in {i.CodeValue for i in plain.DeidentificationMethodCodeSequence}

    retained = private_dataset()
    deidentify(retained, Options(retain_safe_private=True, retain_uids=True), keys())
    assert retained[0x00991202].value == "1.2.826.0.1.3680043.8.498.99"


def test_retain_safe_private_on_a_real_ct() -> None:
    ct = dcmread(get_testdata_file("CT_small.dcm"))
    assert ct[0x00190010].value == "GEMS_ACQU_01" and 0x00191002 in ct
    deidentify(ct, Options(retain_safe_private=True), keys())
    assert {int(e.tag) for e in ct if e.tag.group == 0x0019} == {
        0x00190010, 0x00191023, 0x00191024, 0x00191027,
    }  # fmt: skip
    assert 0x00090010 not in ct  # GEMS_IDEN_01: nothing of it is safe


def test_group_lengths_go_with_what_they_counted() -> None:
    ds = Dataset()
    ds.add_new(0x00080000, "UL", 1234)
    ds.add_new(0x00100000, "UL", 99)
    ds.PatientName = "Doe^Jane"
    deidentify(ds, Options(), keys())
    assert 0x00080000 not in ds and 0x00100000 not in ds


def test_burned_in_annotation_is_recognised(tmp_path: Path) -> None:
    ct = make_instance(tmp_path / "ct.dcm")
    assert burned_in_reason(ct) is None
    ct.BurnedInAnnotation = "YES"
    assert burned_in_reason(ct) == "Burned In Annotation is YES"
    us = make_instance(tmp_path / "us.dcm", sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1")
    assert burned_in_reason(us) is not None
    us.BurnedInAnnotation = "NO"
    assert burned_in_reason(us) is None
    sc = dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    assert burned_in_reason(sc) is not None
    ot = make_instance(tmp_path / "ot.dcm", Modality="OT")
    assert "OT" in str(burned_in_reason(ot))


# ---------------------------------------------------------------------------------------------
# dciodvfy: no new errors

CORPUS = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_small_odd.dcm",
    "reportsi.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
    "waveform_ecg.dcm",
    "examples_overlay.dcm",
    "liver_1frame.dcm",
    "image_dfl.dcm",
]
EVERY_OPTION = Options(
    **{f.name: True for f in fields(Options) if f.name not in ("retain_full_dates",)}
)


def dciodvfy_errors(path: Path) -> set[str]:
    """dciodvfy's error lines, with the values (which de-identification changes) taken out."""
    proc = subprocess.run(
        ["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, timeout=120
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    plain = (re.sub(r"<[^>]*>|=.*$|[0-9]+(\.[0-9]+)*", "", line) for line in lines)
    return {line for line in plain if line.startswith("Error")}


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("options", [Options(), EVERY_OPTION], ids=["basic", "options"])
def test_dciodvfy_finds_no_new_error(name: str, options: Options, tmp_path: Path) -> None:
    source = Path(str(get_testdata_file(name)))
    ds = dcmread(source, force=True)
    if "MediaStorageSOPClassUID" not in getattr(ds, "file_meta", {}):  # without File Meta
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.3")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3.4")
    deidentify(ds, options, Keys(SECRET, pseudonym(SECRET, "x"), date_offset(SECRET, "x")))
    out = tmp_path / "out.dcm"
    ds.save_as(out, enforce_file_format=True)
    before, after = dciodvfy_errors(source), dciodvfy_errors(out)
    assert after - before == set()
    assert dcmread(out).PatientIdentityRemoved == "YES"


def test_dciodvfy_finds_no_new_error_with_safe_private_kept(tmp_path: Path) -> None:
    source = tmp_path / "in.dcm"
    ds = make_instance(source)
    for elem in private_dataset():
        if elem.tag.is_private:
            ds.add(elem)
    ds.save_as(source, enforce_file_format=True)
    deidentify(ds, Options(retain_safe_private=True), keys())
    assert 0x00193023 in ds and 0x2001455F in ds
    out = tmp_path / "out.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert dciodvfy_errors(out) - dciodvfy_errors(source) == set()
