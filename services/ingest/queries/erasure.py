"""Erase a customer everywhere the API knows of, and keep an audit record of it."""

from __future__ import annotations

import hashlib
import time

from redis.asyncio import Redis

from services.common.redisconn import Keys, customer_token
from services.common.riskchange import TIERS
from services.scorer.state import erase_customer

AUDIT_MAX = 100_000  # records kept per tenant (approximate trimming)


def subject_digest(tenant: str, customer_id: str) -> str:
    """Audit records name the customer by this digest, not by id: the record proves the
    erasure without keeping the identifier (hash a known id to look it up)."""
    return hashlib.sha256(f"{tenant}\x00{customer_id}".encode()).hexdigest()


async def erase(redis: Redis, keys: Keys, customer_id: str, *, tenant: str, partitions: int,
                by: str, request_id: str) -> None:
    """Remove state, window, profile, delivery log, timeline, actions, index entries."""
    token = customer_token(customer_id, tenant)
    _, _, st = keys.customer(customer_id, tenant)
    store, action_ids = await _store_and_actions(redis, keys, customer_id, tenant, st)
    await erase_customer(redis, keys, customer_id, tenant=tenant, partitions=partitions)
    pipe = redis.pipeline(transaction=False)
    for tier in TIERS:
        pipe.zrem(keys.tier_index(tier, tenant), token)
        if store:
            pipe.zrem(keys.tier_index(tier, tenant, store), token)
    if action_ids:
        pipe.zrem(keys.winback_index(tenant), *[f"{token}|{a}" for a in action_ids])
    pipe.zrem(keys.holdout_index(tenant), token)
    pipe.xadd(keys.audit(tenant), {"action": "erase_customer",
                                   "subject": subject_digest(tenant, customer_id),
                                   "by": by, "request_id": request_id,
                                   "at_ms": str(int(time.time() * 1000))},
              maxlen=AUDIT_MAX, approximate=True)
    await pipe.execute()


async def _store_and_actions(redis: Redis, keys: Keys, customer_id: str, tenant: str,
                             st: str) -> tuple[str | None, list[str]]:
    pipe = redis.pipeline(transaction=False)
    pipe.hget(st, "store")
    pipe.hkeys(keys.actions(customer_id, tenant))
    store, fields = await pipe.execute()
    return store, [f for f in fields if not f.startswith("ret:")]
