"""A customer's alerts that nobody acknowledged yet, read from their timeline, and their
acknowledgement — one way for the API and the staff console.

Recording an action on a customer (``POST /v1/customers/{id}/actions``, a console button) is
having seen their alerts: :func:`acknowledge_outstanding` acknowledges every risk alert the
timeline shows as sent and not acknowledged, so the escalation to the manager stops whichever
way the person acted."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from services.alerting.acks import acknowledge_once
from services.common.redisconn import Keys, get_many
from services.common.settings import Retention
from services.common.timefmt import iso_ms
from services.records import timeline

ACKABLE = ("alert", "escalation")  # notices that ask for action (not won-back, digests...)
LOOKBACK = 60  # newest timeline entries searched for sent alerts (the console page's length)


async def unacknowledged(redis: Redis, keys: Keys, tenant: str, entries: list[dict[str, Any]]
                         ) -> list[dict[str, Any]]:
    """The alerts a customer's timeline ``entries`` show as sent (any channel, newest first;
    risk alerts and their escalations, not won-back notices or digests), not acknowledged
    yet: each ``alert_id``, ``at`` (its newest notification) and ``tier`` (the tier it
    announced, when the timeline still shows that change)."""
    newest: dict[str, str] = {}
    for e in entries:
        alert_id = e["data"].get("alert_id") if e["kind"] == "notification" and \
            e["data"].get("kind", "alert") in ACKABLE else None
        if alert_id and str(alert_id) not in newest:
            newest[str(alert_id)] = e["at"]
    tiers = {str(e["data"]["alert_id"]): e["data"].get("to") for e in entries
             if e["kind"] == "tier_change" and e["data"].get("alert_id")}
    ids = list(newest)
    acked = await get_many(redis, [keys.ack(a, tenant) for a in ids])
    return [{"alert_id": a, "at": newest[a], "tier": tiers.get(a)}
            for a, ack in zip(ids, acked, strict=True) if ack is None]


async def acknowledge(redis: Redis, keys: Keys, *, tenant: str, alert_id: str,
                      customer_id: str | None, by: str, retention: Retention
                      ) -> tuple[bool, dict[str, Any]]:
    """Acknowledge ``alert_id`` as ``by`` (``POST /v1/alerts/{id}/ack``, the console): recorded
    once (the escalation stops), shown on the customer's timeline. Returns ``(new, first)``
    as :func:`~services.alerting.acks.acknowledge_once` does."""
    new, first = await acknowledge_once(redis, keys, alert_id, by, tenant=tenant,
                                        ttl_s=retention.alert_record_ttl_s)
    if new and customer_id:
        await timeline.append(redis, keys, customer_id, tenant, {
            "kind": "acknowledged", "at": iso_ms(int(float(first["at"]) * 1000)),
            "alert_id": alert_id, "by": by}, retention=retention)
    return new, first


async def acknowledge_outstanding(redis: Redis, keys: Keys, *, tenant: str, customer_id: str,
                                  by: str, retention: Retention) -> list[str]:
    """Acknowledge every alert about the customer that their timeline's newest
    :data:`LOOKBACK` entries show as sent and nobody acknowledged; returns the ids this call
    acknowledged."""
    entries = await timeline.read(redis, keys, customer_id, tenant, limit=LOOKBACK, before=None)
    done = []
    for alert in await unacknowledged(redis, keys, tenant, entries):
        new, _ = await acknowledge(redis, keys, tenant=tenant, alert_id=alert["alert_id"],
                                   customer_id=customer_id, by=by, retention=retention)
        if new:
            done.append(alert["alert_id"])
    return done
