"""Tiers from scores, with hysteresis and a minimum dwell time so boundary jitter does not flap."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.riskchange import TIER_RANK
from services.common.settings import Settings


@dataclass(frozen=True)
class Thresholds:
    medium_enter: float = 0.45
    medium_exit: float = 0.35
    high_enter: float = 0.75
    high_exit: float = 0.65
    min_dwell_ms: int = 0

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        return cls(s.tier_medium_enter, s.tier_medium_exit, s.tier_high_enter, s.tier_high_exit,
                   int(s.tier_min_dwell_seconds * 1000))


def plain_tier(score: float, t: Thresholds) -> str:
    """The tier of a score with no history (entry levels)."""
    if score >= t.high_enter:
        return "high"
    if score >= t.medium_enter:
        return "medium"
    return "low"


def decide_tier(previous: str | None, since_ms: int | None, score: float, now_ms: int,
                t: Thresholds) -> str:
    """Next tier. Rising needs the enter level, falling needs to drop below the exit level;
    a fall is also held back until the current tier has lasted ``min_dwell_ms``.

    Not when ``now_ms`` is before ``since_ms``: under the event clock the sweep may have
    raised a customer at the tenant's clock before an event of theirs from earlier arrived
    (another partition ran ahead, a POS uploaded late), and that event is scored at its own
    time. A negative age read as "not lasted yet" even with no dwell at all, and held a
    customer who had just come back at high until the next sweep, a day on the clock: the
    go-live summary named them among those at risk."""
    if previous is None:
        return plain_tier(score, t)
    if previous == "high":
        target = "high" if score >= t.high_exit else ("medium" if score >= t.medium_exit else "low")
    elif previous == "medium":
        target = "high" if score >= t.high_enter else ("medium" if score >= t.medium_exit else "low")
    else:
        target = plain_tier(score, t)
    rank = TIER_RANK
    if (rank[target] < rank[previous] and since_ms is not None
            and 0 <= now_ms - since_ms < t.min_dwell_ms):
        return previous
    return target
