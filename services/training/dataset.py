"""From an NDJSON event history to point-in-time training snapshots.

A snapshot is (customer, observation date ``d``): its features are
:func:`services.scoring.features.compute_features` over the customer's events at or before
``d`` — the very function the scorer serves, so training and serving cannot disagree — and
its label is 1 ("churned") when the customer has no event at all in ``(d, d + horizon]``.
Observation dates are chosen so that ``d + horizon <= until``: every label is fully observed
from events the trainer is allowed to read, and nothing after ``d`` reaches its features.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import ValidationError

from services.common.events import epoch_ms, parse_json, validate_event
from services.common.profiles import Store
from services.common.timefmt import named_zone, utc_from_epoch_s
from services.scoring.activity import activity_from_event, at_shop
from services.scoring.closures import (
    Closures,
    StoreCalendar,
    calendar_closures,
    home_store,
    only_store,
)
from services.scoring.features import DAY_MS, FEATURE_NAMES, WINDOWS, Activity, compute_features
from services.scoring.summary import Summary
from services.training.exceptions import TrainingError
from services.training.progress import Progress

WARMUP_DAYS = 60          # history needed before the first observation date
MIN_STEP_DAYS = 14        # observation dates are 14..30 days apart
MAX_STEP_DAYS = 30
SHORT_STEP_DAYS = 7       # a short history is observed weekly...
MIN_WARMUP_DAYS = 14      # ...after as little as two weeks of history
ENOUGH_DATES = 8          # fewer dates than this: try the short-history schedule
MAX_DATES = 26            # at most this many observation dates (the most recent ones)
HISTORY_PAST_HORIZON_DAYS = 60  # any history at least the horizon plus this long trains
MAX_DORMANT_DAYS = max(WINDOWS)  # customers silent for longer are not snapshotted
MAX_INVALID_EXAMPLES = 20


def iso(ms: int) -> str:
    return utc_from_epoch_s(ms / 1000)


@dataclass(frozen=True)
class InvalidLine:
    line: int
    message: str


@dataclass
class EventLog:
    """The valid events at or before ``until``, as activities per customer (time-sorted)."""

    path: Path
    until_ms: int
    activities: dict[str, list[Activity]] = field(default_factory=dict)
    n_lines: int = 0
    n_valid: int = 0
    n_invalid: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)
    n_after_until: int = 0
    n_duplicates: int = 0

    @property
    def n_events(self) -> int:
        return sum(len(a) for a in self.activities.values())

    @property
    def n_customers(self) -> int:
        return len(self.activities)

    @property
    def first_ms(self) -> int:
        return min(a[0].ts for a in self.activities.values())

    @property
    def last_ms(self) -> int:
        return max(a[-1].ts for a in self.activities.values())


@dataclass(frozen=True)
class StoreBook:
    """The stores of a ``churnwatch train --stores`` file, as the scorer knows the stores on
    record: each one's time zone (``zones``: those not on UTC) and closed days."""

    path: Path
    names: frozenset[str]
    zones: dict[str, tzinfo]
    closures: dict[str, Closures]
    only: str | None  # the store of a customer whose events name none (only_store)

    def closures_of(self, store: str | None) -> Closures | None:
        """The closed days of a customer's store (the one their events named last, else the
        only store on record)."""
        home = home_store(store, None, self.only)
        return self.closures.get(home) if home else None

    def labels_known_until(self, until_ms: int, horizon_days: int) -> int:
        """The ``until`` to choose observation dates by: a date's label needs
        ``horizon_days`` of open days after it, all before ``until_ms``. Each store's last
        such date, and of those the lower median: a chain that closes together (a school's
        summer) ends its dates before the break, while one store's long renovation does not
        cut every store's dates short (at the dates its own customers' labels are not known
        yet, their rows are left out: :func:`build_snapshots`)."""
        horizon_ms = horizon_days * DAY_MS
        lasts = []
        for name in self.names:
            last = until_ms - horizon_ms
            closed = self.closures.get(name)
            if closed is not None:
                while last > 0 and closed.open_until(last, horizon_ms) > until_ms:
                    last -= DAY_MS
            lasts.append(last)
        lasts.sort()
        return (lasts[(len(lasts) - 1) // 2] if lasts else until_ms - horizon_ms) + horizon_ms

    def describe(self) -> dict[str, Any]:
        return {"file": str(self.path), "stores": len(self.names),
                "with_closures": len(self.closures), "with_time_zone": len(self.zones)}


def read_stores(path: Path) -> StoreBook:
    """A JSON file of stores: ``GET /v1/stores``'s answer, or each as ``PUT
    /v1/stores/{store_id}`` takes it with its ``store_id`` (a list of them; or an object of
    ``store_id`` to store), validated as the API validates them."""
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise TrainingError(f"cannot read stores file {path}: {exc}") from exc
    except ValueError as exc:
        raise TrainingError(f"stores file {path} is not JSON ({exc}); write a list of stores, "
                            'e.g. [{"store_id": "north", "timezone": "Europe/Berlin", '
                            '"closures": [{"first": "2026-07-01", "last": "2026-08-31"}]}]'
                            ) from None
    if isinstance(doc, dict) and isinstance(doc.get("stores"), list):
        items = doc["stores"]  # GET /v1/stores's answer
    elif isinstance(doc, dict):
        items = [{**v, "store_id": k} if isinstance(v, dict) else v for k, v in doc.items()]
    elif isinstance(doc, list):
        items = doc
    else:
        raise TrainingError(f"stores file {path} must hold a list of stores (or an object of "
                            "store_id to store), as PUT /v1/stores/{store_id} takes them")
    calendars: dict[str, StoreCalendar] = {}
    for n, item in enumerate(items, start=1):
        try:
            store = Store.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "store"
            raise TrainingError(f"stores file {path}, store {n}: {where}: {first['msg']}") from None
        if store.store_id in calendars:
            raise TrainingError(f"stores file {path}: store {store.store_id!r} is given twice")
        calendars[store.store_id] = StoreCalendar(
            store.timezone, tuple((c.first, c.last) for c in store.closures))
    return StoreBook(path=path, names=frozenset(calendars),
                     zones={s: z for s, cal in calendars.items()
                            if (z := named_zone(cal.timezone)) is not None},
                     closures={s: c for s, cal in calendars.items()
                               if (c := calendar_closures(cal)) is not None},
                     only=only_store(calendars))


def read_events(path: Path, until: datetime, *, log: Callable[[str], None] = lambda s: None,
                timezone: str | None = None, stores: StoreBook | None = None) -> EventLog:
    """Read NDJSON line by line, validating each line as the ingest edge does. Invalid lines
    are counted and reported with their line numbers; the first copy of an ``event_id`` wins.
    ``timezone``: events written at offset 0 are counted on that IANA zone's days
    (:func:`~services.scoring.activity.at_shop`, as the scorer does for a store's events).
    ``stores``: those of a store on record, on its own zone instead; those naming no store,
    on the zone of the store the customer's events named last before them (else of the only
    store on record), as the scorer counts them."""
    zone: tzinfo | None = None
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TrainingError(f"--timezone {timezone!r} is not an IANA time zone; write e.g. "
                                "America/New_York, Europe/Berlin or UTC") from None
        zone = named_zone(timezone)  # (None for UTC itself)
        log(f"events written at offset 0 are counted on the days of {timezone}")
    if until.tzinfo is None:
        raise TrainingError(f"--until {until.isoformat()} has no UTC offset; write e.g. "
                            f"{until.isoformat()}Z or {until.isoformat()}+01:00")
    if not path.is_file():
        raise TrainingError(f"events file {path} does not exist or is not a file; pass the NDJSON "
                            "history (one event per line) with --events")
    out = EventLog(path=path, until_ms=epoch_ms(until))
    seen: set[str] = set()
    try:
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                out.n_lines = lineno
                if not raw.strip():
                    continue
                message = _check_line(raw, lineno, out, seen, until, zone, stores)
                if message is not None:
                    out.n_invalid += 1
                    if len(out.invalid) < MAX_INVALID_EXAMPLES:
                        out.invalid.append(InvalidLine(lineno, message))
                        log(f"{path}:{lineno}: skipped, {message}")
    except OSError as exc:
        raise TrainingError(f"cannot read events file {path}: {exc}") from exc
    if out.n_invalid > len(out.invalid):
        log(f"{path}: {out.n_invalid - len(out.invalid)} more invalid lines skipped")
    if out.n_valid == 0:
        first = f"; line {out.invalid[0].line}: {out.invalid[0].message}" if out.invalid else ""
        raise TrainingError(f"no valid event in {path} ({out.n_lines} lines, {out.n_invalid} "
                            f"invalid{first}); each line must be one event object as in schemas/")
    if not out.activities:
        raise TrainingError(f"all {out.n_valid} valid events in {path} are after --until "
                            f"{until.isoformat()}; choose a later --until")
    for acts in out.activities.values():
        acts.sort(key=lambda a: (a.ts, a.event_id))
        if stores is not None:
            _at_home(acts, stores, zone)
    return out


def _at_home(acts: list[Activity], stores: StoreBook, zone: tzinfo | None) -> None:
    """Put a customer's events that name no store (left as written by :func:`_check_line`)
    on the clock of the store their events named last before them, else of the only store
    on record, else ``zone`` (``--timezone``)."""
    home: str | None = None
    for i, a in enumerate(acts):
        if a.store_id:
            home = a.store_id
            continue
        store = home_store(home, None, stores.only)
        acts[i] = at_shop(a, stores.zones.get(store) if store in stores.names else zone)


def _check_line(raw: bytes, lineno: int, out: EventLog, seen: set[str], until: datetime,
                zone: tzinfo | None = None, stores: StoreBook | None = None) -> str | None:
    try:
        obj = parse_json(raw)
    except (ValueError, RecursionError) as exc:
        return f"not valid JSON ({str(exc)[:120]})"
    event, errors = validate_event(obj, lineno)
    if event is None:
        return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
    out.n_valid += 1
    if event.event_id in seen:
        out.n_duplicates += 1
        return None
    seen.add(event.event_id)
    if event.occurred_at > until:
        out.n_after_until += 1
        return None
    act = activity_from_event(event)
    if stores is None:
        act = at_shop(act, zone)
    elif act.store_id:  # a store on record on its own zone (none: UTC); others --timezone
        act = at_shop(act, stores.zones.get(act.store_id) if act.store_id in stores.names
                      else zone)
    # (an event naming no store, with stores: on its customer's store's clock, _at_home)
    out.activities.setdefault(event.customer_id, []).append(act)
    return None


def history_advice(history_days: float) -> str:
    """What would train on a history this many days long: the longest horizon it allows (a
    history of the horizon plus :data:`HISTORY_PAST_HORIZON_DAYS`), else a longer one."""
    longest = int(history_days) - HISTORY_PAST_HORIZON_DAYS
    if longest >= 1:
        return f"use --horizon-days {longest} or less, a later --until or a longer history"
    return "supply a longer history or a later --until"


def observation_dates(first_ms: int, until_ms: int, horizon_days: int, *,
                      warmup_days: int = WARMUP_DAYS, max_dates: int = MAX_DATES) -> list[int]:
    """Observation dates (UTC midnights, ascending) at least ``warmup_days`` after the first
    event and with ``date + horizon_days <= until``, 14..30 days apart, at most ``max_dates``.

    A short history (fewer than :data:`ENOUGH_DATES` such dates) is observed weekly and with a
    shorter warm-up (down to :data:`MIN_WARMUP_DAYS`): any history at least ``horizon +``
    :data:`HISTORY_PAST_HORIZON_DAYS` days long gives enough dates to train on."""
    if horizon_days < 1:
        raise TrainingError(f"--horizon-days must be a positive number of days (got {horizon_days})")
    best: list[int] = []
    for warmup, min_step in ((warmup_days, MIN_STEP_DAYS), (min(warmup_days, 30), SHORT_STEP_DAYS),
                             (min(warmup_days, MIN_WARMUP_DAYS), SHORT_STEP_DAYS)):
        dates = _dates(first_ms, until_ms, horizon_days, warmup, min_step, max_dates)
        if len(dates) > len(best):
            best = dates
        if len(best) >= ENOUGH_DATES:
            break
    if not best:
        have = (until_ms - first_ms) / DAY_MS
        raise TrainingError(
            f"horizon too long for the data range: the events cover {have:.0f} days "
            f"({iso(first_ms)} .. {iso(until_ms)}), and a {horizon_days}-day horizon needs a "
            f"history of at least {horizon_days + HISTORY_PAST_HORIZON_DAYS} days (each "
            f"observation date needs the {horizon_days} days after it to see who came back); "
            + history_advice(have))
    return best


def _dates(first_ms: int, until_ms: int, horizon_days: int, warmup_days: int, min_step: int,
           max_dates: int) -> list[int]:
    last = (until_ms - horizon_days * DAY_MS) // DAY_MS * DAY_MS
    earliest = first_ms + warmup_days * DAY_MS
    if last < earliest:
        return []
    span_days = (last - earliest) / DAY_MS
    step = min_step
    if span_days / step + 1 > max_dates:
        step = min(MAX_STEP_DAYS, math.ceil(span_days / (max_dates - 1)))
    dates = [last - k * step * DAY_MS for k in range(max_dates)]
    return sorted(d for d in dates if d >= earliest)


@dataclass
class Snapshots:
    """Rows in :data:`FEATURE_NAMES` column order, with their labels and observation dates."""

    X: np.ndarray
    y: np.ndarray
    obs_ms: np.ndarray
    customers: list[str]
    dates: list[int]
    horizon_days: int

    def __len__(self) -> int:
        return len(self.y)

    def rows_at(self, dates: Sequence[int]) -> np.ndarray:
        """Boolean mask of the rows observed at one of ``dates``."""
        return np.isin(self.obs_ms, np.asarray(dates, dtype=np.int64))


def snapshot(activities: Sequence[Activity], obs_ms: int) -> dict[str, float] | None:
    """Features of one customer at ``obs_ms`` from events at or before it; None when the
    customer had no event yet or has been silent longer than the longest feature window."""
    ts = [a.ts for a in activities]
    i = bisect_right(ts, obs_ms)
    if i == 0 or obs_ms - ts[i - 1] > MAX_DORMANT_DAYS * DAY_MS:
        return None
    return compute_features(activities[:i], now_ms=obs_ms)


def churned(activities: Sequence[Activity], obs_ms: int, horizon_days: int) -> bool:
    """True when no event of the customer falls in ``(obs_ms, obs_ms + horizon]``."""
    end = obs_ms + horizon_days * DAY_MS
    return not any(obs_ms < a.ts <= end for a in activities)


PARALLEL_MIN_EVENTS = 200_000  # below this, forking workers costs more than it saves
_PROGRESS_EVERY = 500          # customers between progress updates


def snapshot_workers() -> int:
    """Worker processes for :func:`build_snapshots`: ``CHURNWATCH_TRAIN_WORKERS`` if set,
    else one per CPU this process may use (at most 4), 1 where ``fork`` is unavailable."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    env = os.environ.get("CHURNWATCH_TRAIN_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise TrainingError(f"CHURNWATCH_TRAIN_WORKERS={env!r} is not a whole number") from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def build_snapshots(activities: Mapping[str, Sequence[Activity]], dates: Sequence[int],
                    horizon_days: int, *, until_ms: int | None = None,
                    progress: TextIO | None = None, workers: int | None = None,
                    stores: StoreBook | None = None) -> Snapshots:
    """Point-in-time snapshots of every customer at every observation date.

    ``stores``: the closed days of each customer's store (the one their events named last
    by the date, else the only store on record) do not count, as the scorer does not count
    them: the features see the open days since the last activity, and "churned" means no
    event within ``horizon_days`` of open days. A row whose horizon, so lengthened, ends
    after ``until_ms`` is left out (its label is not observed yet).

    ``activities`` must be time-sorted per customer (as :func:`read_events` returns them).
    Customers are independent, so a large history is split into contiguous runs of the sorted
    customer ids, built by ``workers`` forked processes (default :func:`snapshot_workers`) and
    concatenated in order: the rows are exactly those one process builds.
    """
    dates = sorted(dates)
    horizon_ms = horizon_days * DAY_MS
    if until_ms is not None and dates and dates[-1] + horizon_ms > until_ms:
        raise TrainingError(f"observation date {iso(dates[-1])} + {horizon_days} days is after "
                            f"{iso(until_ms)}: its label would not be fully observed")
    cids = sorted(activities)
    n_events = sum(len(a) for a in activities.values())
    if workers is None:
        workers = snapshot_workers() if n_events >= PARALLEL_MIN_EVENTS else 1
    workers = max(1, min(workers, len(cids)))
    bar = Progress("point-in-time snapshots", len(cids), stream=progress)
    if workers == 1:
        parts = [_snapshot_rows(activities, cids, dates, horizon_ms, bar.advance, stores,
                                until_ms)]
    else:
        parts = _parallel_rows(activities, cids, dates, horizon_ms, workers, bar, stores,
                               until_ms)
    bar.close()
    X = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, len(FEATURE_NAMES)))
    return Snapshots(X=X.reshape(len(X), len(FEATURE_NAMES)),
                     y=np.concatenate([p[1] for p in parts]).astype(np.int8),
                     obs_ms=np.concatenate([p[2] for p in parts]).astype(np.int64),
                     customers=[c for p in parts for c in p[3]], dates=list(dates),
                     horizon_days=horizon_days)


_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]


def _snapshot_rows(activities: Mapping[str, Sequence[Activity]], cids: Sequence[str],
                   dates: Sequence[int], horizon_ms: int, advance: Callable[[int], None],
                   stores: StoreBook | None = None, until_ms: int | None = None) -> _Rows:
    """The snapshots of ``cids`` (in that order) at ``dates``, as arrays."""
    rows: list[list[float]] = []
    labels: list[int] = []
    obs: list[int] = []
    customers: list[str] = []
    dormant_ms = MAX_DORMANT_DAYS * DAY_MS
    for n, cid in enumerate(cids):
        if n % _PROGRESS_EVERY == 0:
            advance(min(_PROGRESS_EVERY, len(cids) - n))
        acts = activities[cid]
        ts = [a.ts for a in acts]
        # One summary per customer, folded in time order up to each date: the snapshot at d is
        # the summary the streaming scorer holds after the same events (folding is order
        # independent), and the cost is one fold per event, not one per event and date.
        summary, folded = Summary.empty(), 0
        store: str | None = None  # the store their events named last (stores only)
        for d in dates:
            i = bisect_right(ts, d)
            if i == 0:
                continue
            closed = None
            if stores is not None:
                for a in acts[folded:i]:
                    store = a.store_id or store
                closed = stores.closures_of(store)
            now = d if closed is None else closed.open_now(ts[i - 1], d)
            if now - ts[i - 1] > dormant_ms:
                continue
            end = d + horizon_ms if closed is None else closed.open_until(d, horizon_ms)
            if closed is not None and until_ms is not None and end > until_ms:
                continue  # the closed days push its label past what is known
            for a in acts[folded:i]:
                summary.fold(a)
            folded = i
            f = summary.features(now)
            rows.append([f[k] for k in FEATURE_NAMES])
            labels.append(int(i == len(ts) or ts[i] > end))
            obs.append(d)
            customers.append(cid)
    X = np.asarray(rows, dtype=float).reshape(len(rows), len(FEATURE_NAMES))
    return X, np.asarray(labels, dtype=np.int8), np.asarray(obs, dtype=np.int64), customers


# What forked workers read: set by the parent just before it forks, cleared after.
_SHARED: dict[str, Any] = {}


def _worker(lo: int, hi: int) -> _Rows:
    sh = _SHARED
    counter = sh["counter"]

    def advance(k: int) -> None:
        with counter.get_lock():
            counter.value += k

    return _snapshot_rows(sh["activities"], sh["cids"][lo:hi], sh["dates"], sh["horizon_ms"],
                          advance, sh["stores"], sh["until_ms"])


def _parallel_rows(activities: Mapping[str, Sequence[Activity]], cids: list[str],
                   dates: Sequence[int], horizon_ms: int, workers: int, bar: Progress,
                   stores: StoreBook | None = None, until_ms: int | None = None
                   ) -> list[_Rows]:
    """Contiguous runs of ``cids`` with about the same number of events each, one per forked
    worker (they inherit ``activities`` instead of receiving it pickled); results in order."""
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    sizes = np.cumsum([len(activities[c]) for c in cids])
    total = int(sizes[-1])
    # Several runs per worker keep both busy to the end (and the progress bar moving).
    n_runs = workers * 4
    bounds = [0] + [int(np.searchsorted(sizes, total * k / n_runs)) for k in range(1, n_runs)]
    bounds.append(len(cids))
    spans = [(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]
    _SHARED.update(activities=activities, cids=cids, dates=list(dates), horizon_ms=horizon_ms,
                   counter=counter, stores=stores, until_ms=until_ms)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_worker, lo, hi) for lo, hi in spans]
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.25)
                bar.advance(counter.value - bar.done)
            return [f.result() for f in futures]
    finally:
        _SHARED.clear()
