"""``vesalius echo|send|find|move|get``: DIMSE service user commands, like DCMTK's echoscu,
storescu, findscu, movescu and getscu, over ``dimse.scu``.

TARGET is a modality name from the settings ([modalities] or ``VESALIUS_MODALITY_*``), its AE
title, or ``AET@HOST:PORT``. The calling AE title defaults to ``dicom.ae_title``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vesalius.commands import config_option, settings_from
from vesalius.dicom.model import LEVELS
from vesalius.errors import VesaliusError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from vesalius.dimse.scu import (
        Model,
        RetrieveResponse,
        ScuOptions,
        StoreItem,
        StoreOutcome,
    )
    from vesalius.settings import Modality

#: Return keys asked for when no ``-k`` is given, per level (PS3.4 C.6.2.1).
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": (
        "StudyDate",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "StudyDescription",
        "StudyInstanceUID",
    ),
    "SERIES": (
        "StudyInstanceUID",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
    ),
    "IMAGE": ("SeriesInstanceUID", "InstanceNumber", "SOPClassUID", "SOPInstanceUID"),
}
MAX_LISTED = 50

aet_option = click.option("--aet", "-a", help="Calling AE title (default: dicom.ae_title).")
verbose_option = click.option("--verbose", "-v", is_flag=True, help="Log the DIMSE exchange.")
tls_option = click.option(
    "--tls",
    is_flag=True,
    help="Over TLS (PS3.15 B.9) with the [tls] certificates (a modality with tls = true is "
    "always called so).",
)


def _connect(
    config: Path | None, aet: str | None, target: str, verbose: bool, tls: bool = False
) -> tuple[Modality, ScuOptions]:
    from vesalius.dimse.scu import ScuOptions

    logging.basicConfig(
        level=logging.INFO if verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    settings = settings_from(config)
    try:
        peer = settings.resolve_peer(target)
        options = ScuOptions.from_settings(settings, aet, tls=tls)
    except VesaliusError as exc:
        raise click.UsageError(exc.message) from exc
    if not 1 <= len(options.ae_title.strip()) <= 16:
        raise click.UsageError("--aet must be 1 to 16 characters")
    return peer, options


def _progress(total: int | None, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


def _fail(exc: VesaliusError) -> click.ClickException:
    return click.ClickException(exc.message)


def _model(patient_root: bool, study_root: bool, model: str | None) -> Model:
    chosen = {m for m, on in (("patient", patient_root), ("study", study_root)) if on}
    if model:
        chosen.add(model)
    if len(chosen) > 1:
        raise click.UsageError("choose one information model: -P (patient) or -S (study)")
    return "patient" if chosen == {"patient"} else "study"


def query_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--level, -P/-S/--model and -k, as findscu/movescu/getscu take them."""
    for decorator in reversed(
        [
            click.option(
                "--level",
                "-L",
                type=click.Choice(LEVELS, case_sensitive=False),
                default="STUDY",
                show_default=True,
                help="Query/Retrieve Level.",
            ),
            click.option("-P", "--patient-root", is_flag=True, help="Patient Root model."),
            click.option("-S", "--study-root", is_flag=True, help="Study Root model (default)."),
            click.option(
                "--model", type=click.Choice(["patient", "study"]), help="Information model."
            ),
            click.option(
                "-k",
                "--key",
                "keys",
                multiple=True,
                metavar="KEY=VALUE",
                help="Keyword or gggg,eeee (Seq[0].Keyword nests); empty value = return key.",
            ),
        ]
    ):
        func = decorator(func)
    return func


def _identifier(level: str, keys: Sequence[str], defaults: bool) -> tuple[Dataset, list[str]]:
    """The identifier and the keys it was built from (the defaults when none are given)."""
    from vesalius.dimse import scu

    wanted = list(keys) if keys or not defaults else list(DEFAULT_KEYS[level.upper()])
    try:
        return scu.build_identifier(level, wanted), wanted
    except VesaliusError as exc:
        raise click.UsageError(exc.message) from exc


# ---------------------------------------------------------------------------------------------


