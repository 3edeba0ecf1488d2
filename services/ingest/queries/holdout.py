"""The holdout group: a fixed share of high-risk customers that staff leave alone."""

from __future__ import annotations

from redis.asyncio import Redis

from services.common.holdout import in_holdout
from services.common.redisconn import Keys, customer_token

__all__ = ["holdout", "in_holdout", "remember"]


def holdout(tier: str | None, tenant: str, customer_id: str, share: float) -> bool:
    return tier == "high" and in_holdout(tenant, customer_id, share)


async def remember(redis: Redis, keys: Keys, tenant: str, customer_ids: list[str],
                   now_ms: int) -> None:
    """Note when holdout customers were first seen high-risk (ZADD NX: the first time wins)."""
    if customer_ids:
        await redis.zadd(keys.holdout_index(tenant),
                         {customer_token(c, tenant): now_ms for c in customer_ids}, nx=True)
