"""Known remote Application Entities: C-MOVE destinations, targets of ``vesalius send``, and
(with ``dicom.known_callers_only``) the only callers accepted.

Today the list comes from the settings' ``[modalities]``; the coming peers table in the
database (issue 12) will stand behind the same methods, so several nodes and the admin UI
share one list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vesalius.settings import Modality


class PeerDirectory:
    """The known remote AEs, by name and by AE title."""

    def __init__(self, peers: Mapping[str, Modality] | Iterable[Modality] = ()) -> None:
        items = peers.values() if isinstance(peers, Mapping) else peers
        self._by_name = {peer.name: peer for peer in items}

    def all(self) -> list[Modality]:
        return list(self._by_name.values())

    def ae_titles(self) -> frozenset[str]:
        return frozenset(peer.ae_title for peer in self._by_name.values())

    def by_ae(self, ae_title: str) -> Modality | None:
        """The known peer with this AE title, if any."""
        for peer in self._by_name.values():
            if peer.ae_title == ae_title:
                return peer
        return None

    def by_name(self, name: str) -> Modality | None:
        return self._by_name.get(name)
