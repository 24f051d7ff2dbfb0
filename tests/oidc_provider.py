"""A real OpenID provider for the tests: the npm registry's certified ``oidc-provider`` run by
``tests/oidc/provider.mjs`` on an ephemeral loopback port.

The npm package is installed on first use into a cache folder outside the repository
(``~/.cache/vesalius-test/oidc-provider``, or ``$VESALIUS_TEST_OIDC_CACHE``) with
``npm install --no-audit --no-fund``; the version is pinned by ``tests/oidc/package.json``.
Without node and npm the tests skip with the reason, unless ``VESALIUS_REQUIRE_OIDC=1`` (or
``VESALIUS_REQUIRE_BROWSER=1``; CI sets both) makes that a failure.

The provider signs with a key made here (so a test can also sign a token the provider could
have issued, but expired), knows the accounts of :data:`ACCOUNTS`, registers clients
dynamically (RFC 7591: each test server names its own redirect URI), issues JWT access tokens
(RFC 9068) for the resources of :data:`RESOURCES` and signs users in through a plain HTML form.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

HERE = Path(__file__).parent / "oidc"
#: The test accounts: name → password and groups.
ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {"password": "alice-password", "groups": ["radiology", "staff"]},
    "bob": {"password": "bob-password", "groups": ["pacs-admins"]},
    "eve": {"password": "eve-password", "groups": ["visitors"]},
}
#: Resource indicators (RFC 8707) the provider issues JWT access tokens for, and their lifetime
#: in seconds; the first is the default.
API = "urn:vesalius:api"
OTHER_API = "urn:other:api"
RESOURCES = {API: 3600, OTHER_API: 3600}


def required() -> bool:
    return any(
        os.environ.get(var) == "1" for var in ("VESALIUS_REQUIRE_OIDC", "VESALIUS_REQUIRE_BROWSER")
    )


def _missing(reason: str) -> None:
    if required():
        pytest.fail(f"{reason} (VESALIUS_REQUIRE_OIDC/BROWSER=1 makes the OIDC tests mandatory)")
    pytest.skip(reason)


def cache_dir() -> Path:
    configured = os.environ.get("VESALIUS_TEST_OIDC_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "vesalius-test" / "oidc-provider"


def install() -> Path:
    """The cache folder with oidc-provider installed at the pinned version and our script;
    installs it (once, under a lock) when missing or another version."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _missing("node and npm are needed to run the OpenID provider (Debian: nodejs)")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    wanted = json.loads((HERE / "package.json").read_text())["dependencies"]["oidc-provider"]
    installed = folder / "node_modules" / "oidc-provider" / "package.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed.is_file() or json.loads(installed.read_text())["version"] != wanted:
            shutil.copy(HERE / "package.json", folder / "package.json")
            done = subprocess.run(
                [str(npm), "install", "--no-audit", "--no-fund", "--no-save"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                _missing(f"npm install oidc-provider@{wanted} failed: {done.stderr[-2000:]}")
        # ESM resolves packages from the script's folder: the script lives beside them
        shutil.copy(HERE / "provider.mjs", folder / "provider.mjs")
    return folder


@dataclass
class Provider:
    """A running provider: its issuer URL and signing key."""

    issuer: str
    key: RSAKey
    process: subprocess.Popen[str]

    def discovery(self) -> dict[str, Any]:
        return dict(httpx.get(self.issuer + "/.well-known/openid-configuration").json())

    def register(self, redirect_uri: str, **extra: Any) -> tuple[str, str]:
        """A new confidential client for ``redirect_uri`` (RFC 7591): (client_id, secret)."""
        answer = httpx.post(
            self.issuer + "/reg",
            json={
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "client_credentials"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
                **extra,
            },
        )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return str(body["client_id"]), str(body["client_secret"])

    def client_token(self, client_id: str, secret: str, resource: str) -> str:
        """A client-credentials access token (a JWT, no user) for ``resource``."""
        answer = httpx.post(
            self.issuer + "/token",
            data={"grant_type": "client_credentials", "resource": resource, "scope": "api"},
            auth=(client_id, secret),
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    found: list[str] = []
    reader = threading.Thread(
        target=lambda: found.append(process.stdout.readline() if process.stdout else ""),
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    return found[0] if found else ""


@contextmanager
def running_provider(
    workdir: Path, *, port: int = 0, keys: list[RSAKey] | None = None
) -> Iterator[Provider]:
    """Start the provider (on ``port``, 0: any; signing with the first of ``keys``, default a
    new one, ``test-key-1``), wait for its discovery document, stop it afterwards."""
    folder = install()
    keys = keys or [
        RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig"}, private=True)
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "oidc-provider.json"
    config.write_text(
        json.dumps(
            {
                "jwks": {"keys": [{**k.as_dict(private=True), "alg": "RS256"} for k in keys]},
                "accounts": ACCOUNTS,
                "resources": RESOURCES,
                "cookie_key": os.urandom(16).hex(),
                "port": port,
            }
        )
    )
    log = open(workdir / "oidc-provider.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        ["node", str(folder / "provider.mjs"), str(config)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "NODE_ENV": "test"},
    )
    try:
        line = _first_line(process, 60)
        match = re.search(r'"issuer":"([^"]+)"', line)
        if not match:
            process.kill()
            process.wait()
            log.flush()
            raise AssertionError(
                f"the OpenID provider did not start: {(workdir / 'oidc-provider.log').read_text()}"
            )
        provider = Provider(match[1], keys[0], process)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(provider.issuer + "/.well-known/openid-configuration").is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("the OpenID provider's discovery document never answered")
            threading.Event().wait(0.05)
        yield provider
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()
        log.close()
