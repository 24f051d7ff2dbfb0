"""The audit trail: who touched which patient's data (PS3.15 A.5, RFC 3881 in spirit).

Every service call that reads or writes patient data records an event here. Events go to the
``vesalius.audit`` logger as one JSON object per line; the security work will add a durable
sink (database table, syslog per RFC 5424) behind this same function.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from vesalius.identity import Identity

logger = logging.getLogger("vesalius.audit")


def audit(event: str, who: Identity, outcome: str = "success", **details: Any) -> None:
    """Record one audit event: ``event`` (e.g. ``instance-stored``) by ``who``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    record = {
        "time": datetime.now(UTC).isoformat(),
        "event": event,
        "outcome": outcome,
        "who": str(who),
        **details,
    }
    logger.info(json.dumps(record, default=str))
