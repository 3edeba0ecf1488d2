"""Per-customer state in Redis, by event time and idempotent by ``event_id``.

Keys of one customer (all under the hash tag ``{customer}``): ``ev`` (zset event id -> event
time ms), ``ed`` (hash event id -> compact activity), ``st`` (hash: first_ts, last_ts,
store, tier, tier_since, score, risk snapshot). Applying a batch is one pipelined round trip:
one ``EVALSHA`` per customer. An event whose id is already stored changes nothing, whether it
comes again in the same batch, after a redelivery or after a crash.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import DEFAULT_TENANT, Keys, customer_token
from services.common.settings import Settings
from services.scorer.activity import activity_from_row, decode_activity, encode_activity
from services.scorer.features import DAY_MS, Activity

# Events older than the longest window are trimmed, except each customer's newest ones: a
# customer whose whole history is old stays known and scoreable, and memory stays bounded.
MIN_KEPT_EVENTS = 32

# KEYS: ev zset, ed hash, st hash.
# ARGV: cutoff ms, ttl s, store or "", min kept, max kept, then a JSON array of
# [event id, ts, blob] (one argument: packing thousands of small arguments costs more than
# the script). Returns {added, events as one JSON object {id: row}, state as a flat list}.
APPLY_LUA = """
local cutoff = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local keep = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local batch = cjson.decode(ARGV[6])
local added = 0
local first = tonumber(redis.call('HGET', KEYS[3], 'first_ts'))
local last = tonumber(redis.call('HGET', KEYS[3], 'last_ts'))
local count = redis.call('ZCARD', KEYS[1])
local oldest = nil
if count > 0 then oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) end
for _, e in ipairs(batch) do
  local id, ts = e[1], e[2]
  -- An event that trimming would drop at once (older than the window and than every kept
  -- event of a full history) is not stored: a redelivery of a trimmed event adds nothing.
  local stale = ts < cutoff and count >= keep and oldest ~= nil and ts <= oldest
  stale = stale or (count >= cap and oldest ~= nil and ts <= oldest)
  if not stale and redis.call('HSETNX', KEYS[2], id, e[3]) == 1 then
    redis.call('ZADD', KEYS[1], ts, id)
    added = added + 1
    count = count + 1
    if first == nil or ts < first then first = ts end
    if last == nil or ts > last then last = ts end
  end
end
if added > 0 then
  redis.call('HSET', KEYS[3], 'first_ts', first, 'last_ts', last)
  -- Counted into the global stats by the commit that follows (and reset there, atomically),
  -- so a crash in between neither loses nor repeats the count.
  redis.call('HINCRBY', KEYS[3], 'pending', added)
  if ARGV[3] ~= '' then
    local old = redis.call('HGET', KEYS[3], 'store')
    if old and old ~= ARGV[3] then redis.call('HSET', KEYS[3], 'moved_from', old) end
    redis.call('HSET', KEYS[3], 'store', ARGV[3])
  end
