"""Start-up, configuration and environment problems, as an administrator meets them: a real
``vesalius`` process ends with one line saying what is wrong, where and what to do, an exit
status of the problem's kind (errors.py, sysexits(3)), and no traceback unless ``--debug``.
And where the data is: every command that opens the local archive says which one, and none
makes a new archive silently."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import click
import pytest
from alembic import command as alembic_command
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from sqlalchemy import text

from conftest import free_port
from served import serve, write_config
from vesalius.fatal import MainGroup
from vesalius.index.catalog import Catalog
from vesalius.index.database import alembic_config, open_engine

CT = get_testdata_file("CT_small.dcm")
EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE, EX_SOFTWARE = 65, 66, 69, 70
EX_CANTCREAT, EX_TEMPFAIL, EX_CONFIG = 73, 75, 78


def vesalius(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``vesalius ARGS`` in a clean environment (no VESALIUS_* but ``env``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VESALIUS_")}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "vesalius.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**clean, **(env or {})},
        check=False,
    )


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("vesalius: error: ")]


def fails_clearly(
    proc: subprocess.CompletedProcess[str], status: int, *needles: str, lines: int = 1
) -> str:
    """The process exited ``status`` with ``lines`` error lines, the first naming every needle,
    and no traceback; returns that line."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    found = errors(proc)
    assert len(found) == lines, proc.stderr
    for needle in needles:
        assert needle in found[0], (needle, proc.stderr)
    return found[0]


def config(tmp_path: Path, text: str, name: str = "vesalius.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def ports() -> str:
    """A settings file's ports and hosts: free ones, on the loopback address."""
    return (
        f'[dicom]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )


# --- configuration -------------------------------------------------------------------------


def test_bad_toml_names_the_file_line_and_column(tmp_path: Path) -> None:
    cfg = config(tmp_path, 'data_dir = "d"\n[dicom\nport = 104\n')
    line = fails_clearly(vesalius("serve", "--config", str(cfg)), EX_CONFIG, str(cfg))
    assert "line 2, column" in line and "not valid TOML" in line


def test_unknown_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    cfg = config(tmp_path, "[dicom]\nprot = 104\n")
    fails_clearly(
        vesalius("serve", "--config", str(cfg)),
        EX_CONFIG,
        str(cfg),
        "dicom.prot",
        "did you mean dicom.port?",
    )


def test_a_misspelt_variable_is_refused_with_a_did_you_mean(tmp_path: Path) -> None:
    for command in (["serve", "--data-dir", str(tmp_path)], ["echo", "X@127.0.0.1:1"]):
        proc = vesalius(*command, env={"VESALIUS_DICOM_PROT": "104"})
        fails_clearly(proc, EX_CONFIG, "VESALIUS_DICOM_PROT", "did you mean VESALIUS_DICOM_PORT?")


def test_a_mysql_url_says_which_databases_are_supported(tmp_path: Path) -> None:
    proc = vesalius(
        "import",
        CT,
        "--data-dir",
        str(tmp_path / "d"),
        env={"VESALIUS_DATABASE_URL": "mysql+pymysql://pacs:s3cret@db/pacs"},
    )
    line = fails_clearly(proc, EX_CONFIG, "VESALIUS_DATABASE_URL", "mysql", "SQLite", "PostgreSQL")
    assert "s3cret" not in proc.stderr, line
    assert not (tmp_path / "d").exists()


def test_an_unknown_log_level_lists_the_levels(tmp_path: Path) -> None:
    cfg = config(tmp_path, 'log_level = "verbose"\n')
    fails_clearly(
        vesalius("serve", "--config", str(cfg)),
        EX_CONFIG,
        str(cfg),
        "log_level",
        "debug, info, warning, error, critical",
    )


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--port", "70000"], ("dicom.port", "70000", "1 to 65535")),
        (["--http-port", "-1"], ("http.port", "-1", "1 to 65535")),
    ],
)
def test_a_port_out_of_range(tmp_path: Path, args: list[str], needles: tuple[str, ...]) -> None:
    proc = vesalius("serve", "--data-dir", str(tmp_path / "d"), *args)
    fails_clearly(proc, EX_CONFIG, "command line", *needles)
    assert not (tmp_path / "d").exists()


def test_the_same_port_for_dimse_and_http_is_a_contradiction(tmp_path: Path) -> None:
    cfg = config(tmp_path, "[dicom]\nport = 8080\n")
    fails_clearly(
        vesalius("serve", "--config", str(cfg)),
        EX_CONFIG,
        f"{cfg}: dicom.port",
        "http.port",
        "both 8080",
        "different ports",
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, '[dicom]\nport = "eleven"\nmax_associations = 0\n[ingest]\nduplicate_policy = 3\n'
    )
    proc = vesalius("serve", "--config", str(cfg), env={"VESALIUS_HTTP_PROT": "1"})
    fails_clearly(proc, EX_CONFIG, lines=4)
    text = "\n".join(errors(proc))
    for needle in (
        "dicom.port must be an integer, got 'eleven'",
        "dicom.max_associations must be greater than 0",
        "ingest.duplicate_policy must be a string",
        "VESALIUS_HTTP_PROT",
    ):
        assert needle in text, text


