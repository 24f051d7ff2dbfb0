"""OpenID Connect against a real provider (npm's certified oidc-provider, ``tests/oidc``): the
authorization code flow driven by an HTTP client that follows the redirects and posts the
provider's login form, groups mapped to roles, the provider's JWT access tokens as bearer
tokens, and the attacks the protocol's checks are there for (a forged, expired or foreign
token, a state mismatch, a replayed code).

Each test server registers its own client at the provider (RFC 7591) for its redirect URI.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydicom.uid import generate_uid

from conftest import RunningServer, free_port, make_server, running_http, wait_until
from oidc_provider import API, OTHER_API, Provider, running_provider
from served import serve
from synth import make_instance
from test_viewer_browser import CHROMIUM, REQUIRE, _viewer_overrides
from vesalius.errors import AuthenticationError, ConfigError
from vesalius.identity import Identity
from vesalius.services.audit import Auditor, MemorySink
from vesalius.services.policy import ROLES
from vesalius.settings import ROLES as SETTINGS_ROLES
from vesalius.settings import load_settings
from vesalius.viewer.app import is_installed
from vesalius.web.oidc_client import OidcClient, OidcConfig
from vesalius.web.serving import bind_http, http_server
from vesalius.wiring import http_app, http_limits, oidc_config, viewer_dir

ROLE_MAP = "radiology=radiologist,pacs-admins=admin"
STUDIES = "/dicom-web/studies"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    with running_provider(tmp_path_factory.mktemp("oidc-provider")) as running:
        yield running


@dataclass
class OidcServer:
    """A Vesalius archive serving HTTP with OpenID Connect on, and the provider's client."""

    url: str
    running: RunningServer
    audit: MemorySink
    client_id: str
    client_secret: str
    study_uid: str

    def logins(self, outcome: str) -> list[dict[str, object]]:
        return [
            {"name": e.who.name, "method": e.who.method, **e.details}
            for e in self.audit.events
            if e.kind == "user-login" and e.outcome == outcome
        ]


@pytest.fixture
def server(provider: Provider, tmp_path: Path) -> Iterator[OidcServer]:
    listener = bind_http("127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client_id, secret = provider.register(url + "/auth/oidc/callback")
    (tmp_path / "secret").write_text(secret + "\n")
    audit = MemorySink()
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        auditor=Auditor([audit]),
        **{
            "auth.required": "true",
            "auth.oidc_issuer": provider.issuer,
            "auth.oidc_client_id": client_id,
            "auth.oidc_client_secret_file": str(tmp_path / "secret"),
            "auth.oidc_scopes": "openid profile groups",
            "auth.oidc_role_map": ROLE_MAP,
            "auth.oidc_audience": API,
            **_viewer_overrides(),
        },
    )
    study = generate_uid()
    make_instance(tmp_path / "ct.dcm", StudyInstanceUID=study, PatientID="OIDC-1")
    running.archive.ingest.ingest_copy(tmp_path / "ct.dcm", Identity.system("test"))
    http = http_server(http_app(running.archive, running.settings), http_limits(running.settings))
    thread = threading.Thread(target=http.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: http.started, what="HTTP server start")
        yield OidcServer(url, running, audit, client_id, secret, study)
    finally:
        http.should_exit = True
        thread.join(10)
        listener.close()
        running.dimse.stop(grace=2)
        running.archive.close()


def to_callback(browser: httpx.Client, provider: Provider, start: str, user: str) -> str:
    """Follow ``start`` (our /auth/oidc/login) through the provider, posting its login form
    as ``user``, until the provider redirects back to our callback; that callback URL."""
    answer = browser.get(start)
    password = f"{user}-password"
    while True:
        assert answer.status_code in (200, 302, 303), (answer.status_code, answer.text[:500])
        if answer.status_code == 200:
            action = re.search(r'<form method="post" action="([^"]+)"', answer.text)
            assert action, answer.text[:500]
            answer = browser.post(
                urljoin(str(answer.url), action[1]), data={"username": user, "password": password}
            )
            continue
        location = urljoin(str(answer.url), answer.headers["location"])
        if "/auth/oidc/callback" in location:
            return location
        answer = browser.get(location)


