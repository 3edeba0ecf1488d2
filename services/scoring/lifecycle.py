"""Lifecycle stage and value tier of one customer: pure functions over features the summary
already computes (no model feature is added, so no model has to be rebuilt).

Definitions (docs/scoring.md, "Lifecycle and value"); ``r`` = days_since_last_activity,
``c`` = cadence_median_days (45 without two active days), ``H`` = the churn horizon of the
served model (its card's ``horizon_days``, else ``CHURNWATCH_CHURN_INACTIVE_DAYS``, 90),
``gone = min(max(H, 4c), 2H)`` for a customer with a cadence (``has_cadence``), ``H`` for one
without, and ``quiet = min(max(3c, H/2), gone)``. The first that holds wins:

1. ``churned``  r >= gone: silent past the horizon and, for a customer with a cadence, past
   four of their own gaps (at most twice the horizon): most likely gone already. Past the
   horizon alone, the 4-weekly regular unseen for nine weeks read as churned (60-day horizon)
   the day the rules first raised them to medium — the customer staff can still win back.
2. ``dormant``  r >= quiet: long silent for their own cadence, not yet churned
   (never, when 3c >= gone: a slow customer goes from active to churned).
3. ``new``      tenure < NEW_DAYS (30).
4. ``won_back`` came back after a silence of at least ``quiet`` days (a gap that had made
   them dormant or churned), and that return is less than WON_BACK_DAYS (30) days ago.
5. ``at_risk``  the risk tier is medium or high: the model's (and rules') judgement, so the
   stage never contradicts the tier.
6. ``active``   everyone else.

Value tier: relative F and M within the tenant. Each customer's value score is the mean of
the tenant percentile of spend over a year (spend_365) and of active days over a year
(active_days_365); the top HIGH_SHARE (20 %) of the tenant's customers active in the last year
are ``high``, the next MEDIUM_SHARE (30 %) ``medium``, the rest ``low`` (customers with the
same score stay in one tier, on the side that keeps the shares closest). The boundaries
(:class:`ValueBounds`) are computed from a sample of the tenant's stored customers
(services/scoring/valuebounds.py); a tenant with fewer than MIN_CUSTOMERS (50) such customers
gets the fixed fallback :func:`fixed_value_tier`. Recency is not part of value: it is the risk.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.scoring.features import Activity, local_day
from services.scoring.summary import return_after_gap  # defined there: compiled with it

LIFECYCLE_STAGES = ("new", "active", "at_risk", "won_back", "dormant", "churned")
# Stage names before issue 16: stored risk snapshots and old CloudEvents may still hold them.
LEGACY_STAGES = {"growing": "active", "mature": "active"}
VALUE_TIERS = ("low", "medium", "high")

NEW_DAYS = 30.0
WON_BACK_DAYS = 30
GONE_CADENCES = 4.0  # a regular is churned after this many of their own gaps (and H) ...
GONE_MAX_HORIZONS = 2.0  # ... and at the latest after this many horizons
DEFAULT_HORIZON_DAYS = 90.0
RECENT_ACTIVE_DAYS = 13  # what the summary keeps of the newest active days

HIGH_SHARE = 0.20
MEDIUM_SHARE = 0.30
MIN_CUSTOMERS = 50
GRID = 101  # quantiles kept per dimension (0 %, 1 %, ..., 100 %)
BOUNDS_FORMAT = 1


def stage_name(stage: str | None) -> str | None:
    """A stored or received stage name in today's vocabulary (old names mapped)."""
    if stage is None:
        return None
    return LEGACY_STAGES.get(stage, stage)


def gone_days(cadence_days: float, horizon_days: float, has_cadence: bool = True) -> float:
    """Silence after which a customer is churned: the horizon, and for a customer with a
    cadence four of their own gaps too, at most twice the horizon."""
    if not has_cadence:
        return horizon_days
    return min(max(horizon_days, GONE_CADENCES * cadence_days),
               GONE_MAX_HORIZONS * horizon_days)