end
local function drop(ids)
  for j = 1, #ids, 500 do
    local chunk = {unpack(ids, j, math.min(j + 499, #ids))}
    redis.call('HDEL', KEYS[2], unpack(chunk))
    redis.call('ZREM', KEYS[1], unpack(chunk))
  end
end
local surplus = count - keep
if surplus > 0 then
  drop(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, surplus))
end
local over = redis.call('ZCARD', KEYS[1]) - cap
if over > 0 then drop(redis.call('ZRANGE', KEYS[1], 0, over - 1)) end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
local flat = redis.call('HGETALL', KEYS[2])
local parts = {}
for i = 1, #flat, 2 do
  parts[#parts + 1] = cjson.encode(flat[i]) .. ':' .. flat[i + 1]
end
return {added, '{' .. table.concat(parts, ',') .. '}', redis.call('HGETALL', KEYS[3])}
"""

# The commit of one batch, atomic (a script runs whole or not at all) and one argument: the
# JSON {"c": [customer update...], "o": [offsets key, [partition, next offset]...],
# "s": [stats key, [name, increment]...], "t": [marker key, commit token]}. The token makes a
# retried commit a no-op when the first try ran but its reply was lost (Redis killed or
# timing out after running it; redis-py's own retry resends it too): the stats are increments.
# A customer update is [state key, [field, value...],
# clear pending and moved_from (0/1), due key or "", token, due ms, [[index key, priority]...], [index key to
# leave...], [[set key, member]...], timeline key or "", timeline entry, timeline max, ttl,
# holdout index or "", now ms].
# It touches keys of many customers, so it needs a standalone Redis (or one primary behind
# Sentinel / a managed endpoint), not Redis Cluster.
COMMIT_LUA = """
local batch = cjson.decode(ARGV[1])
local t = batch.t
if t ~= nil then
  if redis.call('GET', t[1]) == t[2] then return -1 end
  redis.call('SET', t[1], t[2], 'EX', 86400)
end
for _, c in ipairs(batch.c) do
  redis.call('HSET', c[1], unpack(c[2]))
  if c[3] == 1 then redis.call('HDEL', c[1], 'pending', 'moved_from') end
  if c[4] ~= '' then redis.call('ZADD', c[4], c[6], c[5]) end
  for _, ix in ipairs(c[7]) do redis.call('ZADD', ix[1], ix[2], c[5]) end
  for _, key in ipairs(c[8]) do redis.call('ZREM', key, c[5]) end
  for _, sm in ipairs(c[9]) do redis.call('SADD', sm[1], sm[2]) end
  if c[10] ~= '' then
    redis.call('LPUSH', c[10], c[11])
    redis.call('LTRIM', c[10], 0, c[12] - 1)
    redis.call('EXPIRE', c[10], c[13])
  end
  if c[14] ~= nil and c[14] ~= '' then redis.call('ZADD', c[14], 'NX', c[15], c[5]) end
end
local o = batch.o
if o ~= nil and #o > 0 then
  for i = 2, #o do
    local cur = tonumber(redis.call('HGET', o[1], o[i][1]))
    if cur == nil or o[i][2] > cur then redis.call('HSET', o[1], o[i][1], o[i][2]) end
  end
end
local st = batch.s
if st ~= nil and #st > 0 then
  for i = 2, #st do redis.call('HINCRBY', st[1], st[i][1], st[i][2]) end
end
return #batch.c
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
    def moved_from(self) -> str | None:
        """The store the customer belonged to before their latest events named another (its
        tier indexes still list them until the next commit, which clears this)."""
        return self.state.get("moved_from") or None

    @property
    def pending(self) -> int:
        """Events stored but not yet counted in the global stats (see APPLY_LUA)."""
        v = self.state.get("pending")
        return int(v) if v else 0

    @property
    def store_id(self) -> str | None:
        return self.state.get("store") or None

    def newest_event_id(self) -> str | None:
        if not self.activities:
            return None
        return max(self.activities, key=lambda a: (a.ts, a.event_id)).event_id


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def activities_from_json(blob: str) -> list[Activity]:
    """The events of one customer as the apply script returns them: ``{id: row}``."""
    return [activity_from_row(event_id, row) for event_id, row in json.loads(blob).items()]


class StateStore:
    def __init__(self, redis: Redis, keys: Keys, *, window_ms: int, ttl_seconds: int,
                 max_events: int = 1000):
        self.redis = redis
        self.keys = keys
        self.window_ms = window_ms
        self.ttl_seconds = ttl_seconds
        self.max_events = max(max_events, MIN_KEPT_EVENTS)
        self._apply = redis.register_script(APPLY_LUA)
        self._commit = redis.register_script(COMMIT_LUA)
        self._clock = redis.register_script(CLOCK_LUA)
        # The last commit token of this process (see COMMIT_LUA); one short-lived key each.
        self.commit_marker = f"{keys.prefix}:commit:{uuid.uuid4().hex}"

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> StateStore:
        return cls(redis, Keys(settings.redis_prefix), window_ms=settings.window_days * DAY_MS,
                   ttl_seconds=settings.retention_days * 86_400,
                   max_events=settings.max_events_per_customer)

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
            rows = [[a.event_id, a.ts, encode_activity(a)] for a in batch[ref]]
            argv: list[Any] = [cutoff, self.ttl_seconds, stores.get(ref) or "", MIN_KEPT_EVENTS,
                               self.max_events, json.dumps(rows, separators=(",", ":"),
                                                           ensure_ascii=False)]
            tenant, cid = ref
            await self._apply(keys=list(self.keys.customer(cid, tenant)), args=argv, client=pipe)
        if clock_candidate is not None:
            await self._clock(keys=[self.keys.clock], args=[clock_candidate], client=pipe)
        results = await pipe.execute()
        clock = int(results.pop()) if clock_candidate is not None else None
        out: dict[Ref, CustomerState] = {}
        for ref, (added, events, state) in zip(order, results, strict=True):
            out[ref] = CustomerState(ref[1], activities_from_json(events), _pairs(state), int(added),
                                     batch_events=[a.event_id for a in batch[ref]], tenant=ref[0])
        return out, clock

    async def load(self, refs: Iterable[Ref]) -> dict[Ref, CustomerState]:
        return await load_customers(self.redis, self.keys, refs)

    async def commit(self, updates: list[list[Any]], *, topic: str, offsets: dict[int, int],
                     stats: dict[str, int], token: str | None = None) -> None:
        """Write a batch's outcome in one atomic round trip (see COMMIT_LUA): per customer
        ``[state key, [field, value...], clear pending, due key, token, due ms, [[index,
        priority]...], [index to leave...], [[set, member]...], timeline, entry, max, ttl]``.
        Retries of one commit pass the same ``token``: it then takes effect once."""
        payload: dict[str, Any] = {"c": updates}
        if token:
            payload["t"] = [self.commit_marker, token]
        if offsets:
            payload["o"] = [self.keys.offsets(topic), *([str(p), o] for p, o in offsets.items())]
        counts = [[name, n] for name, n in stats.items() if n]
        if counts:
            payload["s"] = [self.keys.stats, *counts]
        if updates or offsets or counts:
            await self._commit(args=[json.dumps(payload, separators=(",", ":"),
                                                ensure_ascii=False)])

    async def read_clock(self) -> int | None:
        v = await self.redis.get(self.keys.clock)
        return int(v) if v else None

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
    read = redis.pipeline(transaction=False)
    read.hget(keys.customer(customer_id, tenant)[2], "store")
    read.hkeys(keys.actions(customer_id, tenant))
    raw, action_ids = await read.execute()
    store = str(raw) if raw else None
    token = customer_token(customer_id, tenant)
    pipe = redis.pipeline(transaction=False)
    pipe.zrem(keys.holdout_index(tenant), token)
    if action_ids:
        pipe.zrem(keys.winback_index(tenant), *(f"{token}|{a}" for a in action_ids))
    # Indexes first, state last: an erasure interrupted half-way is simply done again.
    for p in range(partitions):
        pipe.zrem(keys.due(p), token)
    for tier in ("low", "medium", "high"):
        pipe.zrem(keys.tier_index(tier, tenant), token)
        if store:
            pipe.zrem(keys.tier_index(tier, tenant, store), token)
    pipe.delete(*keys.customer_all(customer_id, tenant))
    await pipe.execute()


def risk_snapshot(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False, default=str)