def test_a_missing_settings_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    for command in (["serve"], ["jobs", "list"], ["find", "X@127.0.0.1:1"]):
        proc = vesalius(*command, "--config", str(missing))
        fails_clearly(proc, EX_NOINPUT, str(missing), "No such file")
    proc = vesalius("serve", env={"VESALIUS_CONFIG": str(missing)})
    fails_clearly(proc, EX_NOINPUT, str(missing), "VESALIUS_CONFIG")


# --- the environment ------------------------------------------------------------------------


def test_a_log_file_that_cannot_be_written(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    log_file = a_file / "vesalius.log"
    text = f'data_dir = "data"\n[log]\nfile = "{log_file}"\n' + ports()
    cfg = config(tmp_path, text)
    fails_clearly(
        vesalius("serve", "--config", str(cfg)), EX_CANTCREAT, "cannot write the log file"
    )


def test_a_data_folder_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    fails_clearly(
        vesalius("serve", "--data-dir", str(a_file)), EX_CANTCREAT, str(a_file), "not a folder"
    )
    under = a_file / "data"
    fails_clearly(
        vesalius("import", CT, "--data-dir", str(under)),
        EX_CANTCREAT,
        str(under),
        "cannot create",
        "set on the command line",
    )


def _read_only(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs the command with ``folder`` bind-mounted read-only, in a
    mount namespace of its own (works as root too, where permissions would not stop a write);
    skips where namespaces cannot be made."""
    prefix = (
        "unshare",
        "-rm",
        "sh",
        "-c",
        'mount --bind -o ro "$0" "$0" && exec "$@"',
        str(folder),
    )
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    probe = subprocess.run(
        [*prefix, "sh", "-c", f'! touch "{folder}/probe"'], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {probe.stderr!r}")
    return prefix


def test_a_read_only_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    prefix = _read_only(data)
    cfg = config(tmp_path, f'data_dir = "data"\n{ports()}')
    fails_clearly(
        vesalius("serve", "--config", str(cfg), prefix=prefix),
        EX_CANTCREAT,
        str(data),
        "not writable",
        "Read-only file system",
        str(cfg),
    )
    # an archive that exists, then is mounted read-only
    assert vesalius("import", CT, "--config", str(cfg)).returncode == 0
    fails_clearly(
        vesalius("jobs", "list", "--config", str(cfg), prefix=prefix),
        EX_CANTCREAT,
        str(data),
        "not writable",
    )


def test_postgresql_unreachable(tmp_path: Path) -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/pacs"
    for command in (["serve", "--data-dir", str(tmp_path / "d")], ["jobs", "list"]):
        proc = vesalius(*command, env={"VESALIUS_DATABASE_URL": url})
        line = fails_clearly(proc, EX_UNAVAILABLE, "127.0.0.1:1/pacs", "Connection refused")
        assert "s3cret" not in proc.stderr, line
        assert "***" in proc.stderr


def test_a_schema_newer_than_the_code(tmp_path: Path, database_url: str) -> None:
    """An index written by a newer Vesalius (revision unknown here) is left alone: the command
    ends saying so, on SQLite and PostgreSQL."""
    catalog = Catalog.open(database_url)
    try:
        with catalog.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    finally:
        catalog.close()
    env = {"VESALIUS_DATABASE_URL": database_url, "VESALIUS_DATA_DIR": str(tmp_path / "d")}
    for command in (["jobs", "list"], ["serve"], ["import", CT]):
        fails_clearly(
            vesalius(*command, env=env), EX_DATAERR, "9999_future", "newer than this Vesalius"
        )


def test_an_older_schema_is_migrated_and_said(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert vesalius("import", CT, "--data-dir", str(data)).returncode == 0  # at the head
    with sqlite3.connect(data / "index.sqlite") as db:
        current = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    old = tmp_path / "old"
    old.mkdir()
    engine = open_engine(f"sqlite:///{old / 'index.sqlite'}")
    with engine.connect() as conn:
        alembic_command.upgrade(alembic_config(conn), "0005")
        conn.commit()
    engine.dispose()
    proc = vesalius("jobs", "list", env={"VESALIUS_DATA_DIR": str(old)})
    assert proc.returncode == 0, proc.stderr
    assert f"migrating the index schema from revision 0005 to {current}" in proc.stderr


@pytest.mark.parametrize("which", ["dicom", "http"])
def test_a_port_in_use(tmp_path: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = free_port()
        dicom, http = (port, other) if which == "dicom" else (other, port)
        cfg = config(
            tmp_path,
            f'data_dir = "d"\n[dicom]\nhost = "127.0.0.1"\nport = {dicom}\n'
            f'[http]\nhost = "127.0.0.1"\nport = {http}\n',
        )
        fails_clearly(
            vesalius("serve", "--config", str(cfg)),
            EX_TEMPFAIL,
            f"127.0.0.1:{port}",
            f"{which}.port",
            "in use",
        )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    url = {"VESALIUS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    proc = vesalius("--debug", "jobs", "list", env=url)
    assert proc.returncode == EX_UNAVAILABLE
    assert "Traceback" in proc.stderr and "OperationalError" in proc.stderr
    assert len(errors(proc)) == 1
    proc = vesalius("jobs", "list", env={**url, "VESALIUS_DEBUG": "1"})
    assert proc.returncode == EX_UNAVAILABLE and "Traceback" in proc.stderr


def test_an_unexpected_exception_is_one_line_saying_it_is_a_bug() -> None:
    """No real command fails this way on purpose: a throwaway group with a failing command."""

    @click.group(cls=MainGroup)
    @click.option("--debug", is_flag=True)
    def group(debug: bool) -> None:
        """A group like ``vesalius``'s."""

    @group.command()
    def broken() -> None:
        raise ZeroDivisionError("division by zero")

    result = CliRunner().invoke(group, ["broken"])
    assert result.exit_code == EX_SOFTWARE
    assert result.output.count("\n") == 1
    assert "bug in Vesalius" in result.output and "--debug" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(group, ["--debug", "broken"])
    assert result.exit_code == EX_SOFTWARE and "Traceback" in result.output


# --- where the data is ----------------------------------------------------------------------


def test_import_from_another_folder_finds_the_archive_of_its_settings_file(
    tmp_path: Path,
) -> None:
    """A relative data_dir is the settings file's: `vesalius import` run from anywhere with
    --config uses one archive; the first run says it made a new one, the next do not."""
    site = tmp_path / "site"
    site.mkdir()
    cfg = config(site, f'data_dir = "archive"\n{ports()}')
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    archive = site / "archive"

    first = vesalius("import", CT, "--config", str(cfg), cwd=here)
    assert first.returncode == 0, first.stderr
    assert f"vesalius: archive: data in {archive}, index sqlite:///{archive}/index.sqlite" in (
        first.stderr.splitlines()
    )
    assert f"warning: there was no archive in {archive}" in first.stderr
    assert (archive / "index.sqlite").is_file()

    second = vesalius("import", CT, "--config", "../site/vesalius.toml", cwd=there)
    assert second.returncode == 0, second.stderr
    assert f"archive: data in {archive}," in second.stderr
    assert "no archive" not in second.stderr
    assert "already stored (kept): 1" in second.stdout
    assert not (here / "archive").exists() and not (there / "archive").exists()
    assert not (here / "vesalius-data").exists() and not (there / "vesalius-data").exists()


def test_commands_on_stored_data_refuse_a_folder_without_an_archive(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    fails_clearly(
        vesalius("jobs", "list", cwd=tmp_path, env={"VESALIUS_DATA_DIR": "empty"}),
        EX_NOINPUT,
        f"no archive in {empty}",
        "VESALIUS_DATA_DIR",
    )
    fails_clearly(
        vesalius("delete", "--study", "1.2.3", "--yes", "--data-dir", str(empty)),
        EX_NOINPUT,
        f"no archive in {empty}",
        "command line",
    )
    cfg = config(tmp_path, 'data_dir = "nothing-here"\n')
    fails_clearly(
        vesalius("send", "--study", "1.2.3", "--to", "X@127.0.0.1:1", "--config", str(cfg)),
        EX_NOINPUT,
        f"no archive in {tmp_path / 'nothing-here'}",
        str(cfg),
    )
    assert not empty.exists() and not (tmp_path / "nothing-here").exists()
    assert not (tmp_path / "vesalius-data").exists()


def test_serve_says_once_that_it_creates_a_new_archive(tmp_path: Path) -> None:
    for run in range(2):
        with serve(tmp_path) as served:
            pass
        log = served.log_text()  # in the log's format (logfmt), like every line of serve
        assert f'msg="archive: data in {served.data_dir},' in log
        created = f'msg="creating a new archive in {served.data_dir}"' in log
        assert created == (run == 0), log
        assert "Traceback" not in log


def test_the_password_of_a_database_url_is_hidden_in_the_archive_line(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite URLs have no password")
    with_password = database_url.replace("postgres@", "postgres:s3cret@", 1)
    write_config(tmp_path / "v.toml", {"data_dir": "d", "database_url": with_password})
    proc = vesalius("import", CT, "--config", str(tmp_path / "v.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "postgres:***@" in proc.stderr and "s3cret" not in proc.stderr
