"""``python -m bench.zip_download [--mb 1024] [--out FILE]``: download a large study as a ZIP
(and as DICOM media) from ``vesalius serve`` while sampling the server's memory (issue 15: "ZIP
download of a 1 GB study at a steady memory").

A study of ``--mb`` MiB (CT-like instances of 512 KiB of random pixels, so nothing compresses)
is generated, sent with DCMTK's storescu, then downloaded through
``GET /api/v1/studies/{uid}/download`` by a streaming httpx client that counts the bytes and
checks the ZIP's CRCs as they come. A thread samples the RSS of the server's processes every
20 ms; the kernel's peak (VmHWM, reset before each download) backs it up. The figure that
matters is the peak minus the baseline (the RSS just before the download): it must not grow
with the study. Results go to stdout as a Markdown table and to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from bench.servers import LOOPBACK, Vesalius, dcmtk_env

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MATRIX = 512  # 512 x 512 x 16 bits: 512 KiB of pixels per instance


def make_study(folder: Path, megabytes: int) -> tuple[str, int]:
    """Write a study of about ``megabytes`` MiB into ``folder``; its UID and file count."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    count = max(1, megabytes * 2)
    rng = np.random.default_rng(15)
    for n in range(1, count + 1):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
        uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, uid
        ds.PatientName, ds.PatientID = "Bench^Download", "BENCH-ZIP"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "1200", "1", ""
        ds.StudyDescription, ds.SeriesDescription = "1 GB download", "Axial"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, n
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = MATRIX
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, MATRIX * MATRIX, dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{n:05d}.dcm", enforce_file_format=True)
    return study, count


class Sampler(threading.Thread):
    """Samples the RSS of ``server`` every ``interval`` seconds until stopped."""

    def __init__(self, server: Vesalius, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.samples: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            rss = self.server.rss_mib()
            if rss is not None:
                self.samples.append(rss)
            self.stopped.wait(self.interval)


def download(server: Vesalius, study: str, fmt: str) -> dict[str, Any]:
    """One streamed download with the memory sampled: the figures of one row."""
    url = f"http://{LOOPBACK}:{server.http_port}/api/v1/studies/{study}/download?format={fmt}"
    baseline = server.rss_mib() or 0.0
    server.reset_peak()
    sampler = Sampler(server)
    sampler.start()
    started = time.perf_counter()
    size = 0
    with httpx.stream("GET", url, timeout=600) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_bytes(1 << 20):
            size += len(chunk)
    seconds = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    peak_sampled = max(sampler.samples, default=baseline)
    return {
        "format": fmt,
        "bytes": size,
        "seconds": round(seconds, 2),
        "mib_per_s": round(size / seconds / (1 << 20), 1),
        "baseline_mib": round(baseline, 1),
        "peak_sampled_mib": round(peak_sampled, 1),
        "peak_hwm_mib": round(server.peak_mib() or 0.0, 1),
        "growth_mib": round(peak_sampled - baseline, 1),
        "median_mib": round(statistics.median(sampler.samples or [baseline]), 1),
        "samples": len(sampler.samples),
    }


def run(megabytes: int, workdir: Path) -> list[dict[str, Any]]:
    files = workdir / "study"
    study, count = make_study(files, megabytes)
    print(f"generated {count} instances in {files}", flush=True)
    server = Vesalius(workdir / "server")
    with server:
        subprocess.run(
            [
                "storescu",
                "-q",
                "+sd",
                "-aec",
                server.ae_title,
                LOOPBACK,
                str(server.dicom_port),
                str(files),
            ],
            check=True,
            env=dcmtk_env(),
        )
        print("stored; downloading", flush=True)
        shutil.rmtree(files)  # the disk space back before the downloads
        # a first small request, so the baseline includes what any request loads
        httpx.get(f"http://{LOOPBACK}:{server.http_port}/api/v1/me", timeout=10)
        return [download(server, study, fmt) for fmt in ("zip", "media", "zip")]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| format | size | time | throughput | RSS before | peak RSS (sampled) | peak - before "
        "| peak (VmHWM) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['bytes'] / (1 << 20):,.0f} MiB | {r['seconds']} s "
            f"| {r['mib_per_s']} MiB/s | {r['baseline_mib']} MiB | {r['peak_sampled_mib']} MiB "
            f"| {r['growth_mib']} MiB | {r['peak_hwm_mib']} MiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="study size in MiB (1024)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zip-") as tmp:
        rows = run(args.mb, Path(tmp))
    print(table(rows))
    if args.out:
        args.out.write_text(
            json.dumps({"megabytes": args.mb, "cpus": os.cpu_count(), "rows": rows})
        )


if __name__ == "__main__":
    main()
