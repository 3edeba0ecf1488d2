"""Per-customer state in Redis, by event time and idempotent by ``event_id``.

Keys of one customer (all under the hash tag ``{customer}``): ``ev`` (zset event id -> event
time ms), ``ed`` (hash event id -> compact activity), ``st`` (hash: first_ts, last_ts,
store, tier, tier_since, score, risk snapshot). Applying a batch is one pipelined round trip:
one ``EVALSHA`` per customer. An event whose id is already stored changes nothing, whether it
comes again in the same batch, after a redelivery or after a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import DEFAULT_TENANT, Keys, customer_token
from services.scorer.activity import decode_activity, encode_activity
from services.scorer.features import Activity

# Events older than the longest window are trimmed, except each customer's newest ones: a
# customer whose whole history is old stays known and scoreable, and memory stays bounded.
MIN_KEPT_EVENTS = 32

# KEYS: ev zset, ed hash, st hash.
# ARGV: cutoff ms, ttl s, store or "", min kept, then (id, ts, blob)*.
APPLY_LUA = """
local cutoff = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local keep = tonumber(ARGV[4])
local added = 0
local first = tonumber(redis.call('HGET', KEYS[3], 'first_ts'))
local last = tonumber(redis.call('HGET', KEYS[3], 'last_ts'))
for i = 5, #ARGV, 3 do
  local ts = tonumber(ARGV[i + 1])
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[1], ts, ARGV[i])
    added = added + 1
    if first == nil or ts < first then first = ts end
    if last == nil or ts > last then last = ts end
  end
