"""Churn analytics over a tenant's scored customers (see docs/api.md, "How churn is counted").

A customer has churned once their last activity lies ``d`` days back, where ``d`` is either a
fixed number of days or a multiple of the customer's own median cadence (floored). Counting
uses each customer's first and last event time ("final churn"): a customer who went quiet and
came back counts as never having churned. For a period [a, b): the cohort is the customers
first seen before a and not churned at a (last activity after a - d); they churned in the
period when last + d falls in [a, b). Periods reaching past "now" are marked incomplete and
only count churn that has already happened.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from services.records.population import Member, Population
from services.scoring.features import DAY_MS, FEATURE_NAMES

Period = Literal["week", "month", "quarter"]
Segment = Literal["all", "store", "value_tier", "lifecycle_stage"]


@dataclass(frozen=True)
class Definition:
    kind: Literal["inactive_days", "cadence_multiple"]
    days: int
    multiple: float
    min_days: int

    def threshold_ms(self, m: Member) -> int:
        if self.kind == "inactive_days":
            return self.days * DAY_MS
        cadence = float(m.features.get("cadence_median_days", self.min_days) or self.min_days)
        return int(max(self.multiple * cadence, self.min_days) * DAY_MS)

    def describe(self) -> dict[str, Any]:
        if self.kind == "inactive_days":
            return {"kind": self.kind, "days": self.days,
                    "text": f"no activity for {self.days} days"}
        return {"kind": self.kind, "multiple": self.multiple, "min_days": self.min_days,
                "text": f"no activity for {self.multiple:g}x the customer's median cadence "
                f"(at least {self.min_days} days)"}


def period_bounds(period: Period, count: int, now: datetime) -> list[tuple[datetime, datetime]]:
    """The last ``count`` calendar periods (UTC) up to and including the current one."""
    if period == "week":
        start = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
        return [(start - timedelta(weeks=i), start - timedelta(weeks=i - 1))
                for i in range(count - 1, -1, -1)]
    step = 1 if period == "month" else 3
    month0 = (now.year * 12 + now.month - 1) // step * step
    out = []
    for i in range(count - 1, -1, -1):
        m = month0 - i * step
        a = datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC)
        n = m + step
        out.append((a, datetime(n // 12, n % 12 + 1, 1, tzinfo=UTC)))
    return out


def _segment(m: Member, by: Segment) -> str:
    if by == "all":
        return "all"
    if by == "store":
        return m.store or "none"
    return str(getattr(m, by))


def churn_table(pop: Population, d: Definition, *, period: Period, count: int, by: Segment,
                now_ms: int) -> list[dict[str, Any]]:
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    rows = []
    bounds = period_bounds(period, count, now)
    thresholds = [d.threshold_ms(m) for m in pop.members]
    for a, b in bounds:
        a_ms, b_ms = int(a.timestamp() * 1000), int(b.timestamp() * 1000)
        end = min(b_ms, now_ms)
        cohort: dict[str, int] = defaultdict(int)
        churned: dict[str, int] = defaultdict(int)
        for m, t in zip(pop.members, thresholds, strict=True):
            if m.first_ts >= a_ms or m.last_ts + t <= a_ms:
                continue
            seg = _segment(m, by)
            cohort[seg] += 1
            if m.last_ts + t <= end:
                churned[seg] += 1
        for seg in sorted(cohort):
            rate = churned[seg] / cohort[seg]
            rows.append({"period_start": a.date().isoformat(), "period_end": b.date().isoformat(),
                         "segment": seg, "cohort": cohort[seg], "churned": churned[seg],
                         "churn_rate": round(rate, 4), "retention_rate": round(1 - rate, 4),
                         "complete": b_ms <= now_ms})
    return rows


def feature_comparison(pop: Population, d: Definition, *, now_ms: int) -> dict[str, Any]:
    """Customers churned as of now vs active ones, feature by feature (mean and median)."""
    churned = [m.last_ts + d.threshold_ms(m) <= now_ms for m in pop.members]
    names = [n for n in FEATURE_NAMES if any(n in m.features for m in pop.members[:100])]
    matrix = np.array([[float(m.features.get(n, np.nan)) for n in names] for m in pop.members],
                      dtype=float).reshape(len(pop.members), len(names))
    mask = np.array(churned, dtype=bool)
    rows = []
    for j, name in enumerate(names):
        row: dict[str, Any] = {"feature": name}
        for label, sel in (("active", ~mask), ("churned", mask)):
            col = matrix[sel, j]
            col = col[~np.isnan(col)]
            row[f"{label}_mean"] = round(float(col.mean()), 4) if col.size else None
            row[f"{label}_median"] = round(float(np.median(col)), 4) if col.size else None
        rows.append(row)
    return {"active": int((~mask).sum()), "churned": int(mask.sum()), "features": rows}
