"""The demo POS feed: a salon chain whose story a newcomer can watch unfold in about a minute.

``churnwatch up`` runs :func:`main` as a child process (unless ``--no-demo``). The scorer runs
with ``CHURNWATCH_CLOCK=event`` then, so the story is told through event timestamps:

1. **Backfill** — the first ``history_days`` of a synthetic salon chain
   (:func:`services.synth.generator.generate`) are posted in time order, in batches of up to
   2,000, as fast as the API takes them, so every customer has a baseline.
2. **Live replay** — the last ``live_days`` are replayed compressed into ``live_seconds`` of
   wall time: every :data:`TICK_SECONDS` the events whose timestamps the simulated clock has
   passed are posted. Regulars who drift away visibly miss visits, tickets shrink,
   complaints land, and the event clock re-scores the silent ones.
3. **Trickle** — until stopped, a visit and a purchase of a few still-active customers are
   posted every :data:`TRICKLE_SECONDS` at real-time timestamps, so the event clock keeps
   moving.

On top of the generated chain, :func:`build_story` guarantees the drama: at least
:data:`DRIFT_SHARE` of the customers stop coming (or fade) early in the live window, and four
scripted customers act out the typical cases (a long-time regular who stops, a big spender
whose tickets shrink, a customer with two high-severity complaints who leaves, and one whose
complaint is resolved and who stays).

HTTP: 503, 429, 502, 504, timeouts and connection errors are retried with back-off (the
same batch, so the same ``event_id``\\ s: a retry is harmless); a 422 is logged with its
per-event errors and the batch skipped; 413 splits the batch; 401/403 end the feed (a
wrong key does not fix itself). Nothing here raises on one failed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import signal
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from services.common.retry import Backoff
from services.common.timefmt import rfc3339
from services.demo.people import seed_people
from services.synth.generator import SynthCustomer, generate

MAX_BATCH = 2000          # events per request in the backfill (the API takes up to 10,000)
TICK_SECONDS = 0.25       # live replay: how often the simulated clock is checked
TRICKLE_SECONDS = 3.0     # phase 3: one batch every this many seconds
DRIFT_SHARE = 0.12        # at least this share of customers drift away in the live window
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
OTHER_ERROR_ATTEMPTS = 5  # unexpected statuses (500, 400, ...) before a batch is given up
REQUEST_TIMEOUT = 30.0
SCORED_WAIT_S = 5.0       # backfill: how long a batch waits for the scorer to catch up
DEFAULT_CURRENCY = "EUR"

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_T = TypeVar("_T")

Event = dict[str, Any]


@dataclass
class FeedStats:
    """What one run of the feed did. ``rejected`` counts events (in batches answered 422 or
    given up after repeated unexpected errors); ``retries`` counts repeated requests."""

    events_posted: int = 0
    batches: int = 0
    retries: int = 0
    rejected: int = 0
    error: str | None = None  # set when the feed ended early on its own (e.g. 401/403)


# --------------------------------------------------------------------------------------
# The story
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrickleCustomer:
    customer_id: str
    store_id: str | None
    mean_ticket: float
    currency: str


@dataclass(frozen=True)
class Story:
    """Everything the feed posts in phases 1-2, in time order, plus who keeps coming."""

    anchor: datetime          # "now" when the story was built: the end of the live window
    live_start: datetime
    run_tag: str              # prefix of every event_id of this run
    backfill: list[Event]     # occurred_at < live_start
    live: list[tuple[datetime, Event]]  # live_start <= occurred_at <= anchor
    active: list[TrickleCustomer]        # still regulars at the end: they feed phase 3
    drifters: list[str]       # customers who stop or fade during the live window
    scripted: list[str]       # the hand-written customers added on top of generate()
    customers: int            # generated + scripted
    high_complaints_live: int  # open high-severity complaints inside the live window
    homes: dict[str, str | None] = field(default_factory=dict)  # customer -> home store


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _parse_ts(value: str) -> datetime:
    return _utc(datetime.fromisoformat(value.replace("z", "Z")))


def _fmt(dt: datetime) -> str:
    return rfc3339(_utc(dt), "seconds")


def _tag_id(tag: str, event_id: str) -> str:
    out = f"{tag}-{event_id}"
    if len(out) <= 128:
        return out
    return f"{tag}-{hashlib.sha256(event_id.encode()).hexdigest()[:40]}"


class _Script:
    """Hand-written customers (ids ``demo-...``) acting out the typical churn stories."""

    def __init__(self, rng: random.Random, start: datetime, live_start: datetime,
                 anchor: datetime, stores: Sequence[str], currency: str):
        self.rng, self.start, self.live_start, self.anchor = rng, start, live_start, anchor
        self.span = anchor - live_start
        self.stores = list(stores) or ["salon-1"]
        self.currency = currency
        self.events: list[Event] = []
        self._n: Counter[str] = Counter()

    def at(self, frac: float) -> datetime:
        """A time inside the live window, as a fraction of it."""
        return self.live_start + self.span * frac

    def _when(self, day: datetime) -> datetime:
        hour = self.rng.randint(9, 17)
        t = day.replace(hour=hour, minute=self.rng.choice((0, 15, 30, 45)), second=0)
        return min(t, self.anchor - timedelta(hours=2))

    def visit(self, cust: str, store: str, day: datetime, service: str, amount: float) -> None:
        self._n[cust] += 1
        n = self._n[cust]
        t = self._when(day)
        minutes = self.rng.choice((30, 45, 60, 90))
        self.events.append({
            "event_id": f"{cust}-v{n:04d}", "type": "visit", "customer_id": cust,
            "occurred_at": _fmt(t), "store_id": store, "channel": "in_store",
            "service": service, "duration_minutes": minutes,
        })
        self.events.append({
            "event_id": f"{cust}-t{n:04d}", "type": "transaction", "customer_id": cust,
            "occurred_at": _fmt(t + timedelta(minutes=minutes)), "store_id": store,
            "channel": "in_store", "amount": round(max(amount, 5.0), 2),
            "currency": self.currency, "quantity": 1,
        })

    def complaint(self, cust: str, store: str, day: datetime, severity: str, category: str,
                  ref: str, status: str = "open", channel: str = "in_store") -> None:
        self._n[cust] += 1
        t = self._when(day) + timedelta(hours=1, minutes=50)
        self.events.append({
            "event_id": f"{cust}-c{self._n[cust]:04d}", "type": "complaint",
            "customer_id": cust, "occurred_at": _fmt(min(t, self.anchor)), "store_id": store,
            "channel": channel, "severity": severity, "category": category,
            "complaint_id": f"{cust}-{ref}", "status": status,
        })

    def regular(self, cust: str, store: str, first: datetime, until: datetime,
                cadence: float, service: str, ticket: float) -> datetime:
        """Visits every ``cadence`` days (+-15%) from ``first`` to ``until``; returns the last."""
        day, last = first, first
        while day <= until:
            self.visit(cust, store, day, service, self.rng.gauss(ticket, ticket * 0.08))
            last = day
            day += timedelta(days=cadence * self.rng.uniform(0.85, 1.15))
        return last

    def build(self) -> tuple[list[str], list[str], list[TrickleCustomer]]:
        """Write the scripted customers; return (all ids, drifters, still-active)."""
        s, rng = self.stores, self.rng
        early = self.start + timedelta(days=rng.uniform(0.5, 3.0))

        # A long-time regular who stops coming early in the live window.
        ana = "demo-ana-regular"
        self.regular(ana, s[0], early, self.at(0.12), 12.0, "haircut", 68.0)

        # A big spender whose tickets shrink and visits thin out, then stops.
        li = "demo-li-bigspender"
        last = self.regular(li, s[1 % len(s)], early + timedelta(days=1), self.live_start,
                            14.0, "colour_and_treatment", 215.0)
        self.regular(li, s[1 % len(s)], last + timedelta(days=20), self.at(0.45), 22.0,
                     "haircut", 38.0)

        # A regular who files two high-severity complaints and does not come back.
        sam = "demo-sam-complainer"
        self.regular(sam, s[2 % len(s)], early + timedelta(days=2), self.at(0.25), 18.0,
                     "haircut", 85.0)
        self.visit(sam, s[2 % len(s)], self.at(0.30), "haircut", 85.0)
        self.complaint(sam, s[2 % len(s)], self.at(0.30), "high", "service_quality", "1")
        self.complaint(sam, s[2 % len(s)], self.at(0.42), "high", "rebooking", "2",
                       channel="phone")

        # A regular whose high-severity complaint is resolved, and who stays.
        jo = "demo-jo-recovered"
        store_jo = s[3 % len(s)]
        self.regular(jo, store_jo, early + timedelta(days=3), self.at(0.18), 15.0,
                     "haircut", 55.0)
        self.visit(jo, store_jo, self.at(0.20), "haircut", 55.0)
        self.complaint(jo, store_jo, self.at(0.20), "high", "billing", "1")
        self.complaint(jo, store_jo, self.at(0.36), "high", "billing", "1", status="resolved",
                       channel="phone")
        self.regular(jo, store_jo, self.at(0.38), self.anchor - timedelta(days=1), 15.0,
                     "haircut", 55.0)

        active = [TrickleCustomer(jo, store_jo, 55.0, self.currency)]
        return [ana, li, sam, jo], [ana, li, sam], active


def build_story(*, customers: int = 120, seed: int = 7, history_days: int = 240,
                live_days: int = 60, anchor: datetime | None = None) -> Story:
    """The demo's events: a generated salon chain of ``customers`` customers over
    ``history_days + live_days`` days ending at ``anchor`` (default: now), plus the drama."""
    if customers < 1 or history_days < 1 or live_days < 1:
        raise ValueError("customers, history_days and live_days must be at least 1")
    anchor = _utc(anchor or datetime.now(UTC)).replace(microsecond=0)
    live_start = anchor - timedelta(days=live_days)
    start = live_start - timedelta(days=history_days)
    span = anchor - live_start
    rng = random.Random(f"churnwatch-demo-{seed}")
    events, synth = generate(preset="salon", customers=customers, start=start, end=anchor,
                             seed=seed, stores=3 + seed % 2)

    # customer -> its events (copied: drifting edits them), never past the anchor.
    by_cust: dict[str, list[tuple[datetime, Event]]] = defaultdict(list)
    currencies: Counter[str] = Counter()
    stores: set[str] = set()
    for ev in events:
        ts = _parse_ts(ev["occurred_at"])
        if ts > anchor:
            continue
        by_cust[ev["customer_id"]].append((ts, dict(ev)))
        if ev.get("store_id"):
            stores.add(ev["store_id"])
        if ev.get("type") == "transaction" and ev.get("currency"):
            currencies[ev["currency"]] += 1
    currency = currencies.most_common(1)[0][0] if currencies else DEFAULT_CURRENCY
    stores.update(c.store_id for c in synth if c.store_id)

    def churn_at(c: SynthCustomer) -> datetime | None:
        return _utc(c.churn_at) if c.churn_at is not None else None

    def stays(c: SynthCustomer) -> bool:
        t = churn_at(c)
        return t is None or t > anchor

    # Customers the generator already lets go early enough in the live window to be seen.
    visible_by = live_start + span * 0.6
    natural = [c.customer_id for c in synth
               if (t := churn_at(c)) is not None and live_start <= t <= visible_by
               and any(ts < live_start for ts, _ in by_cust[c.customer_id])]

    script = _Script(rng, start, live_start, anchor, sorted(stores), currency)
    scripted_ids, scripted_drifters, scripted_active = script.build()
    total = customers + len(scripted_ids)
    need = max(0, math.ceil(DRIFT_SHARE * total) - len(natural) - len(scripted_drifters))

    # Make more regulars drift: stop coming (2 of 3) or fade (half the visits, cheaper
    # tickets) from a moment early in the live window. Short cadences first: their silence
    # shows within the window.
    def still_regular(c: SynthCustomer) -> bool:
        evs = by_cust[c.customer_id]
        return (stays(c) and len({ts.date() for ts, _ in evs
                                                    if ts < live_start}) >= 3
                and any(ts >= live_start + span * 0.35 for ts, _ in evs))

    candidates = [c for c in synth if still_regular(c)]
    rng.shuffle(candidates)
    limit = live_days * 0.4
    quick = [c for c in candidates if c.cadence_days <= limit]
    slow = sorted((c for c in candidates if c.cadence_days > limit), key=lambda c: c.cadence_days)
    forced = (quick + slow)[:need]
    for n, c in enumerate(forced):
        drift_at = live_start + span * rng.uniform(0.05, 0.3)
        evs = by_cust[c.customer_id]
        if n % 3 != 2:
            by_cust[c.customer_id] = [(ts, ev) for ts, ev in evs if ts <= drift_at]
            continue
        kept: list[tuple[datetime, Event]] = []
        days = sorted({ts.date() for ts, _ in evs if ts > drift_at})
        dropped = set(days[1::2])
        for ts, ev in evs:
            if ts > drift_at:
                if ts.date() in dropped:
                    continue
                if ev.get("type") == "transaction" and isinstance(ev.get("amount"), int | float):
                    ev["amount"] = round(float(ev["amount"]) * 0.45, 2)
            kept.append((ts, ev))
        by_cust[c.customer_id] = kept
    drifters = natural + [c.customer_id for c in forced] + scripted_drifters

    for ev in script.events:
        by_cust[ev["customer_id"]].append((_parse_ts(ev["occurred_at"]), ev))

    run_tag = f"demo{seed}-{anchor:%Y%m%dT%H%M%S}"
    timeline: list[tuple[datetime, Event]] = []
    for evs in by_cust.values():
        for ts, ev in evs:
            ev["event_id"] = _tag_id(run_tag, str(ev["event_id"]))
            timeline.append((ts, ev))
    timeline.sort(key=lambda p: (p[0], p[1]["event_id"]))

    drifting = set(drifters)
    active = [TrickleCustomer(c.customer_id, c.store_id, float(c.mean_ticket), currency)
              for c in synth
              if c.customer_id not in drifting and stays(c)
              and any(ts >= live_start for ts, _ in by_cust[c.customer_id])]
    active += scripted_active
    homes: dict[str, str | None] = {}
    for _, ev in timeline:  # a customer's home store: the first store their events name
        homes.setdefault(str(ev["customer_id"]), ev.get("store_id"))
    high = sum(1 for ts, ev in timeline if ts >= live_start and ev.get("type") == "complaint"
               and ev.get("severity") == "high" and ev.get("status", "open") == "open")
    return Story(
        anchor=anchor, live_start=live_start, run_tag=run_tag,
        backfill=[ev for ts, ev in timeline if ts < live_start],
        live=[(ts, ev) for ts, ev in timeline if ts >= live_start],
        active=active, drifters=drifters, scripted=scripted_ids, customers=total,
        high_complaints_live=high, homes=homes,
    )


# --------------------------------------------------------------------------------------
# Posting
# --------------------------------------------------------------------------------------


class _AuthRefused(Exception):
    pass


class _Poster:
    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str],
                 stop: asyncio.Event, stats: FeedStats, log: logging.Logger):
        self.client, self.url, self.headers = client, url, headers
        self.stop, self.stats, self.log = stop, stats, log

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; True when stopped."""
        if self.stop.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(seconds, 0.0))
        return self.stop.is_set()

    async def wait_scored(self) -> None:
        """Wait until the scorer has caught up (``scorer_lag`` 0 in /v1/status), if the API
        tells, at most SCORED_WAIT_S; an API without /v1/status, or a key without the read
        scope, just moves on."""
        status_url = self.url.rsplit("/v1/", 1)[0] + "/v1/status"
        deadline = asyncio.get_running_loop().time() + SCORED_WAIT_S
        while not self.stop.is_set() and asyncio.get_running_loop().time() < deadline:
            try:
                resp = await self.client.get(status_url, headers=self.headers)
            except httpx.HTTPError:
                return
            if resp.status_code != 200 or resp.json().get("scorer_lag") in (0, None):
                return
            await self.sleep(0.05)

    async def until_stop(self, aw: Awaitable[_T]) -> tuple[bool, _T | None]:
        """Await ``aw`` unless stop comes first (then it is cancelled): (finished, result)."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.cancelled():
            return False, None
        return True, task.result()  # re-raises the request's own exception

    async def post(self, batch: list[Event]) -> bool:
        """Post one batch until it is accepted, refused as invalid, or the feed stops."""
        if not batch:
            return True
        backoff, failures, other = Backoff(BACKOFF_FIRST, BACKOFF_MAX), 0, 0
        while not self.stop.is_set():
            problem: str
            try:
                done, resp = await self.until_stop(
                    self.client.post(self.url, json=batch, headers=self.headers))
            except httpx.HTTPError as exc:  # connection refused/reset, timeouts, ...
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if not done or resp is None:
                    return False
                if resp.status_code in (200, 202):
                    self.stats.events_posted += _accepted(resp, len(batch))
                    self.stats.batches += 1
                    return True
                if resp.status_code == 422:
                    self._log_invalid(resp, batch)
                    self.stats.rejected += len(batch)
                    return False
                if resp.status_code in (401, 403):
                    raise _AuthRefused(f"the API refused the key ({resp.status_code}): "
                                       f"{resp.text[:200]}")
                if resp.status_code == 413 and len(batch) > 1:
                    half = len(batch) // 2
                    self.log.warning("demo feed: batch of %d events too large (413); splitting",
                                     len(batch))
                    first = await self.post(batch[:half])
                    return await self.post(batch[half:]) and first
                problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in _RETRY_STATUSES:
                    other += 1
                    if other >= OTHER_ERROR_ATTEMPTS:
                        self.log.error("demo feed: giving up a batch of %d events after %d "
                                       "attempts (%s)", len(batch), other, problem)
                        self.stats.rejected += len(batch)
                        return False
            failures += 1
            self.stats.retries += 1
            delay = backoff.next()
            log = self.log.warning if failures == 1 or failures % 10 == 0 else self.log.debug
            log("demo feed: %s; retrying the same %d events in %.2f s (attempt %d)",
                problem, len(batch), delay, failures + 1)
            if await self.sleep(delay):
                return False
        return False

    def _log_invalid(self, resp: httpx.Response, batch: list[Event]) -> None:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text[:500]
        errors = body.get("errors", body) if isinstance(body, dict) else body
        shown = errors[:10] if isinstance(errors, list) else errors
        self.log.error("demo feed: the API refused a batch of %d events (422, a feed bug); "
                       "skipping it. Errors: %s", len(batch),
                       json.dumps(shown, default=str, ensure_ascii=False)[:2000])


def _accepted(resp: httpx.Response, sent: int) -> int:
    try:
        n = resp.json().get("accepted")
    except (ValueError, AttributeError):
        return sent
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= sent else sent


def _chunks(items: Sequence[Event], size: int) -> Iterator[list[Event]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _day(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d")


async def run_feed(*, api_url: str, api_key: str | None, stop: asyncio.Event,
                   customers: int = 120, seed: int = 7, history_days: int = 240,
                   live_days: int = 60, live_seconds: float = 45.0,
                   log: logging.Logger | None = None) -> FeedStats:
    """Post the demo story to ``{api_url}/v1/events`` until ``stop`` is set (see module doc).

    Never raises for HTTP trouble; returns what it did. Log records that open a phase carry
    ``demo_phase`` (1, 2 or 3) as an attribute."""
    log = log or logging.getLogger("churnwatch.demo")
    stats = FeedStats()
    story = await asyncio.to_thread(build_story, customers=customers, seed=seed,
                                    history_days=history_days, live_days=live_days)
    log.info("demo feed: salon chain with %d customers (%d drifting away in the live window, "
             "%d high-severity complaints coming), %d history + %d live events, %s to %s",
             story.customers, len(story.drifters), story.high_complaints_live,
             len(story.backfill), len(story.live), _day(story.anchor - timedelta(
                 days=history_days + live_days)), _day(story.anchor))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = api_url.rstrip("/") + "/v1/events"
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        poster = _Poster(client, url, headers, stop, stats, log)
        try:
            await seed_people(client, api_url, headers, customers=story.homes, seed=seed,
                              stores={s for s in story.homes.values() if s}, log=log)
            await _backfill(poster, story, log)
            await _replay(poster, story, live_seconds, log)
            await _trickle(poster, story, seed, log)
        except _AuthRefused as exc:
            stats.error = str(exc)
            log.error("demo feed: %s; stopping the feed (check the ingest API key)", exc)
    log.info("demo feed stopped: %d events posted in %d batches, %d retries, %d rejected",
             stats.events_posted, stats.batches, stats.retries, stats.rejected)
    return stats


async def _backfill(poster: _Poster, story: Story, log: logging.Logger) -> None:
    """History in slices of at most a simulated week, each scored before the next is sent.

    Under the event clock, "now" is the newest event seen; one huge batch spread over several
    partitions would score customers at the end of history before their own later events were
    read, and the console would show tiers flipping up and straight back down."""
    total = len(story.backfill)
    log.info("demo feed phase 1 (backfill): posting %d events of history up to %s",
             total, _day(story.live_start), extra={"demo_phase": 1})
    done = 0
    for batch in _weekly(story.backfill):
        if poster.stop.is_set():
            return
        await poster.post(batch)
        await poster.wait_scored()
        done += len(batch)
        log.info("demo feed phase 1 (backfill): %d/%d events sent, simulated date %s",
                 done, total, batch[-1]["occurred_at"][:10])


def _weekly(events: Sequence[Event]) -> Iterator[list[Event]]:
    batch: list[Event] = []
    start: datetime | None = None
    for e in events:
        at = _parse_ts(e["occurred_at"])
        if batch and (len(batch) >= MAX_BATCH or (start is not None and at - start > timedelta(days=7))):
            yield batch
            batch, start = [], None
        if start is None:
            start = at
        batch.append(e)
    if batch:
        yield batch


async def _replay(poster: _Poster, story: Story, live_seconds: float,
                  log: logging.Logger) -> None:
    if poster.stop.is_set():
        return
    live = story.live
    span = story.anchor - story.live_start
    days = span.days or 1
    log.info("demo feed phase 2 (live): replaying %d days (%d events) in %.0f s, from %s",
             days, len(live), live_seconds, _day(story.live_start), extra={"demo_phase": 2})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    i, sent, next_report = 0, 0, 0.1
    while not poster.stop.is_set():
        elapsed = loop.time() - t0
        frac = min(elapsed / live_seconds, 1.0) if live_seconds > 0 else 1.0
        sim = story.live_start + span * frac
        j = i
        while j < len(live) and live[j][0] <= sim:
            j += 1
        for batch in _chunks([ev for _, ev in live[i:j]], MAX_BATCH):
            if poster.stop.is_set():
                return
            await poster.post(batch)
            sent += len(batch)
        i = j
        if frac >= next_report or frac >= 1.0:
            log.info("demo feed phase 2 (live): simulated %s (day %d of %d), %d/%d events sent",
                     _day(sim), min(int(frac * days) + 1, days), days, sent, len(live))
            next_report = frac + 0.1
        if frac >= 1.0 and i >= len(live):
            return
        await poster.sleep(TICK_SECONDS)


async def _trickle(poster: _Poster, story: Story, seed: int, log: logging.Logger) -> None:
    if poster.stop.is_set():
        return
    pool = list(story.active)
    log.info("demo feed phase 3 (trickle): %d active customers keep visiting in real time, "
             "one batch every %.0f s", len(pool), TRICKLE_SECONDS, extra={"demo_phase": 3})
    if not pool:
        await poster.stop.wait()
        return
    rng = random.Random(f"churnwatch-trickle-{seed}")
    queue: list[TrickleCustomer] = []
    n = batches = 0
    while not poster.stop.is_set():
        now = datetime.now(UTC).replace(microsecond=0)
        batch: list[Event] = []
        for _ in range(rng.randint(1, 3)):
            if not queue:
                queue = pool[:]
                rng.shuffle(queue)
            c = queue.pop()
            n += 1
            ticket = round(max(c.mean_ticket * rng.uniform(0.7, 1.3), 5.0), 2)
            base = {"customer_id": c.customer_id, "occurred_at": _fmt(now), "channel": "in_store"}
            if c.store_id:
                base["store_id"] = c.store_id
            batch.append({**base, "event_id": f"{story.run_tag}-live-{n:06d}-v", "type": "visit",
                          "service": rng.choice(("haircut", "colour", "treatment", "styling"))})
            batch.append({**base, "event_id": f"{story.run_tag}-live-{n:06d}-t",
                          "type": "transaction", "amount": ticket, "currency": c.currency,
                          "quantity": 1})
        await poster.post(batch)
        batches += 1
        if batches % 10 == 1:
            log.info("demo feed phase 3 (trickle): %s, %d events posted in total",
                     _fmt(now), poster.stats.events_posted)
        await poster.sleep(TRICKLE_SECONDS)


# --------------------------------------------------------------------------------------
# Process entry point
# --------------------------------------------------------------------------------------


def main(*, api_url: str, api_key: str | None, customers: int = 120, seed: int = 7) -> int:
    """Run the feed in this process until SIGTERM/SIGINT; 0 on a clean stop, 1 when the API
    refused the key."""
    if not logging.getLogger().handlers:
        from services.common.logs import setup_logging
        setup_logging("demo-feed")
    for noisy in ("httpx", "httpcore"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)

    async def runner() -> FeedStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not main thread / Windows
                with contextlib.suppress(ValueError):
                    signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        try:
            return await run_feed(api_url=api_url, api_key=api_key, stop=stop,
                                  customers=customers, seed=seed)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    stats = asyncio.run(runner())
    return 1 if stats.error else 0
