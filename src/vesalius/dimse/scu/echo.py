"""C-ECHO as service user (PS3.4 A, PS3.7 9.1.5): ``vesalius echo``."""

from __future__ import annotations

from vesalius.dicom.uids import VERIFICATION
from vesalius.dimse import commands
from vesalius.dimse.contexts import build_context
from vesalius.dimse.scu.link import ScuOptions, Status, associate, context_for
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
