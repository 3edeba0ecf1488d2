"""The customer state store: one interface over Redis for the scorer, the API and erasure.

A customer is known by ``(tenant, customer_id)`` (a :data:`Ref`). All of one customer's keys
share the hash tag ``{<tenant>/<customer>}``: the summary of their events (``sm``, a string:
:class:`services.scoring.summary.Summary`, bounded whatever the history length), their risk
snapshot (``rk``, a string: compact JSON, see :func:`risk_snapshot`) and the state hash
(``st``, every field within 64 bytes so Redis keeps it a listpack), which holds

- the rest of the last scoring: ``score``, ``tier``, ``tier_since``, ``scored_at``, ``store``,
  ``first_ts``, ``last_ts``, ``due``,
- ``ap``: per events-topic partition, the outcome of the customer's last application that the
  partition's offset commit may not have counted yet (``[base offset, newest offset applied,
  added, duplicates, risk changes]``),
- ``ix``: what the last commit wrote to the tenant's indexes (to write it again after a
  crash), and ``v``, a version every write checks (compare-and-set).

Readers see one dict per customer with ``sm`` and ``risk`` (the full JSON snapshot, as it
always was) among the hash's fields: :class:`StateRead` is the one way to read a customer's
state (:meth:`StateStore.read`, :func:`load_customers` and the API's queries use it). State
written by the previous layout (``sm`` and ``risk`` inside the hash) is still read, and moved
to the new keys by the customer's next write.

**Redis Cluster.** Every script and transaction here touches one hash slot: a customer's keys,
one tenant bucket of the event-id registry, one tenant's clock, or the scorer's counters
(offsets and stats share the tag ``{<prefix>/sc}``). Indexes are written with single-key
commands. A batch is therefore not one atomic script; it is atomic by construction:

1. the customers' writes, each compare-and-set and idempotent (a record at or below the
   customer's newest applied offset of its partition is not applied again);
2. the index writes (idempotent ``ZADD``/``ZREM``/``SADD``);
3. the partition commit: offsets and stats in one script that only moves offsets forward.

A crash between 1 and 3 leaves customers whose ``ap`` base equals the partition's committed
offset: the next attempt counts their stored outcome once and writes their indexes again.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterPipeline

from services.common import jsonfast
from services.common.profiles import home_store_of, owner_of
from services.common.redisconn import (
    DEFAULT_TENANT,
    Keys,
    customer_token,
    is_cluster,
    parse_cohort_member,
)
from services.common.riskchange import TIERS, lapsed
from services.common.settings import Settings
from services.scoring.closures import StoreCalendar, calendar_of
from services.scoring.features import DAY_MS, FEATURE_NAMES, FEATURE_SCHEMA_VERSION, Activity
from services.scoring.summary import Summary

Ref = tuple[str, str]
"""A customer as the state store knows them: ``(tenant, customer_id)``."""


# One customer's write. KEYS: state hash, timeline list, summary, risk snapshot (one hash tag:
# one slot). ARGV: expected version ("" for a customer without state), timeline entries (JSON,
# oldest first, one per line) or "", timeline max, ttl s, summary op ("s": set to ARGV[6],
# "d": delete, "": keep), summary, risk op, risk (same), number of fields to delete, those
# fields, then field, value pairs to set (plain arguments: no JSON for Lua to decode on the
# hot path). Returns 1, or 0 when the version moved (another writer got there first: the
# caller reads again and redoes its work).
# The summary and the risk snapshot (0.5-3 KB) live in keys of their own so that every field
# of the hash stays within hash-max-listpack-value (64 bytes) and Redis keeps it a listpack
# (a hashtable costs ~1 KB more per customer). The layout before kept them in the hash as
# "sm" and "risk": the first write moves them out.
WRITE_LUA = """
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '') ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[4])
local old = redis.call('HMGET', KEYS[1], 'sm', 'risk')
for i = 1, 2 do
  local op, key = ARGV[3 + 2 * i], KEYS[2 + i]
  if op == 's' then redis.call('SET', key, ARGV[4 + 2 * i], 'EX', ttl)
  elseif op == 'd' then redis.call('DEL', key)
  elseif old[i] then redis.call('SET', key, old[i], 'EX', ttl)
  else redis.call('EXPIRE', key, ttl) end
end
if old[1] or old[2] then
  -- Redis never converts a hashtable back to a listpack: write the hash again
  redis.call('HDEL', KEYS[1], 'sm', 'risk')
  local rest = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  if #rest > 0 then redis.call('HSET', KEYS[1], unpack(rest)) end
end
local nd = tonumber(ARGV[9])
if nd > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 10, 9 + nd)) end
if #ARGV > 9 + nd then redis.call('HSET', KEYS[1], unpack(ARGV, 10 + nd, #ARGV)) end
if ARGV[2] ~= '' then
  for entry in string.gmatch(ARGV[2], '[^\\n]+') do redis.call('LPUSH', KEYS[2], entry) end
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""
# The stats whose sum is what a commit processed of the topic's events (single or in
# envelopes): events_scored_total. (A tombstone is not an event: erasures_total.)
SCORED_STATS = ("events_applied_total", "events_duplicate_total",
                "events_dead_lettered_total", "events_erased_total")
# Fields of the customer's write that the script routes to keys of their own (see WRITE_LUA).
OWN_KEY_FIELDS = ("sm", "risk")

