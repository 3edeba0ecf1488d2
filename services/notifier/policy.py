"""The "no noise" rules as pure functions of their inputs (time is always passed in).

- :func:`quiet_until` - when a message that falls into quiet hours may be sent;
- :func:`decide_episode` - one notification per customer per episode, and "won back";
- :func:`apply_inhibition` - e.g. an open complaint turns a coupon offer into "resolve the
  complaint first", or suppresses the message;
- :func:`rate_window` - the fixed window a rate-limit counter belongs to.

The Redis-backed parts (episode ledger, rate-limit counters) live in
:mod:`services.notifier.noise` and call these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.common.riskchange import TIER_RANK, RiskChange, SuggestedAction
from services.notifier.routing import Inhibit, QuietHours

RESOLVE_COMPLAINT = SuggestedAction(
    code="resolve_complaint",
    text="Resolve the open complaint first; hold back any offer until it is settled",
    text_zh="请先处理未解决的投诉，投诉解决前暂缓任何优惠",
)
EPISODE_EVENTS_KEPT = 20


def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    """The IANA zone ``name``; ``fallback`` when it is empty or unknown."""
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def quiet_until(now: datetime, tz: ZoneInfo, quiet: QuietHours | None) -> datetime | None:
    """The end of the quiet window ``now`` (aware) falls in, in UTC-comparable form; None when
    ``now`` is outside quiet hours (or there are none). ``end <= start`` spans midnight; equal
    start and end means no quiet hours."""
    if quiet is None or quiet.start == quiet.end:
        return None
    local = now.astimezone(tz)
    t = local.timetz().replace(tzinfo=None)
    today_end = datetime.combine(local.date(), quiet.end, tzinfo=tz)
    if quiet.start < quiet.end:  # same day, e.g. 12:00-14:00
        if quiet.start <= t < quiet.end:
            return _wall(today_end, tz)
        return None
    # spans midnight, e.g. 21:00-08:00
    if t >= quiet.start:
        return _wall(datetime.combine(local.date() + timedelta(days=1), quiet.end, tzinfo=tz), tz)
    if t < quiet.end:
        return _wall(today_end, tz)
    return None


def next_at(now: datetime, tz: ZoneInfo, at: dtime) -> datetime:
    """The first time after ``now`` (aware) that the clock in ``tz`` reads ``at``: today's
    if it is still to come, else tomorrow's (a time inside a DST gap moves forward)."""
    local = now.astimezone(tz)
    when = _wall(datetime.combine(local.date(), at, tzinfo=tz), tz)
    if when <= now:
        when = _wall(datetime.combine(local.date() + timedelta(days=1), at, tzinfo=tz), tz)
    return when


def _wall(when: datetime, tz: ZoneInfo) -> datetime:
    # A wall time inside a DST gap does not exist; normalising through UTC moves it forward.
    return when.astimezone(ZoneInfo("UTC")).astimezone(tz)


def apply_inhibition(change: RiskChange, rules: tuple[Inhibit, ...]
                     ) -> tuple[str | None, SuggestedAction]:
    """(name of the rule that fired or None, the action to suggest). When a ``suppress`` rule
    fires the caller drops the staff message; ``resolve_complaint`` swaps the action."""
    action = change.suggested_action
    for rule in rules:
        if action.code in rule.actions and change.features.get(rule.feature, 0.0) > rule.above:
            if rule.then == "suppress":
                return rule.name, action
            return rule.name, RESOLVE_COMPLAINT
    return None, action


@dataclass
class Episode:
    """What the episode ledger remembers of one customer (no personal data).

    ``heard`` maps ``"<recipient key>|<channel>"`` to the alert id that told that recipient on
    that channel in this episode (or ``summary:...`` for a go-live summary): each recipient
    hears at most once per channel per episode, and a replay of the same alert id is let
    through again (its delivery ids are the same, so the delivery ledger sends nothing twice).
    """

    open: bool = False
    rank: int = 0  # highest tier rank reached in this episode
    won_back: bool = False
    events: dict[str, str] = field(default_factory=dict)  # event id -> decision, newest last
    tier: str = "low"  # the customer's latest tier as consumed
    low_since_ms: int | None = None  # processing time the open episode fell to low
    alerted: bool = False  # some staff member was told in this episode
    heard: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Episode:
        if not raw:
            return cls()
        low = raw.get("low_since_ms")
        return cls(open=bool(raw.get("open")), rank=int(raw.get("rank", 0)),
                   won_back=bool(raw.get("won_back")), events=dict(raw.get("events", {})),
                   tier=str(raw.get("tier", "low")),
                   low_since_ms=int(low) if low is not None else None,
                   alerted=bool(raw.get("alerted")), heard=dict(raw.get("heard", {})))

    def to_json(self) -> dict[str, Any]:
        return {"open": self.open, "rank": self.rank, "won_back": self.won_back,
                "events": self.events, "tier": self.tier, "low_since_ms": self.low_since_ms,
                "alerted": self.alerted, "heard": self.heard}

    def copy(self) -> Episode:
        return Episode.from_json(self.to_json())


