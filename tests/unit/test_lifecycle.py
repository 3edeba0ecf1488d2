"""Lifecycle stages and relative value tiers (services/scoring/lifecycle.py): pure, no servers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.riskchange import RiskChange
from services.scoring.engine import Engine, Subject
from services.scoring.features import DAY_MS, Activity
from services.scoring.lifecycle import (
    LIFECYCLE_STAGES,
    MIN_CUSTOMERS,
    ValueBounds,
    active_days_ago,
    fixed_value_tier,
    gone_days,
    lifecycle_stage,
    quiet_days,
    return_after_gap,
    stage_name,
    value_bounds,
    value_tier,
)
from services.scoring.scorecard import Scorecard
from services.scoring.summary import summarize
from services.scoring.tiers import Thresholds

NOW = 20_454 * DAY_MS + 12 * 3_600_000  # 2026-01-01T12:00Z


def feats(*, r: float, cadence: float = 7.0, tenure: float = 400.0) -> dict[str, float]:
    """Features of a customer; a cadence of 45 days stands for none (fewer than two active
    days), as the summary gives it."""
    return {"days_since_last_activity": r, "cadence_median_days": cadence, "tenure_days": tenure,
            "has_cadence": 0.0 if cadence == 45.0 else 1.0}


def test_quiet_is_three_cadences_between_half_the_horizon_and_gone() -> None:
    assert quiet_days(7, 90) == 45  # a weekly customer: half the horizon
    assert quiet_days(20, 90) == 60  # three cadences
    assert quiet_days(45, 90, has_cadence=False) == 90  # no cadence: never dormant, churned at 90
    assert quiet_days(28, 60) == 84  # a 4-weekly regular: three cadences, past the horizon


def test_gone_is_the_horizon_and_four_of_a_regulars_gaps_at_most_two_horizons() -> None:
    assert gone_days(7, 90) == 90  # a weekly customer: the horizon
    assert gone_days(28, 60) == 112  # a 4-weekly regular: four gaps (16 weeks), not 60 days
    assert gone_days(120, 90) == 180  # a slow buyer: at most twice the horizon
    assert gone_days(45, 60, has_cadence=False) == 60  # one active day: the horizon


def test_the_regular_unseen_for_nine_weeks_is_at_risk_not_churned() -> None:
    """The customer churnwatch is for: came every four weeks for a year, not seen for nine.
    With the shipped model's 60-day horizon they read as churned ("Lapsed: most likely gone
    already", listed after everyone else of the tier) the day the rules first raised them."""
    regular = dict(feats(r=63, cadence=28))
    assert lifecycle_stage(regular, tier="medium", horizon_days=60) == "at_risk"
    assert lifecycle_stage({**regular, "days_since_last_activity": 90}, tier="high",
                           horizon_days=60) == "dormant"  # three gaps
    assert lifecycle_stage({**regular, "days_since_last_activity": 112}, tier="high",
                           horizon_days=60) == "churned"  # four gaps
    # one visit 63 days ago: nothing says they would be back, past the horizon is churned
    assert lifecycle_stage(feats(r=63, cadence=45), tier="medium", horizon_days=60) == "churned"


@pytest.mark.parametrize("f, tier, days_ago, stage", [
    (feats(r=90), "low", (), "churned"),                      # past the horizon
    (feats(r=120, tenure=120), "high", (), "churned"),        # tier does not matter
    (feats(r=60, cadence=20), "low", (), "dormant"),          # 3 cadences, >= H/2
    (feats(r=46, cadence=7), "medium", (), "dormant"),
    (feats(r=70, cadence=45), "high", (), "at_risk"),          # no dormant stage when 3c >= H
    (feats(r=3, tenure=20), "high", (), "new"),               # new beats at_risk
    (feats(r=50, cadence=2, tenure=55), "low", (), "dormant"),  # dormant beats new
    (feats(r=2), "low", (2, 80, 87), "won_back"),             # back after 78 silent days
    (feats(r=2), "high", (2, 80, 87), "won_back"),            # won_back beats at_risk
    (feats(r=2), "low", (2, 9, 16), "active"),                # regular gaps
    (feats(r=31), "medium", (31, 90), "at_risk"),             # the return was 31 days ago
    (feats(r=2), "medium", (2, 9, 16), "at_risk"),
    (feats(r=2), "low", (), "active"),
])
def test_each_stage(f: dict[str, float], tier: str, days_ago: tuple[int, ...], stage: str) -> None:
    assert lifecycle_stage(f, tier=tier, horizon_days=90, days_ago=days_ago) == stage
    assert stage in LIFECYCLE_STAGES


def test_the_horizon_moves_churned() -> None:
    f = feats(r=40, cadence=45)
    assert lifecycle_stage(f, horizon_days=30) == "churned"
    assert lifecycle_stage(f, horizon_days=90) == "active"


