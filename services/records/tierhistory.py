"""Tier distribution over time: today's index sizes, snapshotted into a per-day hash on read.

Nothing else writes the history: a day appears once someone (a dashboard, a cron curl)
asked for the distribution that day, and holds the counts of the last read of that day.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.riskchange import TIERS


async def snapshot_and_read(redis: Redis, keys: Keys, *, tenant: str, store: str | None,
                            days: int, now_ms: int) -> dict[str, Any]:
    pipe = redis.pipeline(transaction=False)
    for tier in TIERS:
        pipe.zcard(keys.tier_index(tier, tenant, store))
    counts = dict(zip(TIERS, (int(n) for n in await pipe.execute()), strict=True))
    today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
    suffix = f"|{store}" if store is not None else ""
    wanted = [(today - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    pipe = redis.pipeline(transaction=False)
    pipe.hset(keys.tier_history(tenant), today.isoformat() + suffix, json.dumps(counts))
    pipe.hmget(keys.tier_history(tenant), [d + suffix for d in wanted])
    _, stored = await pipe.execute()
    history = [{"date": d, **json.loads(raw)} for d, raw in zip(wanted, stored, strict=True) if raw]
    return {"store": store, "current": counts, "history": history}
