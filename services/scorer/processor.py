"""The scorer's batch processing, independent of the stream framework that feeds it.

For each batch of records from the events topic:

1. skip records below the partition's committed offset (redelivered, already counted);
   decode and validate the rest; records that are not JSON or break the schema go to the
   dead-letter topic with the reason;
2. read the touched customers' summaries (one round trip), fold the new events in —
   idempotent by ``event_id`` and by offset (a record at or below the customer's newest
   applied offset is not applied again) — and re-score the customers whose summary changed
   (one vectorized model call);
3. publish a risk-change CloudEvent for every tier change (awaiting the broker's acks);
4. write each customer (compare-and-set), then the indexes, then the partition commit
   (offsets and stats, once): see ``services/state/store.py``.

A crash anywhere repeats at most steps 2-4 for the batch, which changes nothing twice: a
repeated risk change carries the same deterministic id, and a customer written by the lost
attempt is counted from what that attempt stored. Infrastructure errors are retried until
they succeed, so nothing is acknowledged that was not stored. A tombstone (null value) keyed
by a customer id erases that customer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NamedTuple, TypeVar

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common import jsonfast, pseudonym
from services.common.envelope import Item, dead_letter_value, is_envelope
from services.common.envelope import decode as decode_envelope
from services.common.events import (
    STORE_BOUND_HEADER,
    TENANT_HEADER,
    TimeBounds,
    parse_json,
    validate_event_in,
)
from services.common.holdout import in_holdout
from services.common.redisconn import DEFAULT_TENANT, Keys, parse_customer_token
from services.common.retry import Backoff, is_transient
from services.common.riskchange import (
    CONTENT_TYPE,
    TIERS,
    Cause,
    RiskChange,
    encode_cloudevent,
    to_cloudevent,
)
from services.common.runtime import gc_paused
from services.common.settings import Settings
from services.common.timefmt import named_zone
from services.scoring import summary
from services.scoring.activity import activity_from_event, at_shop
from services.scoring.closures import (
    ClosedDaysMissing,
    Closures,
    calendar_closures,
    closed_days_missing,
    home_store,
    only_store,
)
from services.scoring.engine import Assessment, Engine, Step, Subject
from services.scoring.features import DAY_MS, Activity
from services.state.store import (
    CustomerState,
    CustomerWrite,
    IndexEntry,
    Outcome,
    Ref,
    StateConflict,
    StateStore,
    TenantStores,
    clock_member,
    index_score,
    risk_snapshot,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STEPS = ("read", "claim", "write", "index", "commit", "publish", "dead_letter", "erase",
               "sweep", "load", "clock", "rescore")
DEAD_LETTER_REASONS = ("malformed_json", "malformed_envelope", "invalid_event",
                       "tombstone_without_key")
# The scorer checks the API's time bounds again with this slack, so that an event the API
# accepted at an edge is not dead-lettered for clock skew or the milliseconds until it was written.
CLOCK_GRACE = timedelta(minutes=5)
# A store's time zone and closed days (PUT /v1/stores/{id}) reach the scorer within this
# many seconds
STORE_ZONES_REFRESH_S = 5.0
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


@dataclass
class Path:
    """A customer's assessments in one batch: the last one (written), the tier changes along
    the way (each with its assessment and its CloudEvent, published in order), when the tier
    last changed (None: it did not)."""

    state: CustomerState
    final: Assessment
    steps: list[tuple[Assessment, dict[str, Any]]]
    since: int | None

    @property
    def changes(self) -> list[dict[str, Any]]:
        return [ce for _, ce in self.steps]


def _partition_of(record: Record) -> int:
    return record.partition


@dataclass(frozen=True)
class Row:
    """One valid event of a batch and where it came from."""

    activity: Activity
    partition: int
    offset: int
    index: int = -1  # its position in an envelope record; -1: a single-event record

    @property
    def record(self) -> str:
        """Where the event came from, as the id registry remembers it."""
        if self.index < 0:
            return f"{self.partition}:{self.offset}"
        return f"{self.partition}:{self.offset}:{self.index}"


class StoreNamed(NamedTuple):
    """The store named by a batch's newest event of a customer (by event time, then id); a
    tuple, made for every such event on the hot path."""

    ts: int
    event_id: str
    store: str
    bound: bool  # the event came with a store-bound key


@dataclass(frozen=True)
class DeadLetter:
    """A record, or one event of an envelope record, to put on the dead-letter topic."""

    record: Record
    reason: str
    value: bytes | None = None  # the event alone (an envelope's element); None: the record's
    index: int = -1


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
        self.unexpected = Counter(
            "churnwatch_scorer_unexpected_errors_total",
            "Errors retrying does not fix (a Lua error, a WRONGTYPE key, a bug) while the "
            "scorer retries a step: the batch waits.", ["step"], registry=registry)
        for step in RETRY_STEPS:  # present at 0: increase() sees the first one
            self.unexpected.labels(step)
        self.errors = Counter("churnwatch_scorer_scoring_errors_total",
                              "Customers whose scoring raised (events kept).", registry=registry)
        self.model_info = Gauge("churnwatch_scorer_model_info", "The model being served.",
                                ["version"], registry=registry)
        self.summary_compiled = Gauge(
            "churnwatch_scorer_customer_state_compiled",
            "1 when the customer summary runs compiled (mypyc, make install), 0 as pure Python "
            "(no C compiler where it was installed, or an edit not compiled yet).",
            registry=registry)
        self.dead_letters = Counter("churnwatch_scorer_dead_letters_total",
                                    "Records sent to the events dead-letter topic, by reason.",
                                    ["reason"], registry=registry)
        for reason in DEAD_LETTER_REASONS:  # present at 0, so rate() sees the first one
            self.dead_letters.labels(reason)
        self.envelope_events = Histogram(
            "churnwatch_scorer_envelope_events", "Events per envelope record consumed.",
            buckets=(1, 5, 10, 50, 100, 250, 500), registry=registry)
        self.inflight = Gauge(
            "churnwatch_scorer_inflight_bytes",
            "Keys and values of records delivered and not yet acknowledged (queued, batched, "
            "being applied); delivery waits beyond CHURNWATCH_SCORER_INFLIGHT_MAX_MB.",
            registry=registry)
        self.inflight_waits = Counter(
            "churnwatch_scorer_inflight_waits_total",
            "Times delivery waited for acknowledgements because the records in flight reached "
            "CHURNWATCH_SCORER_INFLIGHT_MAX_MB.", registry=registry)
        self.lag = Gauge("churnwatch_scorer_consumer_lag",
                         "Records on an assigned events partition not yet processed.",
                         ["partition"], registry=registry)
        self.customers = Gauge("churnwatch_scorer_customers",
                               "Scored customers per tier (every tenant; the same figure on "
                               "every worker: aggregate with max).", ["tier"], registry=registry)
        self.rescored = Counter(
            "churnwatch_scorer_model_rescored_customers_total",
            "Customers re-scored because the served model changed.", registry=registry)
        self.rescore_remaining = Gauge(
            "churnwatch_scorer_model_rescore_remaining",
            "Customers of the assigned partitions still to re-score after a model switch "
            "(an estimate: the silence indexes' sizes minus those done).", registry=registry)
        self.customers_by_store = Gauge(
            "churnwatch_scorer_customers_by_store",
            f"Scored customers per store and tier (at most {MAX_STORE_SERIES} stores).",
            ["store", "tier"], registry=registry)
        self.closed_days_missing = Gauge(
            "churnwatch_scorer_tenants_without_closures",
            "Tenants whose rules expect closed days (a school's) with a store, or no store at "
            "all, without any on record: their holidays read as customers leaving (of every "
            "tenant the scorer has seen; aggregate with max). The log and GET /v1/status name "
            "them.", registry=registry)


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
        self.metrics.summary_compiled.set(1 if summary.NATIVE else 0)
        self.event_clock = settings.clock == "event"
        self._clocks: dict[str, int] = {}  # tenant -> event clock (ms), as last seen in Redis
        self._rescored: tuple[str, tuple[int, ...]] | None = None  # (served scoring, partitions) done
        self._rescore_run: dict[str, Any] = {}  # progress of the current pass, for the logs
        self._ledger_key: bytes | None = None  # the pseudonym key: erasure ledger digests
        # tenant -> its stores kept on a clock other than UTC (store_id -> zone), and when the
        # tenant's stores were read (monotonic seconds): see _read_stores
        self._zones: dict[str, dict[str, tzinfo]] = {}
        # and the days they are closed (services/scoring/closures.py), read with the zones
        self._closures: dict[str, dict[str, Closures]] = {}
        # the store of a customer whose events name none: the tenant's only one (only_store)
        self._only_store: dict[str, str | None] = {}
        # whether the tenant has any store on record or a profile naming a store: only then is
        # a profile's store_id read for a customer whose events name none (_read_homes)
        self._reads_profiles: dict[str, bool] = {}
        # the tenants whose rules expect closed days (a school's) with stores, or no store,
        # without any on record: logged when it starts or its stores change, and counted in
        # churnwatch_scorer_tenants_without_closures
        self._closed_days_missing: dict[str, ClosedDaysMissing] = {}
        self._zones_read: dict[str, float] = {}
        # step -> the error retrying does not fix that holds it now: the readiness probe
        # fails while any is set (see _retry)
        self.stuck: dict[str, str] = {}
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
        events give the same score, tier and risk change. Time passing is the sweep's.

        Never before the instant the customer was last scored at, though: once the sweep has
        scored them at the tenant's clock, an event of theirs from before it (posted
        shuffled, another partition ahead, a POS uploading late) is scored at that instant
        too. Scored at its own time it took them back in time — a drifter the sweep had
        raised to high fell to low "as of May" and rose again at the next sweep, twice the
        same change by id, so the notifier took the second for a redelivery and the go-live
        summary left the customer out. Without a sweep in between, the customer was last
        scored at their newest event, and nothing changes."""
        if not self.event_clock:
            return tenant_now
        last = cs.last_ts
        if last is not None:
            if on_event:
                scored = cs.scored_at_ms
                return last if scored is None else max(last, scored)
            return max(tenant_now, last)
        return tenant_now

    # batches ----------------------------------------------------------------------------
    async def process(self, records: Sequence[Record]) -> None:
        """Process one batch; returns only once everything is stored (never raises for
        infrastructure errors: it retries). No cycle collection while it does
        (:func:`~services.common.runtime.gc_paused`)."""
        with gc_paused():
            await self._process(records)

    async def _process(self, records: Sequence[Record]) -> None:
        """:meth:`process`. Envelope records are opened here; a batch is
        applied in parts of at most ``scorer_apply_max_events`` events and about
        ``scorer_apply_max_customers`` customers (cut between records), so an envelope-heavy
        batch stays bounded: a part's memory is mostly its customers' decoded summaries. The
        records are taken partition by partition, each partition's in offset order (a stable
        sort): Kafka orders nothing across partitions, and a customer's events — all on one
        partition — then meet in one part, scored and written once, rather than spread over
        several (a poll interleaves the partitions' fetches)."""
        started = time.monotonic()
        max_events = self.settings.scorer_apply_max_events
        max_customers = self.settings.scorer_apply_max_customers
        segment: list[tuple[Record, list[Item] | None]] = []
        weight = 0
        customers: set[tuple[str, Any]] = set()  # about: memory is per customer of a part
        for r in sorted(records, key=_partition_of):
            if r.value is None:
                if segment:
                    await self._process_segment(segment)
                    segment, weight, customers = [], 0, set()
                await self._erase(r)
                continue
            items = None
            tenant = _tenant_header(r.headers)
            if is_envelope(r.headers):
                items = decode_envelope(r.value, r.headers, partition=r.partition,
                                        partitions_count=self.settings.topic_partitions)
                self.metrics.envelope_events.observe(len(items))
                mine = {(tenant, i.event.get("customer_id")) for i in items
                        if i.event is not None} - customers
            else:
                mine = {(tenant, r.key)} - customers
            n = 1 if items is None else len(items)
            if segment and (weight + n > max_events
                            or len(customers) + len(mine) > max_customers):
                await self._process_segment(segment)
                segment, weight, customers = [], 0, set()
            segment.append((r, items))
            weight += n
            customers |= mine
        if segment:
            await self._process_segment(segment)
        self.metrics.batch_size.observe(len(records))
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    async def _process_segment(self, segment: Sequence[tuple[Record, list[Item] | None]]
                               ) -> None:
        wall = datetime.now(UTC)
        wall_ms = int(wall.timestamp() * 1000)
        max_age = timedelta(days=self.settings.max_event_age_days)
        max_future = timedelta(seconds=self.settings.max_event_future_seconds)
        bounds = TimeBounds(wall, max_age + CLOCK_GRACE, max_future + CLOCK_GRACE)
        committed = await self._retry("read", self._committed)
        rows: dict[Ref, list[Row]] = {}
        stores: dict[Ref, StoreNamed] = {}
        dead: list[DeadLetter] = []
        offsets: dict[int, int] = {}
        for r, items in segment:
            offsets[r.partition] = max(offsets.get(r.partition, 0), r.offset + 1)
            if r.offset < committed.get(r.partition, 0):
                continue  # applied and counted before the partition's last commit
            if items is None:
                try:
                    elements: list[tuple[int, Any]] = [(-1, parse_json(r.value or b""))]
                except (ValueError, UnicodeDecodeError) as exc:
                    dead.append(DeadLetter(r, f"not valid JSON: {exc}"))
                    self.metrics.dead_letters.labels("malformed_json").inc()
                    continue
            else:
                elements = []
                for item in items:
                    if item.error is not None:  # the element, or the whole envelope (-1)
                        dead.append(DeadLetter(r, item.error, dead_letter_value(item),
                                               item.index))
                        self.metrics.dead_letters.labels(
                            "malformed_envelope" if item.index < 0 else "invalid_event").inc()
                    else:
                        elements.append((item.index, item.event))
            # An event is as old as it was when written: one the API accepted at the edge of
            # max_age must not age out while it waits in the topic (scorer lag, a restart).
            waited_ms = max(0, wall_ms - r.timestamp_ms) \
                if r.timestamp_ms and r.timestamp_ms > 0 else 0
            bound = any(n == STORE_BOUND_HEADER for n, _ in r.headers)
            for index, obj in elements:
                event, ts, errors = validate_event_in(obj, bounds, older_ms=waited_ms)
                if event is None:
                    reason = "; ".join(f"{e.field or 'event'}: {e.message}" for e in errors)
                    if index >= 0:
                        dead.append(DeadLetter(r, f"event {index} of the envelope: {reason}",
                                               dead_letter_value(Item(index, obj, None)), index))
                    else:
                        dead.append(DeadLetter(r, reason))
                    self.metrics.dead_letters.labels("invalid_event").inc()
                    continue
                ref = (event.tenant, event.customer_id)
                rows.setdefault(ref, []).append(
                    Row(activity_from_event(event, ts), r.partition, r.offset, index))
                if event.store_id:
                    named = stores.get(ref)
                    if named is None or (ts, event.event_id) >= (named.ts, named.event_id):
                        stores[ref] = StoreNamed(ts, event.event_id, event.store_id, bound)
        if dead:
            await self._dead_letter(dead)
        if rows:
            await self._read_stores({ref[0] for ref in rows})
        erased = await self._drop_erased(rows, stores) if rows else 0
        lost: set[tuple[Ref, str]] = set()
        again: set[tuple[Ref, str, str]] = set()
        if rows:  # an event id another customer (or record) of the tenant holds is a duplicate
            claims = {ref: [(x.activity, x.record) for x in rs] for ref, rs in rows.items()}
            lost, again = await self._retry(
                "claim", lambda: self.store.claim_ids(claims, wall_ms=wall_ms))
            if lost:
                logger.warning("%d event(s) reuse an event_id another customer of the tenant "
                               "holds: counted as duplicates, not applied", len(lost))
        while True:
            try:
                await self._apply(rows, lost, again, committed, offsets, stores,
                                  dead=len(dead), erased=erased, wall_ms=wall_ms)
                now_wall = time.time() * 1000
                for r, _ in segment:
                    if r.timestamp_ms:
                        self.metrics.queryable.observe(max(now_wall - r.timestamp_ms, 0) / 1000)
                return
            except StateConflict as exc:  # a rebalance let another worker in: read again
                self.metrics.retries.labels("conflict").inc()
                logger.warning("%s; reading them again", exc)
                committed = await self._retry("read", self._committed)

    async def _read_stores(self, tenants: Iterable[str], *, retry: bool = True) -> None:
        """Know the time zones and closed days of these tenants' stores, read again every
        :data:`STORE_ZONES_REFRESH_S` seconds (one round trip for all stale tenants).
        ``retry=False`` (the gauges, best effort): a failed read raises instead of waiting."""
        now = time.monotonic()
        stale = [t for t in tenants if now - self._zones_read.get(t, -1e9) >= STORE_ZONES_REFRESH_S]
        if not stale:
            return
        checked = {t for t in stale if self.engine.business_of(t).expects_closed_days}

        def fetch() -> Awaitable[dict[str, TenantStores]]:
            return self.store.read_store_calendars(stale, named=checked)

        read = await (self._retry("read", fetch) if retry else fetch())
        for t in stale:
            stores = read[t]
            calendars = stores.calendars
            self._zones[t] = {s: z for s, cal in calendars.items()
                              if (z := named_zone(cal.timezone)) is not None}
            self._closures[t] = {s: c for s, cal in calendars.items()
                                 if (c := calendar_closures(cal)) is not None}
            self._only_store[t] = only_store(calendars)
            self._reads_profiles[t] = bool(calendars) or stores.profiled
            self._zones_read[t] = now
            missing = closed_days_missing(self.engine.business_of(t).rules,
                                          stores.closures_on_record())
            if missing is None:
                self._closed_days_missing.pop(t, None)
            elif self._closed_days_missing.get(t) != missing:  # new, or other stores
                logger.warning("%s", missing.describe(t))
                self._closed_days_missing[t] = missing
        self.metrics.closed_days_missing.set(len(self._closed_days_missing))

    async def _read_homes(self, states: Iterable[CustomerState], named: Container[Ref]) -> None:
        """The profile's ``store_id`` of each customer whose events name no store (none in
        this batch, ``named``, nor before), in tenants with stores on record or a profile
        naming a store (one round trip, none without such customers): that store's closed
        days and time zone are theirs, and :meth:`_settle_home` makes it their store."""
        wanted = [cs for cs in states if self._reads_profiles.get(cs.tenant)
                  and cs.ref not in named and not cs.store_named]
        if not wanted:
            return
        homes = await self._retry(
            "read", lambda: self.store.read_profile_stores([cs.ref for cs in wanted]))
        for cs in wanted:
            cs.profile_store = homes.get(cs.ref)

    def _settle_home(self, cs: CustomerState) -> None:
        """A customer whose events name no store belongs to their profile's ``store_id``
        (:meth:`_read_homes`), else to the tenant's only store (:func:`only_store`); one that
        took such a store follows their profile when it names another."""
        if cs.store_named:
            return
        home = self._home_of(cs)
        if home and home != cs.store_id:
            self._move_store(cs, home, False, by="profile" if cs.profile_store else "only")

    def _home_of(self, cs: CustomerState) -> str | None:
        """The store whose closed days and clock count for the customer (:func:`home_store`),
        None for one who belongs to no store."""
        return home_store(cs.store_id, cs.profile_store, self._only_store.get(cs.tenant))

    def _closures_of(self, cs: CustomerState, home: str | None = None) -> Closures | None:
        """The closed days of the customer's store, if it has any (``home``: that store, when
        the caller has it from :meth:`_home_of`)."""
        closed = self._closures.get(cs.tenant)
        if not closed:
            return None
        store = home or self._home_of(cs)
        return closed.get(store) if store else None

    @staticmethod
    def _at_shops(rs: list[Row], zones: dict[str, tzinfo], home: str | None) -> list[Row]:
        """The rows with each event at offset 0 put on its store's clock (the store it names,
        else the customer's): see :func:`~services.scoring.activity.at_shop`."""
        out = rs
        for i, row in enumerate(rs):
            a = row.activity
            if a.tz_minutes:
                continue
            zone = zones.get(a.store_id or home or "")
            if zone is None:
                continue
            moved = at_shop(a, zone)
            if moved is not a:
                if out is rs:
                    out = list(rs)
                out[i] = Row(moved, row.partition, row.offset, row.index)
        return out

    @staticmethod
    def _added(cs: CustomerState, o: Outcome, act: Activity, last_added: dict[Ref, Activity],
               newest_added: dict[Ref, Activity], added_ts: dict[Ref, list[int]]) -> None:
        """Count ``act`` as applied to ``cs`` (folded, not a duplicate)."""
        o.added += 1
        cs.added += 1
        last_added[cs.ref] = act
        top = newest_added.get(cs.ref)
        if top is None or (act.ts, act.event_id) > (top.ts, top.event_id):
            newest_added[cs.ref] = act
        added_ts.setdefault(cs.ref, []).append(act.ts)

    async def _key(self) -> bytes:
        """The pseudonym key the erasure ledger's digests are made with (read once)."""
        if self._ledger_key is None:
            self._ledger_key = await self._retry(
                "read", lambda: pseudonym.load_key(self.settings, self.store.redis))
        return self._ledger_key

    async def _digest(self, tenant: str, customer_id: str) -> str:
        return pseudonym.pseudonym(await self._key(), tenant, customer_id)

    async def _drop_erased(self, rows: dict[Ref, list[Row]], stores: dict[Ref, StoreNamed]
                           ) -> int:
        """Leave out the events of erased customers that were written before their erasure
        (below the tombstone's offset on its partition), whatever brings them back — a
        replay from the beginning, a reset offset, a new consumer group; returns how many.
        A customer's events after the tombstone start them afresh. One round trip."""
        digests: dict[str, list[str]] = {}
        refs: dict[tuple[str, str], Ref] = {}
        key = await self._key()
        for ref in rows:
            d = pseudonym.pseudonym(key, *ref)
            digests.setdefault(ref[0], []).append(d)
            refs[(ref[0], d)] = ref
        found = await self._retry("read", lambda: self.store.erasures(digests))
        dropped = 0
        for slot, (partition, offset) in found.items():
            ref = refs[slot]
            keep = [x for x in rows[ref] if x.partition != partition or x.offset > offset]
            dropped += len(rows[ref]) - len(keep)
            if keep:
                rows[ref] = keep
            else:
                del rows[ref]
                stores.pop(ref, None)
        if dropped:
            self.metrics.events.labels("erased_before").inc(dropped)
            logger.info("%d event(s) of erased customers, written before their erasure, left "
                        "out", dropped)
        return dropped

    async def _committed(self) -> dict[int, int]:
        _, committed = await self.store.read((), topic=self.settings.topic_events)
        return committed

    async def _apply(self, rows: dict[Ref, list[Row]], lost: set[tuple[Ref, str]],  # noqa: C901  the crash-safe order of one batch, in one place (docs/scorer.md)
                     again: set[tuple[Ref, str, str]], committed: dict[int, int], offsets: dict[int, int],
                     stores: dict[Ref, StoreNamed], *, dead: int,
                     erased: int = 0, wall_ms: int) -> None:
        """Fold the batch into the customers' summaries, score who changed, publish the
        tier changes, write customers, indexes, then the partition commit (see
        ``services/state/store.py`` for why a crash anywhere in between is harmless)."""
        states, committed_now = await self._retry(
            "read", lambda: self.store.read(rows, topic=self.settings.topic_events))
        committed = {**committed, **committed_now}
        await self._read_homes(states.values(), stores)
        outcomes: dict[Ref, dict[int, Outcome]] = {}
        count: dict[Ref, dict[int, Outcome]] = {}  # outcomes this commit counts
        redo: list[CustomerState] = []
        steps: dict[Ref, list[Step]] = {}  # assessments before a customer's last new event
        causes: dict[Ref, list[tuple[Activity, str | None]]] = {}  # their events, newest ids
        last_added: dict[Ref, Activity] = {}
        newest_added: dict[Ref, Activity] = {}  # by time: the cause of a one-point path
        added_ts: dict[Ref, list[int]] = {}  # the times of each customer's new events, as folded
        for ref, rs in rows.items():
            cs = states[ref]
            named = stores.get(ref)
            newest_before = cs.last_ts  # the customer's newest event before this batch
            if zones := self._zones.get(ref[0]):  # events in UTC of stores with a time zone
                rs = self._at_shops(rs, zones, home_store(
                    cs.state.get("store") or (named.store if named else None), cs.profile_store,
                    self._only_store.get(ref[0])))
            stored = cs.outcomes()
            mine: dict[int, Outcome] = {}
            # Under the wall clock the customer is scored once, after all their new events:
            # those are folded newest first (below), so the summary moves its newest day once
            # and the older events land in their buckets, where in arrival order a history
            # moved it at every new day (the summary is the same in any order).
            later: list[tuple[Activity, Outcome]] = []
            for row in rs:
                base = committed.get(row.partition, 0)
                if row.offset < base:
                    continue
                prev = stored.get(row.partition)
                open_prev = prev is not None and prev.top >= base  # not counted yet
                o = mine.get(row.partition)
                if o is None:
                    o = mine[row.partition] = (Outcome(base, prev.top, prev.added, prev.duplicates,
                                                       prev.changes)
                                               if open_prev and prev is not None else Outcome(base, -1))
                if open_prev and prev is not None and row.offset <= prev.top:
                    continue  # applied by an attempt no commit has counted yet
                o.top = max(o.top, row.offset)
                act = row.activity
                claimed = bool(lost) and (ref, act.event_id) in lost or \
                    bool(again) and (ref, act.event_id, row.record) in again
                if not claimed and cs.summary.beyond_memory(act):
                    # Older than the summary's id memory and unknown to the tenant's registry
                    # (first seen 30-60+ days ago, or never): applied without a duplicate check.
                    self.metrics.events.labels("beyond_id_memory").inc()
                if self.event_clock and not claimed and cs.added and \
                        not cs.summary.knows(act.event_id):
                    # A second new event of this customer in the batch: under the event clock
                    # the customer is assessed after the previous one too, at its time (see
                    # Engine.assess_paths). Under the wall clock every point would be "now":
                    # a history's first events alone would read as long silence.
                    at = self.customer_now(cs, wall_ms, on_event=True)
                    closed = self._closures_of(cs)  # a sweep may have scored them later
                    steps.setdefault(ref, []).append(Step(at, cs.summary.features(
                        at if closed is None else closed.open_now(cs.last_ts, at), cs.first_ts)))
                    causes.setdefault(ref, []).append((last_added[ref], cs.newest_event_id()))
                cs.partition = row.partition
                if not claimed and not self.event_clock and not cs.summary.knows(act.event_id):
                    later.append((act, o))  # new to the summary as read: folded below
                    continue
                if claimed or not cs.summary.fold(act):
                    o.duplicates += 1
                    cs.duplicates += 1
                else:
                    self._added(cs, o, act, last_added, newest_added, added_ts)
            later.sort(key=lambda x: (x[0].ts, x[0].event_id), reverse=True)
            for act, o in later:
                if cs.summary.fold(act):
                    self._added(cs, o, act, last_added, newest_added, added_ts)
                else:  # a duplicate of another of the batch's events the registry missed
                    o.duplicates += 1
                    cs.duplicates += 1
            if not mine:
                continue
            outcomes[ref] = {**stored, **mine}
            count[ref] = {p: o for p, o in mine.items() if o.top < offsets.get(p, 0)}
            if cs.partition is None:
                cs.partition = next(iter(mine))
            if cs.added and named is not None and (newest_before is None
                                                   or named.ts >= newest_before
                                                   or not cs.store_named):
                # the store of the customer's newest event: an older one arriving late (a
                # shuffled import, a redelivery) does not move them back to where they were
                # (one without a store an event named takes any)
                self._move_store(cs, named.store, named.bound)
            elif cs.added:  # none of their events names a store: their profile's, the only one
                self._settle_home(cs)
            if not cs.added and any(
                    (p in stored and stored[p].top >= committed.get(p, 0)) for p in mine):
                redo.append(cs)  # an earlier attempt wrote it; its indexes may not be written
        touched = [cs for cs in states.values() if cs.added]
        nows = [self.customer_now(cs, wall_ms, on_event=True) for cs in touched]
        scored = self._score(touched, nows, kind="event",
                             fresh=[self._fresh_points(cs, added_ts[cs.ref], steps.get(cs.ref, []))
                                    for cs in touched],
                             steps=[steps.get(cs.ref, []) for cs in touched],
                             causes=[[*causes.get(cs.ref, []),
                                      (last_added[cs.ref] if cs.ref in steps
                                       else newest_added[cs.ref], cs.newest_event_id())]
                                     for cs in touched])
        changes = [ce for p in scored for ce in p.changes]
        if changes:
            await self._publish_changes(changes)
        for p in scored:
            cs = p.state
            if p.changes and cs.partition is not None and cs.partition in outcomes[cs.ref]:
                outcomes[cs.ref][cs.partition].changes += len(p.changes)
        writes: list[CustomerWrite] = []
        entries: list[tuple[Ref, IndexEntry]] = []
        by_ref = {p.state.ref: p for p in scored}
        for ref, cs in states.items():
            if ref not in outcomes or not cs.added:
                continue  # nothing new: duplicates are counted, the state is not touched
            w, entry = self._write_for(cs, by_ref.get(ref), outcomes=outcomes[ref])
            writes.append(w)
            if entry is not None:
                entries.append((ref, entry))
        for cs in redo:
            if (entry := cs.index_entry) is not None:
                entries.append((cs.ref, entry))
        t0 = time.monotonic()
        await self._retry("write", lambda: self.store.write(writes), passthrough=(StateConflict,))
        self.metrics.redis_seconds.labels("write").observe(time.monotonic() - t0)
        clocks: dict[str, list[Any]] = {}
        if self.event_clock:
            for ref, cs in states.items():
                if cs.added and cs.last_ts is not None:
                    clocks.setdefault(ref[0], []).extend([clock_member(*ref), cs.last_ts])
        cap = wall_ms + self.settings.max_event_future_seconds * 1000
        advanced = await self._retry("index", lambda: self.store.write_indexes(
            entries, clocks=clocks, clock_cap=cap))
        for t, v in advanced.items():
            self._clocks[t] = max(self._clocks.get(t, 0), v)
        # The counts: every outcome this commit passes (this attempt's, and an earlier
        # attempt's that no commit counted), the dead letters of this batch.
        stats = {"events_applied_total": 0, "events_duplicate_total": 0,
                 "risk_changes_total": 0, "events_dead_lettered_total": dead,
                 "events_erased_total": erased}
        per_tenant: dict[str, dict[str, int]] = {}
        for (tenant_id, _), counted in count.items():
            for o in counted.values():
                mine_t = per_tenant.setdefault(tenant_id, {})
                for name, n in (("events_applied_total", o.added),
                                ("events_duplicate_total", o.duplicates),
                                ("risk_changes_total", o.changes)):
                    stats[name] += n
                    mine_t[name] = mine_t.get(name, 0) + n
        added = sum(cs.added for cs in states.values())
        t0 = time.monotonic()
        await self._retry("commit", lambda: self.store.commit(
            topic=self.settings.topic_events, offsets=offsets, stats=stats,
            tenant_stats=per_tenant))
        self.metrics.redis_seconds.labels("commit").observe(time.monotonic() - t0)
        self._count_transitions(scored)
        self.metrics.events.labels("applied").inc(added)
        self.metrics.events.labels("duplicate").inc(sum(cs.duplicates for cs in states.values()))
        if dead:
            self.metrics.events.labels("dead_lettered").inc(dead)

    def _move_store(self, cs: CustomerState, store: str | None, bound: bool,
                    by: str | None = None) -> None:
        """The store the batch's newest event named becomes the customer's (when it is newer
        than any event before the batch); a store-bound key's event only
        sets it for a customer without one (one store cannot pull another's customer).
        ``by``: how a store no event named became theirs (:meth:`_settle_home`)."""
        old = cs.state.get("store") or None
        if store is None or (old and bound):
            return
        if old and old != store:
            cs.new_moved_from = old
        cs.new_store = store
        cs.new_store_by = by

    async def _erase(self, r: Record) -> None:
        stats: dict[str, int] = {}
        if not r.key:
            self.metrics.dead_letters.labels("tombstone_without_key").inc()
            await self._dead_letter([DeadLetter(r, "null value without a key: nothing to erase")])
            stats["events_dead_lettered_total"] = 1  # counted like any other dead letter
        else:
            ref = (_tenant_header(r.headers), r.key.decode("utf-8", "replace"))
            await self._retry("erase", lambda: self.store.erase(ref, self.settings.topic_partitions))
            digest = await self._digest(*ref)
            keep_ms = self.settings.retention.topic_readable_ms  # as long as any record may be read
            await self._retry("erase", lambda: self.store.record_erasure(
                ref[0], digest, r.partition, r.offset, at_ms=int(time.time() * 1000),
                keep_ms=keep_ms))
            stats["erasures_total"] = 1
            self.metrics.events.labels("erased").inc()
            logger.info("erased customer state", extra={"customer_id": ref[1], "tenant": ref[0]})
        await self._retry("commit", lambda: self.store.commit(
            topic=r.topic, offsets={r.partition: r.offset + 1}, stats=stats))

    # silence ----------------------------------------------------------------------------
    async def sweep(self, partitions: Iterable[int]) -> int:
        """:meth:`_sweep`, with no cycle collection while it runs (as :meth:`process`)."""
        with gc_paused():
            return await self._sweep(partitions)

    async def _sweep(self, partitions: Iterable[int]) -> int:
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
            while True:
                try:
                    states = await self._retry(
                        "load", lambda ids=wanted: self.store.load(ids))  # type: ignore[misc]
                    # Gone customers leave the index. So do other tenants' entries in the
                    # default tenant's key (written before silence indexes were per tenant),
                    # once re-scored: the commit indexes them under their own tenant.
                    gone = [t for ref, t in refs.items() if ref not in states]
                    stray = [t for ref, t in refs.items() if ref in states and ref[0] != tenant]
                    if gone:
                        await self._retry("sweep", lambda key=due_key, ids=gone: redis.zrem(key, *ids))  # type: ignore[misc]
                    for cs in states.values():
                        cs.partition = p
                    due = list(states.values())
                    await self._rescore(due, [self.customer_now(cs, clocks.get(cs.tenant) or now)
                                              for cs in due])
                    if stray:
                        await self._retry("sweep", lambda key=due_key, ids=stray: redis.zrem(key, *ids))  # type: ignore[misc]
                    break
                except StateConflict as exc:
                    self.metrics.retries.labels("conflict").inc()
                    logger.warning("%s; sweeping them again", exc)
            done += len(states)
            budget -= len(tokens)
        if done:
            self.metrics.swept.inc(done)
        return done

    # model switch -----------------------------------------------------------------------
    async def rescore_step(self, partitions: Iterable[int], *, budget: int) -> int:
        """:meth:`_rescore_step`, with no cycle collection while it runs: a step of a
        thousand customers makes some hundred thousand young objects, all freed by
        refcounting when it ends, which young collections walked to free nothing."""
        with gc_paused():
            return await self._rescore_step(partitions, budget=budget)

    async def _rescore_step(self, partitions: Iterable[int], *, budget: int) -> int:
        """One bounded step of re-scoring every customer of ``partitions`` after the served
        model changed (or how customers are judged beside it: business types, rules, tier
        levels — ``Engine.judging``); returns how many were re-scored (0: nothing to do).

        Per partition, ``Keys.rescore`` records which model version the stored scores come
        from, whether a pass is running and, per tenant, how far it got (a ``ZSCAN`` cursor
        of the tenant's silence index, which holds every scored customer): a switch starts a
        pass, a restart or a rebalance resumes it where the last step ended, the pass ends
        once every tenant's scan has. A partition without a record (a fresh deployment, or
        one from before this existed) only records the version: its scores were not made by
        another model that churnwatch knows of.
        Tier changes found are published with cause ``model`` and marked ``catching_up``:
        staff get them in one "currently at risk" summary, not one alert per customer. A new
        (or removed) challenger in shadow starts a pass too, so every customer soon carries
        its score; the served model being the same, what changes then is time (cause
        ``silence``)."""
        version = self.engine.model.version
        challenger = self.engine.shadow.shadow if self.engine.shadow is not None else None
        shadow = challenger.version if challenger is not None else ""
        judging = self.engine.judging
        served = f"{version}|{shadow}|{judging}"
        parts = tuple(sorted(set(partitions)))
        if not parts or self._rescored == (served, parts):
            return 0
        todo, kinds = await self._rescore_plan(parts, version, shadow, judging)
        if not todo:
            self._rescore_finished(served, version)
            self._rescored = (served, parts)
            return 0
        await self._rescore_started(served, version, shadow, parts, todo)
        count = await self._rescore_page(todo, kinds, budget)
        self._rescore_progress(version, count)
        return count

    async def _rescore_plan(self, parts: tuple[int, ...], version: str, shadow: str,
                            judging: str) -> tuple[list[tuple[int, str, int]], dict[int, str]]:
        """What is left to re-score: (partition, tenant, ZSCAN cursor) triples and each
        partition's cause (``model`` or ``silence``); starts a pass where the stored scores
        come from another model or other rules and levels (or lack the challenger's),
        records the ends of passes. A record from before rules were tracked takes today's
        as its own (nothing says they changed)."""
        redis = self.store.redis

        async def read() -> tuple[list[str], list[dict[str, str]]]:
            tenants = sorted({DEFAULT_TENANT, *(str(t) for t in await redis.smembers(self.keys.tenants))})  # type: ignore[misc]
            pipe = redis.pipeline(transaction=False)
            for p in parts:
                pipe.hgetall(self.keys.rescore(p))
            return tenants, [{str(k): str(v) for k, v in r.items()} for r in await pipe.execute()]

        tenants, records = await self._retry("rescore", read)
        todo: list[tuple[int, str, int]] = []
        kinds: dict[int, str] = {}
        marks: dict[int, tuple[bool, dict[str, Any]]] = {}  # partition -> (start over, fields)
        for p, rec in zip(parts, records, strict=True):
            # the served scoring changed: another model, or other rules and levels
            changed = rec.get("version") != version or rec.get("judging", judging) != judging
            if not rec:  # nothing known of earlier models here
                marks[p] = (False, {"version": version, "shadow": shadow, "judging": judging,
                                    "pass": "done"})
            elif changed or rec.get("shadow", "") != shadow:
                # the stored scores come from another model or other rules and levels, or
                # lack the challenger's: a switch of the served scoring is the cause of what
                # changes, else only time passed
                kinds[p] = "model" if changed else "silence"
                marks[p] = (True, {"version": version, "shadow": shadow, "judging": judging,
                                   "pass": "running", "kind": kinds[p]})
                todo += [(p, t, 0) for t in tenants]
            elif rec.get("pass") != "done":  # a pass a restart or a rebalance interrupted
                kinds[p] = rec.get("kind", "model")
                todo += [(p, t, int(rec.get(f"t:{t}") or 0)) for t in tenants
                         if rec.get(f"t:{t}") != "done"]
                if not any(q == p for q, _, _ in todo):
                    marks[p] = (False, {"pass": "done"})
            if rec and "judging" not in rec:
                marks.setdefault(p, (False, {}))[1]["judging"] = judging
        if marks:
            async def mark() -> None:
                pipe = redis.pipeline(transaction=False)
                for p, (over, fields) in marks.items():
                    if over:
                        pipe.delete(self.keys.rescore(p))
                    pipe.hset(self.keys.rescore(p), mapping=fields)  # type: ignore[arg-type]
                await pipe.execute()
            await self._retry("rescore", mark)
        return todo, kinds

    def _rescore_finished(self, served: str, version: str) -> None:
        if self._rescore_run.get("version") == served:
            run = self._rescore_run
            took = max(time.monotonic() - run["started"], 1e-9)
            logger.info("re-scored %d customers for model %s in %.1f s (%.0f/s)",
                        run["done"], version, took, run["done"] / took)
        self._rescore_run = {}
        self.metrics.rescore_remaining.set(0)

    async def _rescore_started(self, served: str, version: str, shadow: str,
                               parts: tuple[int, ...], todo: list[tuple[int, str, int]]) -> None:
        """At a pass's first step: how many customers it has (logs, remaining gauge)."""
        if self._rescore_run.get("version") == served:
            return
        redis = self.store.redis

        async def sizes() -> list[int]:
            pipe = redis.pipeline(transaction=False)
            for p, t, _ in todo:
                pipe.zcard(self.keys.due(p, t))
            return [int(n) for n in await pipe.execute()]
        total = sum(await self._retry("rescore", sizes))
        self._rescore_run = {"version": served, "started": time.monotonic(), "done": 0,
                             "total": total, "logged": time.monotonic()}
        logger.info("model %s is served%s, rules and tier levels %s: re-scoring ~%d customers "
                    "of partitions %s", version, f" with {shadow} in shadow" if shadow else "",
                    self.engine.judging, total, ", ".join(map(str, parts)))

    async def _rescore_page(self, todo: list[tuple[int, str, int]], kinds: dict[int, str],
                            budget: int) -> int:
        """One step: a ZSCAN page of every unfinished (partition, tenant) in one round trip,
        their customers loaded in one, scored in one model call per kind, written in one,
        then the cursors — a few round trips per step, not per partition."""
        redis = self.store.redis
        clocks = await self.tenant_nows({t for _, t, _ in todo}, refresh=True)
        todo = todo[:max(budget // 50, 1)]  # every scan's page worth a round trip
        page = max(budget // len(todo), 1)

        async def scan() -> list[Any]:
            pipe = redis.pipeline(transaction=False)
            for p, t, cursor in todo:
                pipe.zscan(self.keys.due(p, t), cursor, count=page)
            return list(await pipe.execute())
        pages = await self._retry("rescore", scan)
        refs: dict[Ref, int] = {}  # customer -> partition
        for (p, _, _), (_, found) in zip(todo, pages, strict=True):
            for m, _ in found:
                refs.setdefault(parse_customer_token(str(m)), p)
        try:
            states = await self._retry("load", lambda: self.store.load(tuple(refs)))
            by_kind: dict[str, list[CustomerState]] = {}
            for ref, cs in states.items():
                cs.partition = refs[ref]
                by_kind.setdefault(kinds[refs[ref]], []).append(cs)
            for kind, batch in by_kind.items():
                await self._rescore(batch, [self.customer_now(cs, clocks.get(cs.tenant) or 0)
                                            for cs in batch], kind=kind)
        except StateConflict as exc:  # another worker took the partition: next step again
            self.metrics.retries.labels("conflict").inc()
            logger.warning("%s; re-scoring them again", exc)
            return 0

        async def cursors() -> None:
            pipe = redis.pipeline(transaction=False)
            for (p, t, _), (nxt, _) in zip(todo, pages, strict=True):
                pipe.hset(self.keys.rescore(p), f"t:{t}", "done" if int(nxt) == 0 else str(int(nxt)))
            await pipe.execute()
        await self._retry("rescore", cursors)
        return len(states)

    def _rescore_progress(self, version: str, count: int) -> None:
        run = self._rescore_run
        run["done"] += count
        self.metrics.rescored.inc(count)
        self.metrics.rescore_remaining.set(max(run["total"] - run["done"], 0))
        if time.monotonic() - run["logged"] >= 5.0:
            run["logged"] = time.monotonic()
            took = max(run["logged"] - run["started"], 1e-9)
            logger.info("re-scoring for model %s: %d of ~%d customers (%.0f/s)", version,
                        run["done"], run["total"], run["done"] / took)

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
        # every tenant whose closed days are checked, not only those scored since this worker
        # started: a school silent over its break stays counted after a restart (its stores
        # read at most every STORE_ZONES_REFRESH_S, as for a batch)
        await self._read_stores((t for t in tenants
                                 if self.engine.business_of(t).expects_closed_days), retry=False)
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
    def _fresh_points(self, cs: CustomerState, added: list[int], steps: list[Step]
                      ) -> list[bool]:
        """Which of a customer's points this batch (their steps, then the last) decide their
        tier from the score alone: the point's new event is older than the instant the tier
        before it was decided at by more than ``alert_max_age`` (the age that makes a change
        "catching up"). That tier was decided without history that had already happened.

        A year imported at go-live, in order or shuffled, scores a customer from part of their
        history: under the wall clock at "now", where their oldest visits alone read as months
        away; under the event clock at the silence sweep's instant, once the sweep has raised
        them before their newer events arrived. The tier that view gave held the next, fuller
        one by hysteresis and dwell ("Held at high: score 0.69 is still above the exit level
        0.65") — 19 of a restaurant's 1,496 guests at go-live under the wall clock, 15 under
        the event clock, by the luck of which events came first. Live events, or events a
        few minutes late, keep hysteresis and dwell.

        Under the wall clock the customer has one point, after all their new events (the
        oldest decides). Under the event clock a point per new event, in arrival order, each
        against the point before it (the first: the stored scoring); a point's instant is
        the customer's newest event so far or the stored one, so the flags do not depend on
        where the stream was cut into batches."""
        before = cs.scored_at_ms if cs.tier else None
        late_ms = self.settings.alert_max_age * 1000
        if not self.event_clock:
            return [before is not None and min(added) < before - late_ms]
        times = [before, *(st.now_ms for st in steps)]
        return [t is not None and ts < t - late_ms for ts, t in zip(added, times, strict=False)]

    def _score(self, states: list[CustomerState], nows: list[int], *, kind: str,
               fresh: list[list[bool]] | None = None, steps: list[list[Step]] | None = None,
               causes: list[list[tuple[Activity, str | None]]] | None = None) -> list[Path]:
        """Assess customers (one vectorized model call; one by one if that fails, so one bad
        customer cannot stop the stream) along their paths (``steps``: assessments before
        the last new event of a batch; ``causes``: the event and newest event id of each
        point, for ``kind="event"``) and build a risk-change CloudEvent per tier change.
        ``fresh``: per customer, which points decide their tier from the score alone
        (:meth:`_fresh_points`)."""
        paths: list[tuple[int, list[Assessment]]] = []
        if states:
            homes = [self._home_of(cs) for cs in states]
            subjects = [Subject(cs.customer_id, (), cs.first_ts, cs.tier, cs.tier_since,
                                summary=cs.summary, tenant=cs.tenant,
                                closures=self._closures_of(cs, home), storeless=home is None)
                        for cs, home in zip(states, homes, strict=True)]
            try:
                results = self.engine.assess_paths(subjects, nows, steps=steps, fresh=fresh)
                paths = list(enumerate(results))
            except Exception:
                logger.exception("batch scoring failed; retrying customer by customer")
                for i, (cs, subj, at) in enumerate(zip(states, subjects, nows, strict=True)):
                    try:
                        mine = None if steps is None else [steps[i]]
                        flags = None if fresh is None else [fresh[i]]
                        paths.append((i, self.engine.assess_paths([subj], at, steps=mine,
                                                                  fresh=flags)[0]))
                    except Exception:
                        self.metrics.errors.inc()
                        logger.exception("scoring failed", extra={"customer_id": cs.customer_id,
                                                                  "tenant": cs.tenant})
        out: list[Path] = []
        for i, path in paths:
            cs = states[i]
            previous = cs.tier or "low"
            since: int | None = None
            along: list[tuple[Assessment, dict[str, Any]]] = []
            held = cs.tier  # the tier the engine chains from (None for a new customer)
            for j, a in enumerate(path):
                if a.tier != held:
                    since, held = a.as_of_ms, a.tier
                if a.tier == previous:
                    continue
                if causes is not None:
                    cause = self._event_cause(*causes[i][j])
                else:
                    cause = self._cause(cs, kind, a.as_of_ms)
                change = RiskChange(
                    customer_id=cs.customer_id, tenant_id=cs.tenant, store_id=cs.store_id,
                    previous_tier=previous,  # type: ignore[arg-type]
                    tier=a.tier, score=round(a.score, 6),  # type: ignore[arg-type]
                    previous_score=cs.score if j == 0 else round(path[j - 1].score, 6),
                    reasons=a.reasons, suggested_action=a.action,
                    value_tier=a.value_tier, lifecycle_stage=a.lifecycle_stage,  # type: ignore[arg-type]
                    model_version=a.model_version, as_of=a.as_of, cause=cause, features=a.features,
                    # a model switch re-scores everyone at once: staff get one summary
                    catching_up=kind == "model" or self._catching_up(cause),
                    holdout=a.tier == "high" and in_holdout(cs.tenant, cs.customer_id,
                                                            self.settings.holdout_share),
                )
                along.append((a, to_cloudevent(change)))
                previous = a.tier
            out.append(Path(cs, path[-1], along, since))
        return out

    def _count_transitions(self, scored: list[Path]) -> None:
        for p in scored:
            for _, ce in p.steps:
                self.metrics.transitions.labels(ce["data"]["previous_tier"],
                                                ce["data"]["tier"]).inc()

    async def _rescore(self, states: list[CustomerState], nows: list[int], *,
                       kind: str = "silence") -> None:
        """Re-scoring without new events (the silence sweep; ``kind="model"`` after a model
        switch): publish, write the customers, then their indexes (a crash in between leaves
        them due: the next sweep does it again, with the same risk-change ids)."""
        await self._read_stores({cs.tenant for cs in states})  # their closed days
        await self._read_homes(states, ())  # the store of one whose events name none
        for cs in states:
            self._settle_home(cs)
        scored = self._score(states, nows, kind=kind)
        changes = [ce for p in scored for ce in p.changes]
        if changes:
            await self._publish_changes(changes)
        writes: list[CustomerWrite] = []
        entries: list[tuple[Ref, IndexEntry]] = []
        for p in scored:
            w, entry = self._write_for(p.state, p, outcomes=None)
            writes.append(w)
            if entry is not None:
                entries.append((p.state.ref, entry))
        await self._retry("write", lambda: self.store.write(writes), passthrough=(StateConflict,))
        await self._retry("index", lambda: self.store.write_indexes(entries))
        if changes:
            token = uuid.uuid4().hex  # the same on every retry: the stats count once
            per_tenant: dict[str, dict[str, int]] = {}
            for p in scored:
                if p.changes:
                    t = per_tenant.setdefault(p.state.tenant, {})
                    t["risk_changes_total"] = t.get("risk_changes_total", 0) + len(p.changes)
            await self._retry("commit", lambda: self.store.commit(
                topic=self.settings.topic_events, offsets={},
                stats={"risk_changes_total": len(changes)}, tenant_stats=per_tenant,
                token=token))
            self._count_transitions(scored)

    @staticmethod
    def _cause(cs: CustomerState, kind: str, now: int) -> Cause:
        """Why the tier changed when no event did it: the scorer's clock (a model switch), or
        for time passing (``silence``) when the sweep was due to look at the customer, if
        that is earlier. Swept when due, that is the clock; a sweep that comes long after
        the due time dates what it finds there, not at the clock: under the event clock a
        shuffled import puts the clock at the newest event early on while each customer is
        scored at their own newest event, and the sweep then found a year-old silence
        "now" — an SMS about a customer last seen 363 days ago. After days of the scorer
        down the same: past the alert max age, staff get it in the go-live summary."""
        at = now
        if kind == "silence" and (due := cs.due_ms) is not None and due < now:
            at = due
        return Cause(kind=kind, event_id=cs.newest_event_id(),  # type: ignore[arg-type]
                     occurred_at=datetime.fromtimestamp(at / 1000, UTC))

    @staticmethod
    def _event_cause(event: Activity, newest_event_id: str | None) -> Cause:
        """Why the tier changed: the event the customer was assessed after (its time and
        type), with the newest event id the customer had then (the risk-change id's part)."""
        return Cause(kind="event", event_id=newest_event_id,
                     occurred_at=datetime.fromtimestamp(event.ts / 1000, UTC),
                     event_type=event.kind if event.kind in ("transaction", "visit", "complaint")
                     else None)  # type: ignore[arg-type]

    def _catching_up(self, cause: Cause) -> bool:
        """The cause is older than the staff alerts' max age by the wall clock."""
        if cause.occurred_at is None:
            return False
        age = time.time() - cause.occurred_at.timestamp()
        return age > self.settings.alert_max_age

    def _write_for(self, cs: CustomerState, path: Path | None,
                   *, outcomes: dict[int, Outcome] | None
                   ) -> tuple[CustomerWrite, IndexEntry | None]:
        """One customer's write: the summary and outcomes of an event batch (``outcomes``),
        the new score and tier, the index entry, a timeline entry per tier change."""
        a = path.final if path is not None else None
        fields: dict[str, Any] = {"v": str(int(cs.version or 0) + 1)}
        delete = ["moved_from", "pending"] if ("moved_from" in cs.state or "pending" in cs.state) \
            else []
        if outcomes is not None:
            fields["sm"] = cs.summary.encode()
            fields["ap"] = {str(p): o.to_json() for p, o in outcomes.items()}
            if cs.first_ts is not None:
                fields["first_ts"] = str(cs.first_ts)
            if cs.last_ts is not None:
                fields["last_ts"] = str(cs.last_ts)
            # the newest event's UTC offset, for readers that show a time on the shop's clock
            # (last seen 4 Dec at 18:45 in New York is 5 Dec in UTC); none while it is 0
            tz = cs.summary.tz_minutes
            if tz:
                fields["tz"] = str(tz)
            elif "tz" in cs.state:
                delete.append("tz")
        if cs.new_store:  # an event's store, or one a sweep found (_settle_home)
            fields["store"] = cs.new_store
            if cs.new_store_by:
                fields["store_by"] = cs.new_store_by
            elif "store_by" in cs.state:
                delete.append("store_by")
        if a is None:  # scoring failed: the events are kept, the score is not touched
            return CustomerWrite(cs.ref, cs.version, fields, delete), None
        assert path is not None
        now = a.as_of_ms
        # a tier change, or a move to another store (the tenant's store list names it then,
        # tier changed or not)
        changed = path.since is not None or (
            cs.new_store is not None and cs.new_store != cs.state.get("store"))
        fields.update({"score": repr(a.score), "tier": a.tier, "scored_at": str(now),
                       "risk": risk_snapshot(a.to_json())})
        if path.since is not None:
            fields["tier_since"] = str(path.since)
        due = self._due(now, a)
        holdout = any(x.tier == "high" for x, _ in path.steps) and in_holdout(
            cs.tenant, cs.customer_id, self.settings.holdout_share)
        entry = IndexEntry(tier=a.tier, priority=index_score(a.priority, a.lifecycle_stage),
                           store=cs.store_id,
                           moved_from=cs.moved_from, changed=changed, due_ms=due,
                           partition=cs.partition, holdout=holdout)
        fields["due"] = str(due)
        fields["ix"] = entry.to_json()
        timeline = [jsonfast.dumps({
            "kind": "tier_change", "at": ce["time"], "at_ms": x.as_of_ms,
            "id": ce["id"], "from": ce["data"]["previous_tier"], "to": ce["data"]["tier"],
            "score": ce["data"]["score"], "cause": ce["data"]["cause"]["kind"],
            "reasons": [r["code"] for r in ce["data"]["reasons"]],
            "suggested_action": ce["data"]["suggested_action"]["code"]})
            for x, ce in path.steps]
        return CustomerWrite(cs.ref, cs.version, fields, delete, "\n".join(timeline)), entry

    @staticmethod
    def _due(now: int, a: Assessment) -> int:
        """When to look at a silent customer again: a customer at risk (medium, high) the next
        day — staff read their reasons ("135 days since the last visit") and act on them, and a
        week-old count read wrong beside "Last seen" (third console walkthrough) —, anyone
        else after a quarter of their cadence, 1-7 days."""
        if a.tier != "low":
            return now + DAY_MS
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

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        """Dead-letter whole records, or single events of envelopes (the event alone as its
        value; the source header names the record and the event's index)."""
        async def send_all() -> None:
            futures = []
            for d in dead:
                r = d.record
                source = f"{r.topic}/{r.partition}/{r.offset}" + \
                    (f"/{d.index}" if d.index >= 0 else "")
                headers = [("churnwatch-error", d.reason[:1000].encode()),
                           ("churnwatch-source", source.encode())]
                value = d.value if d.value is not None else r.value
                # aiokafka cannot send a record with neither key nor value (a keyless
                # tombstone, which other clients can write): its copy gets an empty key.
                key = b"" if r.key is None and value is None else r.key
                futures.append(await self.producer.send(
                    self.settings.topic_events_dlq, value, key=key, headers=headers))
            await asyncio.gather(*futures)
        for d in dead:
            logger.warning("dead-lettered record: %s", d.reason,
                           extra={"topic": d.record.topic, "partition": d.record.partition,
                                  "offset": d.record.offset})
        await self._retry("dead_letter", send_all)

    async def _retry(self, step: str, fn: Callable[[], Awaitable[T]],
                     passthrough: tuple[type[Exception], ...] = ()) -> T:
        """``fn`` until it succeeds. Infrastructure errors (Redis or the broker away, busy or
        failing over) are retried quietly with backoff. Anything else — a Lua error, a
        ``WRONGTYPE`` key, a bug — will not go away by retrying: it is still retried (skipping
        the batch would lose it) but loudly: logged at ERROR with its traceback (then once a
        minute) and counted in ``churnwatch_scorer_unexpected_errors_total{step}``, which the
        ``ChurnwatchScorerStuck`` alert watches, and the worker's readiness probe fails
        (``stuck``) until the step succeeds. Before, a partition stalled silently."""
        backoff = Backoff(0.1, 5.0)  # the services' retry policy (services/common/retry.py)
        said = 0.0
        while True:
            try:
                result = await fn()
                self.stuck.pop(step, None)
                return result
            except asyncio.CancelledError:
                raise
            except passthrough:
                raise
            except Exception as exc:
                self.metrics.retries.labels(step).inc()
                delay = backoff.next()
                if is_transient(exc):
                    logger.warning("%s failed (%s: %s); retrying in %.1f s", step,
                                   type(exc).__name__, exc, delay)
                else:
                    self.metrics.unexpected.labels(step).inc()
                    self.stuck[step] = f"{type(exc).__name__}: {exc}"[:300]
                    if time.monotonic() - said >= 60.0:
                        said = time.monotonic()
                        logger.error("%s failed with an error retrying does not fix (%s: %s): "
                                     "the batch waits until the cause is fixed; retrying",
                                     step, type(exc).__name__, exc, exc_info=True)
                await asyncio.sleep(delay)


__all__ = ["Processor", "Record", "ScorerMetrics"]
