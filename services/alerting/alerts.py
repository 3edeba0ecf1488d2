"""Which alert an acknowledgement may name: the one owner of that check (the HTTP API's ack
route and anything else that acknowledges by alert id)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from services.alerting.acks import get_alert
from services.alerting.escalation import pending_escalation
from services.common.redisconn import Keys


async def find_alert(redis: Redis, keys: Keys, alert_id: str, tenant: str) -> dict[str, Any] | None:
    """The alert ``alert_id`` as sent in ``tenant`` (its ``customer_id`` and ``store_id``), or
    None. An alert sent before alerts were recorded but still awaiting escalation counts too.
    Raises :class:`services.alerting.acks.InvalidAck` for a malformed id."""
    alert = await get_alert(redis, keys, alert_id, tenant)
    if alert is None:
        pending = await pending_escalation(redis, keys, alert_id)
        if pending is not None and pending.change.tenant_id == tenant:
            alert = {"customer_id": pending.change.customer_id,
                     "store_id": pending.change.store_id}
    return alert
