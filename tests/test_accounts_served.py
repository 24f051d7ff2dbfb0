"""The default posture and the commands, with real ``vesalius`` processes (issue 14): on
loopback the laptop quick start needs no credentials; beyond loopback authentication is on by
default and turning it off refuses to start (exit 78, saying what to set); the first admin and
a token come from ``vesalius user add`` and ``vesalius token create``. HTTP Basic is accepted
only over HTTPS (a self-signed certificate made here with ``cryptography``); jobs run with
their submitter's roles."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from conftest import make_server, run_cli, running_http, wait_until
from served import serve
from vesalius.commands import operator
from vesalius.errors import ForbiddenError
from vesalius.identity import Identity
from vesalius.services.jobs import JobContext, _identity, submitter
from vesalius.web.serving import bind_http
from vesalius.wiring import http_app

PASSWORD = "correct horse battery"


def vesalius(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_cli(*args, input=stdin)  # in this process: the same command, no start-up


def test_the_laptop_defaults_need_no_credentials(tmp_path: Path) -> None:
    with serve(tmp_path) as served:
        assert httpx.get(f"{served.url}/dicom-web/studies").status_code == 200
        assert httpx.get(f"{served.url}/").status_code != 303  # no login page in the way


def test_serving_beyond_loopback_with_authentication_off_refuses_to_start(
    tmp_path: Path,
) -> None:
    settings = {"http.host": "0.0.0.0", "auth.required": False}
    with serve(tmp_path, settings, ready=False) as served:
        assert served.proc.wait(60) == 78
        text = served.log_text()
    assert "auth.required is false" in text and "0.0.0.0" in text
    assert "auth.required = true" in text and "vesalius user add" in text


def test_beyond_loopback_without_users_everything_is_refused_and_the_log_says_why(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, {"http.host": "0.0.0.0"}) as served:
        assert httpx.get(f"{served.url}/dicom-web/studies").status_code == 401
        wait_until(lambda: "no user exists yet" in served.log_text(), what="the warning")
        assert "vesalius user add NAME --role admin" in served.log_text()


def test_beyond_loopback_the_first_admin_and_a_token_come_from_the_commands(
    tmp_path: Path,
) -> None:
    data = str(tmp_path / "data")
    added = vesalius(
        "user",
        "add",
        "chief",
        "--role",
        "admin",
        "--password-stdin",
        "--data-dir",
        data,
        stdin=PASSWORD + "\n",
    )
    assert added.returncode == 0, added.stderr
    assert "user chief added" in added.stdout and "archive:" in added.stderr
    made = vesalius("token", "create", "chief", "--expires", "1", "--data-dir", data)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("ves_") and "shown only now" in made.stderr
    prompted = vesalius(  # no --password-stdin: asked twice (from the pipe here)
        "user",
        "add",
        "tech",
        "--role",
        "technologist",
        "--data-dir",
        data,
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert prompted.returncode == 0 and "Repeat for confirmation" in prompted.stderr
    mismatch = vesalius(
        "user",
        "add",
        "tech2",
        "--role",
        "technologist",
        "--data-dir",
        data,
        stdin=f"{PASSWORD}\nsomething else\n",
    )
    assert mismatch.returncode != 0 and "do not match" in mismatch.stderr
    listed = vesalius("user", "list", "--data-dir", data)
    assert "chief roles admin enabled" in listed.stdout
    assert "tech roles technologist enabled" in listed.stdout and "tech2" not in listed.stdout
    short = vesalius("user", "reset", "chief", "--password-stdin", "--data-dir", data, stdin="x\n")
    assert short.returncode != 0 and "at least 8 characters" in short.stderr

    with serve(tmp_path, {"http.host": "0.0.0.0"}) as served:
        refused = httpx.get(f"{served.url}/dicom-web/studies")
        assert refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
        page = httpx.get(f"{served.url}/viewer")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        authorized = {"Authorization": f"Bearer {token}"}
        for _ in range(2):  # the second is checked on the event loop (its last use is recent)
            answer = httpx.get(f"{served.url}/dicom-web/studies", headers=authorized)
            assert answer.status_code == 200
        token_id = token.split("_")[1]
        revoked = vesalius("token", "revoke", token_id, "--data-dir", data)
        assert revoked.returncode == 0, revoked.stderr
        after = httpx.get(f"{served.url}/dicom-web/studies", headers=authorized)
        assert after.status_code == 401  # another process revoked it: the index is shared


# -- HTTP Basic only over HTTPS ----------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made here (no `vesalius cert create` needed)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def running_https(app: object, cert: Path, key: Path) -> Iterator[str]:
    listener = bind_http("127.0.0.1", 0)
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        lifespan="off",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="HTTPS server start")
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def test_basic_is_refused_over_plain_http_and_accepted_over_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **{"auth.required": "true", "auth.basic": True},
    )
    try:
        running.archive.accounts.add_user("rad", PASSWORD, frozenset({"radiologist"}), operator())
        good, wrong = ("rad", PASSWORD), ("rad", "not the password")
        with running_http(running.archive, running.settings) as url:
            plain = httpx.get(f"{url}/dicom-web/studies", auth=good)
            assert plain.status_code == 401 and "only over HTTPS" in plain.json()["error"]
            assert "Basic" not in plain.headers["WWW-Authenticate"]
        app = http_app(running.archive, running.settings)
        with (
            running_https(app, cert, key) as url,
            httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client,
        ):
            assert client.get(f"{url}/dicom-web/studies", auth=good).status_code == 200
            refused = client.get(f"{url}/dicom-web/studies", auth=wrong)
            assert refused.status_code == 401
            assert 'Basic realm="Vesalius"' in refused.headers["WWW-Authenticate"]
            # A verified password is remembered only while it is the user's: after a reset
            # the old one is refused, and a disabled user is refused at once.
            accounts = running.archive.accounts
            assert client.get(f"{url}/dicom-web/studies", auth=good).status_code == 200
            accounts.reset_password("rad", PASSWORD + "!", operator())
            assert client.get(f"{url}/dicom-web/studies", auth=good).status_code == 401
            renewed = ("rad", PASSWORD + "!")
            assert client.get(f"{url}/dicom-web/studies", auth=renewed).status_code == 200
            accounts.set_disabled("rad", True, operator())
            assert client.get(f"{url}/dicom-web/studies", auth=renewed).status_code == 401
            accounts.set_disabled("rad", False, operator())
            accounts.reset_password("rad", PASSWORD, operator())
            # Over HTTPS the session cookie is __Host-, Secure, HttpOnly.
            page = client.get(f"{url}/login")
            csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
            login = client.post(
                f"{url}/login",
                data={"name": "rad", "password": PASSWORD, "csrf": csrf, "next": "/"},
            )
            assert login.status_code == 303
            cookie = login.headers["set-cookie"]
            assert cookie.startswith("__Host-vesalius-session=")
            assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie
            assert client.get(f"{url}/dicom-web/studies").status_code == 200
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


# -- jobs run with their submitter's rights --------------------------------------------------


def test_a_job_runs_with_its_submitters_roles(tmp_path: Path) -> None:
    running = make_server(
        tmp_path / "data", f"sqlite:///{tmp_path / 'index.sqlite'}", **{"auth.required": "true"}
    )
    seen: list[Identity] = []

    def probe(ctx: JobContext) -> str:
        seen.append(ctx.who)
        return "seen"

    try:
        jobs = running.archive.jobs
        jobs.register("probe", probe, "send")
        tech = Identity(
            "user",
            "tech",
            "10.0.0.7",
            frozenset({"technologist"}),
            frozenset({"ct"}),
            "token",
        )
        job = jobs.submit("probe", {}, tech)
        assert job.submitted_by == "user:tech@10.0.0.7 [roles=technologist;groups=ct;method=token]"
        jobs.run_job(job.pk)
        (who,) = seen
        assert (who, who.roles, who.groups, who.method) == (
            tech,
            tech.roles,
            tech.groups,
            "token",
        )
        radiologist = Identity("user", "rad", "10.0.0.8", frozenset({"radiologist"}))
        with pytest.raises(ForbiddenError, match="may not send"):
            jobs.submit("probe", {}, radiologist)
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()
    plain = Identity("user", "tester", "localhost")
    assert submitter(plain) == "user:tester@localhost" and _identity(str(plain)) == plain
