"""DIMSE service user: the operations behind ``vesalius echo``, ``send``, ``find``, ``move``
and ``get``, on our own association layer (``dimse/association.py``), one module per service."""

from vesalius.dimse.scu.echo import echo
from vesalius.dimse.scu.find import FindResponse, Model, find, qr_context, qr_sop_class
from vesalius.dimse.scu.keys import add_key, build_identifier, key_keyword, key_tag
from vesalius.dimse.scu.link import MAX_CONTEXTS, ScuOptions, Status, describe_peer
from vesalius.dimse.scu.retrieve import (
    FileReceiver,
    ReceivedFile,
    RetrieveResponse,
    Role,
    get,
    get_contexts,
    move,
)
from vesalius.dimse.scu.store import (
    StoreItem,
    StoreOutcome,
    association_batches,
    read_store_item,
    store_files,
)

__all__ = [
    "MAX_CONTEXTS",
    "FileReceiver",
    "FindResponse",
    "Model",
    "ReceivedFile",
    "RetrieveResponse",
    "Role",
    "ScuOptions",
    "Status",
    "StoreItem",
    "StoreOutcome",
    "add_key",
    "association_batches",
    "build_identifier",
    "describe_peer",
    "echo",
    "find",
    "get",
    "get_contexts",
    "key_keyword",
    "key_tag",
    "move",
    "qr_context",
    "qr_sop_class",
    "read_store_item",
    "store_files",
]
