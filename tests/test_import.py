"""`vesalius import` into the archive of a running server (SQLite and PostgreSQL): files, nested
folders, zip archives, files that are not DICOM, and bad DICOM rejected with nothing left
behind."""

from __future__ import annotations

import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from conftest import RunningServer, config_for, run_cli
from vesalius.identity import Identity
from vesalius.services.importer import Importer, ImportItem, classify, count_sources

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))
J2K = Path(get_testdata_file("JPEG2000.dcm"))
SR = Path(get_testdata_file("reportsi.dcm"))
NO_META = Path(get_testdata_file("ExplVR_LitEndNoMeta.dcm"))
DICOMDIR = Path(get_testdata_file("DICOMDIR", read=False) or "")


def vesalius(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)  # in this process: the same command, without the start-up


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_clean(server: RunningServer, instances: int) -> None:
    """The index, the stored blobs and an empty staging folder agree."""
    assert server.catalog.count_instances() == instances
    assert len(server.stored_files()) == instances
    assert server.staging_files() == []


def truncated(path: Path, folder: Path) -> Path:
    data = CT.read_bytes()
    path = folder / path
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def traversal_uid(path: Path) -> Path:
    ds = dcmread(MR)
    ds.SOPInstanceUID = "../../../etc/passwd"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path)
    return path


def make_tree(root: Path) -> Path:
    """Loose files in nested folders, a DICOMDIR, text files and a zip with nested members."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    shutil.copy(CT, root / "a" / "ct.dcm")
    shutil.copy(MR, root / "a" / "b" / "c" / "IM0001")
    shutil.copy(DICOMDIR, root / "DICOMDIR")
    (root / "a" / "notes.txt").write_text("not DICOM\n")
    with zipfile.ZipFile(root / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(J2K, "study/series/j2k.dcm")
        zf.write(SR, "study/sr.dcm")
        zf.writestr("study/README.md", "# a readme\n")
    return root


def test_import_tree_and_zip_then_reimport(server: RunningServer, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    config = config_for(server, tmp_path)
    proc = vesalius("import", str(tree), "--config", str(config), "--workers", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "imported: 4" in lines
    assert "replaced: 0" in lines
    assert "skipped: 3" in lines
    assert "  not DICOM: 2" in lines
    assert "  DICOMDIR: 1" in lines
    assert "7/7" in proc.stderr  # progress bar: count, rate, ETA
    assert "file/s" in proc.stderr
    assert_clean(server, 4)
    stored = {uid_of(p): p.read_bytes() for p in server.stored_files()}
    for source in (CT, MR, J2K, SR):
        assert stored[uid_of(source)] == source.read_bytes()

    proc = vesalius("import", str(tree), "--config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "imported: 0" in proc.stdout.splitlines()
    assert "replaced: 0" in proc.stdout.splitlines()
    assert "already stored (kept): 4" in proc.stdout.splitlines()  # the default keeps
    assert_clean(server, 4)


def test_bad_dicom_is_rejected_and_leaves_nothing(server: RunningServer, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CT, folder / "good.dcm")
    shutil.copy(NO_META, folder / "raw.dcm")
    bad_uid = traversal_uid(folder / "evil.dcm")
    cut = truncated(Path("cut.dcm"), folder)
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    proc = vesalius("import", str(folder), "--config", str(config_for(server, tmp_path)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "imported: 1" in lines
    assert "skipped: 4" in lines
    assert "  not DICOM: 1" in lines
    assert "  not Part 10 (no File Meta): 1" in lines
    assert "  rejected: SOPInstanceUID is not a valid UID: 1" in lines
    assert f"  {bad_uid}: rejected: SOPInstanceUID is not a valid UID" in lines
    assert any(line.startswith(f"  {cut}: rejected: ") for line in lines)
    assert_clean(server, 1)
    assert not (server.data_dir / "etc").exists()


def test_importer_service_zip_members(server: RunningServer, tmp_path: Path) -> None:
    """The service on its own: zip members (good, truncated, bad UID, not DICOM) are read one
    by one into staging; outcomes arrive through the callback."""
    archive_path = tmp_path / "upload.ZIP"
    cut = truncated(Path("cut.dcm"), tmp_path)
    evil = traversal_uid(tmp_path / "evil.dcm")
    with zipfile.ZipFile(archive_path, "w") as zf:
        zf.write(CT, "x/ct.dcm")
        zf.write(MR, "x/y/mr.dcm")
        zf.write(cut, "x/cut.dcm")
        zf.write(evil, "../../evil.dcm")
        zf.writestr("x/", "")
        zf.writestr("x/notes.txt", "hello")
    assert count_sources([archive_path]) == 5
    seen: list[ImportItem] = []
    importer = Importer(server.archive.ingest, Identity.system("test"))
    report = importer.run([archive_path], workers=2, on_item=seen.append)
    assert len(seen) == 5
    assert report.outcomes["created"] == 2
    assert report.failed == 2
    assert report.skipped["not DICOM"] == 1
    reasons = {item.source.rsplit(":", 1)[1]: item.reason for item in seen}
    assert reasons["../../evil.dcm"] == "rejected: SOPInstanceUID is not a valid UID"
    assert reasons["x/cut.dcm"].startswith("rejected: ")
    assert_clean(server, 2)
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_classify() -> None:
    assert classify(CT.read_bytes()[:132]) is None
    assert classify(NO_META.read_bytes()[:132]) == "not Part 10 (no File Meta)"
    big_endian = Path(get_testdata_file("ExplVR_BigEndNoMeta.dcm"))
    assert classify(big_endian.read_bytes()[:132]) == "not Part 10 (no File Meta)"
    assert classify(b"PK\x03\x04" + bytes(200)) == "not DICOM"
    assert classify(b"") == "not DICOM"