def quiet_days(cadence_days: float, horizon_days: float, has_cadence: bool = True) -> float:
    """Silence after which a customer is dormant: three of their own cadences, at least half
    the horizon, at most :func:`gone_days` (where churned takes over)."""
    return min(max(3.0 * cadence_days, horizon_days / 2.0),
               gone_days(cadence_days, horizon_days, has_cadence))


def lifecycle_stage(features: dict[str, float], *, tier: str = "low",
                    horizon_days: float = DEFAULT_HORIZON_DAYS,
                    days_ago: Sequence[int] | Callable[[], Sequence[int]] = (),
                    won_back: Callable[[float, int], int | None] | None = None) -> str:
    """The customer's stage (module docstring). ``tier``: the risk tier just decided;
    ``days_ago``: the newest active days as days before now, newest first (for won_back),
    or a function giving them (called only when the stage depends on them); or ``won_back``,
    a function giving what :func:`return_after_gap` gives over them for (quiet, within)
    (:meth:`Summary.return_after_gap <services.scoring.summary.Summary.return_after_gap>`)."""
    r = features["days_since_last_activity"]
    c = features["cadence_median_days"]
    regular = features["has_cadence"] >= 1.0
    quiet = quiet_days(c, horizon_days, regular)
    if r >= gone_days(c, horizon_days, regular):
        return "churned"
    if r >= quiet:
        return "dormant"
    if features["tenure_days"] < NEW_DAYS:
        return "new"
    if r < WON_BACK_DAYS:  # else the newest return, if any, is too old to count
        if won_back is not None:
            back = won_back(quiet, WON_BACK_DAYS)
        else:
            back = return_after_gap(days_ago() if callable(days_ago) else days_ago, quiet,
                                    WON_BACK_DAYS)
        if back is not None:
            return "won_back"
    if tier != "low":
        return "at_risk"
    return "active"


def active_days_ago(activities: Iterable[Activity], now_ms: int,
                    limit: int = RECENT_ACTIVE_DAYS) -> list[int]:
    """The newest ``limit`` active days (a day with any non-complaint event) at or before
    ``now_ms``, as days before now, newest first: what :meth:`Summary.active_days` gives."""
    acts = list(activities)
    # days are the events' local days, read on the newest event's clock (as the summary does)
    newest = max(acts, key=lambda a: (a.ts, a.tz_minutes), default=None)
    now_day = local_day(now_ms, newest.tz_minutes if newest is not None else 0)
    days = {a.day for a in acts if a.ts <= now_ms and a.kind != "complaint"}
    return [now_day - d for d in sorted(days, reverse=True)[:limit]]


# ---------------------------------------------------------------------------- value tier
def fixed_value_tier(features: dict[str, float]) -> str:
    """The fallback for a tenant with too few customers: fixed amounts and active days."""
    m, f = features["spend_365"], features["active_days_365"]
    if m >= 600 or f >= 18:
        return "high"
    if m >= 150 or f >= 5:
        return "medium"
    return "low"


def _quantiles(values: list[float], n: int = GRID) -> list[float]:
    """``n`` evenly spaced quantiles (linear interpolation) of sorted ``values``."""
    last = len(values) - 1
    out = []
    for k in range(n):
        pos = last * k / (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, last)
        out.append(values[lo] + (values[hi] - values[lo]) * (pos - lo))
    return out


def _rank(grid: Sequence[float], x: float) -> float:
    """Mid-rank of ``x`` among the quantiles (0..1): ties share the middle of their run."""
    return (bisect_left(grid, x) + bisect_right(grid, x)) / (2 * len(grid))