@click.command()
@click.argument("target")
@config_option
@aet_option
@verbose_option
@tls_option
def echo(target: str, config: Path | None, aet: str | None, verbose: bool, tls: bool) -> None:
    """C-ECHO: check that TARGET answers (like echoscu)."""
    from vesalius.dimse import scu

    peer, options = _connect(config, aet, target, verbose, tls)
    started = time.monotonic()
    try:
        status = scu.echo(peer, options)
    except VesaliusError as exc:
        raise _fail(exc) from exc
    elapsed = (time.monotonic() - started) * 1000
    click.echo(f"C-ECHO {scu.describe_peer(peer)}: {status} in {elapsed:.0f} ms")
    if not status.ok:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------


def _walk(paths: Sequence[Path]) -> Iterator[tuple[Path, bool]]:
    """Every file under ``paths``, recursively and sorted; True for files named directly."""
    for path in paths:
        if not path.is_dir():
            yield path, True
            continue
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                yield Path(root) / name, False


def _store_summary(
    peer: Modality, outcomes: list[StoreOutcome], unreadable: list[tuple[Path, str]], skipped: int
) -> None:
    from vesalius.dimse.scu import describe_peer

    by_category = Counter(o.category for o in outcomes)
    failed = by_category["failure"] + len(unreadable)
    click.echo(
        f"C-STORE to {describe_peer(peer)}: {len(outcomes) + len(unreadable)} files: "
        f"{by_category['success']} succeeded, {by_category['warning']} with warnings, "
        f"{failed} failed"
        + (f"; {skipped} files in folders skipped (not DICOM Part 10)" if skipped else "")
    )
    statuses = Counter((o.category, str(o)) for o in outcomes)
    statuses.update(("failure", f"not sent: {reason}") for _, reason in unreadable)
    for (category, text), count in sorted(statuses.items()):
        click.echo(f"  {category:<8} {text}: {count}")
    problems = [(o.item.path, o.category, str(o)) for o in outcomes if o.category != "success"]
    problems += [(path, "failure", f"not sent: {reason}") for path, reason in unreadable]
    for path, category, text in problems[:MAX_LISTED]:
        click.echo(f"  {category}: {path}: {text}")
    if len(problems) > MAX_LISTED:
        click.echo(f"  … and {len(problems) - MAX_LISTED} more")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "target", required=True, help="Modality name or AET@HOST:PORT.")
@click.option(
    "--study", "studies", multiple=True, help="Send this stored study (repeatable), as a job."
)
@click.option(
    "--series", "series", multiple=True, help="Send this stored series (repeatable), as a job."
)
@click.option("--no-wait", is_flag=True, help="With --study/--series: queue and return.")
@config_option
@aet_option
@verbose_option
@tls_option
def send(
    paths: tuple[Path, ...],
    target: str,
    studies: tuple[str, ...],
    series: tuple[str, ...],
    no_wait: bool,
    config: Path | None,
    aet: str | None,
    verbose: bool,
    tls: bool,
) -> None:
    """C-STORE FILES and folders (recursively) to TARGET, each in its own transfer syntax; or,
    with --study/--series, stored studies or series to the known peer TARGET, as a job of the
    archive's queue (retried, resumable, audited; see `vesalius jobs`)."""
    if studies or series:
        if paths:
            raise click.UsageError("give files or --study/--series, not both")
        if tls:
            raise click.UsageError(
                "--tls is for files; a stored study goes over TLS to a peer with tls = true"
            )
        _send_stored(target, studies, series, no_wait, config)
        return
    if not paths:
        raise click.UsageError("name files or folders to send, or --study/--series")
    from vesalius.dimse import scu

    peer, options = _connect(config, aet, target, verbose, tls)
    items: list[StoreItem] = []
    unreadable: list[tuple[Path, str]] = []
    skipped = 0
    files = list(_walk(paths))
    with _progress(len(files), "reading headers", "file") as bar:
        for path, named in files:
            bar.update(1)
            try:
                items.append(scu.read_store_item(path))
            except VesaliusError as exc:
                if named:
                    unreadable.append((path, exc.message))
                else:
                    skipped += 1
    outcomes: list[StoreOutcome] = []
    with _progress(len(items), "C-STORE", "file") as bar:

        def on_outcome(outcome: StoreOutcome) -> None:
            outcomes.append(outcome)
            bar.update(1)
            if outcome.category == "failure":
                bar.set_postfix(failed=sum(o.category == "failure" for o in outcomes))

        scu.store_files(peer, options, items, on_outcome)
    _store_summary(peer, outcomes, unreadable, skipped)
    if unreadable or any(o.category == "failure" for o in outcomes):
        sys.exit(1)


