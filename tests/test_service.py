"""``vesalius service install|uninstall`` and the readiness protocol: the unit's content,
``systemd-analyze verify`` on it, an install into a temporary root (user, folders, default
settings; never the real /etc), sd_notify over a real unix datagram socket from a real
``vesalius serve``, and that server under MemoryDenyWriteExecute (the kernel's MDWE prctl,
which systemd also uses) storing and decoding a JPEG image."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.data import get_testdata_file

from conftest import dcmtk
from served import serve
from vesalius.cli import main
from vesalius.settings import load_settings

VENV_VESALIUS = Path(sys.executable).absolute().parent / "vesalius"
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallFilter=@system-service",
    "LimitNOFILE=65536",
    "UMask=0027",
    "Restart=on-failure",
    "RestartPreventExitStatus=65 66 73 77 78",
    "StandardOutput=journal",
    "KillSignal=SIGTERM",
    "ExecReload=/bin/kill -HUP $MAINPID",
    "Type=notify",
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_VESALIUS), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _fake_root(tmp_path: Path) -> Path:
    """A root with copies of the account files, for useradd --prefix."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), root / "etc" / name)
    return root


def _lines(unit: str) -> set[str]:
    return {line.strip() for line in unit.splitlines()}


def test_printed_unit_runs_this_venv_hardened(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = _run("service", "install", "--print", "--root", str(root))
    assert run.returncode == 0, run.stderr
    lines = _lines(run.stdout)
    for expected in HARDENING:
        assert expected in lines
    assert f"ExecStart={VENV_VESALIUS} serve --config /etc/vesalius/vesalius.toml" in lines
    assert "User=vesalius" in lines
    assert "ReadWritePaths=/var/lib/vesalius" in lines
    assert "CapabilityBoundingSet=" in lines  # no capability at all on the default ports
    assert not any(line.startswith("AmbientCapabilities") for line in lines)
    stop = next(line for line in lines if line.startswith("TimeoutStopSec="))
    assert float(stop.removeprefix("TimeoutStopSec=").rstrip("s")) > 10  # the default grace
    assert not root.exists()  # --print writes nothing


def test_a_port_below_1024_gets_only_net_bind_service(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = root / "srv" / "pacs.toml"
    config.parent.mkdir(parents=True)
    config.write_text('data_dir = "/srv/pacs"\n[dicom]\nport = 104\n')
    run = _run(
        "service",
        "install",
        "--print",
        "--root",
        str(root),
        "--config",
        "/srv/pacs.toml",
        "--data-dir",
        "/srv/pacs",
        "--user",
        "pacs",
    )
    assert run.returncode == 0, run.stderr
    lines = _lines(run.stdout)
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in lines
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in lines
    assert "User=pacs" in lines and "ReadWritePaths=/srv/pacs" in lines
    assert f"ExecStart={VENV_VESALIUS} serve --config /srv/pacs.toml" in lines


def test_the_unit_writes_where_the_settings_say(tmp_path: Path) -> None:
    """An existing settings file names the data folder (relative to the file), and a SQLite
    index, a log file and an audit file kept elsewhere: those are the unit's writable paths; a
    --data-dir that contradicts it is refused in one line."""
    root = tmp_path / "root"
    config = root / "etc" / "pacs" / "pacs.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'data_dir = "../../srv/archive"\ndatabase_url = "sqlite:////db/index.sqlite"\n'
        '[log]\nfile = "/var/log/vesalius/vesalius.log"\n'
        '[audit]\nfile = "/var/log/vesalius/audit.log"\n'
    )
    args = ["service", "install", "--print", "--root", str(root), "--config", "/etc/pacs/pacs.toml"]
    run = _run(*args)
    assert run.returncode == 0, run.stderr
    lines = _lines(run.stdout)
    assert "ReadWritePaths=/srv/archive /var/log/vesalius /db" in lines
    assert "WorkingDirectory=/srv/archive" in lines
    refused = _run(*args, "--data-dir", "/var/lib/other")
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "is not the data_dir of /etc/pacs/pacs.toml" in refused.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """systemd's own checker: no unknown key, no bad value, an executable ExecStart; and its
    offline security review rates the sandbox (lower is better, 10 is unprotected)."""
    run = _run("service", "install", "--print")
    unit = tmp_path / "vesalius.service"
    unit.write_text(run.stdout)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == ""  # unknown keys are only warnings: none at all
    broken = tmp_path / "broken" / "vesalius.service"
    broken.parent.mkdir()
    broken.write_text(run.stdout.replace("Type=notify", "Typo=notify"))
    warned = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, check=False
    )
    assert "Unknown key" in warned.stderr  # the check above can fail
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(
        r"Overall exposure level for vesalius.service: ([\d.]+) (\w+)", security.stdout
    )
    assert match, security.stdout + security.stderr
    assert float(match.group(1)) <= 2.0 and match.group(2) == "OK"


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a system user needs root")
def test_install_into_a_root_creates_user_folders_settings_and_unit(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    host_passwd = Path("/etc/passwd").read_text()
    run = _run("service", "install", "--root", str(root), "--user", "vesalius-test")
    assert run.returncode == 0, run.stderr
    assert "systemctl daemon-reload" in run.stdout
    assert "systemctl enable --now vesalius" in run.stdout
    assert Path("/etc/passwd").read_text() == host_passwd  # only the root's accounts changed
    entry = next(
        line.split(":")
        for line in (root / "etc" / "passwd").read_text().splitlines()
        if line.startswith("vesalius-test:")
    )
    uid, gid, home, shell = int(entry[2]), int(entry[3]), entry[5], entry[6]
    assert uid < 1000 and home == "/var/lib/vesalius" and shell == "/usr/sbin/nologin"
    data = root / "var" / "lib" / "vesalius"
    assert (data.stat().st_uid, data.stat().st_gid) == (uid, gid)
    assert data.stat().st_mode & 0o777 == 0o750
    config = root / "etc" / "vesalius" / "vesalius.toml"
    assert config.stat().st_mode & 0o777 == 0o640 and config.stat().st_gid == gid
    settings = load_settings(config, environ={})
    assert settings["data_dir"] == "/var/lib/vesalius"
    assert settings["http.host"] == "127.0.0.1"
    unit = (root / "etc" / "systemd" / "system" / "vesalius.service").read_text()
    assert "User=vesalius-test" in _lines(unit)

    config.write_text(config.read_text() + "\n# edited\n")
    again = _run("service", "install", "--root", str(root), "--user", "vesalius-test")
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and "default settings" not in again.stdout
    assert config.read_text().endswith("# edited\n")  # an existing settings file is kept

    removed = _run("service", "uninstall", "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    assert not (root / "etc" / "systemd" / "system" / "vesalius.service").exists()
    assert config.exists() and data.exists()
    twice = _run("service", "uninstall", "--root", str(root))
    assert twice.returncode != 0
    assert len(twice.stderr.strip().splitlines()) == 1 and "no unit" in twice.stderr


def test_uninstall_without_a_unit_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["service", "uninstall", "--root", str(tmp_path)])
    assert result.exit_code != 0
    assert "no unit at" in result.output and "Traceback" not in result.output


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="vsd-", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(120)  # a hang guard, not a measurement
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_serve_tells_systemd_when_ready_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with serve(tmp_path, ready=False) as served:
        message = sock.recv(4096).decode()
        assert "READY=1" in message.splitlines()
        # ready means both ports answer already
        assert httpx.get(served.url + "/health").status_code == 200
        dcmtk("echoscu", "-aec", served.ae_title, "127.0.0.1", str(served.dicom_port))
        assert served.stop() == 0
        assert "STOPPING=1" in sock.recv(4096).decode().splitlines()


def test_serve_without_notify_socket_is_quiet(tmp_path: Path) -> None:
    """Outside systemd (no NOTIFY_SOCKET) and with a bad one, serving goes on."""
    from vesalius.systemd import notify

    assert notify("READY=1") is False or os.environ.get("NOTIFY_SOCKET")
    os.environ.pop("NOTIFY_SOCKET", None)
    assert notify("READY=1") is False
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
        assert notify("READY=1") is False


MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("prctl(PR_SET_MDWE) failed: errno %d" % ctypes.get_errno())
assert libc.prctl(66, 0, 0, 0, 0) == 1  # PR_GET_MDWE
os.execv(sys.argv[1], sys.argv[1:])
"""


#: pydicom test files and the storescu option that proposes their transfer syntax: JPEG
#: baseline, JPEG 2000 and JPEG lossless, decoded by pylibjpeg's libjpeg and openjpeg.
CODED = {
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",
    "JPEG2000.dcm": "-xw",
    "SC_rgb_jpeg_gdcm.dcm": "-xs",
}


def test_serving_works_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes forbids memory that is writable and executable; numpy,
    pylibjpeg, uvloop and the rest must not need it. The kernel's MDWE (Linux 6.3+), inherited
    by the workers, enforces the same rule here: JPEG images are stored, then decoded for
    /rendered."""
    probe = subprocess.run(
        [sys.executable, "-c", MDWE, "/bin/true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no MDWE prctl on this kernel: {probe.stderr.strip()}")
    with serve(tmp_path, command_prefix=[sys.executable, "-c", MDWE]) as served:
        for name, propose in CODED.items():
            path = Path(get_testdata_file(name))
            ds = dcmread(path)
            address = ["-aec", served.ae_title, "127.0.0.1", str(served.dicom_port)]
            dcmtk("storescu", propose, *address, str(path))
            url = (
                f"{served.url}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered"
            )
            answer = httpx.get(url, headers={"Accept": "image/png"}, timeout=60)
            assert answer.status_code == 200, (name, answer.text)
            assert answer.content.startswith(b"\x89PNG")
        assert served.alive()
