"""Features of one customer at one instant: pure functions over the customer's activity.

The streaming scorer, the risk API (``as_of``) and ``churnwatch train`` all call
:func:`compute_features` — there is no second feature computation. Everything is by event
time: only activity at or before ``now_ms`` is seen, so a point-in-time snapshot never
leaks the future into its features.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import median

DAY_MS = 86_400_000
# Bump whenever a feature's name, order or meaning changes: model artifacts record the schema
# they were trained on and the scorer refuses one trained on another.
FEATURE_SCHEMA_VERSION = 2
WINDOWS = (7, 30, 90, 180, 365)
DEFAULT_CADENCE_DAYS = 45.0  # assumed cadence when a customer has fewer than two active days
CAP_DAYS = 730.0

_KINDS = ("transaction", "visit", "complaint")
_SEVERITIES = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Activity:
    """What the scorer keeps of one event (see ``state.encode_activity``)."""

    kind: str
    ts: int
    event_id: str
    amount: float | None = None
    severity: str | None = None
    complaint_ref: str | None = None
    status: str | None = None
    store_id: str | None = None
    channel: str | None = None


FEATURE_NAMES: tuple[str, ...] = (
    "tenure_days",
    "days_since_last_activity",
    "days_since_last_visit",
    "days_since_last_transaction",
    "active_days_30",
    "active_days_90",
    "active_days_365",
    "visits_90",
    "transactions_90",
    "transactions_365",
    "spend_30",
    "spend_90",
    "spend_365",
    "avg_ticket_90",
    "avg_ticket_365",
    "cadence_median_days",
    "cadence_spread_days",
    "has_cadence",
    "overdue_ratio",
    "spend_trend",
    "ticket_trend",
    "frequency_trend",
    "complaints_90",
    "complaints_365",
    "open_complaints",
    "open_high_complaints",
    "days_since_last_complaint",
    "refunds_90",
    "online_share_365",
    # BG/NBD's summary of the last year (see services/training/bgnbd.py): repeat active days,
    # when the last one was and how long the customer was observed, in days from the start
    # of the window (the first active day for customers younger than a year).
    "bgnbd_x",
    "bgnbd_t_x",
    "bgnbd_T",
)
BGNBD_WINDOW_DAYS = 365


def _days(ms: float) -> float:
    return ms / DAY_MS


def compute_features(activities: Iterable[Activity], now_ms: int,
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
    spread = _mad(recent_gaps) if len(recent_gaps) >= 2 else 0.0
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


def _ratio(num: float, den: float) -> float:
    if den <= 0:
        return 1.0 if num <= 0 else 2.0
    return min(num / den, 5.0)


def _mad(values: Sequence[float]) -> float:
    m = median(values)
    return float(median([abs(v - m) for v in values]))


def feature_vector(features: dict[str, float], names: Sequence[str] = FEATURE_NAMES) -> list[float]:
    return [features[n] for n in names]


def value_tier(features: dict[str, float]) -> str:
    """RFM-style value: monetary (spend over a year) and frequency (active days)."""
    m, f = features["spend_365"], features["active_days_365"]
    if m >= 600 or f >= 18:
        return "high"
    if m >= 150 or f >= 5:
        return "medium"
    return "low"


def lifecycle_stage(features: dict[str, float]) -> str:
    if features["days_since_last_activity"] >= max(3 * features["cadence_median_days"], 120):
        return "dormant"
    if features["tenure_days"] < 60:
        return "new"
    if features["tenure_days"] < 365 and features["frequency_trend"] >= 1.0:
        return "growing"
    return "mature"
