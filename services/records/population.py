"""The scored customers of a tenant, read with bounded work for analytics.

SCANs the tenant's tier indexes (ZSCAN, never KEYS) and reads each customer's stored risk
snapshot and first/last event times in pipelined chunks, up to ``max_customers`` (the result
says when it stopped early). JSON decoding runs in a worker thread so risk reads stay fast.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from redis.asyncio import Redis

from services.common.redisconn import Keys, parse_customer_token
from services.common.riskchange import TIERS
from services.scoring.lifecycle import stage_name
from services.state.store import read_states

CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Member:
    customer_id: str
    tier: str
    first_ts: int
    last_ts: int
    store: str | None
    value_tier: str
    lifecycle_stage: str
    features: dict[str, float] = field(repr=False)


@dataclass
class Population:
    members: list[Member]
    truncated: bool
    indexed: int  # index entries (ZCARD) of the scanned indexes


MEMBER_FIELDS = ("first_ts", "last_ts", "store", "risk")


def _decode(tier: str, tokens: list[str], rows: list[list[str | None]]) -> list[Member]:
    out = []
    for token, (first, last, store, risk) in zip(tokens, rows, strict=True):
        if last is None or risk is None:
            continue  # erased or expired since it was indexed
        snap = json.loads(risk)
        out.append(Member(parse_customer_token(token)[1], tier, int(float(first or last)),
                          int(float(last)), store, snap.get("value_tier", "low"),
                          stage_name(snap.get("lifecycle_stage")) or "active",
                          snap.get("features") or {}))
    return out


async def load(redis: Redis, keys: Keys, *, tenant: str, stores: frozenset[str] | None,
               max_customers: int) -> Population:
    indexes = [(t, keys.tier_index(t, tenant, s)) for t in TIERS
               for s in (sorted(stores) if stores is not None else [None])]
    pipe = redis.pipeline(transaction=False)
    for _, key in indexes:
        pipe.zcard(key)
    indexed = sum(await pipe.execute())
    members: list[Member] = []
    truncated = False
    for tier, key in indexes:
        cursor = 0
        while True:
            cursor, found = await redis.zscan(key, cursor, count=CHUNK)
            tokens = [str(t) for t, _ in found]
            if tokens:
                states = await read_states(redis, keys, map(parse_customer_token, tokens),
                                           MEMBER_FIELDS)
                rows = [[s.get(f) for f in MEMBER_FIELDS] for s in states]
                members += await asyncio.to_thread(_decode, tier, tokens, rows)
            if len(members) >= max_customers:
                truncated = True
                break
            if cursor == 0:
                break
        if truncated:
            break
    return Population(members[:max_customers], truncated, indexed)