# The partition commit, one slot (offsets, stats and the marker share the scorer's tag).
# KEYS: offsets hash, stats hash, marker, the topic's processed count (Keys.scored), then the
# tenants' stats. ARGV[1]: JSON {"o": [[partition, next offset]...], "s": [[name, n]...],
# "n": events processed (events_scored_total), "t": [[tenant, [[name, n]...]]...], "k": token
# or ""}.
# With offsets it takes effect only if it moves one forward (a retried commit, or one
# whose reply was lost, counts nothing twice); without offsets the token says the same.
COMMIT_LUA = """
local b = cjson.decode(ARGV[1])
local moved = false
if #b.o > 0 then
  for _, po in ipairs(b.o) do
    local cur = tonumber(redis.call('HGET', KEYS[1], po[1]))
    if cur == nil or po[2] > cur then
      redis.call('HSET', KEYS[1], po[1], po[2])
      moved = true
    end
  end
  if not moved then return 0 end
elseif b.k ~= '' then
  if redis.call('GET', KEYS[3]) == b.k then return 0 end
  redis.call('SET', KEYS[3], b.k, 'EX', 86400)
end
for _, s in ipairs(b.s) do redis.call('HINCRBY', KEYS[2], s[1], s[2]) end
if b.n > 0 then redis.call('HINCRBY', KEYS[4], 'events', b.n) end
for i, one in ipairs(b.t) do
  for j = 1, #one[2] do redis.call('HINCRBY', KEYS[4 + i], one[2][j][1], one[2][j][2]) end
end
return 1
"""

# The event clock of one tenant (CHURNWATCH_CLOCK=event), one key (a zset, see
# Keys.event_clock). KEYS[1]: the tenant's clock. ARGV[1]: cap ms (wall time + the allowed
# future skew); ARGV[2..]: customer digest, that customer's newest event ms in the batch.
# Keeps the CLOCK_KEEP customers with the newest events and returns the second newest time
# (the only one while a single customer is known): a customer's far-future event never moves
# the tenant's clock alone. Never goes back: members only rise, and trimming drops the oldest.
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

# Event ids are unique per tenant (the contract): an id first used by one customer is a
# duplicate for every other, and an id a customer's earlier record already used is a re-post
# (a POS resending a batch it got no answer for), whatever the event's age. KEYS[1]: the
# bucket's current generation, KEYS[2]: its previous one (same hash tag: one slot). ARGV[1]:
# ttl s; ARGV[2..]: event id, customer digest, record ("<partition>:<offset>") triples. Claims
# each unclaimed id as "<digest>|<record>"; returns {triple numbers whose id another customer
# holds, triple numbers whose id another record of the same customer holds} (1-based). The
# same record again (a redelivery) is neither. One script per touched bucket and batch.
ID_BUCKETS = 16
CLAIM_LUA = """
local ttl = tonumber(ARGV[1])
local lost, again = {}, {}
local n = 0
for i = 2, #ARGV, 3 do
  n = n + 1
  local mine = ARGV[i + 1] .. '|' .. ARGV[i + 2]
  local owner = redis.call('HGET', KEYS[2], ARGV[i])
  if not owner then
    if redis.call('HSETNX', KEYS[1], ARGV[i], mine) == 0 then
      owner = redis.call('HGET', KEYS[1], ARGV[i])
    end
  end
  if owner and owner ~= mine then
    local bar = string.find(owner, '|', 1, true)
    local who = bar and string.sub(owner, 1, bar - 1) or owner
    if who ~= ARGV[i + 1] then lost[#lost + 1] = n
    elseif bar then again[#again + 1] = n end
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return {lost, again}
"""


def clock_member(tenant: str, customer_id: str) -> str:
    """A customer in the clock zset and the id registry: a digest, not the id."""
    return hashlib.blake2b(customer_token(customer_id, tenant).encode(), digest_size=8).hexdigest()


def id_bucket(event_id: str) -> int:
    return hashlib.blake2b(event_id.encode(), digest_size=2).digest()[0] % ID_BUCKETS


def clock_from_top(top: Sequence[Any]) -> int | None:
    """The clock from ``ZREVRANGE clock 0 1 WITHSCORES`` (see CLOCK_LUA)."""
    if len(top) >= 4:
        return int(float(top[3]))
    if len(top) >= 2:
        return int(float(top[1]))
    return None


class StateConflict(Exception):
    """Another writer changed a customer between our read and our write (a rebalance let two
    workers touch one partition for a moment): read again and redo the batch."""


@dataclass
class Outcome:
    """A customer's application on one partition not yet counted by its offset commit."""

    base: int  # the partition's committed offset when it was applied
    top: int  # newest offset applied
    added: int = 0
    duplicates: int = 0
    changes: int = 0

    def to_json(self) -> list[int]:
        return [self.base, self.top, self.added, self.duplicates, self.changes]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> Outcome:
        return cls(*(int(x) for x in row[:5]))


@dataclass
class IndexEntry:
    """Where the last commit put a customer in the tenant's indexes (see ``ix``)."""

    tier: str
    priority: float  # the score in the tier's sorted sets: index_score(), not the priority
    store: str | None
    moved_from: str | None
    changed: bool  # the tier changed, or the store: other tiers' entries go, the sets gain
    due_ms: int | None
    partition: int | None
    holdout: bool

    def to_json(self) -> list[Any]:
        return [self.tier, self.priority, self.store or "", self.moved_from or "",
                int(self.changed), self.due_ms if self.due_ms is not None else -1,
                self.partition if self.partition is not None else -1, int(self.holdout)]

    @classmethod
    def from_json(cls, row: Sequence[Any], state: dict[str, str] | None = None) -> IndexEntry:
        """From :meth:`to_json`, or from :func:`compact_index`'s form with the ``state`` it
        was written with."""
        st = state or {}
        tier = str(row[0]) or st.get("tier", "")
        due = int(float(st.get("due") or -1)) if int(row[5]) == -2 else int(row[5])
        return cls(tier, float(row[1]), str(row[2]) or None, str(row[3]) or None,
                   bool(row[4]), None if due < 0 else due,
                   None if int(row[6]) < 0 else int(row[6]), bool(row[7]))