def _send_stored(
    target: str,
    studies: tuple[str, ...],
    series: tuple[str, ...],
    no_wait: bool,
    config: Path | None,
) -> None:
    from vesalius.commands import operator
    from vesalius.commands.jobs import follow, opened
    from vesalius.services.retrieve import RetrieveKeys

    if series:
        keys = RetrieveKeys("SERIES", study_uids=studies, series_uids=series)
    else:
        keys = RetrieveKeys("STUDY", study_uids=studies)
    with opened(config) as archive:
        job = archive.sending.submit(keys, target, operator())
        follow(archive, job, not no_wait)


# ---------------------------------------------------------------------------------------------


def _cell(element: Any) -> str:
    if element is None or element.value is None:
        return ""
    if element.VR == "SQ":
        return f"<{len(element.value)} items>"
    value = element.value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _table(keys: Sequence[str], matches: list[Dataset]) -> list[str]:
    """The matches as text columns, one per key, in the order the keys were given."""
    from vesalius.dimse.scu import key_keyword, key_tag

    skip = {0x00080005, 0x00080052}  # Specific Character Set, Query/Retrieve Level
    tags = [tag for tag in dict.fromkeys(key_tag(spec) for spec in keys) if tag not in skip]
    header = [key_keyword(tag) for tag in tags]
    rows = [[_cell(match.get(tag)) for tag in tags] for match in matches]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


@click.command()
@click.argument("target")
@query_options
@click.option("--json", "as_json", is_flag=True, help="Print each match as a DICOM JSON line.")
@config_option
@aet_option
@verbose_option
@tls_option
def find(
    target: str,
    level: str,
    patient_root: bool,
    study_root: bool,
    model: str | None,
    keys: tuple[str, ...],
    as_json: bool,
    config: Path | None,
    aet: str | None,
    verbose: bool,
    tls: bool,
) -> None:
    """C-FIND on TARGET (like findscu); prints a table, or DICOM JSON lines with --json."""
    from vesalius.dimse import scu

    peer, options = _connect(config, aet, target, verbose, tls)
    chosen = _model(patient_root, study_root, model)
    identifier, wanted = _identifier(level, keys, defaults=True)
    matches: list[Dataset] = []
    final = None
    try:
        for response in scu.find(peer, options, identifier, chosen):
            if response.final:
                final = response.status
            elif response.identifier is not None:
                matches.append(response.identifier)
                if as_json:
                    click.echo(json.dumps(response.identifier.to_json_dict()))
    except VesaliusError as exc:
        raise _fail(exc) from exc
    if not as_json:
        for line in _table(wanted, matches):
            click.echo(line)
    click.echo(f"C-FIND {scu.describe_peer(peer)}: {len(matches)} matches, {final}", err=True)
    if final is None or not final.ok:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------


def _follow(
    responses: Iterator[RetrieveResponse], desc: str, on_bar: Callable[[Any], None] | None = None
) -> RetrieveResponse | None:
    """Drive a C-MOVE/C-GET, showing its sub-operation counts; return the final response."""
    final = None
    with _progress(None, desc, "instance") as bar:
        if on_bar is not None:
            on_bar(bar)
        for response in responses:
            if response.total is not None:
                bar.total = response.total
            bar.n = response.completed + response.failed + response.warning
            bar.set_postfix(failed=response.failed, warning=response.warning, refresh=False)
            bar.refresh()
            if response.final:
                final = response
    return final