def sign_in(
    server: OidcServer, provider: Provider, user: str, next_path: str = "/"
) -> httpx.Client:
    """A browser-like client signed in to ``server`` as ``user`` (its session cookie set)."""
    browser = httpx.Client(follow_redirects=False, timeout=30)
    start = f"{server.url}/auth/oidc/login?next={quote(next_path, safe='')}"
    callback = to_callback(browser, provider, start, user)
    answer = browser.get(callback)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == next_path
    return browser


def provider_tokens(provider: Provider, server: OidcServer, user: str) -> dict[str, str]:
    """The provider's token response for ``user`` (the code flow run by the test itself, as a
    script using this client would)."""
    browser = httpx.Client(follow_redirects=False, timeout=30)
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    redirect = server.url + "/auth/oidc/callback"
    query = {
        "response_type": "code",
        "client_id": server.client_id,
        "redirect_uri": redirect,
        "scope": "openid profile groups",
        "state": "s" * 20,
        "nonce": "n" * 20,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    start = (
        provider.discovery()["authorization_endpoint"] + "?" + httpx.QueryParams(query).__str__()
    )
    callback = to_callback(browser, provider, start, user)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    answer = httpx.post(
        provider.discovery()["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "code_verifier": verifier,
        },
        auth=(server.client_id, server.client_secret),
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stow(server: OidcServer, client: httpx.Client, tmp_path: Path, **headers: str) -> str:
    """STOW-RS one new instance: ``stored``, ``refused`` (403, or every instance failed with
    0x0124, Refused: Not Authorized, PS3.18 10.5.3) or the HTTP status."""
    path = tmp_path / "up.dcm"
    make_instance(path, PatientID="OIDC-2")
    boundary = "vesalius-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = client.post(
        server.url + STUDIES,
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            **headers,
        },
    )
    if answer.status_code == 200:
        return "stored"
    if answer.status_code == 403:  # refused before the body is read
        return "refused"
    if answer.status_code == 409:
        failed = answer.json()["00081198"]["Value"]
        if [f["00081197"]["Value"][0] for f in failed] == [0x0124]:
            return "refused"
    return str(answer.status_code)


# -- the browser flow ---------------------------------------------------------------------


def test_radiologist_signs_in_queries_and_may_not_store(
    server: OidcServer, provider: Provider, tmp_path: Path
) -> None:
    browser = sign_in(server, provider, "alice", "/dicom-web/studies?PatientID=OIDC-1")
    who = browser.get(server.url + "/session").json()
    assert who["user"] == "alice" and who["method"] == "oidc"
    assert who["roles"] == ["radiologist"]
    assert who["groups"] == ["radiology", "staff"]
    found = browser.get(server.url + STUDIES, params={"PatientID": "OIDC-1"})
    assert found.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [server.study_uid]
    csrf = {"X-CSRF-Token": who["csrf_token"], "Origin": server.url}
    assert stow(server, browser, tmp_path, **csrf) == "refused"
    assert server.logins("success") == [{"name": "alice", "method": "oidc"}]


def test_admin_group_may_store(server: OidcServer, provider: Provider, tmp_path: Path) -> None:
    browser = sign_in(server, provider, "bob")
    who = browser.get(server.url + "/session").json()
    assert who["roles"] == ["admin"]
    csrf = {"X-CSRF-Token": who["csrf_token"], "Origin": server.url}
    assert stow(server, browser, tmp_path, **csrf) == "stored"


def test_user_without_a_mapped_group_is_refused(server: OidcServer, provider: Provider) -> None:
    browser = httpx.Client(follow_redirects=False, timeout=30)
    callback = to_callback(browser, provider, server.url + "/auth/oidc/login", "eve")
    answer = browser.get(callback)
    assert answer.status_code == 403
    assert "No access to Vesalius" in answer.text and "visitors" in answer.text
    assert "vesalius-session" not in answer.headers.get("set-cookie", "")
    assert browser.get(server.url + STUDIES).status_code == 401
    (failure,) = server.logins("failure")
    assert failure["name"] == "eve" and failure["method"] == "oidc"
    assert "auth.oidc_role_map" in str(failure["reason"])
    assert server.logins("success") == []