def test_old_stage_names_read_as_active() -> None:
    assert [stage_name(s) for s in ("growing", "mature", "new", "dormant", None)] == \
        ["active", "active", "new", "dormant", None]
    change = RiskChange.model_validate({
        "customer_id": "c", "previous_tier": "low", "tier": "high", "score": 0.8, "reasons": [],
        "suggested_action": {"code": "x", "text": "x", "text_zh": "x"}, "value_tier": "high",
        "lifecycle_stage": "mature", "model_version": "m", "as_of": "2026-01-01T00:00:00Z",
        "cause": {"kind": "silence"}, "features": {}})
    assert change.lifecycle_stage == "active"


def _visits(days: list[float]) -> list[Activity]:
    return [Activity("visit", int(NOW - d * DAY_MS), f"e{i}") for i, d in enumerate(days)]


def test_active_days_from_the_summary_equal_those_from_the_events() -> None:
    acts = _visits([0.2, 1, 1.1, 80, 87, 94, 101]) + [
        Activity("complaint", NOW - 30 * DAY_MS, "k", severity="high")]
    assert active_days_ago(acts, NOW) == summarize(acts).active_days(NOW) == [0, 1, 80, 87, 94, 101]
    earlier = NOW - 50 * DAY_MS  # point in time: only days at or before it, counted from it
    assert active_days_ago(acts, earlier) == summarize(acts).active_days(earlier) == [30, 37, 44, 51]


def test_active_days_are_the_shops_days_from_the_events_and_the_summary_alike() -> None:
    """At -05:00, events at 23:30 and 00:30 UTC are 18:30 and 19:30 on one local day; a read
    counts back from the day on the newest event's clock."""
    midnight = NOW // DAY_MS * DAY_MS
    acts = [Activity(kind, midnight + minutes * 60_000 - d * DAY_MS, f"{kind}{d}", tz_minutes=-300)
            for d in (0, 7, 14) for kind, minutes in (("visit", -30), ("transaction", 30))]
    at = midnight + 60 * 60_000
    assert active_days_ago(acts, at) == summarize(acts).active_days(at) == [0, 7, 14]
    utc = [Activity(a.kind, a.ts, a.event_id) for a in acts]
    assert active_days_ago(utc, at) == summarize(utc).active_days(at) == [0, 1, 7, 8, 14, 15]


def test_the_engine_says_won_back_then_active_again() -> None:
    engine = Engine(Scorecard(), Thresholds())
    weekly_then_back = _visits([2, 80, 87, 94, 101, 108, 115])
    [a] = engine.assess([Subject("c", weekly_then_back)], NOW, with_history=False)
    assert a.lifecycle_stage == "won_back"
    s = summarize(weekly_then_back)
    [b] = engine.assess([Subject("c", (), summary=s)], NOW, with_history=False)
    assert b.lifecycle_stage == "won_back"
    later = NOW + 40 * DAY_MS  # 42 days after the return (and silent since): not won back now
    [c] = engine.assess([Subject("c", (), summary=s)], later, with_history=False)
    assert c.lifecycle_stage != "won_back"


def test_the_model_cards_horizon_wins_over_the_engines() -> None:
    engine = Engine(Scorecard(), Thresholds(), horizon_days=90)
    assert engine.horizon(engine.model) == 90

    class Carded(Scorecard):
        card = {"horizon_days": 30}

    assert engine.horizon(Carded()) == 30
    quiet = _visits([40, 47, 54, 61, 68])  # silent 40 days
    [a] = Engine(Carded(), Thresholds()).assess([Subject("c", quiet)], NOW, with_history=False)
    assert a.lifecycle_stage == "churned"


# ------------------------------------------------------------------------------ value tiers
def test_fixed_fallback() -> None:
    assert fixed_value_tier({"spend_365": 600, "active_days_365": 1}) == "high"
    assert fixed_value_tier({"spend_365": 0, "active_days_365": 5}) == "medium"
    assert fixed_value_tier({"spend_365": 149, "active_days_365": 4}) == "low"


def test_quantile_boundaries_top_20_high_next_30_medium() -> None:
    samples = [(float(10 * k), float(k)) for k in range(1, 101)]  # spend and days rise together
    b = value_bounds(samples, 1)
    assert b.relative and b.n == 100
    tiers = [value_tier({"spend_365": m, "active_days_365": f}, b) for m, f in samples]
    assert tiers.count("high") == 20 and tiers.count("medium") == 30 and tiers.count("low") == 50
    assert tiers[-20:] == ["high"] * 20 and tiers[50:80] == ["medium"] * 30
    # spend and frequency weigh alike: the top spender who came once is mid-table, not high
    assert value_tier({"spend_365": 1000, "active_days_365": 1}, b) != "high"
    assert value_tier({"spend_365": 1e6, "active_days_365": 0}, b) == "low"  # no active day


