"""Value-tier boundaries in Redis: computed from a sample of each tenant's stored customers,
kept under ``Keys.value_bounds(tenant)`` (one JSON string per tenant, single-key commands
only, so Redis Cluster is fine), read by every engine (scorer and API).

The scorer worker calls :func:`refresh_stale` on a timer: a tenant whose boundaries are older
than ``CHURNWATCH_VALUE_BOUNDS_REFRESH_SECONDS`` (or missing) gets new ones from up to
SAMPLE_CUSTOMERS of its scored customers (a random sample, every tier in proportion, read
from their stored risk snapshots' spend_365 and active_days_365). Several scorers may do it at
once: each writes a complete record, the last one wins.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

from redis.asyncio import Redis

from services.common.redisconn import Keys, get_many, parse_customer_token
from services.common.riskchange import TIERS
from services.scoring.lifecycle import ValueBounds, value_bounds

logger = logging.getLogger(__name__)

SAMPLE_CUSTOMERS = 5000
CHUNK = 1000


async def sample_customers(redis: Redis, keys: Keys, tenant: str,
                           limit: int = SAMPLE_CUSTOMERS) -> list[tuple[float, float]]:
    """``(spend_365, active_days_365)`` of up to ``limit`` of the tenant's scored customers
    (all of them when they are that few), from their stored risk snapshots."""
    from services.state.store import read_states  # the store imports the scoring package

    indexes = [keys.tier_index(t, tenant) for t in TIERS]
    pipe = redis.pipeline(transaction=False)
    for key in indexes:
        pipe.zcard(key)
    counts = [int(c) for c in await pipe.execute()]
    total = sum(counts)
    tokens: list[str] = []
    for key, n in zip(indexes, counts, strict=True):
        if not n:
            continue
        take = n if total <= limit else max(1, math.floor(limit * n / total))
        found = (await redis.zrange(key, 0, -1) if take >= n
                 else await redis.zrandmember(key, take))
        tokens += [str(t) for t in found or ()]
    out: list[tuple[float, float]] = []
    for i in range(0, len(tokens), CHUNK):
        refs = [parse_customer_token(t) for t in tokens[i:i + CHUNK]]
        raws = [s.get("risk") for s in await read_states(redis, keys, refs, ("risk",))]
        out += await asyncio.to_thread(_decode, raws)  # JSON off the scorer's event loop
    return out


def _decode(raws: list[str | None]) -> list[tuple[float, float]]:
    out = []
    for raw in raws:
        if not raw:
            continue  # erased since it was indexed
        f = json.loads(raw).get("features") or {}
        out.append((float(f.get("spend_365", 0.0)), float(f.get("active_days_365", 0.0))))
    return out


async def compute(redis: Redis, keys: Keys, tenant: str, now_ms: int, *,
                  limit: int = SAMPLE_CUSTOMERS) -> ValueBounds:
    """New boundaries of one tenant, stored and returned."""
    bounds = value_bounds(await sample_customers(redis, keys, tenant, limit), now_ms)
    await redis.set(keys.value_bounds(tenant), json.dumps(bounds.to_json(),
                                                          separators=(",", ":")))
    logger.info("value-tier boundaries of tenant %s from %d customers (%s)", tenant, bounds.n,
                "relative" if bounds.relative else "too few: fixed amounts")
    return bounds


async def load_bounds(redis: Redis, keys: Keys) -> dict[str, ValueBounds]:
    """The stored boundaries of every tenant the scorer has seen (unreadable ones skipped)."""
    tenants = sorted(str(t) for t in await redis.smembers(keys.tenants))  # type: ignore[misc]
    raws = await get_many(redis, [keys.value_bounds(t) for t in tenants])
    out: dict[str, ValueBounds] = {}
    for tenant, raw in zip(tenants, raws, strict=True):
        if raw is None:
            continue
        try:
            out[tenant] = ValueBounds.from_json(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("ignoring the value-tier boundaries of tenant %s: %s", tenant, exc)
    return out


async def refresh_stale(redis: Redis, keys: Keys, now_ms: int, max_age_ms: int, *,
                        limit: int = SAMPLE_CUSTOMERS) -> dict[str, ValueBounds]:
    """Recompute the boundaries of every tenant whose are missing or older than
    ``max_age_ms``; every tenant's current boundaries."""
    current = await load_bounds(redis, keys)
    tenants = sorted(str(t) for t in await redis.smembers(keys.tenants))  # type: ignore[misc]
    for tenant in tenants:
        b = current.get(tenant)
        if b is None or now_ms - b.computed_at_ms >= max_age_ms:
            current[tenant] = await compute(redis, keys, tenant, now_ms, limit=limit)
    return current

