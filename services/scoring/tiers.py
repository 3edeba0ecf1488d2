"""Tiers from scores, with hysteresis and a minimum dwell time so boundary jitter does not flap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from services.common.exceptions import ConfigError
from services.common.riskchange import TIER_RANK
from services.common.settings import ONLINE_TIERS, Settings, tier_order_broken
from services.scoring.features import online_mostly


@dataclass(frozen=True)
class Thresholds:
    """The tier levels; ``online``: the levels of a customer who buys mostly online
    (:func:`~services.scoring.features.online_mostly`), when they differ (:meth:`of`)."""

    medium_enter: float = 0.45
    medium_exit: float = 0.35
    high_enter: float = 0.75
    high_exit: float = 0.65
    min_dwell_ms: int = 0
    online: Thresholds | None = None

    @classmethod
    def from_settings(cls, s: Settings, business_type: str | None = None) -> Thresholds:
        """The settings' levels, for ``business_type`` (default: the deployment's; a tenant's
        own, ``CHURNWATCH_TENANT_BUSINESS_TYPES``). Where the four are not chosen (the defaults,
        or an online deployment's :data:`~services.common.settings.ONLINE_TIERS`), an online
        business is judged at the online levels, and in any other a customer who buys mostly
        online is: where seven in ten such customers churn within 60 days anyway, the general
        levels raised a third of them to high (an online shop left at the default business
        type: ~100 texts a week per 1,000 active customers, right 76 % of the time against a
        base rate of 70 %; bench/live_alerts.py, docs/notifier.md). Levels chosen apply to
        every business type and customer alike."""
        dwell = int(s.tier_min_dwell_seconds * 1000)
        # by value, not by which were set: `churnwatch up` hands every setting to its children
        levels = {name: getattr(s, name) for name in ONLINE_TIERS}
        defaults = {name: type(s).model_fields[name].default for name in ONLINE_TIERS}

        def at(values: Mapping[str, float], online: Thresholds | None = None) -> Thresholds:
            return cls(**{k.removeprefix("tier_"): v for k, v in values.items()},
                       min_dwell_ms=dwell, online=online)

        if levels != defaults and not (s.business_type == "online" and levels == ONLINE_TIERS):
            return at(levels)
        if (business_type or s.business_type) == "online":
            return at(ONLINE_TIERS)
        return at(defaults, at(ONLINE_TIERS))

    def with_levels(self, levels: Sequence[tuple[str, float]], source: str) -> Thresholds:
        """These levels with those a rules file sets (``tiers:``, :attr:`RuleSet.levels`) in
        their place: chosen levels apply to every customer alike, as chosen settings do. A
        mix that does not fit raises ConfigError naming the file and the four levels."""
        if not levels:
            return self
        got = dict(levels)
        t = replace(self, medium_enter=got.get("medium_enter", self.medium_enter),
                    medium_exit=got.get("medium_exit", self.medium_exit),
                    high_enter=got.get("high_enter", self.high_enter),
                    high_exit=got.get("high_exit", self.high_exit), online=None)
        if tier_order_broken(t.medium_enter, t.medium_exit, t.high_enter, t.high_exit):
            raise ConfigError(
                f"{source}: the tier levels must satisfy medium.exit <= medium.enter < "
                "high.enter and medium.enter <= high.exit <= high.enter; with this file's "
                f"'tiers' they are medium enter {t.medium_enter} / exit {t.medium_exit}, "
                f"high enter {t.high_enter} / exit {t.high_exit} (levels the file does not set "
                "are the business type's or CHURNWATCH_TIER_*)")
        return t

    def of(self, features: Mapping[str, float]) -> Thresholds:
        """The levels a customer with these features is judged at."""
        if self.online is not None and online_mostly(features):
            return self.online
        return self


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
