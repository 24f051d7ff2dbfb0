"""The relying party's side of OpenID Connect: the provider's discovery document (OpenID
Connect Discovery 1.0, 4), its signing keys (RFC 7517 JWK Set, cached and fetched again when a
token names a key id not seen yet), the authorization request with PKCE (RFC 7636, S256), the
code exchange (RFC 6749 4.1.3, the client authenticated by HTTP Basic, 2.3.1), the ID token's
validation (OpenID Connect Core 1.0, 3.1.3.7: signature, ``iss``, ``aud``/``azp``, ``exp``,
``iat``, ``nonce``), the validation of JWT access tokens used as bearer tokens (RFC 9068 4:
signature, ``iss``, ``aud``, ``exp``) and the roles a token's groups are mapped to.

JOSE (JWS, JWK, JWT) is joserfc's, the successor Authlib itself moved its ``authlib.jose`` to;
HTTP is httpx's. Only asymmetric signatures are accepted (never ``none``, never an HMAC keyed
with the client secret), and ``alg`` must agree with the key's type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, import_key

from vesalius.errors import AuthenticationError, PeerError
from vesalius.identity import Identity
from vesalius.services.oversight import Oversight

log = logging.getLogger(__name__)

#: Signature algorithms accepted (RFC 7518 3.1 and RFC 8037): public-key ones only.
ALGORITHMS = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}
#: Seconds of clock difference with the provider tolerated on ``exp``, ``iat`` and ``nbf``.
LEEWAY = 60
#: Seconds between two fetches of the JWK Set that an unknown key id triggers (a flood of
#: tokens naming made-up key ids fetches it once per this, no more).
REFRESH_AFTER = 30.0
#: A token longer than this is refused unread.
MAX_TOKEN = 16384
_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")


@dataclass(frozen=True)
class OidcConfig:
    """The ``auth.oidc_*`` settings (docs/security.md, "OpenID Connect")."""

    issuer: str
    client_id: str
    client_secret: str
    scopes: str = "openid profile email"
    #: Claim holding the user's groups; a dotted path reaches into objects
    #: (``realm_access.roles`` for Keycloak's realm roles).
    groups_claim: str = "groups"
    #: Claim naming the user (``sub`` when absent).
    username_claim: str = "preferred_username"
    #: Group → the Vesalius roles it grants.
    role_map: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: ``aud`` an access token must carry to be accepted as a bearer token (empty: access
    #: tokens of the provider are not accepted).
    audience: str = ""
    #: Seconds to wait for the provider.
    timeout: float = 10.0
    #: Seconds between two fetches of the key set that unknown key ids trigger.
    refresh_after: float = REFRESH_AFTER


def parse_role_map(text: str, roles: Iterable[str]) -> dict[str, frozenset[str]]:
    """``"pacs-admins=admin, radiology=radiologist"`` as {group: roles}; a group may appear
    more than once. :class:`ValueError` names what is wrong."""
    known = set(roles)
    found: dict[str, set[str]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        group, sep, role = item.rpartition("=")
        group, role = group.strip(), role.strip()
        if not sep or not group or not role:
            raise ValueError(f"{item.strip()!r} is not GROUP=ROLE")
        if role not in known:
            raise ValueError(f"unknown role {role!r} (the roles are {', '.join(sorted(known))})")
        found.setdefault(group, set()).add(role)
    return {group: frozenset(granted) for group, granted in found.items()}


def claim_groups(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    """The groups a token's claims name at ``path`` (dotted): a list of strings, or one
    string of names separated by spaces or commas; nothing when absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return frozenset()
        value = value[part]
    if isinstance(value, str):
        return frozenset(v for v in re.split(r"[\s,]+", value) if v)
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


@dataclass(frozen=True)
class OidcUser:
    """Who a validated token names and what Vesalius grants them."""

    name: str
    subject: str
    groups: frozenset[str]
    roles: frozenset[str]

    def identity(self, host: str) -> Identity:
        return Identity("user", self.name, host, self.roles, self.groups, "oidc")


@dataclass(frozen=True)
class LoginRequest:
    """What the browser is sent to the provider with, and what the callback checks against."""

    url: str
    state: str
    nonce: str
    verifier: str


