"""Users, roles, tokens and sessions over real HTTP (issue 14; docs/security.md "Users, roles,
sessions and tokens"): a real archive served by uvicorn on an ephemeral port with
``auth.required = true``, DICOMweb clients with bearer tokens of each role, a login form posted
as a browser would, and the attack classes of peers' CVEs (login brute force, session fixation,
CSRF, a token used after revocation, open redirects)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from conftest import RunningServer, make_server, running_http
from synth import make_instance
from vesalius.commands import operator
from vesalius.errors import InvalidDataError
from vesalius.index.schema import api_tokens, login_sessions, users
from vesalius.services.policy import ROLE_ACTIONS

PASSWORD = "correct horse battery"
BOUNDARY = "accounts-boundary"
ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


@dataclass
class Site:
    """A running archive with authentication on, and its URL."""

    running: RunningServer
    url: str

    @property
    def accounts(self) -> Any:
        return self.running.archive.accounts

    def user(self, name: str, *roles: str) -> None:
        self.accounts.add_user(name, PASSWORD, frozenset(roles), operator())

    def token(self, name: str, *scopes: str) -> str:
        return str(self.accounts.create_token(name, operator(), frozenset(scopes))[1])


@contextmanager
def site(tmp_path: Path, database_url: str, **overrides: object) -> Iterator[Site]:
    running = make_server(tmp_path / "data", database_url, **{"auth.required": "true", **overrides})
    try:
        with running_http(running.archive, running.settings) as url:
            yield Site(running, url)
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


@pytest.fixture
def sqlite_site(tmp_path: Path) -> Iterator[Site]:
    with site(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}") as found:
        yield found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stow_body(path: Path) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


STOW_TYPE = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}


def new_instance(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / f"{generate_uid()}.dcm"
    ds = make_instance(path, PatientID="ACCOUNTS-1")
    return path, str(ds.StudyInstanceUID)


def login_form(client: httpx.Client, url: str, target: str = "/") -> str:
    """GET the login page; the CSRF token of its form."""
    page = client.get(f"{url}/login", params={"next": target})
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def log_in(
    client: httpx.Client, url: str, name: str, password: str = PASSWORD, target: str = "/"
) -> httpx.Response:
    csrf = login_form(client, url, target)
    form = {"name": name, "password": password, "csrf": csrf, "next": target}
    return client.post(f"{url}/login", data=form)


# -- 401 / 403 / 200 per role over DICOMweb ---------------------------------------------------


def test_dicomweb_answers_by_role(tmp_path: Path, database_url: str) -> None:
    """QIDO-RS (query), WADO-RS (retrieve) and STOW-RS (store) for a token of each role: 200
    where ROLE_ACTIONS allows, 403 where not; no credentials or a wrong token: 401 with a
    Bearer challenge."""
    with site(tmp_path, database_url) as web:
        for role in ROLE_ACTIONS:
            web.user(f"u-{role}", role)
        tokens = {role: web.token(f"u-{role}") for role in ROLE_ACTIONS}
        path, study = new_instance(tmp_path)
        stored = httpx.post(
            f"{web.url}/dicom-web/studies",
            content=stow_body(path),
            headers={**STOW_TYPE, **bearer(tokens["admin"])},
        )
        assert stored.status_code == 200, stored.text

        anonymous = httpx.get(f"{web.url}/dicom-web/studies")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith('Bearer realm="Vesalius"')
        wrong = httpx.get(
            f"{web.url}/dicom-web/studies", headers=bearer("ves_0123456789ab_" + "x" * 43)
        )
        assert (
            wrong.status_code == 401
            and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        )
        assert (
            httpx.post(
                f"{web.url}/dicom-web/studies", content=stow_body(path), headers=STOW_TYPE
            ).status_code
            == 401
        )

        for role, actions in ROLE_ACTIONS.items():
            auth = bearer(tokens[role])
            qido = httpx.get(f"{web.url}/dicom-web/studies", headers=auth)
            assert qido.status_code == (200 if "query" in actions else 403), (role, qido.text)
            if qido.status_code == 200:
                assert study in qido.text
            wado = httpx.get(
                f"{web.url}/dicom-web/studies/{study}", headers={**auth, **ACCEPT_DICOM}
            )
            assert wado.status_code == (200 if "retrieve" in actions else 403), (role, wado.text)
            fresh, _ = new_instance(tmp_path)
            stow = httpx.post(
                f"{web.url}/dicom-web/studies",
                content=stow_body(fresh),
                headers={**STOW_TYPE, **auth},
            )
            assert stow.status_code == (200 if "store" in actions else 403), (role, stow.text)


def test_a_token_carries_its_scopes_among_its_users_roles(sqlite_site: Site) -> None:
    """A token scoped to radiologist of an admin user cannot store; unscoped, it can."""
    web = sqlite_site
    web.user("both", "admin", "radiologist")
    path, _ = new_instance(web.running.data_dir.parent)
    scoped = web.token("both", "radiologist")
    full = web.token("both")
    assert httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(scoped)).status_code == 200
    refused = httpx.post(
        f"{web.url}/dicom-web/studies",
        content=stow_body(path),
        headers={**STOW_TYPE, **bearer(scoped)},
    )
    assert refused.status_code == 403
    allowed = httpx.post(
        f"{web.url}/dicom-web/studies",
        content=stow_body(path),
        headers={**STOW_TYPE, **bearer(full)},
    )
    assert allowed.status_code == 200
    with pytest.raises(InvalidDataError, match="does not have the role"):
        web.accounts.create_token("both", operator(), frozenset({"auditor"}))


# -- tokens: revoked, expired, disabled user; hashed at rest ----------------------------------


def test_a_token_after_revocation_or_expiry_or_with_its_user_disabled_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    with site(tmp_path, database_url) as web:
        web.user("rad", "radiologist")
        revoked, expiring, kept = web.token("rad"), web.token("rad"), web.token("rad")
        for token in (revoked, expiring, kept):
            assert (
                httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(token)).status_code == 200
            )

        web.accounts.revoke_token(revoked.split("_")[1], operator())
        answer = httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(revoked))
        assert answer.status_code == 401 and "revoked" in answer.json()["error"]

        past = datetime.now(UTC) - timedelta(seconds=1)
        with web.running.assembly.catalog.write() as conn:
            conn.execute(
                update(api_tokens)
                .where(api_tokens.c.token_id == expiring.split("_")[1])
                .values(expires_at=past)
            )
        answer = httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(expiring))
        assert answer.status_code == 401 and "expired" in answer.json()["error"]

        web.accounts.set_disabled("rad", True, operator())
        answer = httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(kept))
        assert answer.status_code == 401 and "disabled" in answer.json()["error"]
        web.accounts.set_disabled("rad", False, operator())
        assert httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(kept)).status_code == 200

        listed = {t.token_id: t for t in web.accounts.tokens(operator(), "rad")}
        assert listed[kept.split("_")[1]].last_used_at is not None
        assert listed[revoked.split("_")[1]].revoked_at is not None


def test_a_settled_token_or_session_is_checked_without_a_thread_and_a_revoke_still_refuses(
    sqlite_site: Site,
) -> None:
    """On a SQLite file the middleware checks a token or a session on the event loop (one read
    of the same rows, no cache): what it cannot settle (a first use, a revoke) goes to the
    full check in a thread."""
    web = sqlite_site
    web.user("rad", "radiologist")
    token = web.token("rad")
    accounts = web.accounts
    assert accounts.quick_checks
    assert accounts.quick_token(token, "127.0.0.1") is None  # first use: to be written
    assert httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(token)).status_code == 200
    who = accounts.quick_token(token, "127.0.0.1")
    assert who is not None and who.name == "rad" and who.roles == {"radiologist"}
    assert httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(token)).status_code == 200
    accounts.revoke_token(token.split("_")[1], operator())
    assert accounts.quick_token(token, "127.0.0.1") is None
    answer = httpx.get(f"{web.url}/dicom-web/studies", headers=bearer(token))
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]

    cookie, _ = accounts.login("rad", PASSWORD, "127.0.0.1")
    session = accounts.quick_session(cookie, "127.0.0.1")
    assert session is not None and session.identity.name == "rad"
    cookies = {"vesalius-session": cookie}
    assert httpx.get(f"{web.url}/dicom-web/studies", cookies=cookies).status_code == 200
    assert accounts.logout(cookie, "127.0.0.1")
    assert accounts.quick_session(cookie, "127.0.0.1") is None
    assert httpx.get(f"{web.url}/dicom-web/studies", cookies=cookies).status_code == 401


def test_passwords_are_argon2_and_tokens_and_sessions_hashed_at_rest(sqlite_site: Site) -> None:
    web = sqlite_site
    web.user("rad", "radiologist")
    token = web.token("rad")
    with httpx.Client() as client:
        assert log_in(client, web.url, "rad").status_code == 303
        cookie = client.cookies["vesalius-session"]
    with web.running.assembly.catalog.read() as conn:
        (hashed,) = conn.execute(select(users.c.password_hash)).one()
        tokens = [tuple(r) for r in conn.execute(select(api_tokens))]
        sessions = [tuple(r) for r in conn.execute(select(login_sessions))]
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    secret = token.split("_", 2)[2]
    assert all(secret not in str(value) for row in tokens for value in row)
    assert any(hashlib.sha256(secret.encode()).hexdigest() == value for value in tokens[0])
    assert all(cookie not in str(value) for row in sessions for value in row)
    assert any(hashlib.sha256(cookie.encode()).hexdigest() == value for value in sessions[0])
    # Every byte of the database: neither the password, the token's secret nor the cookie.
    content = (web.running.data_dir.parent / "index.sqlite").read_bytes()
    for text in (PASSWORD, secret, cookie):
        assert text.encode() not in content


# -- sessions: login, fixation, CSRF, logout, redirects ---------------------------------------


def test_login_gives_a_new_session_id_and_never_adopts_one(sqlite_site: Site) -> None:
    """Session fixation: a session id planted before login is neither kept nor made valid; each
    login issues a fresh id, and the id the browser held before is ended."""
    web = sqlite_site
    web.user("rad", "radiologist")
    with httpx.Client() as client:
        client.cookies.set("vesalius-session", "planted-by-an-attacker", domain="127.0.0.1")
        answer = log_in(client, web.url, "rad", target="/viewer?StudyInstanceUIDs=1.2.3")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/viewer?StudyInstanceUIDs=1.2.3"
        first = client.cookies["vesalius-session"]
        assert first != "planted-by-an-attacker"
        set_cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie and "path=/" in set_cookie
        assert client.get(f"{web.url}/dicom-web/studies").status_code == 200
        assert log_in(client, web.url, "rad").status_code == 303
        second = client.cookies["vesalius-session"]
        assert second != first
    for stale in ("planted-by-an-attacker", first):
        refused = httpx.get(f"{web.url}/dicom-web/studies", cookies={"vesalius-session": stale})
        assert refused.status_code == 401
    assert (
        httpx.get(f"{web.url}/dicom-web/studies", cookies={"vesalius-session": second}).status_code
        == 200
    )


def test_cross_site_posts_with_the_cookie_are_refused(sqlite_site: Site) -> None:
    """CSRF: a form POST with the session cookie but no token (what a foreign page can make a
    browser send) is refused; with the session's token from /session, from our origin, it
    passes. The login form itself needs its own token."""
    web = sqlite_site
    web.user("tech", "technologist")
    path, _ = new_instance(web.running.data_dir.parent)
    with httpx.Client() as client:
        no_token = client.post(
            f"{web.url}/login", data={"name": "tech", "password": PASSWORD, "next": "/"}
        )
        assert no_token.status_code == 403 and "vesalius-session" not in client.cookies
        assert log_in(client, web.url, "tech").status_code == 303
        foreign = client.post(
            f"{web.url}/dicom-web/studies",
            content=stow_body(path),
            headers={**STOW_TYPE, "Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403 and "CSRF" in foreign.json()["error"]
        csrf = client.get(f"{web.url}/session").json()["csrf_token"]
        cross = client.post(
            f"{web.url}/dicom-web/studies",
            content=stow_body(path),
            headers={**STOW_TYPE, "X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        ours = client.post(
            f"{web.url}/dicom-web/studies",
            content=stow_body(path),
            headers={**STOW_TYPE, "X-CSRF-Token": csrf, "Origin": web.url},
        )
        assert ours.status_code == 200, ours.text
        # Logging out needs the token too: a bare cross-site POST leaves the session alive.
        assert client.post(f"{web.url}/logout", data={}).status_code == 403
        assert client.get(f"{web.url}/session").json()["authenticated"]
        assert client.post(f"{web.url}/logout", data={"csrf": csrf}).status_code == 303
        assert client.get(f"{web.url}/dicom-web/studies").status_code == 401


def test_pages_redirect_to_login_and_login_never_redirects_away(sqlite_site: Site) -> None:
    web = sqlite_site
    web.user("rad", "radiologist")
    page = httpx.get(f"{web.url}/viewer?StudyInstanceUIDs=1.2.3", headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
    assert httpx.get(f"{web.url}/").headers["location"] == "/login?next=%2F"
    assert httpx.get(f"{web.url}/dicom-web/studies").status_code == 401
    assert httpx.get(f"{web.url}/health").status_code == 200
    for hostile in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "http:/x"):
        with httpx.Client() as client:
            answer = log_in(client, web.url, "rad", target=hostile)
            assert answer.status_code == 303 and answer.headers["location"] == "/", hostile


def test_login_brute_force_is_throttled(tmp_path: Path) -> None:
    """After auth.max_failures wrong passwords the user is locked: even the right password is
    refused (429, Retry-After) until the lock ends; guessing many names from one address
    locks the address."""
    database = f"sqlite:///{tmp_path / 'index.sqlite'}"
    with site(
        tmp_path, database, **{"auth.max_failures": 3, "auth.max_failures_per_address": 6}
    ) as web:
        web.user("rad", "radiologist")
        web.user("other", "radiologist")
        with httpx.Client() as client:
            for _ in range(3):
                assert log_in(client, web.url, "rad", "wrong password").status_code == 401
            locked = log_in(client, web.url, "rad")
            assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
            assert "vesalius-session" not in client.cookies
        (listed,) = [u for u in web.accounts.users(operator()) if u.name == "rad"]
        assert listed.locked_until is not None and listed.locked_until > datetime.now(UTC)
        with httpx.Client() as client:  # the other user, same address: 3 more fail, then 429
            for name in ("nobody-1", "nobody-2"):
                assert log_in(client, web.url, name, "guess").status_code == 401
            assert log_in(client, web.url, "other", "guess").status_code == 401
            assert log_in(client, web.url, "other").status_code == 429
        web.accounts.set_disabled("rad", False, operator())  # an admin lifts the user's lock
        events = [u.name for u in web.accounts.users(operator()) if u.locked_until]
        assert "rad" not in events


def test_a_disabled_user_cannot_log_in_and_loses_their_sessions(sqlite_site: Site) -> None:
    web = sqlite_site
    web.user("rad", "radiologist")
    with httpx.Client() as client:
        assert log_in(client, web.url, "rad").status_code == 303
        web.accounts.set_disabled("rad", True, operator())
        assert client.get(f"{web.url}/dicom-web/studies").status_code == 401
        assert log_in(client, web.url, "rad").status_code == 401


def test_an_external_login_starts_a_session(sqlite_site: Site) -> None:
    """What the OpenID Connect work calls after a provider authenticated someone."""
    web = sqlite_site
    cookie, csrf = web.accounts.start_external_session(
        "ext@example.org",
        frozenset({"radiologist", "no-such-role"}),
        frozenset({"ct"}),
        "127.0.0.1",
    )
    answer = httpx.get(f"{web.url}/session", cookies={"vesalius-session": cookie}).json()
    assert answer == {
        "authenticated": True,
        "user": "ext@example.org",
        "roles": ["radiologist"],
        "groups": ["ct"],
        "method": "oidc",
        "csrf_token": csrf,
    }


# -- with authentication off (loopback) -------------------------------------------------------


def test_without_authentication_anonymous_requests_get_the_configured_roles(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'index.sqlite'}"
    with site(tmp_path, database, **{"auth.required": "false"}) as web:
        assert httpx.get(f"{web.url}/dicom-web/studies").status_code == 200
        assert httpx.get(f"{web.url}/login").status_code == 200
    with site(
        tmp_path / "b",
        database.replace("index", "index-b"),
        **{"auth.required": "false", "auth.anonymous_roles": "auditor"},
    ) as web:
        assert httpx.get(f"{web.url}/dicom-web/studies").status_code == 403
