"""Features, scorecard, tiers and risk-change ids: pure functions, no servers."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.common.events import epoch_ms, validate_event
from services.common.riskchange import Cause, risk_change_id
from services.scoring.activity import activity_from_event, decode_activity, encode_activity
from services.scoring.features import DAY_MS, FEATURE_NAMES, Activity, compute_features
from services.scoring.scorecard import Scorecard, reasons
from services.scoring.tiers import Thresholds, decide_tier
from tests.data import T0, complaint, regular

T = Thresholds(medium_enter=0.45, medium_exit=0.35, high_enter=0.75, high_exit=0.65, min_dwell_ms=0)


def acts(events):
    """The scorer's activities for valid events (a test fails on an invalid one)."""
    out = []
    for e in events:
        event, errors = validate_event(e)
        assert event is not None, errors
        out.append(activity_from_event(event))
    return out


def at(days: float) -> int:
    return epoch_ms(T0) + int(days * DAY_MS)


def test_regular_customer_cadence_and_overdue() -> None:
    history = acts(regular("r", every_days=28, count=10))
    on_time = compute_features(history, at(28 * 9 + 10))
    assert set(on_time) == set(FEATURE_NAMES)
    assert on_time["cadence_median_days"] == 28 and on_time["has_cadence"] == 1.0
    late = compute_features(history, at(28 * 9 + 63))
    assert round(late["days_since_last_activity"]) == 63
    assert late["overdue_ratio"] > 2
    assert reasons(late)[0].text.startswith("63 days since the last visit; usually every 28 days")
    assert reasons(late)[0].text_zh == "距上次到店已63天；平时每28天一次"


def test_point_in_time_ignores_the_future() -> None:
    history = acts(regular("r", every_days=7, count=30))
    cut = at(7 * 10 + 1)
    past = [a for a in history if a.ts <= cut]
    assert compute_features(history, cut) == compute_features(past, cut)


def test_duplicates_and_order_do_not_matter() -> None:
    history = acts(regular("r", every_days=9, count=12))
    now = at(120)
    assert compute_features(history, now) == compute_features(list(reversed(history)) + history[:5], now)


def test_open_and_resolved_complaints() -> None:
    events = regular("m", every_days=14, count=5)
    events.append(complaint("m", T0 + timedelta(days=60), 1, severity="high", ref="K1"))
    f = compute_features(acts(events), at(61))
    assert f["open_complaints"] == 1 and f["open_high_complaints"] == 1
    events.append(complaint("m", T0 + timedelta(days=62), 2, status="resolved", ref="K1"))
    f = compute_features(acts(events), at(63))
    assert f["open_complaints"] == 0 and f["complaints_90"] == 1


def test_scorecard_ranks_the_obvious() -> None:
    history = acts(regular("r", every_days=14, count=20))
    now_regular = at(14 * 19 + 7)
    now_gone = at(14 * 19 + 90)
    rows = [[compute_features(history, t)[n] for n in FEATURE_NAMES] for t in (now_regular, now_gone)]
    import numpy as np

    low, high = Scorecard().predict(np.array(rows))
    assert low < 0.3 < 0.75 < high


def test_hysteresis_and_dwell() -> None:
    assert decide_tier(None, None, 0.5, 0, T) == "medium"
    assert decide_tier("medium", 0, 0.40, 10, T) == "medium"  # above the exit level: stays
    assert decide_tier("medium", 0, 0.30, 10, T) == "low"
    assert decide_tier("low", 0, 0.40, 10, T) == "low"  # below the enter level: stays
    assert decide_tier("high", 0, 0.70, 10, T) == "high"
    dwell = Thresholds(0.45, 0.35, 0.75, 0.65, min_dwell_ms=1000)
    assert decide_tier("high", 0, 0.1, 500, dwell) == "high"  # falls wait for the dwell
    assert decide_tier("high", 0, 0.1, 1500, dwell) == "low"
    assert decide_tier("low", 0, 0.9, 1, dwell) == "high"  # rises never wait


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=50))
def test_tiers_never_flap_inside_the_band(scores: list[float]) -> None:
    tier = "medium"
    for s in scores:
        band = [min(max(x, 0.36), 0.74) for x in [s]][0]
        tier = decide_tier(tier, 0, band, 1, T)
        assert tier == "medium"


def test_risk_change_id_is_deterministic() -> None:
    cause = Cause(kind="event", event_id="e9")
    a = risk_change_id("c1", "low", "high", cause)
    assert a == risk_change_id("c1", "low", "high", Cause(kind="event", event_id="e9"))
    assert a != risk_change_id("c1", "low", "medium", cause)
    assert a != risk_change_id("c1", "low", "high", Cause(kind="silence", event_id="e9"))


@given(kind=st.sampled_from(["transaction", "visit", "complaint"]), ts=st.integers(0, 2**41),
       amount=st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)),
       store=st.one_of(st.none(), st.text(min_size=1, max_size=20)))
def test_compact_encoding_round_trips(kind: str, ts: int, amount: float | None, store: str | None) -> None:
    a = Activity(kind=kind, ts=ts, event_id="x", amount=amount, store_id=store)
    assert decode_activity("x", encode_activity(a)) == a