def _b64url_json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def s256_challenge(verifier: str) -> str:
    """The PKCE code challenge of ``verifier`` (RFC 7636 4.2, S256)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcClient:
    """One OpenID provider as this relying party sees it. Safe to share within a process; the
    discovery document and keys are fetched on first use and kept."""

    def __init__(
        self, config: OidcConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._transport = transport
        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str, Key] = {}
        self._keys_at = float("-inf")

    # -- talking to the provider --------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.config.timeout, transport=self._transport, follow_redirects=False
        )

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._http() as http:
                response = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise PeerError(f"OpenID provider unreachable ({what} at {url}): {exc}") from None
        if response.status_code != 200:
            raise PeerError(f"OpenID provider answered {response.status_code} for its {what}")
        try:
            document = response.json()
        except ValueError:
            raise PeerError(f"OpenID provider's {what} is not JSON") from None
        if not isinstance(document, dict):
            raise PeerError(f"OpenID provider's {what} is not a JSON object")
        return document

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document; its ``issuer`` must be the configured one
        (Discovery 4.3)."""
        if self._metadata is None:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await self._get_json(url, "discovery document")
            if document.get("issuer") != self.config.issuer:
                raise PeerError(
                    f"the discovery document at {url} names issuer {document.get('issuer')!r}, "
                    f"not {self.config.issuer!r} (auth.oidc_issuer must be the provider's "
                    "issuer exactly)"
                )
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(key), str):
                    raise PeerError(f"the provider's discovery document has no {key}")
            self._metadata = document
        return self._metadata

    async def _key(self, kid: str | None) -> Key:
        """The provider's key named ``kid`` (or its only key), fetching the JWK Set again when
        the id is new (a key rotation), at most once per ``refresh_after`` seconds."""
        found = self._pick(kid)
        if found is None and time.monotonic() - self._keys_at >= self.config.refresh_after:
            metadata = await self.metadata()
            document = await self._get_json(metadata["jwks_uri"], "key set")
            keys: dict[str, Key] = {}
            for index, entry in enumerate(document.get("keys") or []):
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = import_key(entry)
                except (JoseError, ValueError, TypeError):
                    log.warning("oidc: the provider's key %s is not usable, skipped", index)
                    continue
                keys[str(entry.get("kid", f"#{index}"))] = key
            self._keys, self._keys_at = keys, time.monotonic()
            found = self._pick(kid)
        if found is None:
            raise AuthenticationError(f"token signed with a key the provider does not list: {kid}")
        return found

    def _pick(self, kid: str | None) -> Key | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def login_request(self, redirect_uri: str, authorization_endpoint: str) -> LoginRequest:
        """A fresh authorization request (Core 3.1.2.1) with state, nonce and PKCE."""
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.config.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": s256_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        sep = "&" if "?" in authorization_endpoint else "?"
        return LoginRequest(f"{authorization_endpoint}{sep}{query}", state, nonce, verifier)

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        """The token response for an authorization code (RFC 6749 4.1.3); the provider's
        refusal (a used or expired code, a wrong verifier) is an AuthenticationError."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        headers = {"Accept": "application/json"}
        if "client_secret_basic" in methods:
            client, secret = self.config.client_id, self.config.client_secret
            pair = f"{quote(client, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self.config.client_id, "client_secret": self.config.client_secret}
        try:
            async with self._http() as http:
                response = await http.post(metadata["token_endpoint"], data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise PeerError(f"OpenID provider unreachable (token endpoint): {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PeerError(f"the provider's token endpoint answered {response.status_code}")
        if response.status_code != 200 or "error" in answer:
            error = str(answer.get("error", response.status_code))
            detail = str(answer.get("error_description", ""))[:200]
            raise AuthenticationError(
                f"the provider refused the code: {error}" + (f" ({detail})" if detail else "")
            )
        return answer

    # -- tokens ---------------------------------------------------------------------------

    async def _verified(self, raw: str, what: str) -> dict[str, Any]:
        """The claims of a signed JWT whose signature one of the provider's keys verifies."""
        parts = raw.split(".")
        if len(raw) > MAX_TOKEN or len(parts) != 3:
            raise AuthenticationError(f"the {what} is not a signed JWT")
        try:
            header = _b64url_json(parts[0])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise AuthenticationError(f"the {what} is not a signed JWT") from None
        if not isinstance(header, dict):
            raise AuthenticationError(f"the {what} is not a signed JWT")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthenticationError(f"the {what} is signed with {alg!r}, which is not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        if key.key_type != ALGORITHMS[alg]:
            raise AuthenticationError(f"the {what}'s alg {alg} does not fit its key")
        try:
            token = jwt.decode(raw, key, algorithms=[alg])
        except JoseError as exc:
            raise AuthenticationError(f"the {what}'s signature is wrong ({exc.error})") from None
        return dict(token.claims)

    def _check_times(self, claims: Mapping[str, Any], what: str) -> None:
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthenticationError(f"the {what} has no expiry (exp)")
        if exp + LEEWAY < now:
            raise AuthenticationError(f"the {what} has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf - LEEWAY > now:
            raise AuthenticationError(f"the {what} is not valid yet (nbf)")
        iat = claims.get("iat")
        if isinstance(iat, int | float) and iat - LEEWAY > now:
            raise AuthenticationError(f"the {what} was issued in the future (iat)")

    async def id_token_claims(self, raw: str, nonce: str) -> dict[str, Any]:
        """The claims of an ID token checked as OpenID Connect Core 1.0 3.1.3.7 says."""
        claims = await self._verified(raw, "ID token")
        if claims.get("iss") != self.config.issuer:
            raise AuthenticationError("the ID token's issuer (iss) is not the configured one")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.config.client_id not in audiences:
            raise AuthenticationError("the ID token is not for this client (aud)")
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise AuthenticationError("the ID token's authorized party (azp) is not this client")
        self._check_times(claims, "ID token")
        if not isinstance(claims.get("iat"), int | float):
            raise AuthenticationError("the ID token has no issue time (iat)")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(
            claims["nonce"], nonce
        ):
            raise AuthenticationError("the ID token's nonce is not the one this login sent")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationError("the ID token names no subject (sub)")
        return claims

    async def access_token_claims(self, raw: str) -> dict[str, Any]:
        """The claims of a JWT access token (RFC 9068 4): signed by the provider, for
        ``auth.oidc_audience``, unexpired. An ID token (it carries a nonce) is refused."""
        if not self.config.audience:
            raise AuthenticationError("access tokens of the OpenID provider are not accepted")
        claims = await self._verified(raw, "access token")
        if claims.get("iss") != self.config.issuer:
            raise AuthenticationError("the access token's issuer (iss) is not the configured one")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.config.audience not in audiences:
            raise AuthenticationError("the access token is not for this server (aud)")
        if "nonce" in claims:
            raise AuthenticationError("an ID token is not an access token")
        self._check_times(claims, "access token")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationError("the access token names no user (sub)")
        return claims

    def user(self, claims: Mapping[str, Any]) -> OidcUser:
        """Who ``claims`` name and the roles their groups map to (none: the sign-in is
        refused, a bearer token may do nothing)."""
        subject = str(claims["sub"])
        named = claims.get(self.config.username_claim)
        name = named if isinstance(named, str) and _NAME_RE.match(named) else subject
        groups = claim_groups(claims, self.config.groups_claim)
        roles = frozenset(
            role for group in groups for role in self.config.role_map.get(group, frozenset())
        )
        return OidcUser(name[:128], subject, groups, roles)


def is_provider_token(token: str) -> bool:
    """Whether a bearer token is a JWT (a provider's), not a ``ves_`` API token."""
    return not token.startswith("ves_") and token.count(".") == 2


def record_failure(oversight: Oversight, who: Identity, reason: str) -> None:
    """A failed OpenID Connect sign-in or bearer token, for the audit trail."""
    oversight.record("user-login", who, "failure", method="oidc", reason=reason)


async def bearer_identity(
    client: OidcClient, oversight: Oversight, token: str, host: str
) -> Identity:
    """The identity a provider's JWT access token gives; :class:`AuthenticationError`
    (recorded as a failed ``user-login``) when it does not validate."""
    try:
        claims = await client.access_token_claims(token)
    except AuthenticationError as exc:
        who = Identity("user", "unknown", host, method="oidc")
        await anyio.to_thread.run_sync(record_failure, oversight, who, str(exc))
        raise
    except PeerError as exc:
        raise AuthenticationError(f"cannot check the token: {exc}") from None
    return client.user(claims).identity(host)
