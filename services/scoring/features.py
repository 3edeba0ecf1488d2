"""Features of one customer at one instant: pure functions over the customer's activity.

The streaming scorer, the risk API (``as_of``) and ``churnwatch train`` all call
:func:`compute_features` — there is no second feature computation. Everything is by event
time: only activity at or before ``now_ms`` is seen, so a point-in-time snapshot never
leaks the future into its features.

Schema 3: features are computed from a bounded per-customer summary
(:mod:`services.scoring.summary`), windows by day, older days in weeks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

DAY_MS = 86_400_000
# Bump whenever a feature's name, order or meaning changes: model artifacts record the schema
# they were trained on and the scorer refuses one trained on another.
FEATURE_SCHEMA_VERSION = 3
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
    # The event's UTC offset in minutes (``occurred_at``'s ``+01:00`` is 60): its day is the
    # calendar day where it happened (:func:`local_day`), not the UTC one.
    tz_minutes: int = 0

    @property
    def day(self) -> int:
        """The event's local calendar day, in days since 1970-01-01 (:func:`local_day`)."""
        return local_day(self.ts, self.tz_minutes)


def local_day(ts_ms: int, tz_minutes: int) -> int:
    """The calendar day, in days since 1970-01-01, of the instant ``ts_ms`` on a wall clock
    ``tz_minutes`` east of UTC. Active days, the daily buckets and the windows are counted in
    these days: a visit at 19:50 in New York (-05:00) and its payment at 20:10 are one day,
    where UTC's days would split them at 00:00 UTC and make a weekly regular look twice as
    frequent (and twice as overdue)."""
    return (ts_ms + tz_minutes * 60_000) // DAY_MS


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


def compute_features(activities: Iterable[Activity], now_ms: int,
                     first_seen_ms: int | None = None) -> dict[str, float]:
    """Features of a customer at ``now_ms`` from their activity (any order, duplicates by
    ``event_id`` ignored). Every value is a finite float; names are :data:`FEATURE_NAMES`.

    The activities at or before ``now_ms`` are folded into a fresh
    :class:`~services.scoring.summary.Summary` and its :meth:`features` are returned: the one
    feature computation (schema 3; how it differs from schema 2 is in summary.py)."""
    from services.scoring.summary import Summary  # summary.py imports Activity from here

    # A whole list: duplicates are dropped here exactly, whatever their age; folding newest
    # first never moves the summary's newest day (the result does not depend on the order).
    seen: set[str] = set()
    acts = []
    for a in activities:
        if a.ts <= now_ms and a.event_id not in seen:
            seen.add(a.event_id)
            acts.append(a)
    acts.sort(key=lambda a: a.ts, reverse=True)
    s = Summary.empty()
    for a in acts:
        s._apply(a)
    return s.features(now_ms, first_seen_ms)


def online_mostly(f: Mapping[str, float]) -> bool:
    """Most of the customer's occasions with a channel were online, app or delivery orders:
    what staff read about them says "purchase"/"ordered", not "visit"/"came" (an online shop's
    customers read "Only one visit so far" about their first web order). Without channels
    from the POS, visits."""
    return f.get("online_share_365", 0.0) > 0.5


def occasion_words(f: dict[str, float]) -> tuple[str, str]:
    """What the customer's occasions are called, (English, Chinese): "visit" (到店), or
    "purchase" (购买) when :func:`online_mostly` — the model's reasons and the rules'
    ``{occasion}`` say it the same way."""
    return ("purchase", "购买") if online_mostly(f) else ("visit", "到店")


def breaks_between_habit(f: Mapping[str, float]) -> bool:
    """The customer comes in runs with longer breaks between: their usual gap (the median of
    their newest gaps) times their active days in the last year covers less than half of the
    part of that year they were active in. An online buyer who ordered 10 days apart, on 4 days
    of a year, is not "usually every 10 days" beside "Orders rarely: on 4 days in the last
    year"; a lapsed regular (their year ends early) is not one."""
    a365 = round(f["active_days_365"])
    span = min(f["tenure_days"], 365.0) - f["days_since_last_activity"]
    return bool(f["has_cadence"]) and a365 >= 3 and a365 * f["cadence_median_days"] < span / 2


def usual_gap_words(f: Mapping[str, float]) -> tuple[str, str]:
    """How often the customer usually comes, (English, Chinese), as "usually ..." ends:
    "every 28 days" (每28天一次), or "every 10 days, with longer breaks between"
    (每10天一次，其间时有较长间隔) when :func:`breaks_between_habit` — the model's reasons and the
    rules' ``{usual_gap}`` say it the same way."""
    cadence = round(f["cadence_median_days"])
    if breaks_between_habit(f):
        return (f"every {cadence} days, with longer breaks between",
                f"每{cadence}天一次，其间时有较长间隔")
    return f"every {cadence} days", f"每{cadence}天一次"


def _ratio(num: float, den: float) -> float:
    if den <= 0:
        return 1.0 if num <= 0 else 2.0
    return min(num / den, 5.0)


def feature_vector(features: dict[str, float], names: Sequence[str] = FEATURE_NAMES) -> list[float]:
    return [features[n] for n in names]