def test_state_mismatch_is_refused(server: OidcServer, provider: Provider) -> None:
    browser = httpx.Client(follow_redirects=False, timeout=30)
    callback = to_callback(browser, provider, server.url + "/auth/oidc/login", "alice")
    forged = re.sub(r"state=[^&]+", "state=forged-state", callback)
    answer = browser.get(forged)
    assert answer.status_code == 400 and "state mismatch" in answer.text
    assert browser.get(server.url + STUDIES).status_code == 401
    # and the login in progress is over: the genuine answer cannot be used after it
    assert browser.get(callback).status_code == 400
    reasons = [str(f["reason"]) for f in server.logins("failure")]
    assert reasons[0].startswith("state mismatch")
    assert reasons[1].startswith("no sign-in in progress")


def test_callback_from_another_browser_is_refused(server: OidcServer, provider: Provider) -> None:
    """Login CSRF: an attacker's callback URL opened in the victim's browser (without the
    state cookie of the attacker's own sign-in) does not sign the victim in."""
    attacker = httpx.Client(follow_redirects=False, timeout=30)
    callback = to_callback(attacker, provider, server.url + "/auth/oidc/login", "bob")
    victim = httpx.Client(follow_redirects=False, timeout=30)
    answer = victim.get(callback)
    assert answer.status_code == 400
    assert "vesalius-session" not in answer.headers.get("set-cookie", "")


def test_replayed_code_is_refused(server: OidcServer, provider: Provider) -> None:
    browser = httpx.Client(follow_redirects=False, timeout=30)
    callback = to_callback(browser, provider, server.url + "/auth/oidc/login", "alice")
    state_cookie = browser.cookies.get("vesalius-oidc", domain="127.0.0.1")
    assert state_cookie
    assert browser.get(callback).status_code == 303
    # the same answer again, with the same sign-in cookie put back: the provider refuses the
    # code it already exchanged
    replay = httpx.Client(follow_redirects=False, timeout=30)
    replay.cookies.set("vesalius-oidc", state_cookie, domain="127.0.0.1", path="/auth/oidc")
    answer = replay.get(callback)
    assert answer.status_code == 401
    assert "invalid_grant" in answer.text
    assert "invalid_grant" in str(server.logins("failure")[-1]["reason"])


def test_session_fixation_an_offered_session_id_is_not_adopted(
    server: OidcServer, provider: Provider
) -> None:
    browser = httpx.Client(follow_redirects=False, timeout=30)
    browser.cookies.set("vesalius-session", "chosen-by-attacker", domain="127.0.0.1")
    callback = to_callback(browser, provider, server.url + "/auth/oidc/login", "alice")
    assert browser.get(callback).status_code == 303
    issued = browser.cookies.get("vesalius-session", domain="127.0.0.1")
    assert issued and issued != "chosen-by-attacker"


def test_open_redirect_is_not_followed(server: OidcServer, provider: Provider) -> None:
    browser = httpx.Client(follow_redirects=False, timeout=30)
    callback = to_callback(
        browser, provider, server.url + "/auth/oidc/login?next=//evil.example/x", "alice"
    )
    answer = browser.get(callback)
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_provider_error_is_refused_and_audited(server: OidcServer) -> None:
    browser = httpx.Client(follow_redirects=False, timeout=30)
    start = browser.get(server.url + "/auth/oidc/login")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    answer = browser.get(
        server.url + "/auth/oidc/callback",
        params={"error": "access_denied", "error_description": "user said no", "state": state},
    )
    assert answer.status_code == 401 and "access_denied" in answer.text
    assert "access_denied" in str(server.logins("failure")[0]["reason"])