def index_score(priority: float, lifecycle_stage: str | None) -> float:
    """A customer's score in their tier's sorted sets: the priority (score x (1 + a year's
    spend), >= 0) while they can still be won back, ``-1 / (1 + priority)`` once they are
    churned (silent past the horizon): in (-1, 0), after everyone else of the tier and still
    by priority among themselves. A year of history imported at go-live left the high tier
    mostly churned customers, and sorted by priority alone they filled its first pages (in a
    salon's year: 25 of 25 on the first page, 167 of 177 in the tier) while the six it held
    who were overdue but still winnable came after them. :func:`priority_from_index` reads it back."""
    if lapsed(lifecycle_stage):
        return -1.0 / (1.0 + max(priority, 0.0))
    return priority


def priority_from_index(score: float) -> float:
    """The priority a tier-index score stands for (:func:`index_score`)."""
    if score >= 0:
        return score
    return round(max(-1.0 / score - 1.0, 0.0), 6)


def compact_index(row: list[Any], fields: dict[str, Any]) -> list[Any]:
    """``ix`` (:meth:`IndexEntry.to_json`) as stored, without what the same write puts in the
    hash's own fields ("" stands for the tier, -2 for the due time; the scorer writes both
    whenever it writes ``ix``): ~28 bytes plus the store id, within the 64 bytes of a listpack
    value for store ids up to ~35 characters."""
    out = list(row)
    if len(out) == 8:
        if out[0] and out[0] == fields.get("tier"):
            out[0] = ""
        if isinstance(out[5], int) and out[5] >= 0 and str(out[5]) == fields.get("due"):
            out[5] = -2
    return out


@dataclass
class CustomerState:
    """One customer as read from the store, plus what a batch did to them."""

    customer_id: str
    summary: Summary
    state: dict[str, str]
    tenant: str = DEFAULT_TENANT
    added: int = 0  # events of this attempt added to the summary
    duplicates: int = 0  # events of this attempt that were already known
    partition: int | None = None
    new_store: str | None = None  # the store the batch named (written by the commit)
    # how a store no event named became theirs ("profile", "only"); None: an event named it
    new_store_by: str | None = None
    new_moved_from: str | None = None
    # the profile's ``store_id``, read for a customer whose events name no store
    profile_store: str | None = None
    uncounted: Outcome | None = None  # a previous attempt's outcome to count now

    @property
    def ref(self) -> Ref:
        return self.tenant, self.customer_id

    @property
    def token(self) -> str:
        return customer_token(self.customer_id, self.tenant)

    @property
    def version(self) -> str:
        return self.state.get("v", "")

    @property
    def first_ts(self) -> int | None:
        return self.summary.first_ts

    @property
    def last_ts(self) -> int | None:
        return self.summary.last_ts

    @property
    def tier(self) -> str | None:
        return self.state.get("tier") or None

    @property
    def tier_since(self) -> int | None:
        v = self.state.get("tier_since")
        return int(float(v)) if v else None

    @property
    def scored_at_ms(self) -> int | None:
        """The instant the customer was last scored at (their stored risk's ``as_of``)."""
        v = self.state.get("scored_at")
        return int(float(v)) if v else None

    @property
    def due_ms(self) -> int | None:
        """When the silence sweep was to look at the customer again (``Processor._due``)."""
        v = self.state.get("due")
        return int(float(v)) if v else None

    @property
    def score(self) -> float | None:
        v = self.state.get("score")
        return float(v) if v else None

    @property
    def store_id(self) -> str | None:
        return self.new_store or self.state.get("store") or None

    @property
    def store_named(self) -> bool:
        """Whether their store is one their events named (not their profile's, nor the
        tenant's only store taken for a customer whose events name none)."""
        return bool(self.state.get("store")) and not self.state.get("store_by")

    @property
    def moved_from(self) -> str | None:
        """The store the customer belonged to before their latest events named another."""
        return self.new_moved_from or self.state.get("moved_from") or None

    @property
    def index_entry(self) -> IndexEntry | None:
        raw = self.state.get("ix")
        return IndexEntry.from_json(jsonfast.loads(raw), self.state) if raw else None

    def outcomes(self) -> dict[int, Outcome]:
        raw = self.state.get("ap")
        return {int(p): Outcome.from_json(row) for p, row in jsonfast.loads(raw).items()} if raw else {}

    def newest_event_id(self) -> str | None:
        return self.summary.newest_event_id()

    def recent(self) -> list[Activity]:
        return self.summary.recent()


_CLUSTER_PIPELINE: dict[type, bool] = {}


def _is_cluster_pipeline(pipe: Any) -> bool:
    """``isinstance(pipe, ClusterPipeline)``, once per class: redis-py's command classes are
    typing Protocols, whose isinstance check took ~5 µs per customer read."""
    cls = type(pipe)
    known = _CLUSTER_PIPELINE.get(cls)
    if known is None:
        known = _CLUSTER_PIPELINE[cls] = isinstance(pipe, ClusterPipeline)
    return known


