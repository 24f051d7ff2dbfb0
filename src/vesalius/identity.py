"""Who asks: every request reaches the services with an :class:`Identity`.

DIMSE requests carry the calling AE title and peer address (and, over mutual TLS, the peer the
client certificate names); HTTP requests carry the user a session cookie, an API token, HTTP
Basic or OpenID Connect authenticated (or ``anonymous`` where authentication is off); the CLI
acts as the local operator, an administrator (whoever can run it can read the index files).
The policy (``services/policy.py``) decides from ``kind``, ``roles`` and ``groups``; the audit
trail (PS3.15 A.5) records these identities, so nothing reaches the archive anonymously.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: How an identity was established (the audit trail's User Authentication and the policy read
#: it): ``none`` (authentication off), ``session`` (login cookie), ``token`` (API bearer token),
#: ``basic`` (HTTP Basic over TLS), ``oidc`` (an OpenID Connect provider), ``certificate``
#: (a TLS client certificate), ``ae-title`` (a DIMSE calling AE title, unauthenticated by
#: nature), ``local`` (the command line), ``internal`` (the server itself).
Method = Literal[
    "none", "session", "token", "basic", "oidc", "certificate", "ae-title", "local", "internal"
]


@dataclass(frozen=True)
class Identity:
    """The actor behind a request: its kind, name and address, and what it was granted.

    ``roles`` are the user roles of ``services/policy.py`` (``admin``, ``radiologist``,
    ``technologist``, ``researcher``, ``auditor``); ``groups`` name the groups a user belongs to
    (from the index or an OpenID provider's claims), to which access labels may be granted.
    """

    kind: Literal["ae", "user", "system"]
    name: str
    host: str = ""
    roles: frozenset[str] = field(default=frozenset(), compare=False)
    groups: frozenset[str] = field(default=frozenset(), compare=False)
    method: Method = field(default="none", compare=False)

    @classmethod
    def ae(cls, ae_title: str, host: str, method: Method = "ae-title") -> Identity:
        return cls("ae", ae_title.strip(), host, method=method)

    @classmethod
    def http(cls, host: str, user: str = "anonymous") -> Identity:
        """An HTTP client before (or without) authentication."""
        return cls("user", user, host)

    @classmethod
    def system(cls, name: str = "vesalius") -> Identity:
        return cls("system", name, "localhost", method="internal")

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}@{self.host}" if self.host else f"{self.kind}:{self.name}"
