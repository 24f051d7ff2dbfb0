"""C-ECHO as service user (PS3.4 A, PS3.7 9.1.5): ``vesalius echo``."""

from __future__ import annotations

from vesalius.dicom.uids import VERIFICATION
from vesalius.dimse import commands
from vesalius.dimse.config import DimseConfig
from vesalius.dimse.contexts import build_context
from vesalius.dimse.scu.link import ScuOptions, Status, associate, context_for
from vesalius.errors import PeerError
from vesalius.services.peers import Echoer, Peer
from vesalius.settings import Modality


def echo(peer: Modality, options: ScuOptions) -> Status:
    """Verify end-to-end communication with the peer."""
    with associate(peer, options, [build_context(VERIFICATION)]) as link:
        context = context_for(link, VERIFICATION)
        assert context is not None  # associate() refuses an association without contexts
        request = commands.encode(
            [
                (commands.COMMAND_FIELD, commands.C_ECHO_RQ),
                (commands.MESSAGE_ID, link.next_message_id()),
                (commands.AFFECTED_SOP_CLASS, VERIFICATION),
                (commands.DATA_SET_TYPE, commands.NO_DATA_SET),
            ]
        )
        link.send(context, request)
        return Status.of("C-ECHO", link.receive(timeout=options.dimse_timeout).command)


def peer_echoer(config: DimseConfig, timeout: float = 10.0) -> Echoer:
    """What the peer directory calls to test a peer (``POST /api/v1/peers/{name}/echo``): a
    C-ECHO calling as this archive's AE, over TLS to a peer marked ``tls``, each timer at most
    ``timeout`` seconds; the response's status and a sentence, or None and why none came."""
    options = ScuOptions(
        config.ae_title,
        max_pdu=config.max_pdu,
        acse_timeout=min(config.acse_timeout, timeout),
        dimse_timeout=min(config.dimse_timeout, timeout),
        network_timeout=min(config.network_timeout, timeout),
        client_tls=config.client_tls,
    )

    def call(peer: Peer) -> tuple[int | None, str]:
        target = Modality(peer.name, peer.ae_title, peer.host, peer.port, tls=peer.tls)
        try:
            status = echo(target, options)
        except PeerError as exc:
            return None, exc.message
        except OSError as exc:  # a socket error the association layer did not name
            return None, f"{peer.host}:{peer.port}: {exc.strerror or exc}"
        return status.code, str(status)

    return call