ALERT, WON_BACK, DEDUPE, NONE = "alert", "won_back", "dedupe", "none"
GENUINE_RETURN_TYPES = ("visit", "transaction")


def genuine_return(change: RiskChange) -> bool:
    """The customer's own visit or purchase caused the change (a resolved complaint, silence or
    a model change does not). Changes from older scorers carry no event type: their ``event``
    cause counts, as it always did."""
    if change.cause.kind != "event":
        return False
    return change.cause.event_type is None or change.cause.event_type in GENUINE_RETURN_TYPES


def decide_episode(episode: Episode, change: RiskChange, event_id: str, *, now_ms: int = 0,
                   quiet_ms: int | None = None) -> tuple[str, Episode]:
    """(decision, new episode state) for one risk change.

    An episode starts when the customer rises into medium/high and ends only when they
    genuinely come back (:func:`genuine_return` lowering their tier) or after ``quiet_ms`` of
    processing time at low. Falling to low for another reason (a resolved complaint, score
    jitter) keeps it open. Inside it a rise to a higher level than reached so far is an
    ``alert`` (who actually hears is decided per recipient and channel, once per episode, by
    :func:`claim`); anything else is ``dedupe``. A genuine return from high after staff were
    told gives one ``won_back``. A low customer staying low: ``none``. The same event id seen
    again repeats its first decision (a replay after a crash).
    """
    if event_id in episode.events:
        return episode.events[event_id], episode
    new = episode.copy()
    if (new.open and new.low_since_ms is not None and quiet_ms is not None
            and now_ms - new.low_since_ms >= quiet_ms):
        new = Episode(events=new.events, tier=new.tier)  # quiet long enough at low: over
    rank = TIER_RANK[change.tier]
    before = TIER_RANK[change.previous_tier]
    decision = NONE
    if genuine_return(change) and rank < before:
        if new.open and new.alerted and change.previous_tier == "high" and not new.won_back:
            decision = WON_BACK
        elif new.open:
            decision = DEDUPE
        new = Episode(events=new.events)  # they came back: the episode ends
    elif rank > 0:
        if not new.open:
            if rank > before or new.rank == 0:
                decision = ALERT
                new.open, new.rank = True, rank
        elif rank > new.rank:
            decision = ALERT
            new.rank = rank
        else:
            decision = DEDUPE
        new.low_since_ms = None
    elif new.open:  # down to low without coming back: the episode stays open for a while
        decision = DEDUPE
        if new.low_since_ms is None:
            new.low_since_ms = now_ms
    new.tier = change.tier
    new.events[event_id] = decision
    while len(new.events) > EPISODE_EVENTS_KEPT:
        new.events.pop(next(iter(new.events)))
    return decision, new


def claim(episode: Episode, alert_id: str, pairs: list[str], tier: str
          ) -> tuple[list[str], Episode]:
    """(pairs that may hear ``alert_id`` now, new state). Nothing when the alert was reverted
    (the customer's latest tier is below ``tier``, or the episode ended); otherwise every
    ``recipient|channel`` pair not told in this episode yet, or told by this very alert."""
    if not episode.open or TIER_RANK.get(episode.tier, 0) < TIER_RANK[tier]:  # type: ignore[index]
        return [], episode
    new = episode.copy()
    allowed = []
    for pair in pairs:
        if new.heard.get(pair, alert_id) == alert_id:
            new.heard[pair] = alert_id
            allowed.append(pair)
    if allowed:
        new.alerted = True
    return allowed, new


def rate_window(now_s: float, per_s: float) -> tuple[int, float]:
    """(window number, seconds until that window ends) of a fixed-window rate limit."""
    number = int(now_s // per_s)
    return number, (number + 1) * per_s - now_s