def test_boundaries_are_relative_to_the_tenant() -> None:
    probe = {"spend_365": 200.0, "active_days_365": 4.0}
    small = value_bounds([(20.0 + k, 1.0 + k % 3) for k in range(60)], 1)
    big = value_bounds([(800.0 + k, 20.0 + k % 5) for k in range(60)], 1)
    assert fixed_value_tier(probe) == "medium"
    assert value_tier(probe, small) == "high"
    assert value_tier(probe, big) == "low"


def test_too_few_customers_fall_back_to_fixed_amounts() -> None:
    few = value_bounds([(1.0, 1.0)] * (MIN_CUSTOMERS - 1) + [(5.0, 0.0)] * 10, 1)  # 10 inactive
    assert not few.relative and few.n == MIN_CUSTOMERS - 1
    rich = {"spend_365": 700.0, "active_days_365": 2.0}
    assert value_tier(rich, few) == value_tier(rich, None) == "high"


def test_ties_and_the_json_round_trip() -> None:
    # 60 % identical one-visit customers, 40 % identical better ones: tied customers stay
    # together, on the side that keeps the shares closest (40 % high, no medium, 60 % low)
    samples = [(0.0, 1.0)] * 60 + [(50.0, 2.0)] * 40
    b = value_bounds(samples, 7)
    assert value_tier({"spend_365": 0.0, "active_days_365": 1.0}, b) == "low"
    assert value_tier({"spend_365": 50.0, "active_days_365": 2.0}, b) == "high"
    again = ValueBounds.from_json(b.to_json())
    assert again == b
    empty = value_bounds([], 3)
    assert ValueBounds.from_json(empty.to_json()).high_cut == math.inf
    with pytest.raises(ValueError):
        ValueBounds.from_json({"format": 99})


def test_the_engine_uses_the_subjects_tenant() -> None:
    engine = Engine(Scorecard(), Thresholds())
    engine.value_bounds = {"small": value_bounds([(20.0 + k, 1.0) for k in range(60)], 1)}
    acts = [Activity("transaction", int(NOW - d * DAY_MS), f"t{d}", amount=100.0) for d in (3, 20)]
    small, other = engine.assess([Subject("c", acts, tenant="small"),
                                  Subject("c", acts, tenant="other")], NOW, with_history=False)
    assert (small.value_tier, other.value_tier) == ("high", "medium")


@given(days=st.lists(st.integers(0, 400), max_size=14, unique=True).map(sorted),
       quiet=st.floats(1.0, 200.0), within=st.one_of(st.none(), st.integers(0, 60)))
def test_return_after_gap_is_the_newest_return_after_a_long_enough_silence(
        days: list[int], quiet: float, within: int | None) -> None:
    """The early exit (no gap is longer than the active days' span) changes no answer."""
    want = None
    for newer, older in zip(days, days[1:], strict=False):
        if within is not None and newer >= within:
            break
        if older - newer >= quiet:
            want = newer
            break
    assert return_after_gap(days, quiet, within) == want


@given(days=st.lists(st.integers(0, 500), min_size=1, max_size=30, unique=True),
       at=st.integers(-200, 60), quiet=st.floats(1.0, 200.0),
       within=st.one_of(st.none(), st.integers(0, 60)))
def test_a_summarys_return_after_gap_is_the_one_over_its_active_days(
        days: list[int], at: int, quiet: float, within: int | None) -> None:
    """The summary answers the won-back question without listing its active days when they
    span less than ``quiet``: the same answer as over the list, for reads at, after and
    before its newest day; and the engine's stage is the one of the raw events."""
    acts = [Activity("visit", NOW - d * DAY_MS, f"v{d}") for d in days]
    s = summarize(acts)
    now = NOW + at * DAY_MS
    assert s.return_after_gap(now, quiet, within) == return_after_gap(s.active_days(now), quiet,
                                                                      within)
    if at >= 0:
        engine = Engine(Scorecard(), Thresholds())
        by_summary, by_events = engine.assess([Subject("c", (), summary=s), Subject("c", acts)],
                                              now, with_history=False)
        assert by_summary.lifecycle_stage == by_events.lifecycle_stage


@pytest.mark.parametrize("quiet, want", [(49.5, 0), (50.0, 0), (50.5, None)])
def test_a_summarys_return_after_gap_at_the_edge_of_quiet(quiet: float, want: int | None) -> None:
    """A gap as long as quiet counts (the span of two active days is that gap)."""
    s = summarize([Activity("visit", NOW, "now"), Activity("visit", NOW - 50 * DAY_MS, "then")])
    assert s.return_after_gap(NOW, quiet, 30) == want
    assert return_after_gap(s.active_days(NOW), quiet, 30) == want
