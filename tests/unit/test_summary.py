"""The customer summary (services/scoring/summary.py): pure, no servers.

Properties: any arrival order (with duplicates inside the id memory) gives the same summary
and the same features; schema-3 features equal schema 2's wherever day granularity does not
matter; the id memory; the codec; the size bounds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import zlib
from collections.abc import Iterable
from statistics import median

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scoring.features import (
    BGNBD_WINDOW_DAYS,
    CAP_DAYS,
    DAY_MS,
    DEFAULT_CADENCE_DAYS,
    FEATURE_NAMES,
    Activity,
    _ratio,
    compute_features,
)
from services.scoring.summary import (
    DAILY_DAYS,
    ID_MEMORY_DAYS,
    RETAIN_DAYS,
    Summary,
    summarize,
)

BASE = 20_454 * DAY_MS  # 2026-01-01T00:00Z
MONEY = {"spend_30", "spend_90", "spend_365", "avg_ticket_90", "avg_ticket_365", "spend_trend",
         "ticket_trend"}


def _days(ms: float) -> float:
    return ms / DAY_MS


# The schema-2 computation, verbatim (services/scoring/features.py before the summary), as the
# reference for the parity test.
def _old_compute_features(activities: Iterable[Activity], now_ms: int,
                          first_seen_ms: int | None = None) -> dict[str, float]:
    """Features of a customer at ``now_ms`` from their activity (any order, duplicates by
    ``event_id`` ignored). Every value is a finite float; names are :data:`FEATURE_NAMES`."""
    seen: set[str] = set()
    acts: list[Activity] = []
    for a in activities:
        if a.ts <= now_ms and a.event_id not in seen:
            seen.add(a.event_id)
            acts.append(a)
    acts.sort(key=lambda a: (a.ts, a.event_id))

    first = min([a.ts for a in acts[:1]] + ([first_seen_ms] if first_seen_ms is not None
                                            and first_seen_ms <= now_ms else []), default=now_ms)
    tenure = _days(now_ms - first)

    def since(ts: int | None) -> float:
        return min(_days(now_ms - ts), CAP_DAYS) if ts is not None else min(tenure, CAP_DAYS)

    last_visit = last_tx = last_activity = last_complaint = None
    active_days: list[int] = []
    visits_90 = tx_90 = tx_365 = 0
    spend = {30: 0.0, 90: 0.0, 365: 0.0}
    ticket_n = {90: 0, 365: 0}
    ticket_sum = {90: 0.0, 365: 0.0}
    refunds_90 = 0
    complaints_90 = complaints_365 = 0
    complaint_state: dict[str, tuple[str, str]] = {}  # ref -> (status, severity)
    online = total_channel = 0

    for a in acts:
        age = _days(now_ms - a.ts)
        if a.kind == "complaint":
            last_complaint = a.ts
            if age <= 365:
                complaints_365 += a.status != "resolved"
                if age <= 90:
                    complaints_90 += a.status != "resolved"
            ref = a.complaint_ref or a.event_id
            prev = complaint_state.get(ref)
            sev = a.severity or (prev[1] if prev else "medium")
            complaint_state[ref] = (a.status or "open", sev)
            continue
        last_activity = a.ts
        day = a.ts // DAY_MS
        if not active_days or active_days[-1] != day:
            active_days.append(day)
        if a.channel is not None and age <= 365:
            total_channel += 1
            online += a.channel in ("online", "app", "delivery")
        if a.kind == "visit":
            last_visit = a.ts
            visits_90 += age <= 90
        elif a.kind == "transaction":
            last_tx = a.ts
            amount = a.amount or 0.0
            if age <= 365:
                tx_365 += 1
                if amount < 0:
                    refunds_90 += age <= 90
                for w in (30, 90, 365):
                    if age <= w:
                        spend[w] += amount
                if amount > 0:
                    for w in (90, 365):
                        if age <= w:
                            ticket_n[w] += 1
                            ticket_sum[w] += amount
                tx_90 += age <= 90

    now_day = now_ms // DAY_MS
    active = {w: sum(1 for d in active_days if now_day - d < w) for w in (30, 90, 365)}
    gaps = [float(b - a) for a, b in zip(active_days, active_days[1:], strict=False)]
    recent_gaps = gaps[-12:]
    has_cadence = len(recent_gaps) >= 1
    cadence = float(median(recent_gaps)) if has_cadence else DEFAULT_CADENCE_DAYS
    cadence = max(cadence, 1.0)
    spread = float(median([abs(g - median(recent_gaps)) for g in recent_gaps])) \
        if len(recent_gaps) >= 2 else 0.0  # the median absolute deviation
    since_activity = since(last_activity)
    overdue = since_activity / cadence

    avg_90 = ticket_sum[90] / ticket_n[90] if ticket_n[90] else 0.0
    avg_365 = ticket_sum[365] / ticket_n[365] if ticket_n[365] else 0.0
    # Trends compare the last 90 days with the customer's own yearly baseline; a customer
    # known for less than a year is compared over the span we know them.
    span = max(min(tenure, 365.0), 1.0)
    base_rate_spend = spend[365] / span * min(90.0, span) if spend[365] > 0 else 0.0
    spend_trend = _ratio(spend[90], base_rate_spend)
    ticket_trend = _ratio(avg_90, avg_365) if avg_365 > 0 and ticket_n[90] else 1.0
    base_rate_days = active[365] / span * min(90.0, span)
    frequency_trend = _ratio(active[90], base_rate_days)

    # BG/NBD inputs over the last year: the first active day is the "birth" when it is inside
    # the window (and is no repeat), otherwise the window start is.
    born_inside = bool(active_days) and now_day - active_days[0] < BGNBD_WINDOW_DAYS
    bg_T = min(tenure, float(BGNBD_WINDOW_DAYS))
    bg_x = max(active[365] - (1 if born_inside else 0), 0)
    bg_tx = min(max(bg_T - since_activity, 0.0), bg_T) if bg_x > 0 else 0.0

    open_refs = [sev for status, sev in complaint_state.values() if status != "resolved"]

    out = {
        "tenure_days": min(tenure, 3650.0),
        "days_since_last_activity": since_activity,
        "days_since_last_visit": since(last_visit),
        "days_since_last_transaction": since(last_tx),
        "active_days_30": float(active[30]),
        "active_days_90": float(active[90]),
        "active_days_365": float(active[365]),
        "visits_90": float(visits_90),
        "transactions_90": float(tx_90),
        "transactions_365": float(tx_365),
        "spend_30": spend[30],
        "spend_90": spend[90],
        "spend_365": spend[365],
        "avg_ticket_90": avg_90,
        "avg_ticket_365": avg_365,
        "cadence_median_days": cadence,
        "cadence_spread_days": spread,
        "has_cadence": 1.0 if has_cadence else 0.0,
        "overdue_ratio": min(overdue, 50.0),
        "spend_trend": spend_trend,
        "ticket_trend": ticket_trend,
        "frequency_trend": frequency_trend,
        "complaints_90": float(complaints_90),
        "complaints_365": float(complaints_365),
        "open_complaints": float(len(open_refs)),
        "open_high_complaints": float(sum(1 for s in open_refs if s == "high")),
        "days_since_last_complaint": since(last_complaint) if last_complaint is not None else CAP_DAYS,
        "refunds_90": float(refunds_90),
        "online_share_365": online / total_channel if total_channel else 0.0,
        "bgnbd_x": float(bg_x),
        "bgnbd_t_x": bg_tx,
        "bgnbd_T": bg_T,
    }
    return {k: (v if math.isfinite(v) else 0.0) for k, v in out.items()}



# ---------------------------------------------------------------------------- generators
_MS = st.one_of(st.sampled_from([0, 1, DAY_MS // 2, DAY_MS - 1]), st.integers(0, DAY_MS - 1))
_CHANNEL = st.sampled_from([None, None, "in_store", "online", "app", "delivery", "phone"])
# UTC offsets in minutes: a customer's events carry one, two (summer time) or, rarely, several
# (an online order placed from another country); their days are each event's own local day.
_UTC = st.just(0)
_ZONES = st.sampled_from([0, -300, -240, 60, 120, 330, 540, 780, -720, 840])


@st.composite
def _activity(draw: st.DrawFn, i: int, span_days: int, tz: st.SearchStrategy[int] = _UTC
              ) -> Activity:
    ts = BASE + draw(st.integers(0, span_days)) * DAY_MS + draw(_MS)
    offset = draw(tz)
    kind = draw(st.sampled_from(["visit", "transaction", "transaction", "complaint"]))
    eid = f"e{i:04d}"
    if kind == "complaint":
        return Activity("complaint", ts, eid,
                        severity=draw(st.sampled_from([None, "low", "medium", "high"])),
                        complaint_ref=draw(st.sampled_from([None, "K1", "K2", "K3"])),
                        status=draw(st.sampled_from([None, "open", "resolved", "resolved"])),
                        channel=draw(_CHANNEL), tz_minutes=offset)
    amount = None
    if kind == "transaction":
        amount = draw(st.one_of(st.none(), st.just(0.0),
                                st.integers(-5_000, 20_000).map(lambda c: c / 100)))
    return Activity(kind, ts, eid, amount=amount, store_id=draw(st.sampled_from([None, "s1"])),
                    channel=draw(_CHANNEL), tz_minutes=offset)


@st.composite
def _history(draw: st.DrawFn, span_days: int, max_size: int = 40, zoned: bool = False
             ) -> list[Activity]:
    """``zoned``: events at UTC offsets (one or two for most histories, any of _ZONES for
    some); else all at UTC, as schema 2 (``_old_compute_features``) counted days."""
    n = draw(st.integers(1, max_size))
    tz: st.SearchStrategy[int] = _UTC
    if zoned:
        home = draw(_ZONES)
        tz = draw(st.sampled_from([st.just(home), st.sampled_from([home, home + 60]), _ZONES]))
    return [draw(_activity(i, span_days, tz)) for i in range(n)]


def _by_time(acts: Iterable[Activity]) -> list[Activity]:
    return sorted(acts, key=lambda a: (a.ts, a.event_id))


def _nows(acts: list[Activity]) -> list[int]:
    first, last = min(a.ts for a in acts), max(a.ts for a in acts)
    return [last, last + 1, last + 17 * DAY_MS + 5, last + 200 * DAY_MS, last - 1,
            last - 3 * DAY_MS, (first + last) // 2, first, first - 1]


# ---------------------------------------------------------------------------- 1. any order
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), acts=_history(span_days=520, zoned=True))
def test_any_order_with_duplicates_gives_the_same_summary(data: st.DataObject,
                                                           acts: list[Activity]) -> None:
    reference = summarize(_by_time(acts))
    newest = reference.newest_day
    assert newest is not None
    # Duplicates of events inside the id memory of the final newest day: those are always
    # recognised, whatever the order (older ones cannot be: see test 3).
    pool = [a for a in acts if a.day >= newest - ID_MEMORY_DAYS]
    dups = data.draw(st.lists(st.sampled_from(pool), max_size=8)) if pool else []
    stream = data.draw(st.permutations(acts + dups))
    s = Summary.empty()
    for i, a in enumerate(stream):
        s.fold(a)
        if i % 5 == 2:  # stored and read back between events, as the scorer will
            s = Summary.decode(s.encode())
    assert s.encode() == reference.encode()
    assert s.newest_event_id() == reference.newest_event_id() == _by_time(acts)[-1].event_id
    assert s.recent() == _by_time(acts)[-8:]
    assert s.first_ts == min(a.ts for a in acts) and s.last_ts == max(a.ts for a in acts)
    for now in _nows(acts):
        assert s.features(now) == reference.features(now)
        assert s.features(now, BASE - 3 * DAY_MS) == reference.features(now, BASE - 3 * DAY_MS)


# ---------------------------------------------------------------------------- 2. parity
def _off_the_window_edges(acts: list[Activity], now: int) -> list[Activity]:
    """Schema 2 counted an event in a w-day window by ms (now - ts <= w days), schema 3 by day
    (now_day - day < w): they differ only on day now_day - w. Keep nothing on those days."""
    edges = {now // DAY_MS - w for w in (30, 90, 180, 365)}
    return [a for a in acts if a.ts // DAY_MS not in edges]


def _assert_parity(new: dict[str, float], old: dict[str, float]) -> None:
    assert list(new) == list(FEATURE_NAMES) == list(old)
    for name in FEATURE_NAMES:
        if name in MONEY:
            # integer thousandths summed exactly vs floats summed in time order
            assert math.isclose(new[name], old[name], rel_tol=1e-12, abs_tol=1e-9), name
        else:
            assert new[name] == old[name], name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_history(span_days=DAILY_DAYS - 1, max_size=60), after=st.integers(0, 400 * DAY_MS),
       first_seen=st.one_of(st.none(), st.integers(-30 * DAY_MS, 100 * DAY_MS)))
def test_features_equal_schema_2_inside_the_daily_span(acts: list[Activity], after: int,
                                                         first_seen: int | None) -> None:
    now = max(a.ts for a in acts) + after
    acts = _off_the_window_edges(acts, now)
    seen = None if first_seen is None else BASE + first_seen
    _assert_parity(compute_features(acts, now, seen), _old_compute_features(acts, now, seen))
    _assert_parity(summarize(acts).features(now, seen), _old_compute_features(acts, now, seen))


def test_the_window_edge_is_by_day_now() -> None:
    """The one documented difference: day now_day - 30 later in the day than now."""
    now = BASE + 100 * DAY_MS + DAY_MS // 2
    edge = Activity("transaction", now - 30 * DAY_MS + 1000, "edge", amount=10.0)
    inside = Activity("transaction", now - 29 * DAY_MS, "in", amount=5.0)
    old = _old_compute_features([edge, inside], now)
    new = compute_features([edge, inside], now)
    assert old["spend_30"] == 15.0 and new["spend_30"] == 5.0
    assert old["active_days_30"] == new["active_days_30"] == 1.0  # active days: always by day


def test_amounts_are_summed_exactly() -> None:
    acts = [Activity("transaction", BASE + i * 1000, f"t{i}", amount=0.1) for i in range(10)]
    assert compute_features(acts, BASE + DAY_MS)["spend_30"] == 1.0
    assert sum([0.1] * 10) != 1.0  # what float sums gave


def test_weeks_count_in_the_year_by_their_first_day() -> None:
    newest = BASE + 700 * DAY_MS
    acts = [Activity("visit", newest, "now")]
    day = newest // DAY_MS - 360  # weekly; its week starts at most 6 days earlier
    acts.append(Activity("transaction", day * DAY_MS, "old", amount=20.0))
    f = compute_features(acts, newest)
    starts_inside = newest // DAY_MS - 7 * (day // 7) < 365
    assert f["transactions_365"] == 1.0 and f["spend_365"] == 20.0 and starts_inside
    assert f["active_days_365"] == 2.0  # exact by day, from the bitmap
    late = day * DAY_MS - 8 * DAY_MS  # a week whose first day is 366+ days back
    g = compute_features([*acts, Activity("transaction", late, "older", amount=7.0)], newest)
    assert g["spend_365"] == 20.0 and g["active_days_365"] == 2.0


def test_point_in_time_read_sees_only_the_past() -> None:
    acts = [Activity("visit", BASE + d * DAY_MS + 3_600_000, f"v{d}") for d in range(0, 300, 10)]
    acts += [Activity("transaction", BASE + d * DAY_MS + 7_200_000, f"t{d}", amount=30.0)
             for d in range(0, 300, 20)]
    acts.append(Activity("complaint", BASE + 295 * DAY_MS, "c1", severity="high", status="open"))
    s = summarize(acts)
    for d in (295, 250, 200):
        now = BASE + d * DAY_MS + 12 * 3_600_000
        pit, exact = s.features(now), compute_features(acts, now)
        # Recency comes from the raw events and then from the day buckets (noon of the day).
        assert abs(pit["days_since_last_visit"] - exact["days_since_last_visit"]) <= 0.5
        for name in ("active_days_30", "active_days_90", "visits_90", "transactions_90",
                     "spend_90", "spend_30", "cadence_median_days", "open_complaints",
                     "complaints_90"):
            assert pit[name] == exact[name], (d, name)


def test_complaint_refs_keep_state_and_severity_fallback() -> None:
    c = [Activity("complaint", BASE, "c1", severity="high", complaint_ref="K", status="open"),
         Activity("complaint", BASE + DAY_MS, "c2", complaint_ref="K", status="open"),
         Activity("complaint", BASE + 2 * DAY_MS, "c3", complaint_ref="K", status="resolved")]
    for order in (c, c[::-1], [c[1], c[2], c[0]]):
        s = summarize(order)
        assert s.features(BASE + DAY_MS + 1)["open_high_complaints"] == 1.0  # falls back to high
        assert s.features(BASE + 3 * DAY_MS)["open_complaints"] == 0.0
    # a ref resolved more than RETAIN_DAYS ago shrinks to one entry, and a late older "open"
    # event of it does not re-open it
    later = Activity("visit", BASE + (RETAIN_DAYS + 10) * DAY_MS, "v")
    a = summarize([*c, later])
    b = summarize([later, c[2], c[0], c[1]])
    assert a.encode() == b.encode() and a.features(later.ts)["open_complaints"] == 0.0
    assert len(a.encode()) < len(summarize(c).encode()) + 60


# ---------------------------------------------------------------------------- 3. id memory
def test_a_duplicate_inside_the_memory_changes_nothing() -> None:
    acts = [Activity("transaction", BASE + d * DAY_MS, f"t{d}", amount=10.0) for d in range(60)]
    s = summarize(acts)
    before = s.encode()
    dup = acts[60 - ID_MEMORY_DAYS]  # exactly at the horizon: remembered
    assert s.knows(dup.event_id) and not s.beyond_memory(dup)
    assert s.fold(dup) is False and s.encode() == before
    assert s.fold(acts[-1]) is False and s.encode() == before


def test_a_duplicate_beyond_the_memory_is_counted_again() -> None:
    acts = [Activity("transaction", BASE + d * DAY_MS, f"t{d}", amount=10.0) for d in range(60)]
    s = summarize(acts)
    old = acts[59 - ID_MEMORY_DAYS - 1]  # one day past the horizon
    assert not s.knows(old.event_id) and s.beyond_memory(old)
    spend = s.features(acts[-1].ts)["spend_90"]
    assert s.fold(old) is True  # re-posted more than 35 days behind: counted again
    assert s.features(acts[-1].ts)["spend_90"] == spend + 10.0
    # the memory is by event time, at least 30 days, whatever the arrival order
    t = summarize(reversed(acts))
    assert {a.event_id for a in acts if t.knows(a.event_id)} == \
        {f"t{d}" for d in range(59 - ID_MEMORY_DAYS, 60)}
    assert not Summary.empty().beyond_memory(old)


def test_the_raw_events_kept_also_catch_old_duplicates() -> None:
    a = Activity("visit", BASE, "only")
    s = summarize([a, Activity("visit", BASE + 100 * DAY_MS, "later")])
    assert not s.beyond_memory(a) and s.knows("only") and s.fold(a) is False


# ---------------------------------------------------------------------------- 4. codec
@settings(max_examples=100, deadline=None)
@given(acts=_history(span_days=800, max_size=30, zoned=True))
def test_encode_decode_round_trip(acts: list[Activity]) -> None:
    s = summarize(acts)
    blob = s.encode()
    t = Summary.decode(blob)
    assert t.encode() == blob and t == s
    assert t.recent() == s.recent() and t.first_ts == s.first_ts and t.last_ts == s.last_ts
    now = max(a.ts for a in acts)
    assert t.features(now) == s.features(now)
    assert Summary.decode(Summary.empty().encode()) == Summary.empty()


@st.composite
def _stream(draw: st.DrawFn) -> list[Activity]:
    """A history as the scorer meets it: mostly several events a day (folds into day N, the
    path that leaves the bucket blocks encoded), some days apart, some late, some repeated."""
    acts = draw(_history(span_days=draw(st.sampled_from([0, 2, 120, 500])), max_size=30,
                         zoned=True))
    order = draw(st.permutations(acts))
    return order + draw(st.lists(st.sampled_from(acts), max_size=5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_stream(), data=st.data())
def test_the_scorers_step_gives_what_folding_at_once_gives(acts: list[Activity],
                                                          data: st.DataObject) -> None:
    """Decode, fold one event, read the features (at the event's time or another), encode —
    as the scorer does for every event — ends in the same summary, byte for byte, as folding
    every event into one summary; and every read of a decoded summary (its blocks still
    encoded) equals the read of the summary folded at once."""
    blob = Summary.empty().encode()
    for a in acts:
        s = Summary.decode(blob)
        s.fold(a)
        assert s.last_ts is not None
        at = data.draw(st.sampled_from([a.ts, s.last_ts, s.last_ts + 3 * DAY_MS, a.ts - DAY_MS]))
        s.features(at)
        blob = s.encode()
    whole = summarize(acts)
    assert blob == whole.encode()
    assert whole.newest_day is not None  # the sums kept at N (moved by same-day folds), afresh
    assert whole._sums_at_n() == whole._window_sums(whole.newest_day)
    for now in _nows(acts):
        lazy = Summary.decode(blob)
        assert lazy.features(now, BASE - DAY_MS) == whole.features(now, BASE - DAY_MS), now
        assert Summary.decode(blob).last_at_or_before(now) == whole.last_at_or_before(now)
        assert Summary.decode(blob).active_days(now) == whole.active_days(now)
    assert Summary.decode(blob).daily() == whole.daily()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_history(span_days=800, max_size=40, zoned=True), lag=st.integers(-400, 120))
def test_the_window_sums_are_the_buckets_inside_each_window(acts: list[Activity],
                                                            lag: int) -> None:
    """The window sums, by their slices (and the weeks they skip as never filled), equal the
    buckets counted one by one: the daily buckets of the days inside the window, the weekly
    buckets whose first day is inside; and no weekly bucket newer than the daily span's
    oldest week holds anything."""
    from services.scoring import summary as m

    s = summarize(acts)
    n = s.newest_day
    if n is None:
        return
    encoded = Summary.decode(s.encode())  # its sums come from the blocks as written
    s._full()
    nw = n // 7
    for j in range(nw - (n - m.DAILY_DAYS) // 7):
        assert all(not s._wc[f][j] for f in range(m.NF)), j
    now_day = n - lag
    for (w, fields), got in zip(m._WINDOW_FIELDS, s._window_sums(now_day), strict=True):
        want = [0] * m.NF
        for f in fields:
            want[f] = sum(s._dc[f][i] for i in range(m.DAILY_DAYS) if 0 <= now_day - (n - i) < w)
            want[f] += sum(s._wc[f][j] for j in range(m.WEEKS)
                           if 0 <= now_day - 7 * (nw - j) < w)
        assert got == want, (w, now_day, n)
    assert encoded._window_sums(now_day) == s._window_sums(now_day)
    assert encoded._today is not None  # and it never decoded them


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_history(span_days=800, max_size=40), burst=st.sampled_from([0, 0, 80]),
       later=st.one_of(st.integers(1, 8), st.integers(1, 500)))
def test_the_sums_at_a_later_day_are_the_sums_at_n_less_what_left(
        acts: list[Activity], burst: int, later: int) -> None:
    """Read at a later day than N (a sweep, a read after midnight) or moved to it (a new
    day's first event), the window sums are the kept sums at N less the buckets that left
    each window: what adding up every bucket at that day gives, on the blocks as written
    (one of them a list, with a day of 80 visits) and decoded."""
    if burst:
        last = max(a.ts for a in acts)
        acts = acts + [Activity("visit", last - 30 * DAY_MS + i, f"burst{i}") for i in range(burst)]
    s = summarize(acts)
    n = s.newest_day
    assert n is not None
    encoded = Summary.decode(s.encode())
    want = encoded._window_sums(n + later)
    assert encoded._sums_later(n, n + later) == want
    assert encoded._today is not None  # from the blocks as written
    s._full()
    assert s._sums_later(n, n + later) == s._window_sums(n + later) == want
    assert s._sums_at_n() == s._window_sums(n)  # (left as they were)


def test_a_move_past_the_daily_span_sums_the_year_by_its_weeks() -> None:
    """A day leaving the daily span in a move of a year goes into a week that starts a day
    before the year at the new day N: the sums moved with it leave that day out, as folding
    newest first does (the old buckets' sums at the new day would count it)."""
    assert (BASE // DAY_MS + 1) % 7 == 1  # the day after a week's first day
    acts = [Activity("transaction", BASE + DAY_MS, "t"), Activity("visit", BASE + 365 * DAY_MS, "v")]
    step = Summary.empty()
    for a in acts:
        step.fold(a)
    assert step.encode() == summarize(acts).encode()
    assert step.features(acts[-1].ts)["transactions_365"] == 0.0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_history(span_days=500, max_size=40), burst=st.sampled_from([0, 0, 80, 11]),
       burst_day=st.integers(0, 500),
       gap=st.one_of(st.integers(1, 120), st.integers(121, 800)), data=st.data())
def test_moving_day_n_on_the_encoded_blocks_writes_what_the_decoded_shift_writes(
        acts: list[Activity], burst: int, burst_day: int, gap: int,
        data: st.DataObject) -> None:
    """The first event of a later day shifts the bucket blocks as they are written (strings
    of count characters, lists of amounts) without decoding them: byte for byte the summary
    the shift of the decoded buckets gives, with the same features. A bucket of 75 or more (a
    count column written as a list: 80 visits in a day, or 11 a day for 8 days once they are
    in one week's bucket) takes the decoded shift; any gap is shifted as text, also one past
    the daily span (every old day into its week) or past the weeks (everything dropped)."""
    if burst == 80:
        acts = acts + [Activity("visit", BASE + burst_day * DAY_MS + i, f"burst{i}")
                       for i in range(burst)]
    elif burst:
        acts = acts + [Activity("visit", BASE + (burst_day + i // burst) * DAY_MS + i, f"burst{i}")
                       for i in range(8 * burst)]
    blob = summarize(acts).encode()
    last = max(a.ts for a in acts)
    event = dataclasses.replace(data.draw(_activity(10_000, 0)), ts=last + gap * DAY_MS)
    _folds_alike(blob, event, as_text=not burst,  # shifted as text
                 reads=(event.ts, event.ts + 40 * DAY_MS, event.ts - 100 * DAY_MS, last))


def _folds_alike(blob: str, event: Activity, *, as_text: bool, reads: Iterable[int]) -> None:
    """``event`` folded into the summary ``blob`` with its bucket blocks still encoded (and,
    ``as_text``, kept so) gives byte for byte what folding it into the decoded blocks gives,
    and the same features at each of ``reads`` and the same daily series."""
    on_text = Summary.decode(blob)
    on_text.fold(event)
    if as_text:
        assert on_text._today is not None
    decoded = Summary.decode(blob)
    decoded._full()
    decoded.fold(event)
    assert on_text.encode() == decoded.encode()
    for now in reads:
        assert on_text.features(now) == decoded.features(now), now
    assert Summary.decode(on_text.encode()).daily() == decoded.daily()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acts=_history(span_days=500, max_size=40), burst=st.sampled_from([0, 0, 74, 80]),
       back=st.one_of(st.integers(1, 95), st.integers(96, 600)), data=st.data())
def test_an_earlier_day_on_the_encoded_blocks_writes_what_the_decoded_add_writes(
        acts: list[Activity], burst: int, back: int, data: st.DataObject) -> None:
    """An event on an earlier day than N (a batch folded newest first, a late event) is added
    to its bucket in the blocks as they are written, without decoding them: byte for byte the
    summary the decoded add gives, with the same features — in the daily block, in a week, or
    older than every kept week (counted nowhere). A day reaching 75 (a count column written as
    a list from then on) takes the decoded add."""
    last = max(a.ts for a in acts)
    day = last // DAY_MS - back
    if burst:  # a busy day the event lands on: 74 + 1 stays a character, 80 is a list
        acts = acts + [Activity("visit", day * DAY_MS + i, f"burst{i}") for i in range(burst)]
    blob = summarize(acts).encode()
    event = dataclasses.replace(data.draw(_activity(10_000, 0)),
                                ts=day * DAY_MS + data.draw(st.integers(0, DAY_MS - 1)))
    _folds_alike(blob, event, as_text=not burst,  # added as text
                 reads=(last, last + 40 * DAY_MS, event.ts, last - 100 * DAY_MS))


@pytest.mark.parametrize("older", [69, 70])
def test_a_week_reaching_75_as_a_day_moves_in_takes_the_decoded_shift(older: int) -> None:
    """A week at 70 (written as one count character) that a day of 5 joins reaches 75, past
    the last count character: the shift on the blocks as written hands over to the decoded
    one, which writes the week as a list; at 74 it stays a character. Either way the bytes
    are those of the decoded shift."""
    n = BASE // DAY_MS + 200
    while (n - 90) % 7 == 0:  # day N-90 and day N-91 in one week
        n += 1
    acts = [Activity("visit", (n - 91) * DAY_MS + i, f"old{i}") for i in range(older)]
    acts += [Activity("visit", (n - 90) * DAY_MS + i, f"mid{i}") for i in range(5)]
    acts.append(Activity("visit", n * DAY_MS, "newest"))
    blob = summarize(acts).encode()
    event = Activity("visit", (n + 1) * DAY_MS, "next")
    on_text = Summary.decode(blob)
    on_text.fold(event)
    decoded = Summary.decode(blob)
    decoded._full()
    decoded.fold(event)
    assert on_text.encode() == decoded.encode()
    assert (on_text._today is not None) == (older + 5 < 75)  # shifted as text below 75
    assert Summary.decode(on_text.encode()).features((n + 1) * DAY_MS)["transactions_365"] == 0


def test_a_bucket_past_255_events_is_counted_whole() -> None:
    """A bucket past 255 (a day of 300 purchases, a week of them) is counted, encoded,
    decoded and shifted into its week like any other (the encoder once failed on it with a
    KeyError); the stream's steps and one fold agree."""
    day = BASE // DAY_MS * DAY_MS
    burst = [Activity("transaction", day + i * 1000, f"b{i}", amount=1.0) for i in range(300)]
    acts = [*burst, Activity("transaction", day + DAY_MS, "next", amount=2.0)]
    s = summarize(acts)
    f = s.features(day + DAY_MS)
    assert (f["transactions_90"], f["spend_90"]) == (301.0, 302.0)
    assert Summary.decode(s.encode()).features(day + DAY_MS) == f
    later = [*acts, Activity("transaction", day + 120 * DAY_MS, "later", amount=3.0)]
    whole = summarize(later)  # the 301 now sit in the weekly buckets
    g = whole.features(day + 120 * DAY_MS)
    assert (g["transactions_90"], g["transactions_365"], g["spend_365"]) == (1.0, 302.0, 305.0)
    blob = Summary.empty().encode()
    for a in later:
        step = Summary.decode(blob)
        step.fold(a)
        step.features(a.ts)
        blob = step.encode()
    assert blob == whole.encode()
    assert Summary.decode(blob).features(day + 120 * DAY_MS) == g


def test_a_new_customers_same_day_events_build_no_buckets() -> None:
    """A new summary starts with its blocks encoded and empty: events on its newest day, and
    the features read at that day, never build the 91 x 10 and 53 x 10 buckets; nor do the
    first 16 events on an earlier day (added to the blocks as written), while a whole history
    folded newest first builds them once — each with the result of folding at once."""
    acts = [Activity("visit", BASE + 5, "v1"), Activity("transaction", BASE + 9, "t1", amount=4.5)]
    s = Summary.empty()
    for a in acts:
        s.fold(a)
    s.features(BASE + 10)
    assert s._dc == [] and s._wc == []
    older = Activity("visit", BASE - 3 * DAY_MS, "v0")
    s.fold(older)
    assert s._dc == [] and s.encode() == summarize([older, *acts]).encode()
    history = [Activity("visit", BASE - d * DAY_MS, f"h{d}") for d in range(4, 40)]
    for a in history:  # newest first
        s.fold(a)
    assert len(s._dc) == 10 and s.encode() == summarize([*history, older, *acts]).encode()


# A summary written by the previous format (cw-s1: day N's bucket inside the daily block, no
# window sums), from the events of _OLD_EVENTS.
_OLD_BLOB = (
    '["cw-s1",1784592060000,17366455000,0,86460000,0,60000,201,[0,1,161,201]]\n'
    'AwAAAAAAAAAAAAAAAAAAAAAAAAACAAAAAAI=\n'
    '["1","","","","01",[0,3250],"","","1","1"]\n'
    '["00000000000000000000000000001","000000000000000000000001",[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,'
    '0,0,0,0,0,0,0,0,12500],"","","","000000000000000000000001","000000000000000000000001"]\n'
    '[["K1",[[1784592000000,"c1",null,"high"]],null]]\n'
    '[["v",17366455000,"v1","s1"],["t",13910459993,"t1",null,12.5,"online"],'
    '["t",86460000,"t2",null,-3.25],["c",60000,"c1",null,null,null,null,"high","K1"],'
    '["v",0,"v2"]]\n'
    'gFCuGjmQ/3S9K1qAUK8bsanWUbhDL4BQr0PwAKNvbXRO')
_OLD_EVENTS = [
    Activity("visit", BASE + 5000, "v1", store_id="s1"),
    Activity("transaction", BASE + 40 * DAY_MS + 7, "t1", amount=12.5, channel="online"),
    Activity("transaction", BASE + 200 * DAY_MS, "t2", amount=-3.25),
    Activity("complaint", BASE + 201 * DAY_MS, "c1", severity="high", complaint_ref="K1"),
    Activity("visit", BASE + 201 * DAY_MS + 60_000, "v2")]


def test_a_summary_of_the_previous_format_is_read_and_rewritten() -> None:
    """Customers stored before the upgrade keep their state: the cw-s1 summary reads as the
    same content, and is written back in this version's format."""
    old = Summary.decode(_OLD_BLOB)
    now = max(a.ts for a in _OLD_EVENTS)
    assert old == summarize(_OLD_EVENTS)
    assert old.features(now) == summarize(_OLD_EVENTS).features(now)
    assert old.encode().startswith('["cw-s3"')
    new = Activity("visit", now + 5, "v3")
    old.fold(new)
    assert old == summarize([*_OLD_EVENTS, new])


def test_hand_made_blocks_behind_a_matching_checksum_fail_when_needed() -> None:
    """The bucket blocks are decoded only when a step needs them, behind a checksum that catches
    corruption at decode; blocks made to match it still fail, as a ValueError, when needed."""
    s = summarize(_OLD_EVENTS)
    parts = s.encode().split("\n")
    header = json.loads(parts[0])
    parts[2] = '["1~"]'
    header[-1] = zlib.crc32(parts[3].encode(), zlib.crc32(parts[2].encode()))
    parts[0] = json.dumps(header, separators=(",", ":"))
    t = Summary.decode("\n".join(parts))  # header, sums and checksum are consistent
    with pytest.raises(ValueError, match="not an encoded customer summary"):
        t.daily()


def _garbage() -> list[str]:
    good = summarize([Activity("visit", BASE, "v1"), Activity("transaction", BASE + 5, "t1",
                                                               amount=3.0)]).encode()
    parts = good.split("\n")

    def swap(i: int, text: str) -> str:
        return "\n".join(parts[:i] + [text] + parts[i + 1:])

    return ["", "{", "[]", "null", "x" * 100, "cw-s0", "cw-s1\n1", good[:-3], good + "\n",
            swap(0, '["cw-s1","1",0,0,0,0,0,0,[]]'),
            swap(0, parts[0].replace('"cw-s3"', '"cw-s1"')),  # a cw-s3 header called cw-s1
            swap(0, parts[0].replace('"cw-s3"', '"cw-s2"')),  # a cw-s3 header called cw-s2
            swap(0, parts[0].rsplit(",", 1)[0] + ",7]"),  # a wrong checksum
            swap(0, "[1.5,".join(parts[0].rsplit("[", 1))),  # a float among the sums
            swap(0, parts[0].replace("],0,0,", "],2,0,")),  # N two days after last_ts's day
            swap(0, parts[0].replace("],0,0,", "],0,1440,")),  # a UTC offset of a whole day
            swap(0, parts[0].replace("],0,0,", "],0,1.5,")),  # an offset not in minutes
            swap(1, "!!"), swap(2, "[" + "[]," * 10 + "[]]"),
            swap(2, '["1~"]'), swap(3, '[[1.5]]'), swap(5, '[["v"]]'), swap(6, "AAAA")]


@pytest.mark.parametrize("garbage", _garbage())
def test_decode_of_garbage_is_a_value_error(garbage: str) -> None:
    with pytest.raises(ValueError, match="not an encoded customer summary"):
        Summary.decode(garbage)


def test_empty_summary() -> None:
    s = Summary.empty()
    assert s.first_ts is None and s.last_ts is None and s.newest_event_id() is None
    assert s.recent() == [] and not s.returned_between(0, 2**50)
    f = s.features(BASE, BASE - 10 * DAY_MS)
    assert f == _old_compute_features([], BASE, BASE - 10 * DAY_MS)


def test_returned_between_and_active_days_since() -> None:
    acts = [Activity("visit", BASE + d * DAY_MS + 5000, f"v{d}") for d in (0, 40, 200, 330)]
    acts.append(Activity("complaint", BASE + 100 * DAY_MS, "c"))
    s = summarize(acts)
    assert s.returned_between(BASE + 39 * DAY_MS, BASE + 41 * DAY_MS)
    assert not s.returned_between(BASE + 41 * DAY_MS, BASE + 199 * DAY_MS)  # a complaint only
    assert s.returned_between(BASE + 330 * DAY_MS, BASE + 331 * DAY_MS)
    assert not s.returned_between(BASE + 331 * DAY_MS, BASE + 400 * DAY_MS)
    assert s.active_days_since(BASE // DAY_MS + 40) == 3
    assert s.active_days_since(BASE // DAY_MS) == 4


# ---------------------------------------------------------------------------- 5. size
def _year(n: int, seed: int = 7) -> list[Activity]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = BASE + rng.randrange(365 * DAY_MS)
        eid = f"pos-{i:06d}-{rng.randrange(10_000):04d}"
        if rng.random() < 0.5:
            out.append(Activity("visit", ts, eid, store_id="s1"))
        else:
            out.append(Activity("transaction", ts, eid, amount=rng.choice(
                [12.5, 18.0, 22.5, 35.0, 42.75, 58.5, 80.0]), store_id="s1"))
    return out


@pytest.mark.parametrize(("events", "limit"), [(10, 1536), (100, 1536), (1000, 5120)])
def test_encoded_size(events: int, limit: int, capsys: pytest.CaptureFixture[str]) -> None:
    acts = _year(events)
    blob = summarize(acts).encode()
    size = len(blob.encode())
    with capsys.disabled():  # shown in the test output, captured or not
        sys.stdout.write(f"\nencoded summary, {events} events over a year: {size} bytes "
                         f"(limit {limit}) ")
    assert size <= limit
    assert summarize(reversed(acts)).encode() == blob


def test_the_summary_does_not_grow_with_history(capsys: pytest.CaptureFixture[str]) -> None:
    """Five years at 1,000 events a year: the same bounded summary as one year."""
    history = [Activity(a.kind, a.ts + y * 365 * DAY_MS, f"{y}-{a.event_id}", a.amount,
                        store_id=a.store_id)
               for y in range(5) for a in _year(1000, seed=y)]
    s = summarize(history)
    assert s.last_ts is not None
    last_year = summarize([a for a in history if a.ts > s.last_ts - 380 * DAY_MS])
    size = len(s.encode().encode())
    with capsys.disabled():
        sys.stdout.write(f"\nencoded summary, 5,000 events over five years: {size} bytes ")
    assert size <= 5120
    assert size <= len(last_year.encode().encode()) + 40  # the first active day, first_ts
    f, g = s.features(s.last_ts), last_year.features(s.last_ts)
    for name in ("active_days_365", "spend_365", "transactions_365", "cadence_median_days"):
        assert f[name] == g[name], name
