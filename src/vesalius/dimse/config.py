"""What the DIMSE front door is configured with, and what its service handlers receive.

The wiring (``vesalius.wiring``) builds a :class:`DimseConfig` from the settings; nothing in
``dimse/`` reads raw settings, the catalog or the storage: handlers work with the archive's
services and this configuration (:class:`ScpContext`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vesalius.services.archive import Archive
from vesalius.tls import ClientTls


@dataclass(frozen=True)
class DimseConfig:
    """This AE's network identity, limits and timers (docs/configuration.md, ``dicom.*``)."""

    ae_title: str = "VESALIUS"
    host: str = "0.0.0.0"
    port: int = 11112
    #: Maximum Length we announce and receive (PS3.8 D.1); 0: any.
    max_pdu: int = 262144
    max_associations: int = 32
    max_associations_per_host: int = 8
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    min_receive_rate: int = 1024
    require_called_ae: bool = False
    #: Serve plain DIMSE on ``port`` (``dicom.plain``); DIMSE over TLS on ``tls_port`` when
    #: the server is given a TLS context (-1: not served).
    plain: bool = True
    tls_port: int = -1
    #: How we call peers marked ``tls`` (C-MOVE destinations, send jobs): PS3.15 B.9.
    client_tls: ClientTls | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ScpContext:
    """What a DIMSE service handler works with: the archive's services and this AE's
    configuration."""

    archive: Archive
    config: DimseConfig
