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
    """What the episode ledger remembers of one customer (no personal data)."""

    open: bool = False
    rank: int = 0  # highest tier rank notified in this episode
    won_back: bool = False
    events: dict[str, str] = field(default_factory=dict)  # event id -> decision, newest last

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Episode:
        if not raw:
            return cls()
        return cls(open=bool(raw.get("open")), rank=int(raw.get("rank", 0)),
                   won_back=bool(raw.get("won_back")), events=dict(raw.get("events", {})))

    def to_json(self) -> dict[str, Any]:
        return {"open": self.open, "rank": self.rank, "won_back": self.won_back,
                "events": self.events}


ALERT, WON_BACK, DEDUPE, NONE = "alert", "won_back", "dedupe", "none"


def decide_episode(episode: Episode, change: RiskChange, event_id: str) -> tuple[str, Episode]:
    """(decision, new episode state) for one risk change.

    An episode runs from entering medium/high until back to low. Within it, staff hear once
    per tier level reached (entering medium, then again on reaching high - never again on
    medium<->high flapping): ``alert``. A high-risk customer coming back to medium/low because
    of their own activity (cause ``event``) gives one ``won_back`` per episode. Otherwise
    ``dedupe`` (in an episode) or ``none`` (a low customer staying low). The same event id
    seen again repeats its first decision (a replay after a crash), so deliveries stay
    planned exactly as before.
    """
    if event_id in episode.events:
        return episode.events[event_id], episode
    new = Episode(open=episode.open, rank=episode.rank, won_back=episode.won_back,
                  events=dict(episode.events))
    rank = TIER_RANK[change.tier]
    decision = NONE
    if (change.previous_tier == "high" and rank < TIER_RANK["high"]
            and change.cause.kind == "event" and not episode.won_back):
        decision = WON_BACK
        new.won_back = True
        new.rank = rank  # a relapse to high is news again
    elif rank > 0:
        if not episode.open or rank > episode.rank:
            decision = ALERT
            new.rank = rank
        else:
            decision = DEDUPE
    if rank == 0:
        new = Episode(events=new.events)  # the episode ends
    else:
        new.open = True
    new.events[event_id] = decision
    while len(new.events) > EPISODE_EVENTS_KEPT:
        new.events.pop(next(iter(new.events)))
    return decision, new


def rate_window(now_s: float, per_s: float) -> tuple[int, float]:
    """(window number, seconds until that window ends) of a fixed-window rate limit."""
    number = int(now_s // per_s)
    return number, (number + 1) * per_s - now_s
