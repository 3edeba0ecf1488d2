"""Epoch milliseconds <-> RFC 3339, and "now" by the configured clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import Settings


def iso_ms(ms: str | int | float | None) -> str | None:
    if ms in (None, ""):
        return None
    return datetime.fromtimestamp(int(float(ms)) / 1000, UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


async def now_ms(settings: Settings, redis: Redis, keys: Keys, tenant: str) -> int:
    """Wall time, or with CHURNWATCH_CLOCK=event the tenant's event clock (see
    ``Keys.event_clock``: the second newest customer's newest event time)."""
    if settings.clock == "event":
        top = await redis.zrevrange(keys.event_clock(tenant), 0, 1, withscores=True)
        if top:
            return int(float(top[-1][1]))
    return int(time.time() * 1000)


def canonical(value: str) -> str | None:
    """RFC 3339 in one fixed UTC form (milliseconds, Z), so that strings sort by time."""
    dt = parse_iso(value)
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
