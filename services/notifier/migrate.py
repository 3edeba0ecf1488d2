"""Carry the notifier's state over to the hash-tagged key names (services/common/redisconn.py).

Before Redis Cluster support the notifier's queues had names without hash tags
(``<prefix>:retry``, ``<prefix>:ntf:settle``, ``<prefix>:dlv:<id>``, ``<prefix>:ntf:ep:<token>``,
...). A notifier started on a single Redis that still holds such keys renames them once to
today's names, so an upgrade loses no queued retry, held alert, pending escalation, digest
buffer, go-live summary or episode, and remembers what it delivered. Rate-limit counters are
left to expire (a minute). Then ``<prefix>:ntf:layout`` = ``tagged`` marks the work done: later
starts cost one GET. On a Redis Cluster nothing is renamed (a cluster deployment starts with
the tagged names; RENAME cannot cross slots).

Stop the notifiers of the old version before the first new one starts: an old notifier
running on writes old names again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.common.redisconn import Keys, is_cluster, parse_customer_token

logger = logging.getLogger(__name__)

LAYOUT = "layout"
TAGGED = "tagged"
SCAN_COUNT = 1000


async def _move(redis: Redis, old: str, new: str) -> int:
    """RENAMENX; 0 when ``old`` is gone or ``new`` exists already (the newer state wins)."""
    try:
        return int(await redis.renamenx(old, new))
    except ResponseError:  # no such key (expired or moved meanwhile)
        return 0


async def adopt_untagged_keys(redis: Redis, keys: Keys) -> int:
    """Rename the notifier's keys of the untagged layout; returns how many were renamed."""
    if is_cluster(redis):
        return 0
    marker = keys.notifier_key(LAYOUT)
    if await redis.get(marker) == TAGGED:
        return 0
    p = keys.prefix
    moved = 0
    fixed = {f"{p}:retry": keys.retry_queue, f"{p}:retry:data": keys.retry_payloads,
             f"{p}:ntf:settle": keys.settle_queue, f"{p}:ntf:settle:data": keys.settle_data,
             f"{p}:ntf:esc": keys.escalation_queue, f"{p}:ntf:esc:data": keys.escalation_data}
    for old, new in fixed.items():
        moved += await _move(redis, old, new)
    episode = f"{p}:ntf:ep:"

    def episode_name(token: str) -> str | None:
        if token.startswith("{"):  # already tagged
            return None
        tenant, customer_id = parse_customer_token(token)
        return keys.episode(customer_id, tenant)

    families: list[tuple[str, Callable[[str], str | None]]] = [
        (f"{p}:dlv:", keys.delivery),
        (f"{p}:ntf:esc:done:", keys.escalation_done),
        (f"{p}:ntf:dg:", lambda rest: keys.digest_base + rest),
        (f"{p}:ntf:sum:", lambda rest: keys.summary_base + rest),
        (episode, episode_name),
    ]
    for old_prefix, rename in families:  # the prefix has no glob characters (settings.py)
        async for found in redis.scan_iter(match=old_prefix + "*", count=SCAN_COUNT):
            old = str(found)
            target = rename(old[len(old_prefix):])
            if target is not None:
                moved += await _move(redis, old, target)
    # the batch sets name their batches by key: point them at the new names
    for old_base, new_base in ((f"{p}:ntf:dg:", keys.digest_base),
                               (f"{p}:ntf:sum:", keys.summary_base)):
        members = [str(m) for m in await redis.smembers(new_base + "batches")]  # type: ignore[misc]
        stale = [m for m in members if m.startswith(old_base)]
        if stale:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.srem(new_base + "batches", *stale)
                pipe.sadd(new_base + "batches", *(new_base + m[len(old_base):] for m in stale))
                await pipe.execute()
    await redis.set(marker, TAGGED)
    if moved:
        logger.info("renamed %d notifier key(s) to the hash-tagged layout (Redis Cluster "
                    "support); nothing queued is lost", moved)
    return moved