class StateRead:
    """The one way to read customers' state: queue :attr:`size` commands per customer in a
    (non-transactional) pipeline with :meth:`queue`, then turn that customer's replies into
    the dict of their state with :meth:`result` — the hash's fields plus ``sm`` (the encoded
    summary) and ``risk`` (the risk snapshot, full JSON as :func:`risk_json` gives it), read
    from their own keys or, for state of the previous layout, from the hash.

    ``fields``: only those (``hmget``; a missing one is left out of the dict), else all;
    ``risk=False``: not the risk snapshot (the scorer writes it, never reads it)."""

    def __init__(self, keys: Keys, fields: Sequence[str] | None = None, *, risk: bool = True):
        self.keys = keys
        self.fields = list(fields) if fields is not None else None
        self.want_sm = fields is None or "sm" in fields
        self.want_risk = risk and (fields is None or "risk" in fields)
        self.split = False  # sm and risk by two GETs: a cluster pipeline refuses MGET

    @property
    def size(self) -> int:
        """Commands (replies) per customer; known once :meth:`queue` has seen the pipeline."""
        both = self.want_sm and self.want_risk
        return 1 + int(self.want_sm or self.want_risk) + int(both and self.split)

    def queue(self, pipe: Any, customer_id: str, tenant: str = DEFAULT_TENANT) -> None:
        base = self.keys.customer_base(customer_id, tenant)  # Keys.state, .summary, .risk
        st, sm, rk = f"{base}:st", f"{base}:sm", f"{base}:rk"
        if self.fields is None:
            pipe.hgetall(st)
        else:
            pipe.hmget(st, self.fields)
        # both in one MGET (one slot: the customer's hash tag), one reply less to parse; redis-py's
        # cluster pipelines refuse MGET, so there two GETs
        self.split = _is_cluster_pipeline(pipe)
        if self.want_sm and self.want_risk and not self.split:
            pipe.mget([sm, rk])
        else:
            if self.want_sm:
                pipe.get(sm)
            if self.want_risk:
                pipe.get(rk)

    def result(self, rows: Sequence[Any]) -> dict[str, str]:
        """One customer's replies (``size`` of them, in order) as their state; ``{}`` for a
        customer without any."""
        if self.fields is None:
            out = {str(k): str(v) for k, v in (rows[0] or {}).items()}
        else:
            out = {f: str(v) for f, v in zip(self.fields, rows[0], strict=True) if v is not None}
        if self.want_sm and self.want_risk:
            sm, risk = rows[1:3] if self.split else rows[1]
        else:
            sm = rows[1] if self.want_sm else None
            risk = rows[1] if self.want_risk else None
        if sm is not None:
            out["sm"] = str(sm)
        if risk is not None:
            out["risk"] = str(risk)
        if self.want_risk and "risk" in out:
            out["risk"] = risk_json(out["risk"])
        return out

    def results(self, rows: Sequence[Any]) -> list[dict[str, str]]:
        """Every queued customer's state, in order (``rows``: all their replies)."""
        n = self.size
        return [self.result(rows[i:i + n]) for i in range(0, len(rows) - len(rows) % n, n)]


