"""Per-customer state in Redis, by event time and idempotent by ``event_id``.

Keys of one customer (all under the hash tag ``{customer}``): ``ev`` (zset event id -> event
time ms), ``ed`` (hash event id -> compact activity), ``st`` (hash: first_ts, last_ts,
store, tier, tier_since, score, risk snapshot). Applying a batch is one pipelined round trip:
one ``EVALSHA`` per customer. An event whose id is already stored changes nothing, whether it
comes again in the same batch, after a redelivery or after a crash.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import DEFAULT_TENANT, Keys, customer_token
from services.common.settings import Settings
from services.scoring.activity import activity_from_row, decode_activity, encode_activity
from services.scoring.features import DAY_MS, Activity

# Events older than the longest window are trimmed, except each customer's newest ones: a
# customer whose whole history is old stays known and scoreable, and memory stays bounded.
MIN_KEPT_EVENTS = 32

# KEYS: ev zset, ed hash, st hash.
# ARGV: cutoff ms, ttl s, store or "", min kept, max kept, then a JSON array of
# [event id, ts, blob] (one argument: packing thousands of small arguments costs more than
# the script), then "1" when the store came from a store-bound key ("" otherwise). Returns {added, events as one JSON object {id: row}, state as a flat list}.
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
    -- ARGV[7] == '1': the store comes from a store-bound key's event; it makes the customer's
    -- home store only for a customer without one (one store cannot pull another's customer).
    if not (old and ARGV[7] == '1') then
      if old and old ~= ARGV[3] then redis.call('HSET', KEYS[3], 'moved_from', old) end
      redis.call('HSET', KEYS[3], 'store', ARGV[3])
    end
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
local ts = batch.ts
if ts ~= nil then
  for _, one in ipairs(ts) do
    for i = 2, #one do redis.call('HINCRBY', one[1], one[i][1], one[i][2]) end
  end
end
return #batch.c
"""

# The event clock of one tenant (CHURNWATCH_CLOCK=event), one key (a zset, see
# Keys.event_clock). KEYS[1]: the tenant's clock. ARGV[1]: cap ms (wall time + the allowed
# future skew); ARGV[2..]: customer digest, that customer's newest event ms in the batch.
# Keeps the CLOCK_KEEP customers with the newest events and returns the second newest time
# (the only one while a single customer is known): a customer's far-future event moves their
# own scoring, never the tenant's clock. Never goes back: members only rise, and trimming drops
# the oldest.
CLOCK_KEEP = 3
CLOCK_LUA = """
local cap = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local ts = math.min(tonumber(ARGV[i + 1]), cap)
  local cur = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]))
  if cur == nil or ts > cur then redis.call('ZADD', KEYS[1], ts, ARGV[i]) end
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -""" + str(CLOCK_KEEP + 1) + """)
local top = redis.call('ZREVRANGE', KEYS[1], 0, 1, 'WITHSCORES')
if #top >= 4 then return tonumber(top[4]) end
if #top >= 2 then return tonumber(top[2]) end
return 0
"""


def clock_member(tenant: str, customer_id: str) -> str:
    """A customer in the clock zset and the id registry: a digest, not the id."""
    return hashlib.blake2b(customer_token(customer_id, tenant).encode(), digest_size=8).hexdigest()


# Event ids are unique per tenant (CONTRACT): an id first used by one customer is a duplicate
# for every other. KEYS[1]: the bucket's current generation, KEYS[2]: its previous one (same
# hash tag: one slot). ARGV[1]: ttl s; ARGV[2..]: event id, customer digest pairs. Claims each
# unclaimed id for its customer; returns the 1-based pair numbers whose id another customer
# holds. One script per touched bucket and batch (ID_BUCKETS per tenant at most).
ID_BUCKETS = 16
CLAIM_LUA = """
local ttl = tonumber(ARGV[1])
local lost = {}
local n = 0
for i = 2, #ARGV, 2 do
  n = n + 1
  local owner = redis.call('HGET', KEYS[2], ARGV[i])
  if not owner then
    if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 0 then
      owner = redis.call('HGET', KEYS[1], ARGV[i])
    end
  end
  if owner and owner ~= ARGV[i + 1] then lost[#lost + 1] = n end
end
redis.call('EXPIRE', KEYS[1], ttl)
return lost
"""


def id_bucket(event_id: str) -> int:
    return hashlib.blake2b(event_id.encode(), digest_size=2).digest()[0] % ID_BUCKETS