def test_login_request_carries_pkce_state_and_nonce(server: OidcServer) -> None:
    answer = httpx.get(server.url + "/auth/oidc/login", follow_redirects=False)
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0]
    assert query["redirect_uri"] == [server.url + "/auth/oidc/callback"]
    cookie = answer.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert query["code_challenge"][0] not in cookie  # the verifier, not the challenge


def test_login_page_links_to_the_provider(server: OidcServer) -> None:
    page = httpx.get(server.url + "/login", params={"next": "/viewer"})
    assert 'href="/auth/oidc/login?next=%2Fviewer"' in page.text


# -- bearer tokens ------------------------------------------------------------------------


def test_provider_access_token_is_a_bearer_token(server: OidcServer, provider: Provider) -> None:
    tokens = provider_tokens(provider, server, "alice")
    found = httpx.get(
        server.url + STUDIES, params={"PatientID": "OIDC-1"}, headers=bearer(tokens["access_token"])
    )
    assert found.status_code == 200, found.text
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [server.study_uid]


def test_bearer_token_roles_come_from_its_groups(
    server: OidcServer, provider: Provider, tmp_path: Path
) -> None:
    alice = provider_tokens(provider, server, "alice")["access_token"]
    bob = provider_tokens(provider, server, "bob")["access_token"]
    eve = provider_tokens(provider, server, "eve")["access_token"]
    assert stow(server, httpx.Client(), tmp_path, **bearer(alice)) == "refused"
    assert stow(server, httpx.Client(), tmp_path, **bearer(bob)) == "stored"
    assert httpx.get(server.url + STUDIES, headers=bearer(eve)).status_code == 403