@dataclass(frozen=True)
class ValueBounds:
    """A tenant's value-tier boundaries: quantiles of spend_365 and active_days_365 over a
    sample of its customers active in the last year, and the value-score cuts."""

    n: int  # customers the boundaries were computed from
    computed_at_ms: int
    spend: tuple[float, ...] = field(default=(), repr=False)
    days: tuple[float, ...] = field(default=(), repr=False)
    high_cut: float = math.inf
    medium_cut: float = math.inf
    currency: str | None = None  # None: every amount, whatever its currency (see docs)

    @property
    def relative(self) -> bool:
        return self.n >= MIN_CUSTOMERS and bool(self.spend) and bool(self.days)

    def score(self, features: dict[str, float]) -> float:
        return (_rank(self.spend, features["spend_365"])
                + _rank(self.days, features["active_days_365"])) / 2

    def to_json(self) -> dict[str, Any]:
        return {"format": BOUNDS_FORMAT, "n": self.n, "computed_at_ms": self.computed_at_ms,
                "currency": self.currency, "spend": list(self.spend), "days": list(self.days),
                "high_cut": self.high_cut if self.relative else None,
                "medium_cut": self.medium_cut if self.relative else None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ValueBounds:
        if raw.get("format") != BOUNDS_FORMAT:
            raise ValueError(f"value bounds format {raw.get('format')!r}, not {BOUNDS_FORMAT}")
        hc, mc = raw.get("high_cut"), raw.get("medium_cut")
        return cls(n=int(raw["n"]), computed_at_ms=int(raw["computed_at_ms"]),
                   spend=tuple(float(x) for x in raw.get("spend") or ()),
                   days=tuple(float(x) for x in raw.get("days") or ()),
                   high_cut=math.inf if hc is None else float(hc),
                   medium_cut=math.inf if mc is None else float(mc),
                   currency=raw.get("currency"))


def value_bounds(samples: Iterable[tuple[float, float]], computed_at_ms: int) -> ValueBounds:
    """Boundaries from ``(spend_365, active_days_365)`` of a tenant's customers; customers
    without an active day in the year are left out. Fewer than MIN_CUSTOMERS: no quantiles
    (:func:`value_tier` then falls back to the fixed amounts)."""
    rows = [(float(m), float(f)) for m, f in samples if f > 0]
    if len(rows) < MIN_CUSTOMERS:
        return ValueBounds(n=len(rows), computed_at_ms=computed_at_ms)
    spend = tuple(_quantiles(sorted(m for m, _ in rows)))
    days = tuple(_quantiles(sorted(f for _, f in rows)))
    probe = ValueBounds(n=len(rows), computed_at_ms=computed_at_ms, spend=spend, days=days)
    scores = [probe.score({"spend_365": m, "active_days_365": f}) for m, f in rows]
    high_cut = _cut(scores, HIGH_SHARE, math.inf)
    medium_cut = _cut(scores, HIGH_SHARE + MEDIUM_SHARE, high_cut)
    return ValueBounds(n=len(rows), computed_at_ms=computed_at_ms, spend=spend, days=days,
                       high_cut=high_cut, medium_cut=medium_cut)


def _cut(scores: list[float], share: float, ceiling: float) -> float:
    """The score c < ``ceiling`` whose share of ``scores`` >= c is closest to ``share`` (the
    higher c on a draw). Tied customers stay together, on the side that keeps the share
    closest. ``ceiling`` itself (the band below it empty) only when strictly closer."""
    n = len(scores)
    counts: dict[float, int] = {}
    for v in scores:
        counts[v] = counts.get(v, 0) + 1
    best, best_gap = None, math.inf
    at_least = 0
    for value in sorted(counts, reverse=True):
        at_least += counts[value]
        if value >= ceiling:
            continue
        gap = abs(at_least / n - share)
        if gap < best_gap - 1e-12:
            best, best_gap = value, gap
    above = sum(c for v, c in counts.items() if v >= ceiling)
    if best is None or abs(above / n - share) < best_gap - 1e-12:
        return ceiling
    return best


def value_tier(features: dict[str, float], bounds: ValueBounds | None = None) -> str:
    """low/medium/high relative to the tenant's boundaries; the fixed fallback when there
    are none (or too few customers). Nobody without an active day in a year is above low."""
    if bounds is None or not bounds.relative:
        return fixed_value_tier(features)
    if features["active_days_365"] <= 0:
        return "low"
    v = bounds.score(features)
    if v >= bounds.high_cut:
        return "high"
    if v >= bounds.medium_cut:
        return "medium"
    return "low"
