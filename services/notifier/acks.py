"""Acknowledgement of alerts: the storage the API's ``POST /v1/alerts/{alert_id}/ack`` and the
notifier's escalation share.

``alert_id`` is the ``id`` of the risk-change CloudEvent that raised the alert (the same id
every channel's message carries). An acknowledgement is one Redis string under
``Keys.ack(alert_id, tenant)`` (one tenant's key cannot acknowledge another tenant's alert) holding JSON ``{"by": "<staff id or name>", "at": <unix seconds>}``,
kept ``ACK_TTL_SECONDS``. The first acknowledgement wins; later ones change nothing.

Escalation (a high-risk alert not acknowledged within ``notifier_escalate_after_s`` goes to
the store manager) checks :func:`is_acknowledged` when the escalation falls due.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys

ACK_TTL_SECONDS = 30 * 24 * 3600
MAX_ALERT_ID_LENGTH = 256
MAX_BY_LENGTH = 256


class InvalidAck(ValueError):
    """The alert id or the acknowledger is empty or too long."""


def _check(alert_id: str, by: str | None = None) -> None:
    if not alert_id or len(alert_id) > MAX_ALERT_ID_LENGTH:
        raise InvalidAck(f"alert_id must be 1..{MAX_ALERT_ID_LENGTH} characters, got "
                         f"{len(alert_id)}")
    if by is not None and (not by or len(by) > MAX_BY_LENGTH):
        raise InvalidAck(f"'by' must be 1..{MAX_BY_LENGTH} characters, got {len(by)}")


async def acknowledge(redis: Redis, keys: Keys, alert_id: str, by: str,
                      *, now: float | None = None, tenant: str = "default") -> bool:
    """Record that ``by`` acknowledged ``alert_id``. True when this call recorded it, False
    when the alert was already acknowledged (idempotent; the first acknowledger is kept).
    Raises :class:`InvalidAck` for an empty or over-long id or ``by``."""
    _check(alert_id, by)
    value = json.dumps({"by": by, "at": time.time() if now is None else now})
    created = await redis.set(keys.ack(alert_id, tenant), value, nx=True, ex=ACK_TTL_SECONDS)
    return bool(created)


async def is_acknowledged(redis: Redis, keys: Keys, alert_id: str,
                          tenant: str = "default") -> bool:
    """Whether anyone of ``tenant`` acknowledged ``alert_id``."""
    _check(alert_id)
    return bool(await redis.exists(keys.ack(alert_id, tenant)))


async def get_acknowledgement(redis: Redis, keys: Keys, alert_id: str,
                              tenant: str = "default") -> dict[str, Any] | None:
    """``{"by", "at"}`` of the acknowledgement, or None."""
    _check(alert_id)
    raw = await redis.get(keys.ack(alert_id, tenant))
    if raw is None:
        return None
    value: dict[str, Any] = json.loads(raw)
    return value
