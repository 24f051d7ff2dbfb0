"""Who asks: every request reaches the services with an :class:`Identity`.

DIMSE requests carry the calling AE title and peer address; HTTP requests will carry a user once
authentication lands; the CLI acts as the local operator. The audit trail (PS3.15 A.5) records
these identities, so nothing reaches the archive anonymously.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Identity:
    """The actor behind a request."""

    kind: Literal["ae", "user", "system"]
    name: str
    host: str = ""

    @classmethod
    def ae(cls, ae_title: str, host: str) -> Identity:
        return cls("ae", ae_title.strip(), host)

    @classmethod
    def http(cls, host: str, user: str = "anonymous") -> Identity:
        """An HTTP client; ``anonymous`` until authentication lands."""
        return cls("user", user, host)

    @classmethod
    def system(cls, name: str = "vesalius") -> Identity:
        return cls("system", name, "localhost")

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}@{self.host}" if self.host else f"{self.kind}:{self.name}"