def clock_from_top(top: Sequence[Any]) -> int | None:
    """The clock from ``ZREVRANGE clock 0 1 WITHSCORES`` (see CLOCK_LUA)."""
    if len(top) >= 4:
        return int(float(top[3]))
    if len(top) >= 2:
        return int(float(top[1]))
    return None


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
        self._claim = redis.register_script(CLAIM_LUA)
        self.id_memory_ms = 30 * DAY_MS
        # The last commit token of this process (see COMMIT_LUA); one short-lived key each.
        self.commit_marker = f"{keys.prefix}:commit:{uuid.uuid4().hex}"

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> StateStore:
        store = cls(redis, Keys(settings.redis_prefix), window_ms=settings.window_days * DAY_MS,
                    ttl_seconds=settings.retention_days * 86_400,
                    max_events=settings.max_events_per_customer)
        store.id_memory_ms = settings.event_id_memory_days * DAY_MS
        return store

    async def claim_ids(self, batch: dict[Ref, list[Activity]], *, wall_ms: int
                        ) -> set[tuple[Ref, str]]:
        """Claim the batch's event ids for their customers in the tenant's id registry (one
        round trip, one script per touched bucket); returns the (customer, event id) pairs
        whose id another customer of the tenant already holds: duplicates, not applied."""
        generation = wall_ms // self.id_memory_ms
        ttl = 2 * self.id_memory_ms // 1000 + 86_400
        pairs: dict[tuple[str, int], list[tuple[Ref, str]]] = {}
        for ref, acts in batch.items():
            for a in acts:
                pairs.setdefault((ref[0], id_bucket(a.event_id)), []).append((ref, a.event_id))
        order = list(pairs)
        pipe = self.redis.pipeline(transaction=False)
        for tenant, bucket in order:
            argv: list[Any] = [ttl]
            for ref, event_id in pairs[(tenant, bucket)]:
                argv += [event_id, clock_member(*ref)]
            await self._claim(keys=[self.keys.event_ids(tenant, bucket, generation),
                                    self.keys.event_ids(tenant, bucket, generation - 1)],
                              args=argv, client=pipe)
        results = await pipe.execute() if order else []
        lost: set[tuple[Ref, str]] = set()
        for slot, numbers in zip(order, results, strict=True):
            for n in numbers:
                lost.add(pairs[slot][int(n) - 1])
        return lost

    async def apply(self, batch: dict[Ref, list[Activity]], *, now_ms: int | dict[Ref, int],
                    stores: dict[Ref, str | None], clock_cap: int | None = None,
                    store_bound: set[Ref] | None = None
                    ) -> tuple[dict[Ref, CustomerState], dict[str, int]]:
        """Store the batch's activities and return every touched customer's full window and
        state (``now_ms``: each customer's instant, which sets their trim cutoff), plus, when
        ``clock_cap`` is given (the event clock), each tenant's clock after advancing it by the
        batch — all in one round trip: one script per customer, one per tenant."""
        pipe = self.redis.pipeline(transaction=False)
        order = list(batch)
        for ref in order:
            rows = [[a.event_id, a.ts, encode_activity(a)] for a in batch[ref]]
            at = now_ms if isinstance(now_ms, int) else now_ms[ref]
            argv: list[Any] = [at - self.window_ms, self.ttl_seconds,
                               stores.get(ref) or "", MIN_KEPT_EVENTS, self.max_events,
                               json.dumps(rows, separators=(",", ":"), ensure_ascii=False),
                               "1" if store_bound and ref in store_bound else ""]
            tenant, cid = ref
            await self._apply(keys=list(self.keys.customer(cid, tenant)), args=argv, client=pipe)
        tenants: list[str] = []
        if clock_cap is not None:
            newest: dict[str, list[Any]] = {}
            for (tenant, cid), acts in batch.items():
                newest.setdefault(tenant, []).extend(
                    [clock_member(tenant, cid), max(a.ts for a in acts)])
            for tenant, pairs in newest.items():
                tenants.append(tenant)
                await self._clock(keys=[self.keys.event_clock(tenant)], args=[clock_cap, *pairs],
                                  client=pipe)
        results = await pipe.execute()
        clocks = {t: int(results[len(order) + i]) for i, t in enumerate(tenants)}
        out: dict[Ref, CustomerState] = {}
        for ref, (added, events, state) in zip(order, results[:len(order)], strict=True):
            out[ref] = CustomerState(ref[1], activities_from_json(events), _pairs(state), int(added),
                                     batch_events=[a.event_id for a in batch[ref]], tenant=ref[0])
        return out, clocks

    async def load(self, refs: Iterable[Ref]) -> dict[Ref, CustomerState]:
        return await load_customers(self.redis, self.keys, refs)

    async def commit(self, updates: list[list[Any]], *, topic: str, offsets: dict[int, int],
                     stats: dict[str, int], token: str | None = None,
                     tenant_stats: dict[str, dict[str, int]] | None = None) -> None:
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
        per_tenant = [[self.keys.tenant_stats(t), *([n, v] for n, v in c.items() if v)]
                      for t, c in (tenant_stats or {}).items() if any(c.values())]
        if per_tenant:
            payload["ts"] = per_tenant
        if updates or offsets or counts or per_tenant:
            await self._commit(args=[json.dumps(payload, separators=(",", ":"),
                                                ensure_ascii=False)])

    async def read_clocks(self, tenants: Sequence[str]) -> dict[str, int | None]:
        """The tenants' event clocks (one round trip); None for a tenant without one yet."""
        pipe = self.redis.pipeline(transaction=False)
        for t in tenants:
            pipe.zrevrange(self.keys.event_clock(t), 0, 1, withscores=True)
        rows = await pipe.execute() if tenants else []
        return {t: clock_from_top([x for pair in row for x in pair])
                for t, row in zip(tenants, rows, strict=True)}

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
        pipe.zrem(keys.due(p, tenant), token)
    for tier in ("low", "medium", "high"):
        pipe.zrem(keys.tier_index(tier, tenant), token)
        if store:
            pipe.zrem(keys.tier_index(tier, tenant, store), token)
    pipe.delete(*keys.customer_all(customer_id, tenant))
    await pipe.execute()


def risk_snapshot(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False, default=str)
