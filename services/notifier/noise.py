"""Redis-backed noise control: the episode ledger and rate-limit counters.

Keys:

- ``Keys.episode`` (under the customer's hash tag) - JSON :class:`~services.notifier.policy.Episode`, 90 days TTL;
  updated with WATCH/MULTI so two workers (during a rebalance) cannot both open an episode;
- ``Keys.rate_limit(<scope>:<window>)`` - fixed-window counters of the rate limits, one hash
  tag for all (one script checks a recipient's and a channel's counters together).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

from services.common.redisconn import Keys
from services.common.riskchange import RiskChange
from services.common.settings import DEFAULT_RETENTION
from services.notifier.policy import Episode, claim, decide_episode, rate_window
from services.notifier.routing import RateLimit

EPISODE_TTL_S = DEFAULT_RETENTION.episode_ttl_s  # CHURNWATCH_ALERT_EPISODE_DAYS
T = TypeVar("T")
MAX_WATCH_TRIES = 20

# KEYS: counter keys; ARGV: pairs of (limit, ttl seconds). All or nothing: increments every
# counter when none is full, else returns the index (1-based) of the first full one.
_TAKE = """
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[2 * i - 1]) then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[2 * i])
end
return 0
"""


class EpisodeLedger:
    def __init__(self, redis: Redis, keys: Keys, *, quiet_s: float | None = None,
                 ttl_s: int = EPISODE_TTL_S):
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.quiet_ms = None if quiet_s is None else int(quiet_s * 1000)

    def key(self, change: RiskChange) -> str:
        return self.keys.episode(change.customer_id, change.tenant_id)

    async def decide(self, change: RiskChange, event_id: str, *, now_ms: int | None = None) -> str:
        """The episode decision for ``change`` (see :func:`decide_episode`), recorded."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return await self._update(self.key(change), lambda ep: decide_episode(
            ep, change, event_id, now_ms=now, quiet_ms=self.quiet_ms))

    async def claim(self, customer_id: str, tenant: str, alert_id: str, pairs: list[str],
                    tier: str) -> list[str]:
        """The ``recipient|channel`` pairs that may hear ``alert_id`` (see :func:`claim`),
        recorded in the customer's episode."""
        return await self._update(self.keys.episode(customer_id, tenant),
                                  lambda ep: claim(ep, alert_id, pairs, tier))

    async def get(self, customer_id: str, tenant: str) -> Episode:
        raw = await self.redis.get(self.keys.episode(customer_id, tenant))
        return Episode.from_json(json.loads(raw) if raw else None)

    async def get_many(self, customers: Sequence[tuple[str, str]]) -> list[Episode]:
        """The episodes of (customer id, tenant) pairs, in order; one round trip."""
        if not customers:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for customer_id, tenant in customers:
            pipe.get(self.keys.episode(customer_id, tenant))
        return [Episode.from_json(json.loads(raw) if raw else None)
                for raw in await pipe.execute()]

    async def _update(self, key: str, step: Callable[[Episode], tuple[T, Episode]]) -> T:
        for _ in range(MAX_WATCH_TRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    episode = Episode.from_json(json.loads(raw) if raw else None)
                    result, new = step(episode)
                    if new == episode:
                        await pipe.unwatch()
                        return result
                    pipe.multi()
                    pipe.set(key, json.dumps(new.to_json()), ex=self.ttl_s)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue
        raise RuntimeError(f"episode record {key} kept changing; try again")


class RateLimiter:
    """Fixed-window limits per recipient and per channel, shared by every notifier."""

    def __init__(self, redis: Redis, keys: Keys, *, per_recipient: RateLimit | None,
                 per_channel: dict[str, RateLimit]):
        self.redis = redis
        self.keys = keys
        self.per_recipient = per_recipient
        self.per_channel = per_channel
        self._take = redis.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        return self.per_recipient is not None or bool(self.per_channel)

    async def take(self, *, channel: str, recipient: str, now_s: float) -> float | None:
        """Count one message; None when allowed, else seconds until it may be tried again
        (nothing is counted then)."""
        limits: list[tuple[str, RateLimit]] = []
        if self.per_recipient is not None and recipient:
            limits.append((f"r:{recipient}", self.per_recipient))
        if channel in self.per_channel:
            limits.append((f"c:{channel}", self.per_channel[channel]))
        if not limits:
            return None
        keys: list[str] = []
        args: list[int] = []
        waits: list[float] = []
        for scope, limit in limits:
            window, remaining = rate_window(now_s, limit.per_s)
            keys.append(self.keys.rate_limit(f"{scope}:{int(limit.per_s)}:{window}"))
            args += [limit.count, int(limit.per_s) + 60]
            waits.append(remaining)
        full = int(await self._take(keys=keys, args=args))
        return None if full == 0 else waits[full - 1]