async def read_states(redis: Redis, keys: Keys, refs: Iterable[Ref],
                      fields: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Customers' states, in order (one round trip; ``{}`` for a customer without)."""
    order = list(refs)
    if not order:
        return []
    reader = StateRead(keys, fields)
    pipe = redis.pipeline(transaction=False)
    for tenant, cid in order:
        reader.queue(pipe, cid, tenant)
    return reader.results(await pipe.execute())


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _state(ref: Ref, raw: dict[str, str]) -> CustomerState:
    blob = raw.get("sm")
    try:
        summary = Summary.decode(blob) if blob else Summary.empty()
    except ValueError:
        # A summary this version cannot read (written by an older one): the customer starts
        # over from their next events rather than stopping the stream.
        summary = Summary.empty()
    return CustomerState(ref[1], summary, dict(raw), tenant=ref[0])


@dataclass
class CustomerWrite:
    """One customer's write (see WRITE_LUA)."""

    ref: Ref
    version: str
    fields: dict[str, Any]
    delete: list[str] = field(default_factory=list)
    timeline_entry: str = ""  # JSON entries, oldest first, one per line


class TenantStores(NamedTuple):
    """What the scorer reads of a tenant's stores: their records' time zones and closed days
    (``Store.timezone``, ``Store.closures``), the stores its customers' events named (the
    store set), and whether a profile names a store (``Keys.profile_stores``)."""

    calendars: dict[str, StoreCalendar]
    named: frozenset[str]  # read only where asked for (read_tenant_stores' ``named``)
    profiled: bool

    def closures_on_record(self) -> dict[str, bool]:
        """Every store, on record or named, and whether its record says when it closes: a
        closed day, or never (:func:`~services.scoring.closures.closed_days_missing`)."""
        return {**dict.fromkeys(self.named, False),
                **{s: cal.on_record for s, cal in self.calendars.items()}}


async def read_tenant_stores(redis: Redis, keys: Keys, tenants: Sequence[str], *,
                             named: Container[str] = ()) -> dict[str, TenantStores]:
    """Each tenant's :class:`TenantStores`, in one round trip; the stores its events named
    only for the tenants in ``named`` (those whose closed days are checked: a salon chain's
    thousand stores are not read every few seconds for nothing). A store whose record is not
    readable JSON is left out, a closure that is not two ISO dates too."""
    if not tenants:
        return {}
    pipe = redis.pipeline(transaction=False)
    for t in tenants:
        pipe.hgetall(keys.stores(t))
        pipe.get(keys.profile_stores(t))
        if t in named:
            pipe.smembers(keys.store_set(t))
    rows = iter(await pipe.execute())
    out = {}
    for t in tenants:
        records, mark = next(rows), next(rows)
        out[t] = TenantStores({store_id: cal for store_id, raw in (records or {}).items()
                               if (cal := calendar_of(raw)) is not None},
                              frozenset(str(s) for s in next(rows) or ()) if t in named
                              else frozenset(), mark == "1")
    return out


class StateStore:
    """Customer state, indexes and the scorer's counters in Redis (standalone or Cluster)."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_seconds: int,
                 id_memory_ms: int = 30 * DAY_MS, timeline_max: int = 200):
        self.redis = redis
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self.id_memory_ms = id_memory_ms
        self.timeline_max = timeline_max
        self._write = redis.register_script(WRITE_LUA)
        self._commit = redis.register_script(COMMIT_LUA)
        self._clock = redis.register_script(CLOCK_LUA)
        self._claim = redis.register_script(CLAIM_LUA)
        self.cluster = is_cluster(redis)
        # This process's last commit token (see COMMIT_LUA): a short-lived key of its own.
        self.commit_marker = keys.commit_marker(uuid.uuid4().hex)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> StateStore:
        return cls(redis, Keys(settings.redis_prefix),
                   ttl_seconds=settings.retention_days * 86_400,
                   id_memory_ms=settings.event_id_memory_days * DAY_MS,
                   timeline_max=settings.retention.timeline_max)

    async def _queue(self, pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
        """Queue one script call in a pipeline. redis-py's cluster pipelines refuse EVALSHA
        (they cannot load a missing script on the right node), so on a cluster the script's
        body goes with the call (EVAL; Redis caches what it compiled)."""
        if self.cluster:
            pipe.eval(script.script, len(keys), *keys, *args)
        else:
            await script(keys=keys, args=args, client=pipe)

    # reads ---------------------------------------------------------------------------
    async def read(self, refs: Iterable[Ref], *, topic: str | None = None
                   ) -> tuple[dict[Ref, CustomerState], dict[int, int]]:
        """Customers' states without their risk snapshot (a customer without state gets an
        empty summary) and, with ``topic``, the partitions' committed offsets — one round
        trip."""
        order = list(refs)
        reader = StateRead(self.keys, risk=False)
        pipe = self.redis.pipeline(transaction=False)
        for tenant, cid in order:
            reader.queue(pipe, cid, tenant)
        if topic is not None:
            pipe.hgetall(self.keys.offsets(topic))
        rows = await pipe.execute() if order or topic is not None else []
        states = reader.results(rows[:len(order) * reader.size])
        out = {ref: _state(ref, row) for ref, row in zip(order, states, strict=True)}
        committed = {int(p): int(o) for p, o in rows[-1].items()} if topic is not None else {}
        return out, committed

    async def load(self, refs: Iterable[Ref]) -> dict[Ref, CustomerState]:
        """Customers with state (one round trip); customers without are left out."""
        states, _ = await self.read(refs)
        return {ref: cs for ref, cs in states.items() if cs.state}

    async def read_clocks(self, tenants: Sequence[str]) -> dict[str, int | None]:
        """The tenants' event clocks (one round trip); None for a tenant without one yet."""
        pipe = self.redis.pipeline(transaction=False)
        for t in tenants:
            pipe.zrevrange(self.keys.event_clock(t), 0, 1, withscores=True)
        rows = await pipe.execute() if tenants else []
        return {t: clock_from_top([x for pair in row for x in pair])
                for t, row in zip(tenants, rows, strict=True)}

    async def read_store_calendars(self, tenants: Sequence[str], *, named: Container[str] = ()
                                   ) -> dict[str, TenantStores]:
        """Each tenant's stores (:func:`read_tenant_stores`), in one round trip."""
        return await read_tenant_stores(self.redis, self.keys, tenants, named=named)

    async def read_profile_stores(self, refs: Sequence[Ref]) -> dict[Ref, str]:
        """The ``store_id`` of these customers' profiles (one round trip); customers without
        a profile, or whose profile names no store, are left out."""
        if not refs:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for tenant, customer_id in refs:
            pipe.get(self.keys.profile(customer_id, tenant))
        rows = await pipe.execute()
        return {ref: store for ref, raw in zip(refs, rows, strict=True)
                if (store := home_store_of(raw)) is not None}

    # writes --------------------------------------------------------------------------
    async def claim_ids(self, batch: dict[Ref, list[tuple[Activity, str]]], *, wall_ms: int
                        ) -> tuple[set[tuple[Ref, str]], set[tuple[Ref, str, str]]]:
        """Claim the batch's event ids (each with its record, ``"<partition>:<offset>"``) for
        their customers in the tenant's id registry (one round trip, one script per touched
        bucket). Returns the (customer, event id) pairs whose id another customer of the
        tenant holds, and the (customer, event id, record) triples whose id an earlier record
        of the same customer used (a re-post): both duplicates, not applied. The registry
        remembers an id for 30 to 60 days of wall time (``CHURNWATCH_EVENT_ID_MEMORY_DAYS``)."""
        generation = wall_ms // self.id_memory_ms
        ttl = 2 * self.id_memory_ms // 1000 + 86_400
        triples: dict[tuple[str, int], list[tuple[Ref, str, str]]] = {}
        for ref, rows in batch.items():
            for a, record in rows:
                triples.setdefault((ref[0], id_bucket(a.event_id)), []).append(
                    (ref, a.event_id, record))
        order = list(triples)
        pipe = self.redis.pipeline(transaction=False)
        members = {ref: clock_member(*ref) for ref in batch}  # one digest per customer
        for tenant, bucket in order:
            argv: list[Any] = [ttl]
            for ref, event_id, record in triples[(tenant, bucket)]:
                argv += [event_id, members[ref], record]
            await self._queue(pipe, self._claim,
                              [self.keys.event_ids(tenant, bucket, generation),
                               self.keys.event_ids(tenant, bucket, generation - 1)], argv)
        results = await pipe.execute() if order else []
        lost: set[tuple[Ref, str]] = set()
        again: set[tuple[Ref, str, str]] = set()
        for slot, (other, same) in zip(order, results, strict=True):
            for n in other:
                ref, event_id, _ = triples[slot][int(n) - 1]
                lost.add((ref, event_id))
            for n in same:
                again.add(triples[slot][int(n) - 1])
        return lost, again

    async def write(self, writes: Sequence[CustomerWrite]) -> None:
        """Write customers, each compare-and-set on its version (one round trip); raises
        :class:`StateConflict` if any moved since it was read (the others are written)."""
        if not writes:
            return
        pipe = self.redis.pipeline(transaction=False)
        for w in writes:
            tenant, cid = w.ref
            args: list[Any] = [w.version, w.timeline_entry, self.timeline_max, self.ttl_seconds]
            for name in OWN_KEY_FIELDS:  # routed to keys of their own (see WRITE_LUA)
                value = w.fields.get(name)
                if value is not None:
                    args += ["s", value if isinstance(value, str) else jsonfast.dumps(value)]
                else:
                    args += ["d" if name in w.delete else "", ""]
            delete = [f for f in w.delete if f not in OWN_KEY_FIELDS]
            args += [len(delete), *delete]
            for k, v in w.fields.items():
                if k == "ix" and isinstance(v, list):
                    v = compact_index(v, w.fields)
                if k not in OWN_KEY_FIELDS:
                    args += [k, v if isinstance(v, str) else jsonfast.dumps(v)]
            await self._queue(
                pipe, self._write,
                [self.keys.state(cid, tenant), self.keys.timeline(cid, tenant),
                 self.keys.summary(cid, tenant), self.keys.risk(cid, tenant)], args)
        results = await pipe.execute()
        lost = [w.ref for w, ok in zip(writes, results, strict=True) if not int(ok)]
        if lost:
            raise StateConflict(f"{len(lost)} customer(s) changed while the batch was scored")

    async def write_indexes(self, entries: Sequence[tuple[Ref, IndexEntry]], *,
                            clocks: dict[str, list[Any]] | None = None, clock_cap: int = 0
                            ) -> dict[str, int]:
        """Put customers in the tenant's indexes (tier lists, silence index, holdout) with
        single-key commands, and advance the tenants' event clocks (``clocks``: tenant ->
        [customer digest, newest ms, ...]); one round trip, idempotent. Returns the clocks."""
        pipe = self.redis.pipeline(transaction=False)
        self._index_commands(pipe, entries)
        tenants = list(clocks or {})
        for t in tenants:
            await self._queue(pipe, self._clock, [self.keys.event_clock(t)],
                              [clock_cap, *(clocks or {})[t]])
        if not entries and not tenants:
            return {}
        results = await pipe.execute()
        return {t: int(v) for t, v in zip(tenants, results[len(results) - len(tenants):],
                                          strict=True)}

    def _index_commands(self, pipe: Any, entries: Sequence[tuple[Ref, IndexEntry]]) -> None:
        """The entries' index updates, grouped: one ZADD / ZREM / SADD per key for the whole
        batch (each still a single-key command: one slot), not one per customer — the
        commands, not Redis, were the cost. A later entry of a customer wins over an earlier."""
        adds: dict[str, dict[str, float]] = {}
        rems: dict[str, set[str]] = {}
        sets: dict[str, set[str]] = {}
        first: dict[str, dict[str, float]] = {}  # ZADD NX: the holdout's entry time

        def add(key: str, token: str, score: float) -> None:
            adds.setdefault(key, {})[token] = score
            rems.get(key, set()).discard(token)

        def rem(key: str, token: str) -> None:
            rems.setdefault(key, set()).add(token)
            adds.get(key, {}).pop(token, None)

        k = self.keys
        for (tenant, cid), e in entries:
            token = customer_token(cid, tenant)
            add(k.tier_index(e.tier, tenant), token, e.priority)
            if e.store:
                add(k.tier_index(e.tier, tenant, e.store), token, e.priority)
            if e.changed:
                for other in TIERS:
                    if other != e.tier:
                        rem(k.tier_index(other, tenant), token)
                        if e.store:
                            rem(k.tier_index(other, tenant, e.store), token)
                sets.setdefault(k.tenants, set()).add(tenant)
                if e.store:
                    sets.setdefault(k.store_set(tenant), set()).add(e.store)
            if e.moved_from and e.moved_from != e.store:
                for t in TIERS:
                    rem(k.tier_index(t, tenant, e.moved_from), token)
            if e.due_ms is not None and e.partition is not None:
                add(k.due(e.partition, tenant), token, e.due_ms)
            if e.holdout:
                first.setdefault(k.holdout_index(tenant), {}).setdefault(token, e.due_ms or 0)
        for key, gone in rems.items():
            if gone:
                pipe.zrem(key, *sorted(gone))
        for key, scored in adds.items():
            if scored:
                pipe.zadd(key, scored)
        for key, members in sets.items():
            pipe.sadd(key, *sorted(members))
        for key, scored in first.items():
            pipe.zadd(key, scored, nx=True)

    async def commit(self, *, topic: str, offsets: dict[int, int], stats: dict[str, int],
                     tenant_stats: dict[str, dict[str, int]] | None = None,
                     token: str = "") -> bool:
        """Advance the partitions' committed offsets and count the batch's stats, once (one
        slot, one round trip); the events the stats count (SCORED_STATS) are also added to
        the topic's ``events_scored_total`` (:meth:`Keys.scored`). Without offsets (a sweep),
        ``token`` makes a retry count once. Returns False when it had already taken effect."""
        scored = sum(stats.get(name, 0) for name in SCORED_STATS)
        per_tenant = [(t, [[n, v] for n, v in c.items() if v])
                      for t, c in (tenant_stats or {}).items() if any(c.values())]
        body = {"o": [[str(p), o] for p, o in offsets.items()],
                "s": [[n, v] for n, v in stats.items() if v], "n": scored,
                "t": [[t, rows] for t, rows in per_tenant], "k": token}
        if not body["o"] and not body["s"] and not body["t"]:
            return True
        keys = [self.keys.offsets(topic), self.keys.stats, self.commit_marker,
                self.keys.scored(topic), *(self.keys.tenant_stats(t) for t, _ in per_tenant)]
        return bool(await self._commit(keys=keys, args=[json.dumps(body, ensure_ascii=False)]))

    async def erase(self, ref: Ref, partitions: int) -> None:
        await erase_customer(self.redis, self.keys, ref[1], tenant=ref[0], partitions=partitions)

    async def record_erasure(self, tenant: str, digest: str, partition: int, offset: int, *,
                             at_ms: int, keep_ms: int) -> None:
        """Remember in the tenant's ledger that the customer (by keyed digest) was erased at
        ``partition``/``offset`` of the events topic (a later tombstone wins), and forget
        entries older than ``keep_ms`` (the topic's retention: no record left to guard
        against). Single-key commands; idempotent."""
        ledger, at = self.keys.erased(tenant), self.keys.erased_at(tenant)
        old = ledger_entry(await self.redis.hget(ledger, digest))  # type: ignore[misc]
        if old is not None and old[0] == partition and old[1] >= offset:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(ledger, digest, f"{partition}:{offset}:{at_ms}")
        pipe.zadd(at, {digest: at_ms})
        pipe.zrangebyscore(at, "-inf", at_ms - keep_ms, start=0, num=100)
        *_, expired = await pipe.execute()
        if expired:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hdel(ledger, *expired)
            pipe.zrem(at, *expired)
            await pipe.execute()

    async def erasures(self, digests: dict[str, list[str]]) -> dict[tuple[str, str], tuple[int, int]]:
        """The ledger entries of these customers (tenant -> digests; one round trip):
        (tenant, digest) -> (partition, offset) of their tombstone."""
        found = await ledger_entries(self.redis, self.keys, digests)
        return {slot: entry[:2] for slot, entry in found.items()}


