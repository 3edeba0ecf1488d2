"""Hysteresis and dwell as invariants: scores jittering around a boundary never flap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.scoring.tiers import Thresholds, decide_tier, plain_tier

T = Thresholds(medium_enter=0.45, medium_exit=0.35, high_enter=0.75, high_exit=0.65)
DAY = 86_400_000


def run(scores: list[float], t: Thresholds, step_ms: int = DAY) -> list[str]:
    tier: str | None = None
    since: int | None = None
    out = []
    for i, score in enumerate(scores):
        now = i * step_ms
        new = decide_tier(tier, since, score, now, t)
        if new != tier:
            tier, since = new, now
        out.append(new)
    return out


def changes(tiers: list[str]) -> int:
    return sum(a != b for a, b in zip(tiers, tiers[1:], strict=False))


@given(st.lists(st.floats(min_value=0.35, max_value=0.4499), min_size=2, max_size=60),
       st.sampled_from(["low", "medium"]))
def test_jitter_inside_the_medium_band_never_changes_the_tier(scores: list[float], start: str) -> None:
    first = 0.2 if start == "low" else 0.5
    assert changes(run([first, *scores], T)) == 0


@given(st.lists(st.floats(min_value=0.65, max_value=0.7499), min_size=2, max_size=60),
       st.sampled_from(["medium", "high"]))
def test_jitter_inside_the_high_band_never_changes_the_tier(scores: list[float], start: str) -> None:
    first = 0.5 if start == "medium" else 0.9
    assert changes(run([first, *scores], T)) == 0


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=80))
def test_rises_are_immediate_and_every_tier_is_one_a_plain_threshold_allows(scores: list[float]) -> None:
    tiers = run(scores, T)
    rank = {"low": 0, "medium": 1, "high": 2}
    for score, tier in zip(scores, tiers, strict=True):
        assert rank[tier] >= rank[plain_tier(score, T)]  # never below the entry tier
        if tier == "high":
            assert score >= T.high_exit
        if tier == "low":
            assert score < T.medium_enter


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=80))
def test_with_a_dwell_no_tier_is_left_before_it_lasted_the_dwell(scores: list[float]) -> None:
    dwell = Thresholds(0.45, 0.35, 0.75, 0.65, min_dwell_ms=3 * DAY)
    tiers = run(scores, dwell)
    rank = {"low": 0, "medium": 1, "high": 2}
    entered = 0
    for i in range(1, len(tiers)):
        if tiers[i] != tiers[i - 1]:
            if rank[tiers[i]] < rank[tiers[i - 1]]:
                assert i - entered >= 3, (i, entered, tiers)
            entered = i


def test_a_tier_raised_later_than_the_assessment_is_not_held_by_the_dwell() -> None:
    """Under the event clock the sweep can raise a customer at the tenant's clock before an
    event of theirs from earlier arrives. Assessed before the tier's start, the age is negative:
    it read as "not lasted yet" even without a dwell and held a customer who had come back
    at high. A dwell counts from the tier's start forwards only."""
    for t in (T, Thresholds(0.45, 0.35, 0.75, 0.65, min_dwell_ms=3 * DAY)):
        assert decide_tier("high", 10 * DAY, 0.03, 9 * DAY, t) == "low"
    dwell = Thresholds(0.45, 0.35, 0.75, 0.65, min_dwell_ms=3 * DAY)
    assert decide_tier("high", 10 * DAY, 0.03, 11 * DAY, dwell) == "high"  # still held forwards
    assert decide_tier("high", 10 * DAY, 0.03, 11 * DAY, T) == "low"