def _forge(claims: dict[str, object], key: RSAKey, kid: str = "test-key-1") -> str:
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, key)


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _refused(server: OidcServer, token: str) -> str:
    answer = httpx.get(server.url + STUDIES, headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert "invalid_token" in answer.headers["www-authenticate"]
    return str(answer.json()["error"])


def test_tampered_token_is_refused(server: OidcServer, provider: Provider) -> None:
    token = provider_tokens(provider, server, "alice")["access_token"]
    header, _payload, signature = token.split(".")
    claims = _claims(token)
    claims["groups"] = ["pacs-admins"]
    raised = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert "signature" in _refused(server, f"{header}.{raised}.{signature}")
    assert server.logins("failure")[-1]["method"] == "oidc"


def test_token_signed_with_another_key_is_refused(server: OidcServer, provider: Provider) -> None:
    claims = _claims(provider_tokens(provider, server, "alice")["access_token"])
    stranger = RSAKey.generate_key(2048, private=True)
    assert "signature" in _refused(server, _forge(claims, stranger))
    assert "does not list" in _refused(server, _forge(claims, stranger, kid="made-up"))


def test_expired_token_is_refused(server: OidcServer, provider: Provider) -> None:
    claims = _claims(provider_tokens(provider, server, "alice")["access_token"])
    now = int(time.time())
    claims |= {"iat": now - 7200, "exp": now - 3600}
    assert "expired" in _refused(server, _forge(claims, provider.key))
    claims |= {"exp": now + 3600}  # the same, unexpired, signed by the provider's key: good
    assert httpx.get(server.url + STUDIES, headers=bearer(_forge(claims, provider.key))).is_success


def test_token_for_another_audience_is_refused(server: OidcServer, provider: Provider) -> None:
    other = provider.client_token(server.client_id, server.client_secret, OTHER_API)
    assert _claims(other)["aud"] == OTHER_API
    assert "(aud)" in _refused(server, other)


def test_id_token_is_not_an_access_token(server: OidcServer, provider: Provider) -> None:
    id_token = provider_tokens(provider, server, "alice")["id_token"]
    _refused(server, id_token)


def test_api_tokens_of_vesalius_still_work(server: OidcServer) -> None:
    accounts = server.running.archive.accounts
    admin = Identity.system("test")
    accounts.add_user("carol", "carol-password", frozenset({"radiologist"}), admin)
    _token, text = accounts.create_token("carol", admin)
    assert httpx.get(server.url + STUDIES, headers=bearer(text)).status_code == 200


def test_settings_roles_are_the_policy_roles() -> None:
    assert SETTINGS_ROLES == ROLES


# -- a real browser -----------------------------------------------------------------------


def test_chromium_signs_in_and_the_viewer_works(server: OidcServer) -> None:
    """Chromium (Playwright) signs in through the provider's form, lands on the QIDO it asked
    for, then opens the web UI's study list and OHIF, whose same-origin requests carry the
    session."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found") if REQUIRE else pytest.skip(f"{CHROMIUM} not found")
    from playwright.sync_api import Response, sync_playwright

    viewer = is_installed(viewer_dir(load_settings(environ={}, overrides=_viewer_overrides())))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            target = quote(f"{STUDIES}?PatientID=OIDC-1", safe="")
            page.goto(f"{server.url}/auth/oidc/login?next={target}")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "alice-password")
            with page.expect_navigation(url=re.compile(re.escape(server.url + STUDIES))):
                page.click("button[type=submit]")
            found = json.loads(page.inner_text("body"))
            assert [s["0020000D"]["Value"][0] for s in found] == [server.study_uid]
            if not viewer:
                if REQUIRE:
                    pytest.fail("OHIF is not installed: run .venv/bin/vesalius viewer install")
                return

            def is_study_list(response: Response) -> bool:
                return urlsplit(response.url).path == "/api/v1/studies"

            with page.expect_response(is_study_list, timeout=60000) as study_list:
                page.goto(server.url + "/")  # the web UI's study list, over the REST API
            assert study_list.value.status == 200
            assert "/login" not in page.url
            page.get_by_text("Synthetic", exact=False).first.wait_for(timeout=60_000)  # listed

            def is_qido(response: Response) -> bool:
                return urlsplit(response.url).path == STUDIES

            with page.expect_response(is_qido, timeout=60000) as qido:
                page.goto(f"{server.url}/viewer?StudyInstanceUIDs={server.study_uid}")
            assert qido.value.status == 200  # OHIF's own DICOMweb request, with the session
        finally:
            browser.close()


# -- settings -----------------------------------------------------------------------------

GOOD = {
    "auth.oidc_issuer": "https://login.example.org/realms/pacs",
    "auth.oidc_client_id": "vesalius",
    "auth.oidc_client_secret": "s3cret",
    "auth.oidc_role_map": ROLE_MAP,
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"auth.oidc_issuer": "http://login.example.org"}, "must use https"),
        ({"auth.oidc_issuer": "login.example.org"}, "issuer URL"),
        ({"auth.oidc_client_id": ""}, "needs a client"),
        ({"auth.oidc_client_secret": ""}, "client secret"),
        ({"auth.oidc_client_secret_file": "/run/secret"}, "one of them"),
        ({"auth.oidc_scopes": "profile groups"}, "must include openid"),
        ({"auth.oidc_role_map": "radiology"}, "not GROUP=ROLE"),
        ({"auth.oidc_role_map": "radiology=radiologst"}, "did you mean radiologist"),
        ({"auth.oidc_role_map": ""}, "map at least one group"),
    ],
)
def test_oidc_settings_are_checked_at_start(change: dict[str, str], problem: str) -> None:
    load_settings(environ={}, overrides=GOOD)  # the good ones load
    with pytest.raises(ConfigError, match=problem):
        load_settings(environ={}, overrides={**GOOD, **change})


def test_oidc_is_off_without_an_issuer() -> None:
    assert oidc_config(load_settings(environ={})) is None
    config = oidc_config(load_settings(environ={}, overrides=GOOD))
    assert config is not None
    assert config.role_map == {
        "radiology": frozenset({"radiologist"}),
        "pacs-admins": frozenset({"admin"}),
    }


def test_provider_unreachable_is_a_clear_answer(tmp_path: Path) -> None:
    """A provider that does not answer: the sign-in says so (502), a JWT bearer token is a
    401 (it cannot be checked), never a 500."""
    issuer = f"http://127.0.0.1:{free_port()}"
    running = make_server(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **{**GOOD, "auth.required": "true", "auth.oidc_issuer": issuer, "auth.oidc_audience": API},
    )
    try:
        with running_http(running.archive, running.settings) as url:
            answer = httpx.get(url + "/auth/oidc/login")
            assert answer.status_code == 502 and "unreachable" in answer.text
            token = _forge({"sub": "x", "aud": API, "iss": issuer}, RSAKey.generate_key(2048))
            refused = httpx.get(url + STUDIES, headers=bearer(token))
            assert refused.status_code == 401 and "cannot check" in refused.json()["error"]
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()


def test_keys_are_fetched_again_when_the_provider_rotates_them(tmp_path: Path) -> None:
    """A token signed with a key the cached set lacks makes the client fetch the provider's
    set again (a key rotation), unless it fetched one within ``refresh_after``."""
    old, new = (
        RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"}, private=True)
        for kid in ("old-key", "new-key")
    )
    port = free_port()
    claims = {"sub": "alice", "aud": API, "groups": ["radiology"], "iat": int(time.time())}
    claims["exp"] = claims["iat"] + 600
    with running_provider(tmp_path / "before", port=port, keys=[old]) as before:
        claims["iss"] = before.issuer
        config = OidcConfig(before.issuer, "vesalius", "secret", audience=API, refresh_after=0)
        eager, patient = OidcClient(config), OidcClient(replace(config, refresh_after=3600))
        for client in (eager, patient):
            asyncio.run(client.access_token_claims(_forge(claims, old, "old-key")))
    with running_provider(tmp_path / "after", port=port, keys=[new, old]) as after:
        assert after.issuer == claims["iss"]
        rotated = _forge(claims, new, "new-key")
        assert asyncio.run(eager.access_token_claims(rotated))["sub"] == "alice"
        with pytest.raises(AuthenticationError, match="does not list"):
            asyncio.run(patient.access_token_claims(rotated))
        asyncio.run(patient.access_token_claims(_forge(claims, old, "old-key")))


# -- a real `vesalius serve` --------------------------------------------------------------


def test_vesalius_serve_signs_in_across_its_workers(provider: Provider, tmp_path: Path) -> None:
    """``vesalius serve`` with two workers and the settings in TOML (the secret in a file
    beside it): each sign-in starts on one connection and ends on another, so the two steps
    may meet different workers; the signed sign-in cookie lets any of them finish it."""
    port = free_port()
    client_id, secret = provider.register(f"http://127.0.0.1:{port}/auth/oidc/callback")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "oidc-secret").write_text(secret + "\n")
    settings = {
        "http.port": port,
        "dicom.workers": 2,
        "auth.required": True,
        "auth.oidc_issuer": provider.issuer,
        "auth.oidc_client_id": client_id,
        "auth.oidc_client_secret_file": "oidc-secret",  # relative to the settings file
        "auth.oidc_scopes": "openid profile groups",
        "auth.oidc_role_map": ROLE_MAP,
        "viewer.enabled": False,
    }
    with serve(tmp_path, settings) as served:
        for _ in range(4):
            start = httpx.Client(follow_redirects=False, timeout=30)
            callback = to_callback(start, provider, served.url + "/auth/oidc/login", "alice")
            finish = httpx.Client(follow_redirects=False, timeout=30)
            finish.cookies.set(
                "vesalius-oidc", start.cookies["vesalius-oidc"], "127.0.0.1", "/auth/oidc"
            )
            assert finish.get(callback).status_code == 303
            assert finish.get(served.url + STUDIES).status_code == 200


def test_vesalius_serve_refuses_a_role_map_it_cannot_use(tmp_path: Path) -> None:
    settings = {
        "auth.oidc_issuer": "https://login.example.org",
        "auth.oidc_client_id": "vesalius",
        "auth.oidc_client_secret": "secret",
        "auth.oidc_role_map": "radiology=reader",
    }
    with serve(tmp_path, settings, ready=False) as served:
        assert served.proc.wait(60) == 78
        text = served.log_text()
    assert "auth.oidc_role_map" in text and "unknown role 'reader'" in text