def _retrieve_summary(operation: str, final: RetrieveResponse | None, extra: str = "") -> bool:
    """Print the outcome; True when everything was retrieved."""
    if final is None:
        click.echo(f"{operation}: no final response", err=True)
        return False
    click.echo(
        f"{operation}: {final.status}; completed {final.completed}, failed {final.failed}, "
        f"warning {final.warning}{extra}"
    )
    for uid in final.failed_uids[:MAX_LISTED]:
        click.echo(f"  failed: {uid}")
    if len(final.failed_uids) > MAX_LISTED:
        click.echo(f"  … and {len(final.failed_uids) - MAX_LISTED} more")
    return final.status.ok and final.failed == 0


@click.command()
@click.argument("target")
@click.option("--dest", "destination", required=True, help="Move Destination AE title.")
@query_options
@config_option
@aet_option
@verbose_option
@tls_option
def move(
    target: str,
    destination: str,
    level: str,
    patient_root: bool,
    study_root: bool,
    model: str | None,
    keys: tuple[str, ...],
    config: Path | None,
    aet: str | None,
    verbose: bool,
    tls: bool,
) -> None:
    """C-MOVE from TARGET to the AE --dest (like movescu)."""
    from vesalius.dimse import scu

    peer, options = _connect(config, aet, target, verbose, tls)
    chosen = _model(patient_root, study_root, model)
    identifier, _ = _identifier(level, keys, defaults=False)
    responses = scu.move(peer, options, identifier, chosen, destination)
    try:
        final = _follow(responses, "C-MOVE")
    except VesaliusError as exc:
        raise _fail(exc) from exc
    if not _retrieve_summary(f"C-MOVE {scu.describe_peer(peer)} to {destination}", final):
        sys.exit(1)


def _sop_class_uid(value: str) -> str:
    from vesalius.dicom.uids import STORAGE_SOP_CLASSES, is_valid_uid

    if is_valid_uid(value):
        return value
    for keyword, uid in STORAGE_SOP_CLASSES:
        if keyword == value:
            return uid
    raise click.UsageError(f"--sop-class {value!r} is neither a UID nor a storage SOP class")


@click.command()
@click.argument("target")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the received files (<SOP Instance UID>.dcm).",
)
@query_options
@click.option(
    "--sop-class",
    "sop_classes",
    multiple=True,
    help="Storage SOP class (UID or keyword) to accept; replaces the default list.",
)
@click.option(
    "--syntax",
    "-x",
    "syntaxes",
    multiple=True,
    help="Transfer syntax UID to propose, one context per class; replaces the default list.",
)
@config_option
@aet_option
@verbose_option
@tls_option
def get(
    target: str,
    out_dir: Path,
    level: str,
    patient_root: bool,
    study_root: bool,
    model: str | None,
    keys: tuple[str, ...],
    sop_classes: tuple[str, ...],
    syntaxes: tuple[str, ...],
    config: Path | None,
    aet: str | None,
    verbose: bool,
    tls: bool,
) -> None:
    """C-GET from TARGET into --out (like getscu); files are written as received."""
    from vesalius.dicom.uids import is_valid_uid
    from vesalius.dimse import scu

    peer, options = _connect(config, aet, target, verbose, tls)
    chosen = _model(patient_root, study_root, model)
    identifier, _ = _identifier(level, keys, defaults=False)
    classes = [_sop_class_uid(v) for v in sop_classes]
    if not all(is_valid_uid(ts) for ts in syntaxes):
        raise click.UsageError("--syntax takes transfer syntax UIDs")
    out_dir.mkdir(parents=True, exist_ok=True)
    received: list[scu.ReceivedFile] = []
    receiver = scu.FileReceiver(out_dir, received.append)
    responses = scu.get(peer, options, identifier, chosen, receiver, classes, syntaxes)
    try:
        final = _follow(responses, "C-GET")
    except VesaliusError as exc:
        raise _fail(exc) from exc
    written = [r for r in received if r.path is not None]
    refused = [r for r in received if r.path is None]
    ok = _retrieve_summary(
        f"C-GET {scu.describe_peer(peer)}", final, f"; {len(written)} files written to {out_dir}"
    )
    for item in refused[:MAX_LISTED]:
        click.echo(f"  refused: {item.sop_instance_uid!r}: 0x{item.status:04X} {item.reason}")
    if not ok or refused:
        sys.exit(1)