def ledger_entry(raw: Any) -> tuple[int, int, int] | None:
    """An erasure ledger value (``Keys.erased``): (partition, offset, erased at ms)."""
    if raw is None:
        return None
    p, o, at = str(raw).split(":")
    return int(p), int(o), int(at)


async def ledger_entries(redis: Redis, keys: Keys, digests: dict[str, list[str]]
                         ) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Erasure ledger entries (``Keys.erased``) of these customers, tenant -> digests, in one
    round trip: (tenant, digest) -> (partition, offset, erased at ms); the rest are absent."""
    tenants = [t for t, ds in digests.items() if ds]
    if not tenants:
        return {}
    pipe = redis.pipeline(transaction=False)
    for t in tenants:
        pipe.hmget(keys.erased(t), digests[t])
    out: dict[tuple[str, str], tuple[int, int, int]] = {}
    for t, values in zip(tenants, await pipe.execute(), strict=True):
        for d, v in zip(digests[t], values, strict=True):
            if (entry := ledger_entry(v)) is not None:
                out[(t, d)] = entry
    return out


async def load_customers(redis: Redis, keys: Keys, refs: Iterable[Ref]
                         ) -> dict[Ref, CustomerState]:
    """Customers with state (one round trip), for readers without a :class:`StateStore`."""
    order = list(refs)
    rows = await read_states(redis, keys, order)
    return {ref: _state(ref, row) for ref, row in zip(order, rows, strict=True) if row}


async def look_again_soon(redis: Redis, keys: Keys, customer_id: str, *, tenant: str,
                          partitions: int, now_ms: int) -> None:
    """Bring a known customer's next look by the silence sweep forward to ``now_ms`` (the
    tenant's now: :func:`~services.common.timefmt.now_ms`): their profile now names another
    store, which becomes theirs at that look, not days later. A customer the sweep does not
    know, or one due sooner, is left as they are (``ZADD XX LT`` on each partition's silence
    index: only the customer's own holds them)."""
    token = customer_token(customer_id, tenant)
    pipe = redis.pipeline(transaction=False)
    for p in range(partitions):
        pipe.zadd(keys.due(p, tenant), {token: now_ms}, xx=True, lt=True)
    await pipe.execute()


async def erase_customer(redis: Redis, keys: Keys, customer_id: str, *,
                         tenant: str = DEFAULT_TENANT, partitions: int) -> None:
    """Forget a customer: every key under their hash tag (summary, state, profile, delivery
    log, timeline, actions, alert ids), their index entries (their owner's set too), the records and
    acknowledgements of the alerts sent about them, their alerts in the staff's in-app lists
    and their pending model-quality samples (single-key commands: cluster-safe)."""
    read = redis.pipeline(transaction=False)
    read.hget(keys.state(customer_id, tenant), "store")
    read.hkeys(keys.actions(customer_id, tenant))
    read.smembers(keys.customer_alerts(customer_id, tenant))
    read.get(keys.profile(customer_id, tenant))
    raw, action_ids, alert_ids, profile = await read.execute()
    store = str(raw) if raw else None
    token = customer_token(customer_id, tenant)
    pipe = redis.pipeline(transaction=False)
    pipe.zrem(keys.holdout_index(tenant), token)
    owner = owner_of(profile)
    if owner is not None:  # out of their owner's customers (services/records/owners.py)
        pipe.srem(keys.owned(owner, tenant), customer_id)
    if action_ids:
        pipe.zrem(keys.winback_index(tenant), *(f"{token}|{a}" for a in action_ids))
    # Indexes first, state last: an erasure interrupted half-way is simply done again.
    for p in range(partitions):
        pipe.zrem(keys.due(p, tenant), token)
    for tier in TIERS:
        pipe.zrem(keys.tier_index(tier, tenant), token)
        if store:
            pipe.zrem(keys.tier_index(tier, tenant, store), token)
    for alert_id in sorted(str(a) for a in alert_ids):  # the alert records and their acks
        pipe.delete(keys.alert(alert_id, tenant))
        pipe.delete(keys.ack(alert_id, tenant))
    for key in keys.customer_all(customer_id, tenant):
        pipe.delete(key)
    await pipe.execute()
    await _erase_inbox_entries(redis, keys, customer_id, tenant)
    await _erase_quality_samples(redis, keys, token)


async def _erase_quality_samples(redis: Redis, keys: Keys, token: str) -> None:
    """Drop the customer's pending model-quality samples (a cohort keeps a prediction under
    the customer token until its horizon; ``Keys.quality_cohorts`` lists the cohorts, at
    most a few per day of the quality window). Labelled entries hold a digest, no id."""
    members = await redis.zrange(keys.quality_cohorts, 0, -1)
    pipe = redis.pipeline(transaction=False)
    for member in members:
        parsed = parse_cohort_member(str(member))
        if parsed is not None:
            pipe.hdel(keys.quality_cohort(parsed[0], parsed[1]), token)
    if len(pipe):
        await pipe.execute()


async def inbox_entries(redis: Redis, keys: Keys, customer_id: str, tenant: str
                        ) -> list[tuple[str, str, dict[str, Any]]]:
    """The customer's alerts in the staff members' in-app lists of the tenant, as
    (staff id, delivery id, entry) (``Keys.inbox_staff`` names the lists; single-key commands:
    cluster-safe). Reads each list once: erasure and export are rare, a list holds at most
    ``INBOX_MAX_ENTRIES``."""
    staff = sorted(str(s) for s in await redis.smembers(keys.inbox_staff(tenant)))  # type: ignore[misc]
    if not staff:
        return []
    read = redis.pipeline(transaction=False)
    for who in staff:
        read.hgetall(keys.inbox(who, tenant))
    out = []
    for who, entries in zip(staff, await read.execute(), strict=True):
        for delivery, raw in entries.items():
            entry = _entry_of(raw, customer_id)
            if entry is not None:
                out.append((who, str(delivery), entry))
    return out


async def _erase_inbox_entries(redis: Redis, keys: Keys, customer_id: str, tenant: str) -> None:
    """Remove the customer's alerts from every staff member's in-app list of the tenant."""
    gone: dict[str, list[str]] = {}
    for who, delivery, _ in await inbox_entries(redis, keys, customer_id, tenant):
        gone.setdefault(who, []).append(delivery)
    if gone:
        pipe = redis.pipeline(transaction=False)
        for who, deliveries in gone.items():
            pipe.hdel(keys.inbox(who, tenant), *deliveries)
        await pipe.execute()


def _entry_of(raw: Any, customer_id: str) -> dict[str, Any] | None:
    """An in-app list entry, when it is about ``customer_id``."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and entry.get("customer_id") == customer_id \
        else None


# Feature names by feature schema version, for snapshots whose features are stored as a list
# (see risk_snapshot). A schema change adds its names here and keeps the older ones.
FEATURE_SCHEMAS: dict[int, tuple[str, ...]] = {FEATURE_SCHEMA_VERSION: FEATURE_NAMES}


def _dumps(value: Any) -> str:
    return jsonfast.dumps(value, default=str)


def risk_snapshot(fields: dict[str, Any]) -> str:
    """The risk snapshot as stored (``Assessment.to_json()``): compact JSON where ``features``,
    when it holds exactly the features of :data:`FEATURE_NAMES` in their order, is the list
    ``[schema version, value...]`` rather than a name -> value object (~500 bytes less per
    customer). :func:`risk_json` gives back what was passed."""
    features = fields.get("features")
    if isinstance(features, dict) and tuple(features) == FEATURE_NAMES:
        fields = {**fields, "features": [FEATURE_SCHEMA_VERSION, *features.values()]}
    return _dumps(fields)


_NOT_NUMBERS = re.compile(r'[\[\]{}"]')


def risk_json(stored: str) -> str:
    """The risk snapshot a reader sees (JSON, features by name) from what the store holds:
    :func:`risk_snapshot`'s compact form, or the full JSON the previous layout wrote (returned
    as is). A snapshot of a feature schema this version does not know keeps no features (the
    customer's next scoring writes them again); an unreadable one is returned as is."""
    at = stored.rfind('"features":[')
    if at < 0:
        return stored
    body = stored[at + 12:-2]
    if stored.endswith("]}") and not _NOT_NUMBERS.search(body):
        # the shape risk_snapshot writes (features last, plain numbers): splice the text, as
        # json.dumps would write the object (~13 µs here; parsing and dumping again: ~28)
        parts = body.split(",")
        names = FEATURE_SCHEMAS.get(int(parts[0])) if parts[0].isdigit() else None
        if names is not None and len(names) == len(parts) - 1:
            pairs = ",".join(f'"{n}":{v}' for n, v in zip(names, parts[1:], strict=True))
            return f"{stored[:at]}\"features\":{{{pairs}}}}}"
    try:
        snap = json.loads(stored)
    except ValueError:
        return stored
    features = snap.get("features") if isinstance(snap, dict) else None
    if not isinstance(features, list) or not features:
        return stored
    names = FEATURE_SCHEMAS.get(features[0]) if isinstance(features[0], int) else None
    snap["features"] = dict(zip(names, features[1:], strict=True)) \
        if names is not None and len(names) == len(features) - 1 else {}
    return _dumps(snap)


__all__ = ["CustomerState", "CustomerWrite", "FEATURE_SCHEMAS", "IndexEntry", "Outcome", "Ref", "StateConflict",
           "StateRead", "StateStore", "clock_member", "erase_customer", "load_customers",
           "ledger_entries", "ledger_entry", "read_states", "risk_json", "risk_snapshot"]
