"""The scorer's batch processing, independent of the stream framework that feeds it.

For each batch of records from the events topic:

1. decode and validate; records that are not JSON or break the schema go to the dead-letter
   topic with the reason (acknowledged by the broker before the batch counts as done);
2. apply the events to Redis — one pipelined round trip, idempotent by ``event_id``;
3. re-score every touched customer — one vectorized model call;
4. publish a risk-change CloudEvent for every tier change (awaiting the broker's acks), and
   only then record the new tiers, the silence index and the processed offsets in Redis.

A crash anywhere repeats at most steps 2-4 for the batch, which changes nothing twice:
events are deduplicated by id and a repeated risk change carries the same deterministic id.
Infrastructure errors are retried until they succeed, so nothing is acknowledged that was
not stored. A tombstone (null value) keyed by a customer id erases that customer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.events import STORE_BOUND_HEADER, TENANT_HEADER, parse_json, validate_event
from services.common.holdout import in_holdout
from services.common.redisconn import DEFAULT_TENANT, Keys, parse_customer_token
from services.common.riskchange import (
    CONTENT_TYPE,
    TIERS,
    Cause,
    RiskChange,
    encode_cloudevent,
    to_cloudevent,
)
from services.common.settings import Settings
from services.scorer.state import CustomerState, Ref, StateStore, risk_snapshot
from services.scoring.activity import activity_from_event
from services.scoring.engine import Assessment, Engine, Subject
from services.scoring.features import DAY_MS, Activity

logger = logging.getLogger(__name__)
T = TypeVar("T")
TIMELINE_MAX = 200  # newest entries kept on a customer's timeline
DEAD_LETTER_REASONS = ("malformed_json", "invalid_event", "tombstone_without_key")
# The scorer checks the API's time bounds again with this slack, so that an event the API
# accepted at an edge is not dead-lettered for clock skew or the milliseconds until it was written.
CLOCK_GRACE = timedelta(minutes=5)
MAX_STORE_SERIES = 500  # bound on the store label of churnwatch_scorer_customers_by_store


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def _tenant_header(headers: Iterable[tuple[str, bytes]]) -> str:
    """A tombstone names its tenant in a header (its key is the bare customer id)."""
    for name, value in headers:
        if name == TENANT_HEADER and value:
            return value.decode("utf-8", "replace")
    return DEFAULT_TENANT


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.events = Counter("churnwatch_scorer_events_total",
                              "Records consumed from the events topic, by outcome.",
                              ["outcome"], registry=registry)
        self.batch_size = Histogram("churnwatch_scorer_batch_size", "Records per processed batch.",
                                    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
                                    registry=registry)
        self.batch_seconds = Histogram("churnwatch_scorer_batch_duration_seconds",
                                       "Time to process one batch end to end.", registry=registry)
        self.queryable = Histogram(
            "churnwatch_scorer_event_to_queryable_seconds",
            "From the record's broker timestamp to its score being readable in Redis.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=registry)
        self.transitions = Counter("churnwatch_scorer_tier_transitions_total",
                                   "Tier changes published.", ["from_tier", "to_tier"],
                                   registry=registry)
        self.swept = Counter("churnwatch_scorer_sweep_customers_total",
                             "Silent customers re-scored by the silence sweep.", registry=registry)
        self.redis_seconds = Histogram("churnwatch_scorer_redis_roundtrip_seconds",
                                       "Redis round trips of the scorer.", ["op"], registry=registry)
        self.retries = Counter("churnwatch_scorer_infra_retries_total",
                               "Retries after a Redis or Kafka error.", ["step"], registry=registry)
        self.errors = Counter("churnwatch_scorer_scoring_errors_total",
                              "Customers whose scoring raised (events kept).", registry=registry)
        self.model_info = Gauge("churnwatch_scorer_model_info", "The model being served.",
                                ["version"], registry=registry)
        self.dead_letters = Counter("churnwatch_scorer_dead_letters_total",
                                    "Records sent to the events dead-letter topic, by reason.",
                                    ["reason"], registry=registry)
        for reason in DEAD_LETTER_REASONS:  # present at 0, so rate() sees the first one
            self.dead_letters.labels(reason)
        self.lag = Gauge("churnwatch_scorer_consumer_lag",
                         "Records on an assigned events partition not yet processed.",
                         ["partition"], registry=registry)
        self.customers = Gauge("churnwatch_scorer_customers",
                               "Scored customers per tier (every tenant; the same figure on "
                               "every worker: aggregate with max).", ["tier"], registry=registry)
        self.customers_by_store = Gauge(
            "churnwatch_scorer_customers_by_store",
            f"Scored customers per store and tier (at most {MAX_STORE_SERIES} stores).",
            ["store", "tier"], registry=registry)


class Processor:
    def __init__(self, *, settings: Settings, store: StateStore, producer: AIOKafkaProducer,
                 engine: Engine, registry: CollectorRegistry):
        self.settings = settings
        self.store = store
        self.producer = producer
        self.engine = engine
        self.keys: Keys = store.keys
        self.metrics = ScorerMetrics(registry)
        self.metrics.model_info.labels(engine.model.version).set(1)
        self.event_clock = settings.clock == "event"
        self._clocks: dict[str, int] = {}  # tenant -> event clock (ms), as last seen in Redis
        self.lock = asyncio.Lock()

    # clock ------------------------------------------------------------------------------
    async def tenant_nows(self, tenants: Iterable[str], *, refresh: bool = False
                          ) -> dict[str, int | None]:
        """Each tenant's "now": wall time, or its event clock (see ``Keys.event_clock``; None
        while the tenant has none). Clocks are read from Redis when unknown or on
        ``refresh``; batches advance them in their apply round trip."""
        wanted = list(dict.fromkeys(tenants))
        if not self.event_clock:
            wall = int(time.time() * 1000)
            return dict.fromkeys(wanted, wall)
        missing = [t for t in wanted if refresh or t not in self._clocks]
        if missing:
            stored = await self._retry("clock", lambda: self.store.read_clocks(missing))
            for t, v in stored.items():
                if v is not None:
                    self._clocks[t] = max(self._clocks.get(t, 0), v)
        return {t: self._clocks.get(t) for t in wanted}

    def customer_now(self, cs: CustomerState, tenant_now: int, *, on_event: bool = False) -> int:
        """The instant a customer is scored at: wall time, or under the event clock the
        customer's own newest event when their events arrive (``on_event``) and the later of
        that and the tenant's clock when the sweep re-scores silence.

        Scoring an arriving event at the customer's own newest event makes the result a
        function of the customer's events alone: however the stream is cut into batches
        (a crash and a redelivery, another customer's event in the same poll), the same
        events give the same score, tier and risk change. Time passing is the sweep's."""
        if not self.event_clock:
            return tenant_now
        last = cs.state.get("last_ts")
        if last:
            return int(float(last)) if on_event else max(tenant_now, int(float(last)))
        return tenant_now

    # batches ----------------------------------------------------------------------------
    async def process(self, records: Sequence[Record]) -> None:
        """Process one batch; returns only once everything is stored (never raises for
        infrastructure errors: it retries)."""
        started = time.monotonic()
        segment: list[Record] = []
        for r in records:
            if r.value is None:
                if segment:
                    await self._process_segment(segment)
                    segment = []
                await self._erase(r)
            else:
                segment.append(r)
        if segment:
            await self._process_segment(segment)
        self.metrics.batch_size.observe(len(records))
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    async def _process_segment(self, records: Sequence[Record]) -> None:
        wall = datetime.now(UTC)
        wall_ms = int(wall.timestamp() * 1000)
        max_age = timedelta(days=self.settings.max_event_age_days)
        max_future = timedelta(seconds=self.settings.max_event_future_seconds)
        batch: dict[Ref, list[Activity]] = {}
        stores: dict[Ref, str | None] = {}
        store_bound: set[Ref] = set()  # the store named last came from a store-bound key
        partition_of: dict[Ref, int] = {}
        dead: list[tuple[Record, str]] = []
        offsets: dict[int, int] = {}
        for r in records:
            offsets[r.partition] = max(offsets.get(r.partition, 0), r.offset + 1)
            try:
                obj = parse_json(r.value or b"")
            except (ValueError, UnicodeDecodeError) as exc:
                dead.append((r, f"not valid JSON: {exc}"))
                self.metrics.dead_letters.labels("malformed_json").inc()
                continue
            # An event is as old as it was when written: one the API accepted at the edge of
            # max_age must not age out while it waits in the topic (scorer lag, a restart).
            waited = timedelta(milliseconds=max(0, wall_ms - r.timestamp_ms)) \
                if r.timestamp_ms and r.timestamp_ms > 0 else timedelta(0)
            event, errors = validate_event(obj, now=wall, max_age=max_age + waited + CLOCK_GRACE,
                                           max_future=max_future + CLOCK_GRACE)
            if event is None:
                dead.append((r, "; ".join(f"{e.field or 'event'}: {e.message}" for e in errors)))
                self.metrics.dead_letters.labels("invalid_event").inc()
                continue
            act = activity_from_event(event)
            ref = (event.tenant, event.customer_id)
            batch.setdefault(ref, []).append(act)
            if event.store_id:
                stores[ref] = event.store_id
                if any(n == STORE_BOUND_HEADER for n, _ in r.headers):
                    store_bound.add(ref)
                else:
                    store_bound.discard(ref)
            partition_of.setdefault(ref, r.partition)
        if dead:
            await self._dead_letter(dead)
        total_valid = sum(len(v) for v in batch.values())
        valid_by_tenant: dict[str, int] = {}
        for (tenant, _), acts in batch.items():
            valid_by_tenant[tenant] = valid_by_tenant.get(tenant, 0) + len(acts)
        if batch:  # an event id another customer of the tenant holds is a duplicate
            lost = await self._retry("claim", lambda: self.store.claim_ids(batch, wall_ms=wall_ms))
            if lost:
                logger.warning("%d event(s) reuse an event_id another customer of the tenant "
                               "holds: counted as duplicates, not applied", len(lost))
                batch = {ref: kept for ref, acts in batch.items()
                         if (kept := [a for a in acts if (ref, a.event_id) not in lost])}
        states: dict[Ref, CustomerState] = {}
        nows: dict[str, int] = {}
        if batch:
            known = await self.tenant_nows(t for t, _ in batch)
            # Each customer's trim cutoff is taken at the later of their tenant's clock and
            # their own newest event (under the wall clock: wall time).
            cutoff_now = {ref: wall_ms if not self.event_clock
                          else max(known[ref[0]] or 0, max(a.ts for a in acts))
                          for ref, acts in batch.items()}
            cap = wall_ms + self.settings.max_event_future_seconds * 1000 \
                if self.event_clock else None
            t0 = time.monotonic()
            states, clocks = await self._retry("apply", lambda: self.store.apply(
                batch, now_ms=cutoff_now, stores=stores, clock_cap=cap, store_bound=store_bound))
            self.metrics.redis_seconds.labels("apply").observe(time.monotonic() - t0)
            for t, v in clocks.items():
                self._clocks[t] = max(self._clocks.get(t, 0), v)
            nows = {t: wall_ms if not self.event_clock else self._clocks.get(t, 0)
                    for t in known}
        for ref, cs in states.items():
            cs.partition = partition_of[ref]
        added = sum(cs.added for cs in states.values())
        duplicates = dict(valid_by_tenant)  # per tenant: valid events minus those added
        for cs in states.values():
            duplicates[cs.tenant] -= cs.added
        # Only customers whose window changed are re-scored: a redelivered batch of events
        # that are already stored and scored (pending == 0) changes nothing, not even the
        # clock a customer was scored at. Silence is the sweep's business.
        touched = [cs for cs in states.values() if cs.added or cs.pending]
        await self._rescore(touched, [self.customer_now(cs, nows[cs.tenant], on_event=True)
                                      for cs in touched],
                            kind="event", offsets=offsets,
                            stats={"events_duplicate_total": total_valid - added,
                                   "events_dead_lettered_total": len(dead)},
                            tenant_stats={t: {"events_duplicate_total": n}
                                          for t, n in duplicates.items() if n})
        self.metrics.events.labels("applied").inc(added)
        self.metrics.events.labels("duplicate").inc(total_valid - added)
        self.metrics.events.labels("dead_lettered").inc(len(dead))
        now_wall = time.time() * 1000
        for r in records:
            if r.timestamp_ms:
                self.metrics.queryable.observe(max(now_wall - r.timestamp_ms, 0) / 1000)

    async def _erase(self, r: Record) -> None:
        stats: dict[str, int] = {}
        if not r.key:
            self.metrics.dead_letters.labels("tombstone_without_key").inc()
            await self._dead_letter([(r, "null value without a key: nothing to erase")])
            stats["events_dead_lettered_total"] = 1  # counted like any other dead letter
        else:
            ref = (_tenant_header(r.headers), r.key.decode("utf-8", "replace"))
            await self._retry("erase", lambda: self.store.erase(ref, self.settings.topic_partitions))
            self.metrics.events.labels("erased").inc()
            logger.info("erased customer state", extra={"customer_id": ref[1], "tenant": ref[0]})
        token = uuid.uuid4().hex  # a retried commit counts once
        await self._retry("commit", lambda: self.store.commit(
            [], topic=r.topic, offsets={r.partition: r.offset + 1}, stats=stats, token=token))

    # silence ----------------------------------------------------------------------------
    async def sweep(self, partitions: Iterable[int]) -> int:
        """Re-score customers whose due time has passed on their tenant's clock: bounded
        work, no scans (one round trip finds the due customers of every tenant and partition)."""
        redis = self.store.redis

        async def tenant_list() -> list[str]:
            return sorted(str(t) for t in await redis.smembers(self.keys.tenants))  # type: ignore[misc]

        # The default tenant always: its key also holds other tenants' entries written before
        # silence indexes were per tenant (moved out below). Without a clock of its own (event
        # clock, no default-tenant customers) that key is swept at the newest tenant clock.
        tenants = sorted({DEFAULT_TENANT, *await self._retry("sweep", tenant_list)})
        clocks = await self.tenant_nows(tenants, refresh=True)
        if clocks.get(DEFAULT_TENANT) is None:
            clocks[DEFAULT_TENANT] = max((c for c in clocks.values() if c is not None),
                                         default=None)
        slots = [(t, p, self.keys.due(p, t), now) for t in tenants for p in sorted(partitions)
                 if (now := clocks.get(t)) is not None]
        budget = self.settings.sweep_max_customers

        async def due_now() -> list[list[str]]:
            pipe = redis.pipeline(transaction=False)
            for _, _, key, now in slots:
                pipe.zrangebyscore(key, "-inf", now, start=0, num=budget)
            return [[str(c) for c in found] for found in await pipe.execute()] if slots else []

        found = await self._retry("sweep", due_now)
        done = 0
        for (tenant, p, due_key, now), tokens in zip(slots, found, strict=True):
            if budget <= 0:
                break
            tokens = tokens[:budget]
            if not tokens:
                continue
            refs = {parse_customer_token(t): t for t in tokens}
            wanted = tuple(refs)

            async def load(ids: tuple[Ref, ...] = wanted) -> dict[Ref, CustomerState]:
                return await self.store.load(ids)

            states = await self._retry("load", load)
            # Gone customers leave the index. So do other tenants' entries in the default
            # tenant's key (written before silence indexes were per tenant), once re-scored:
            # the commit indexes them under their own tenant.
            gone = [t for ref, t in refs.items() if ref not in states]
            stray = [t for ref, t in refs.items() if ref in states and ref[0] != tenant]

            async def forget_gone(key: str = due_key, ids: list[str] = gone) -> int:
                return int(await redis.zrem(key, *ids))

            async def forget_stray(key: str = due_key, ids: list[str] = stray) -> int:
                return int(await redis.zrem(key, *ids))

            if gone:
                await self._retry("sweep", forget_gone)
            for cs in states.values():
                cs.partition = p
            due = list(states.values())
            await self._rescore(due, [self.customer_now(cs, clocks.get(cs.tenant) or now)
                                      for cs in due], kind="silence")
            if stray:
                await self._retry("sweep", forget_stray)
            done += len(states)
            budget -= len(tokens)
        if done:
            self.metrics.swept.inc(done)
        return done

    # gauges -----------------------------------------------------------------------------
    async def refresh_gauges(self, highwater: dict[int, int]) -> None:
        """Consumer lag of the assigned partitions (broker high-water mark minus the next
        offset to process) and customers per tier and store; a few round trips, no scans."""
        redis = self.store.redis
        done = await redis.hgetall(self.keys.offsets(self.settings.topic_events))  # type: ignore[misc]
        self.metrics.lag.clear()
        for p, hw in highwater.items():
            self.metrics.lag.labels(str(p)).set(max(hw - int(done.get(str(p), 0)), 0))
        tenants = sorted(str(t) for t in await redis.smembers(self.keys.tenants))  # type: ignore[misc]
        pipe = redis.pipeline(transaction=False)
        for t in tenants:
            pipe.smembers(self.keys.store_set(t))
        store_sets = await pipe.execute() if tenants else []
        pairs = [(t, str(s)) for t, stores in zip(tenants, store_sets, strict=True)
                 for s in sorted(stores)][:MAX_STORE_SERIES]
        pipe = redis.pipeline(transaction=False)
        for tier in TIERS:
            for t in tenants:
                pipe.zcard(self.keys.tier_index(tier, t))
            for t, store in pairs:
                pipe.zcard(self.keys.tier_index(tier, t, store))
        counts = iter(await pipe.execute() if tenants else [])
        by_store: dict[tuple[str, str], int] = {}
        for tier in TIERS:
            self.metrics.customers.labels(tier).set(sum(next(counts) for _ in tenants))
            for _, store in pairs:
                by_store[(store, tier)] = by_store.get((store, tier), 0) + next(counts)
        for (store_id, tier_name), n in by_store.items():
            self.metrics.customers_by_store.labels(store_id, tier_name).set(n)

    # scoring ----------------------------------------------------------------------------
    async def _rescore(self, states: list[CustomerState], nows: list[int], *, kind: str,
                       offsets: dict[int, int] | None = None,
                       stats: dict[str, int] | None = None,
                       tenant_stats: dict[str, dict[str, int]] | None = None) -> None:
        assessments: list[tuple[CustomerState, Assessment]] = []
        if states:
            subjects = [Subject(cs.customer_id, cs.activities, cs.first_ts, cs.tier, cs.tier_since)
                        for cs in states]
            try:
                results = self.engine.assess(subjects, nows)
                assessments = list(zip(states, results, strict=True))
            except Exception:
                # One bad customer must not stop the stream: score one by one to isolate it.
                logger.exception("batch scoring failed; retrying customer by customer")
                for cs, subj, at in zip(states, subjects, nows, strict=True):
                    try:
                        assessments.append((cs, self.engine.assess([subj], at)[0]))
                    except Exception:
                        self.metrics.errors.inc()
                        logger.exception("scoring failed", extra={"customer_id": cs.customer_id})
        changes: list[tuple[CustomerState, Assessment, dict[str, Any]]] = []
        for cs, a in assessments:
            previous = cs.tier or "low"
            if a.tier != previous:
                cause = self._cause(cs, kind, a.as_of_ms)
                change = RiskChange(
                    customer_id=cs.customer_id, tenant_id=cs.tenant, store_id=cs.store_id,
                    previous_tier=previous,  # type: ignore[arg-type]
                    tier=a.tier, score=round(a.score, 6), previous_score=cs.score,  # type: ignore[arg-type]
                    reasons=a.reasons, suggested_action=a.action,
                    value_tier=a.value_tier, lifecycle_stage=a.lifecycle_stage,  # type: ignore[arg-type]
                    model_version=a.model_version, as_of=a.as_of, cause=cause, features=a.features,
                    catching_up=self._catching_up(cause),
                    holdout=a.tier == "high" and in_holdout(cs.tenant, cs.customer_id,
                                                            self.settings.holdout_share),
                )
                changes.append((cs, a, to_cloudevent(change)))
        if changes:
            await self._publish_changes([c for _, _, c in changes])
            for cs, a, _ in changes:
                self.metrics.transitions.labels(cs.tier or "low", a.tier).inc()

        change_of = {id(cs): ce for cs, _, ce in changes}

        applied = sum(cs.pending for cs in states)
        updates = [self._update(cs, a, change_of.get(id(cs)), a.as_of_ms) for cs, a in assessments]
        counts = {**(stats or {}), "events_applied_total": applied,
                  "risk_changes_total": len(changes)}
        # The same counters per tenant, for the tenant's own /v1/status.
        per_tenant = {t: dict(c) for t, c in (tenant_stats or {}).items()}
        for cs in states:
            if cs.pending:
                mine = per_tenant.setdefault(cs.tenant, {})
                mine["events_applied_total"] = mine.get("events_applied_total", 0) + cs.pending
        for cs, _, _ in changes:
            mine = per_tenant.setdefault(cs.tenant, {})
            mine["risk_changes_total"] = mine.get("risk_changes_total", 0) + 1

        token = uuid.uuid4().hex  # the same on every retry: the stats count once

        async def commit() -> None:
            await self.store.commit(updates, topic=self.settings.topic_events,
                                    offsets=offsets or {}, stats=counts, token=token,
                                    tenant_stats=per_tenant)

        t0 = time.monotonic()
        await self._retry("commit", commit)
        self.metrics.redis_seconds.labels("commit").observe(time.monotonic() - t0)

    @staticmethod
    def _cause(cs: CustomerState, kind: str, now: int) -> Cause:
        """Why the tier changed and when that happened: the newest event of this batch (the
        whole window's newest after a redelivery) for ``event``, else the scorer's clock."""
        occurred, event_type = now, None
        if kind == "event" and cs.activities:
            mine = set(cs.batch_events)
            batch = [x for x in cs.activities if x.event_id in mine] or cs.activities
            newest = max(batch, key=lambda x: (x.ts, x.event_id))
            occurred = newest.ts
            event_type = newest.kind if newest.kind in ("transaction", "visit", "complaint") else None
        return Cause(kind=kind, event_id=cs.newest_event_id(),  # type: ignore[arg-type]
                     occurred_at=datetime.fromtimestamp(occurred / 1000, UTC),
                     event_type=event_type)  # type: ignore[arg-type]

    def _catching_up(self, cause: Cause) -> bool:
        """The cause is older than the staff alerts' max age by the wall clock."""
        if cause.occurred_at is None:
            return False
        age = time.time() - cause.occurred_at.timestamp()
        return age > self.settings.alert_max_age

    def _update(self, cs: CustomerState, a: Assessment, cloudevent: dict[str, Any] | None,
                now: int) -> list[Any]:
        """One customer's part of the batch commit (see ``StateStore.commit``): new score and
        tier, the silence index, exactly one tier index (tenant-wide and per store) ranked by
        priority = risk x customer value, and a timeline entry for a tier change."""
        changed = cs.tier is None or a.tier != cs.tier
        fields: list[Any] = ["score", a.score, "tier", a.tier, "scored_at", now,
                             "risk", risk_snapshot(a.to_json())]
        if changed:
            fields += ["tier_since", now]
        token, store, tenant = cs.token, cs.store_id, cs.tenant
        priority = round(a.score * (1.0 + max(a.features.get("spend_365", 0.0), 0.0)), 6)
        index = [[self.keys.tier_index(a.tier, tenant), priority]]
        if store:
            index.append([self.keys.tier_index(a.tier, tenant, store), priority])
        leave: list[str] = []
        members: list[list[str]] = []
        if cs.moved_from and cs.moved_from != store:  # out of the old store's lists
            leave += [self.keys.tier_index(t, tenant, cs.moved_from) for t in TIERS]
        if changed:
            for other in TIERS:
                if other != a.tier:
                    leave.append(self.keys.tier_index(other, tenant))
                    if store:
                        leave.append(self.keys.tier_index(other, tenant, store))
            members.append([self.keys.tenants, tenant])
            if store:
                members.append([self.keys.store_set(tenant), store])
        timeline, entry = "", ""
        if cloudevent is not None:
            data = cloudevent["data"]
            timeline = self.keys.timeline(cs.customer_id, tenant)
            entry = json.dumps({
                "kind": "tier_change", "at": cloudevent["time"], "at_ms": now,
                "id": cloudevent["id"], "from": data["previous_tier"], "to": data["tier"],
                "score": data["score"], "cause": data["cause"]["kind"],
                "reasons": [r["code"] for r in data["reasons"]],
                "suggested_action": data["suggested_action"]["code"]}, separators=(",", ":"))
        holdout_key = ""
        if changed and a.tier == "high" and in_holdout(tenant, cs.customer_id,
                                                        self.settings.holdout_share):
            holdout_key = self.keys.holdout_index(tenant)  # the control group, from now
        due_key = self.keys.due(cs.partition, tenant) if cs.partition is not None else ""
        _, _, st = self.keys.customer(cs.customer_id, tenant)
        return [st, fields, 1 if cs.pending or cs.moved_from else 0, due_key, token, self._due(now, a), index,
                leave, members, timeline, entry, TIMELINE_MAX,
                self.settings.retention_days * 86_400, holdout_key, now]

    @staticmethod
    def _due(now: int, a: Assessment) -> int:
        """When to look at a silent customer again: a quarter of their cadence, 1-7 days."""
        cadence = a.features.get("cadence_median_days", 30.0)
        return now + int(min(max(cadence / 4.0, 1.0), 7.0) * DAY_MS)

    # kafka ------------------------------------------------------------------------------
    async def _publish_changes(self, events: list[dict[str, Any]]) -> None:
        async def send_all() -> None:
            futures = [await self.producer.send(
                self.settings.topic_risk_changes, encode_cloudevent(e),
                key=e["subject"].encode(), headers=[("content-type", CONTENT_TYPE.encode())])
                for e in events]
            await asyncio.gather(*futures)
        await self._retry("publish", send_all)

    async def _dead_letter(self, dead: list[tuple[Record, str]]) -> None:
        async def send_all() -> None:
            futures = []
            for r, reason in dead:
                headers = [("churnwatch-error", reason[:1000].encode()),
                           ("churnwatch-source", f"{r.topic}/{r.partition}/{r.offset}".encode())]
                # aiokafka cannot send a record with neither key nor value (a keyless
                # tombstone, which other clients can write): its copy gets an empty key.
                key = b"" if r.key is None and r.value is None else r.key
                futures.append(await self.producer.send(
                    self.settings.topic_events_dlq, r.value, key=key, headers=headers))
            await asyncio.gather(*futures)
        for r, reason in dead:
            logger.warning("dead-lettered record: %s", reason,
                           extra={"topic": r.topic, "partition": r.partition, "offset": r.offset})
        await self._retry("dead_letter", send_all)

    async def _retry(self, step: str, fn: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                return await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.retries.labels(step).inc()
                logger.warning("%s failed (%s: %s); retrying in %.1f s", step,
                               type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


__all__ = ["Processor", "Record", "ScorerMetrics"]