end
if added > 0 then
  redis.call('HSET', KEYS[3], 'first_ts', first, 'last_ts', last)
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], 'store', ARGV[3]) end
end
local surplus = redis.call('ZCARD', KEYS[1]) - keep
if surplus > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, surplus)
  for j = 1, #old, 500 do
    local chunk = {unpack(old, j, math.min(j + 499, #old))}
    redis.call('HDEL', KEYS[2], unpack(chunk))
    redis.call('ZREM', KEYS[1], unpack(chunk))
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {added, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
"""

# KEYS[1]: offsets hash. ARGV: (partition, next offset)*; only ever moves forward.
OFFSETS_LUA = """
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if cur == nil or tonumber(ARGV[i + 1]) > cur then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

# KEYS[1]: clock. ARGV[1]: candidate ms. Returns the clock after the update.
CLOCK_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]))
local cand = tonumber(ARGV[1])
if cur == nil or cand > cur then redis.call('SET', KEYS[1], ARGV[1]); return cand end
return cur
"""


Ref = tuple[str, str]
"""A customer as the scorer knows them: ``(tenant, customer_id)``."""


@dataclass
class CustomerState:
    customer_id: str
    activities: list[Activity]
    state: dict[str, str]
    added: int = 0
    partition: int | None = None
    batch_events: list[str] = field(default_factory=list)
    tenant: str = DEFAULT_TENANT

    @property
    def ref(self) -> Ref:
        return self.tenant, self.customer_id

    @property
    def token(self) -> str:
        return customer_token(self.customer_id, self.tenant)

    @property
    def first_ts(self) -> int | None:
        v = self.state.get("first_ts")
        return int(float(v)) if v else None

    @property
    def tier(self) -> str | None:
        return self.state.get("tier") or None

    @property
    def tier_since(self) -> int | None:
        v = self.state.get("tier_since")
        return int(float(v)) if v else None

    @property
    def score(self) -> float | None:
        v = self.state.get("score")
        return float(v) if v else None

    @property
    def store_id(self) -> str | None:
        return self.state.get("store") or None

    def newest_event_id(self) -> str | None:
        if not self.activities:
            return None
        return max(self.activities, key=lambda a: (a.ts, a.event_id)).event_id


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _activities(flat: Sequence[Any]) -> list[Activity]:
    return [decode_activity(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]


class StateStore:
    def __init__(self, redis: Redis, keys: Keys, *, window_ms: int, ttl_seconds: int):
        self.redis = redis
        self.keys = keys
        self.window_ms = window_ms
        self.ttl_seconds = ttl_seconds
        self._apply = redis.register_script(APPLY_LUA)
        self._offsets = redis.register_script(OFFSETS_LUA)
        self._clock = redis.register_script(CLOCK_LUA)

    async def apply(self, batch: dict[Ref, list[Activity]], *, now_ms: int,
                    stores: dict[Ref, str | None], clock_candidate: int | None = None
                    ) -> tuple[dict[Ref, CustomerState], int | None]:
        """Store the batch's activities and return every touched customer's full window and
        state, plus the shared event clock after advancing it to ``clock_candidate`` (when
        given) — all in one round trip."""
        cutoff = now_ms - self.window_ms
        pipe = self.redis.pipeline(transaction=False)
        order = list(batch)
        for ref in order:
            argv: list[Any] = [cutoff, self.ttl_seconds, stores.get(ref) or "", MIN_KEPT_EVENTS]
            for a in batch[ref]:
                argv += [a.event_id, a.ts, encode_activity(a)]
            tenant, cid = ref
            await self._apply(keys=list(self.keys.customer(cid, tenant)), args=argv, client=pipe)
        if clock_candidate is not None:
            await self._clock(keys=[self.keys.clock], args=[clock_candidate], client=pipe)
        results = await pipe.execute()
        clock = int(results.pop()) if clock_candidate is not None else None
        out: dict[Ref, CustomerState] = {}
        for ref, (added, events, state) in zip(order, results, strict=True):
            out[ref] = CustomerState(ref[1], _activities(events), _pairs(state), int(added),
                                     batch_events=[a.event_id for a in batch[ref]], tenant=ref[0])
        return out, clock

    async def load(self, refs: Iterable[Ref]) -> dict[Ref, CustomerState]:
        return await load_customers(self.redis, self.keys, refs)

    def queue_commit(self, pipe: Any, cs: CustomerState, fields: dict[str, Any]) -> None:
        _, _, st = self.keys.customer(cs.customer_id, cs.tenant)
        pipe.hset(st, mapping=fields)

    async def read_clock(self) -> int | None:
        v = await self.redis.get(self.keys.clock)
        return int(v) if v else None

    async def record_offsets(self, pipe: Any, topic: str, offsets: dict[int, int]) -> None:
        if offsets:
            argv: list[Any] = []
            for p, o in offsets.items():
                argv += [p, o]
            await self._offsets(keys=[self.keys.offsets(topic)], args=argv, client=pipe)

    async def erase(self, ref: Ref, partitions: int) -> None:
        await erase_customer(self.redis, self.keys, ref[1], tenant=ref[0], partitions=partitions)


async def load_customers(redis: Redis, keys: Keys, refs: Iterable[Ref]
                         ) -> dict[Ref, CustomerState]:
    """Customers' windows and state (one round trip); customers without state are left out."""
    order = list(refs)
    pipe = redis.pipeline(transaction=False)
    for tenant, cid in order:
        _, ed, st = keys.customer(cid, tenant)
        pipe.hgetall(ed)
        pipe.hgetall(st)
    results = await pipe.execute()
    out: dict[Ref, CustomerState] = {}
    for i, (tenant, cid) in enumerate(order):
        events, state = results[2 * i], results[2 * i + 1]
        if state:
            out[(tenant, cid)] = CustomerState(
                cid, [decode_activity(k, v) for k, v in events.items()], dict(state), tenant=tenant)
    return out


async def erase_customer(redis: Redis, keys: Keys, customer_id: str, *,
                         tenant: str = DEFAULT_TENANT, partitions: int) -> None:
    """Forget a customer: every key under their hash tag (window, state, profile, delivery
    log, timeline, actions) and their silence-index entries."""
    pipe = redis.pipeline(transaction=False)
    pipe.delete(*keys.customer_all(customer_id, tenant))
    token = customer_token(customer_id, tenant)
    for p in range(partitions):
        pipe.zrem(keys.due(p), token)
    await pipe.execute()


def risk_snapshot(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False, default=str)
