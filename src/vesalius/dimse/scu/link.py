"""Associations the ``vesalius`` SCU commands open, on our own Upper Layer (the same
association layer as the server and its C-MOVE sub-operations), and the statuses they report.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vesalius.dimse.association import Aborted, Association, Released
from vesalius.dimse.commands import ERROR_COMMENT, STATUS, Command
from vesalius.dimse.contexts import PresentationContext
from vesalius.dimse.requestor import Unreachable, connect
from vesalius.dimse.status_codes import PENDING, SUCCESS, category, meaning
from vesalius.errors import PeerError
from vesalius.settings import Modality, Settings
from vesalius.tls import ClientTls, files_from

if TYPE_CHECKING:
    from vesalius.services.peers import Peer

#: An A-ASSOCIATE-RQ carries at most 128 presentation contexts (odd IDs 1-255, PS3.8 9.3.2.2).
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Status:
    """A DIMSE response status (PS3.7 C); ``code`` None means no response arrived."""

    service: str
    code: int | None
    comment: str = ""

    @classmethod
    def of(cls, service: str, command: Command) -> Status:
        """The status a response command carries, with its Error Comment."""
        return cls(service, command.us(STATUS), command.text(ERROR_COMMENT))

    @property
    def category(self) -> str:
        """Success, Warning, Failure, Cancel, Pending, or "No response"."""
        if self.code is None:
            return "No response"
        return category(self.code)

    @property
    def ok(self) -> bool:
        return self.category == SUCCESS

    @property
    def pending(self) -> bool:
        return self.category == PENDING

    def __str__(self) -> str:
        if self.code is None:
            return "no response (association aborted or timed out)"
        name = meaning(self.service, self.code)
        text = f"0x{self.code:04X} ({self.category}{': ' + name if name else ''})"
        return f"{text}: {self.comment}" if self.comment else text


@dataclass(frozen=True)
class ScuOptions:
    """How we associate: our (calling) AE title, PDU size and timeouts; over TLS (PS3.15
    B.9) when ``tls`` or the peer's ``tls`` says so, with the ``tls.*`` certificates."""

    ae_title: str
    max_pdu: int = 262144
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    tls: bool = False
    client_tls: ClientTls | None = field(default=None, compare=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, ae_title: str | None = None, *, tls: bool = False
    ) -> ScuOptions:
        return cls(
            ae_title or settings["dicom.ae_title"],
            settings["dicom.max_pdu"],
            settings["dicom.acse_timeout"],
            settings["dicom.dimse_timeout"],
            settings["dicom.network_timeout"],
            tls,
            ClientTls(files_from(settings)),
        )

    def secure(self, peer: Modality) -> ssl.SSLContext | None:
        """The TLS client context to call ``peer`` with, None for plain TCP."""
        if not (self.tls or peer.tls):
            return None
        return (self.client_tls or ClientTls(None)).context


def known_peer(peer: Peer) -> Modality:
    """A known peer of the archive (``services/peers.py``) as the SCU calls it: its address,
    and whether over TLS."""
    return Modality(peer.name, peer.ae_title, peer.host, peer.port, tls=peer.tls)


def describe_peer(peer: Modality) -> str:
    return f"{peer.ae_title}@{peer.host}:{peer.port}" + (" (TLS)" if peer.tls else "")


def open_link(
    peer: Modality,
    options: ScuOptions,
    contexts: Sequence[PresentationContext],
    *,
    roles: Sequence[tuple[str, bool, bool]] = (),
    staging: Callable[[], tuple[int, Path]] | None = None,
) -> Association:
    """Request an association (PS3.8 7.1); :class:`PeerError` unless it is established with
    at least one presentation context."""
    if not 0 < len(contexts) <= MAX_CONTEXTS:
        raise ValueError(f"between 1 and {MAX_CONTEXTS} presentation contexts, not {len(contexts)}")
    try:
        link = connect(
            peer.host,
            peer.port,
            calling_ae=options.ae_title,
            called_ae=peer.ae_title,
            contexts=contexts,
            max_pdu=options.max_pdu,
            acse_timeout=options.acse_timeout,
            network_timeout=options.network_timeout,
            dimse_timeout=options.dimse_timeout,
            roles=roles,
            staging=staging,
            tls=options.secure(peer),
        )
    except Unreachable as exc:
        raise PeerError(
            f"no association with {describe_peer(peer)} (connection refused, aborted or "
            f"timed out: {exc.message})"
        ) from exc
    except PeerError as exc:
        raise PeerError(f"{describe_peer(peer)}: {exc.message}") from exc
    if not link.contexts:
        link.abort()
        raise PeerError(
            f"{describe_peer(peer)} accepted none of the proposed presentation contexts"
        )
    return link


@contextlib.contextmanager
def associate(
    peer: Modality,
    options: ScuOptions,
    contexts: Sequence[PresentationContext],
    *,
    roles: Sequence[tuple[str, bool, bool]] = (),
    staging: Callable[[], tuple[int, Path]] | None = None,
) -> Iterator[Association]:
    """An established association, released at the end (aborted when the body fails)."""
    link = open_link(peer, options, contexts, roles=roles, staging=staging)
    try:
        yield link
    except (Aborted, Released) as exc:
        link.close()
        raise PeerError(f"{describe_peer(peer)}: {exc.message}") from exc
    except BaseException:
        link.abort()
        raise
    link.release()


def context_for(link: Association, sop_class: str, syntax: str | None = None) -> int | None:
    """The id of an accepted presentation context for ``sop_class`` (in ``syntax``)."""
    for context in link.contexts.values():
        if context.abstract_syntax == sop_class and (
            syntax is None or context.transfer_syntax == syntax
        ):
            return context.id
    return None
