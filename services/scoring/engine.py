"""Assess customers: features -> one vectorized model call -> tier -> rules -> reasons.

Precedence (docs/scoring.md): the model's score, then the tier thresholds with hysteresis and
dwell, then the rules floor — a rule can only raise the tier, and its reason comes first.
Reasons of a trained model come from its batch attributions (no per-customer model calls);
the scorecard explains itself.

Used by the streaming scorer (with tier history, hysteresis and dwell) and by the risk API's
``as_of`` reads (point in time, entry thresholds), so both score exactly alike. The served
model is an :class:`~services.scoring.model.ActiveModel`: :meth:`Engine.refresh` follows
``churnwatch model activate`` without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from services.common.actions import NO_STORE, UNRECORDED_CLOSURES, first_reasons
from services.common.riskchange import (
    TIER_RANK,
    Reason,
    SuggestedAction,
    priority,
    reason_json,
    score_figures,
)
from services.common.timefmt import rfc3339
from services.scoring.closures import Closures
from services.scoring.features import DAY_MS, Activity, compute_features, online_mostly
from services.scoring.lifecycle import (
    DEFAULT_HORIZON_DAYS,
    ValueBounds,
    active_days_ago,
    lifecycle_stage,
    return_after_gap,
    value_tier,
)
from services.scoring.model import ActiveModel, RiskModel, ShadowModel, feature_matrix
from services.scoring.rules import BUSINESS_TYPES, RuleSet, load_rules, rules_from_settings
from services.scoring.scorecard import (
    REGULAR,
    describe,
    fact_of,
    model_pattern,
    reason_weights,
    suggested_action,
    top_reasons,
)
from services.scoring.scorecard import reasons as explain
from services.scoring.summary import Summary
from services.scoring.tiers import Thresholds, decide_tier, plain_tier

MAX_REASONS = 4
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    """What the engine needs of one customer."""

    customer_id: str
    activities: Sequence[Activity]
    first_seen_ms: int | None = None
    tier: str | None = None
    tier_since_ms: int | None = None
    summary: Summary | None = None  # when given, the features come from it (activities unused)
    tenant: str = "default"  # whose value-tier boundaries apply
    # the days the customer's store is closed: their silence does not count on them
    closures: Closures | None = None
    # the customer belongs to no store (none named, none on their profile, not the tenant's
    # only store): no store's closed days can count for them
    storeless: bool = False

    def features(self, now_ms: int) -> dict[str, float]:
        if self.closures:  # (a store that never closes: none to count)
            now_ms = self.closures.open_now(self.last_ms(now_ms), now_ms)
        if self.summary is not None:
            return self.summary.features(now_ms, self.first_seen_ms)
        return compute_features(self.activities, now_ms, self.first_seen_ms)

    def last_ms(self, now_ms: int) -> int | None:
        """The customer's newest activity at or before ``now_ms``."""
        if self.summary is not None:
            return self.summary.last_at_or_before(now_ms)
        last = None
        for a in self.activities:
            if a.ts <= now_ms and (last is None or a.ts > last):
                last = a.ts
        return last

    def return_after_gap(self, now_ms: int, quiet: float, within: int | None) -> int | None:
        """:func:`~services.scoring.lifecycle.return_after_gap` over the newest active days at
        or before ``now_ms`` (the summary answers a regular customer without listing them).
        With the store's closures the gaps are in open days: a return after the summer break
        is not a win-back."""
        if not self.closures:
            if self.summary is not None:
                return self.summary.return_after_gap(now_ms, quiet, within)
            return return_after_gap(active_days_ago(self.activities, now_ms), quiet, within)
        ago = (self.summary.active_days(now_ms) if self.summary is not None
               else active_days_ago(self.activities, now_ms))
        closed = self.closures
        return return_after_gap([d - round(closed.closed_ms(now_ms - d * DAY_MS, now_ms) / DAY_MS)
                                 for d in ago], quiet, within)


@dataclass(frozen=True)
class Step:
    """A point on a customer's path the caller computed the features of (an event of a batch
    before the customer's last): :meth:`Engine.assess_paths`."""

    now_ms: int
    features: dict[str, float]


def round6(v: float) -> float:
    """``round(v, 6)``, without its decimal conversion (~0.3 µs, for each of ~30 features a
    step) where the result is known without it: a whole number (most counts) is ``v`` itself;
    otherwise, while ``v * 1e6`` is below 1e12 (its float error under 2**-12) and not within
    0.001 of a half, its nearest integer ``k`` is the exact decimal rounding, and ``k / 1e6``
    the float nearest to it — what round gives (a zero keeps ``v``'s sign, as round's)."""
    if v.is_integer():
        return v
    x = v * 1e6
    if -1e12 < x < 1e12:
        k = round(x)
        if abs(x - k) < 0.499:
            return k / 1e6 if k else math.copysign(0.0, v)
    return round(v, 6)


def round6_rows(rows: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """:func:`round6` of every value of ``rows`` (feature dicts), for a batch at once: one
    numpy pass over the rows that share the first row's keys (the features' order is fixed),
    the rest value by value. The same floats as ``round(v, 6)``: a whole number is kept;
    else ``rint(v * 1e6) / 1e6`` — the same IEEE operations as round6's — where that is
    exact (below 1e12 and not within 0.001 of a half), and ``round`` itself elsewhere (rare).
    It is the stored and published snapshot's rounding: ~30 values a customer, ~11 µs one by
    one, ~6 for a batch (re-scoring everyone after a model switch is ~130-215 µs a customer)."""
    if not rows:
        return []
    keys = tuple(rows[0])
    same = [i for i, r in enumerate(rows) if tuple(r) == keys]
    out: list[dict[str, float] | None] = [None] * len(rows)
    if same and keys:
        v = np.array([list(rows[i].values()) for i in same], dtype=float)
        x = v * 1e6
        k = np.rint(x)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(v) & (v == np.floor(v))
            fast = np.isfinite(x) & (np.abs(x) < 1e12) & (np.abs(x - k) < 0.499)
        r = np.where(whole, v, np.where(k == 0, np.copysign(0.0, v), k / 1e6))
        slow = ~(whole | fast)
        values = r.tolist()
        if slow.any():
            for a, b in zip(*np.nonzero(slow), strict=True):
                values[a][b] = round(float(v[a, b]), 6)
        for i, row in zip(same, values, strict=True):
            out[i] = dict(zip(keys, row, strict=True))
    return [o if o is not None else {k: round6(x) for k, x in rows[i].items()}
            for i, o in enumerate(out)]


@dataclass(frozen=True)
class Assessment:
    customer_id: str
    score: float
    tier: str
    reasons: list[Reason]
    action: SuggestedAction
    features: dict[str, float]
    value_tier: str
    lifecycle_stage: str
    model_version: str
    as_of_ms: int
    # the challenger's view (``churnwatch model shadow``): version, score, plain tier; it
    # decides nothing
    shadow: tuple[str, float, str] | None = None
    # ``features`` as :func:`round6_rows` rounds them for a batch (None: to_json rounds them)
    rounded: dict[str, float] | None = field(default=None, compare=False, repr=False)

    @property
    def as_of(self) -> datetime:
        return datetime.fromtimestamp(self.as_of_ms / 1000, UTC)

    @property
    def priority(self) -> float:
        """The customer's order in the at-risk lists: the score weighted by a year's spend."""
        return round6(priority(self.score, self.features))

    def to_json(self) -> dict[str, Any]:
        return {
            "score": round6(self.score),
            "tier": self.tier,
            "reasons": [reason_json(r) for r in self.reasons],
            "suggested_action": {"code": self.action.code, "text": self.action.text,
                                 "text_zh": self.action.text_zh},
            "value_tier": self.value_tier,
            "lifecycle_stage": self.lifecycle_stage,
            "model_version": self.model_version,
            "as_of": rfc3339(self.as_of),
            **({} if self.shadow is None else {"shadow": {
                "model_version": self.shadow[0], "score": round6(self.shadow[1]),
                "tier": self.shadow[2]}}),
            "features": self.rounded if self.rounded is not None  # last (risk_json)
            else {k: round6(v) for k, v in self.features.items()},
        }


@dataclass(frozen=True)
class Business:
    """How one kind of business judges its customers: its tier levels and its rules."""

    thresholds: Thresholds
    rules: RuleSet | None = None

    @property
    def expects_closed_days(self) -> bool:
        """Whether its rules read a holiday as leaving (``closed_days_expected``: a school's),
        so that a store without closed days on record is worth telling of."""
        return self.rules is not None and self.rules.closed_days_expected


class Engine:
    def __init__(self, model: RiskModel | ActiveModel, thresholds: Thresholds, *,
                 rules: RuleSet | None = None, shadow: ShadowModel | None = None,
                 horizon_days: float = DEFAULT_HORIZON_DAYS,
                 tenants: dict[str, Business] | None = None):
        self.active = model if isinstance(model, ActiveModel) else ActiveModel(model)
        # the tenants judged as another kind of business than the deployment's (their own
        # levels and rules: CHURNWATCH_TENANT_BUSINESS_TYPES); every other tenant: the above
        self.business = Business(thresholds, rules)
        self.tenants = dict(tenants or {})
        self.shadow = shadow  # a challenger scored beside the served model (None: none)
        # the churn horizon when the served model's card does not name one (the scorecard)
        self.horizon_days = float(horizon_days)
        # tenant -> value-tier boundaries (services/scoring/valuebounds.py keeps them current);
        # a tenant without any gets the fixed fallback
        self.value_bounds: dict[str, ValueBounds] = {}
        self._bounds_loaded_at = float("-inf")

    @classmethod
    def from_settings(cls, model: RiskModel | ActiveModel, settings: Any, *,
                      shadow: ShadowModel | None = None) -> Engine:
        """The engine the settings describe: the deployment's business type (or rules file)
        and tier levels, each tenant of ``CHURNWATCH_TENANT_BUSINESS_TYPES`` with its own
        type's rules and levels. A bad rules file raises ConfigError (a service stops at
        start)."""
        tenants = {tenant: cls._business(settings, kind)
                   for tenant, kind in settings.business_types.items()}
        rules = rules_from_settings(settings)
        return cls(model, Thresholds.from_settings(settings).with_levels(
                       rules.levels, str(settings.rules)),
                   rules=rules, shadow=shadow, horizon_days=settings.churn_inactive_days,
                   tenants=tenants)

    @staticmethod
    def _business(settings: Any, kind: str) -> Business:
        """A tenant's own business type, or rules file: a file's levels are those it sets
        (``tiers:``), the others those of the type its ``business_type`` names (the
        deployment's when it names none of them)."""
        if kind in BUSINESS_TYPES:
            return Business(Thresholds.from_settings(settings, kind), load_rules(None, kind))
        rules = load_rules(Path(kind))
        return Business(Thresholds.from_settings(
            settings, rules.name if rules.name in BUSINESS_TYPES else None
        ).with_levels(rules.levels, kind), rules)

    @property
    def judging(self) -> str:
        """A fingerprint of how customers are judged beside the model — every business's tier
        levels and rules: the scorer re-scores every stored customer when it changes (a new
        business type, rules file or tier levels), as after a model switch."""
        seen = repr((self.business, sorted(self.tenants.items())))
        return hashlib.sha256(seen.encode()).hexdigest()[:12]

    def business_of(self, tenant: str) -> Business:
        """How ``tenant`` judges its customers."""
        return self.tenants.get(tenant, self.business)

    def levels(self, tenant: str, features: dict[str, float]) -> Thresholds:
        """The tier levels a customer of ``tenant`` with these features is judged at."""
        return self.business_of(tenant).thresholds.of(features)

    def horizon(self, model: RiskModel) -> float:
        """The churn horizon (days) of ``model``: its card's ``horizon_days``, else the
        engine's (``CHURNWATCH_CHURN_INACTIVE_DAYS``)."""
        card = getattr(model, "card", None) or {}
        try:
            h = float(card.get("horizon_days") or 0)
        except (TypeError, ValueError):
            h = 0.0
        return h if h > 0 else self.horizon_days

    async def refresh_value_bounds(self, redis: Any, keys: Any, *,
                                   min_interval: float = 0.0) -> None:
        """Read every tenant's current value-tier boundaries (at most every
        ``min_interval`` seconds)."""
        from services.scoring.valuebounds import load_bounds  # Redis I/O lives there

        now = time.monotonic()
        if now - self._bounds_loaded_at < min_interval:
            return
        self._bounds_loaded_at = now
        self.value_bounds = await load_bounds(redis, keys)

    @property
    def model(self) -> RiskModel:
        """The model served right now (it may change after :meth:`refresh`)."""
        return self.active.current

    async def refresh(self, redis: Any, keys: Any, *, min_interval: float = 0.0) -> bool:
        """Follow ``churnwatch model activate``; True when the served model changed."""
        return await self.active.refresh(redis, keys, min_interval=min_interval)

    def assess(self, subjects: Sequence[Subject], now_ms: int | Sequence[int], *,
               with_history: bool = True) -> list[Assessment]:
        """``now_ms``: one instant for every subject, or one per subject (the event clock is
        per tenant, and never before a customer's own newest event)."""
        return [path[-1] for path in self.assess_paths(subjects, now_ms,
                                                        with_history=with_history)]

    def assess_paths(self, subjects: Sequence[Subject], now_ms: int | Sequence[int], *,
                     steps: Sequence[Sequence[Step]] | None = None,
                     fresh: Sequence[Sequence[bool]] | None = None,
                     with_history: bool = True) -> list[list[Assessment]]:
        """Assess each subject after each of its ``steps`` (features the caller computed at
        intermediate points, oldest first) and then at ``now_ms`` from its summary: one
        vectorized model call for all of them; the tier of each step follows from the
        previous step's (hysteresis and dwell chain along the path).

        ``fresh``: per subject, one flag per point (its steps, then the last): a point
        flagged decides its tier from its score alone — the tier before it was decided
        without history that had already happened, and holds nothing (the scorer's
        ``Processor._fresh_points``).

        The streaming scorer passes one step per event of a batch before the customer's
        last, so a customer's tier path — and the risk changes it publishes — depend on
        their events alone, not on where the stream was cut into batches."""
        model = self.model  # one model for the whole batch, even if a refresh swaps it
        nows = [now_ms] * len(subjects) if isinstance(now_ms, int) else list(now_ms)
        rows: list[tuple[int, int, dict[str, float]]] = []
        flags: list[bool] | None = None if fresh is None else []
        for i, (s, at) in enumerate(zip(subjects, nows, strict=True)):
            n = len(rows)
            if steps is not None:
                rows.extend((i, step.now_ms, step.features) for step in steps[i])
            rows.append((i, at, s.features(at)))
            if flags is not None and fresh is not None:  # one per point, unflagged if short
                mine = list(fresh[i][:len(rows) - n])
                flags.extend(mine + [False] * (len(rows) - n - len(mine)))
        feats = [f for _, _, f in rows]
        X = feature_matrix(model, feats)
        scores: Any = model.predict(X) if len(feats) else []
        attributions = getattr(model, "attributions", None)
        contrib = attributions(X) if attributions is not None and len(feats) else None
        explained: list[tuple[tuple[str, ...], list[float]]] | None = None
        if contrib is not None:  # summed per reason code for the whole batch at once
            codes, weights = reason_weights(contrib, model.feature_names)
            explained = [(codes, row) for row in weights.tolist()]
        held_by: list[tuple[str | None, int | None]] = [(s.tier, s.tier_since_ms)
                                                        for s in subjects]
        horizon = self.horizon(model)
        rounded = round6_rows(feats)
        out: list[list[Assessment]] = [[] for _ in subjects]
        for k, ((i, at, f), score) in enumerate(zip(rows, scores, strict=True)):
            s = subjects[i]
            previous, since = held_by[i]
            unheld = flags is not None and flags[k]
            a = self._assess_one(model, s, *((None, None) if unheld else (previous, since)),
                                 f, float(score), None if explained is None else explained[k],
                                 at, horizon, with_history=with_history, rounded=rounded[k])
            if a.tier != previous:
                held_by[i] = (a.tier, at)
            out[i].append(a)
        challenger = self.shadow.shadow if self.shadow is not None else None
        if challenger is not None and out:
            # the challenger scores each customer's final point only: one more model call
            last = {i: k for k, (i, _, _) in enumerate(rows)}
            order = sorted(last)
            try:
                theirs = challenger.predict(feature_matrix(challenger,
                                                           [feats[last[i]] for i in order]))
            except Exception:  # a shadow must never stop the served scoring
                logger.exception("shadow model %s failed; scored without it",
                                 challenger.version)
                return out
            for i, score in zip(order, theirs, strict=True):
                sc = float(min(max(float(score), 0.0), 1.0))
                levels = self.levels(subjects[i].tenant, feats[last[i]])
                out[i][-1] = replace(out[i][-1], shadow=(
                    challenger.version, sc, plain_tier(sc, levels)))
        return out

    def _assess_one(self, model: RiskModel, s: Subject, previous: str | None,
                    since: int | None, f: dict[str, float], score: float,
                    explained: tuple[Sequence[str], Sequence[float]] | None,
                    now_ms: int, horizon: float, *, with_history: bool,
                    rounded: dict[str, float] | None = None) -> Assessment:
        score = float(min(max(score, 0.0), 1.0))
        business = self.business_of(s.tenant)
        t = business.thresholds.of(f)
        if with_history:
            tier = decide_tier(previous, since, score, now_ms, t)
        else:
            tier = plain_tier(score, t)
        ruled: list[Reason] = []
        decided = tier
        if business.rules is not None:
            tier, ruled = business.rules.apply(tier, f)
        if explained is not None:  # the model's own attributions, per reason code
            why = top_reasons(f, *explained)
        else:
            why = explain(f)
        why = _merge(ruled, why, f)
        if tier == "low":  # a fall to (or a stay at) low is not explained by being overdue
            why = [r for r in why if r.code != "overdue"] or [REGULAR]
        elif all(r.code == REGULAR.code for r in why):  # at risk, yet "as usual": say why
            why = _weaker_reasons(f, explained, score)
        held = self._held(previous, since, f, score, decided, tier, now_ms, t, business.rules)
        action = suggested_action(tier, why, online=online_mostly(f))
        if held is not None:  # say why the tier is above what the score alone gives
            why = [held, *first_reasons(why, action.code, MAX_REASONS - 1)]
        if s.closures is not None:  # the days told as on the calendar (below)
            closed = s.closures.closed_ms(s.last_ms(now_ms) or now_ms, now_ms) / DAY_MS
            why = calendar_reasons(why, f, closed, business.rules)
        elif business.expects_closed_days:  # none on record: said, where days are counted
            why = unrecorded_closures_reasons(why, f, business.rules, storeless=s.storeless)
        stage = lifecycle_stage(f, tier=tier, horizon_days=horizon,
                                won_back=lambda q, w: s.return_after_gap(now_ms, q, w))
        return Assessment(
            customer_id=s.customer_id, score=score, tier=tier, reasons=why,
            action=action, features=f, value_tier=value_tier(f, self.value_bounds.get(s.tenant)),
            lifecycle_stage=stage, model_version=model.version, as_of_ms=now_ms,
            rounded=rounded,
        )

    def _held(self, previous: str | None, since: int | None, f: dict[str, float], score: float,
              decided: str, tier: str, now_ms: int, t: Thresholds,
              rules: RuleSet | None) -> Reason | None:
        """A reason when a rule (of ``rules``), hysteresis or the minimum dwell holds ``tier``
        above the score's own tier (at the customer's levels ``t``); None otherwise."""
        plain = plain_tier(score, t)
        if _RANK[tier] <= _RANK[plain]:
            return None
        zh_tier = _ZH_TIER[tier]
        if _RANK[tier] > _RANK[decided] and rules is not None:
            rule = next((r for r in rules.rules if r.holds(f) and r.min_tier == tier), None)
            if rule is not None:
                # staff read it: which rule, in words (its label), beside the rule's own
                # reason with the customer's numbers
                return Reason(code="tier_raised_by_rule",
                              text=f"Raised to {tier} by a business rule: {rule.name} "
                              f"(score {score:.2f})",
                              text_zh=f"业务规则（{rule.name_zh}）将风险提升至{zh_tier}"
                              f"（评分{score:.2f}）", weight=0.0)
        undwelled = decide_tier(previous, None, score, now_ms, t)
        if (decided == tier and since is not None
                and _RANK[undwelled] < _RANK[decided]):
            until = datetime.fromtimestamp((since + t.min_dwell_ms) / 1000, UTC)
            return Reason(code="tier_held_dwell",
                          text=f"Held at {tier} until {until.day} {until:%b %H:%M} UTC: "
                          f"minimum dwell (score {score:.2f})",
                          text_zh=f"最短停留期：{until.month}月{until.day}日{until:%H:%M}（UTC）"
                          f"前保持{zh_tier}风险（评分{score:.2f}）", weight=0.0)
        exit_level = t.high_exit if tier == "high" else t.medium_exit
        shown, level = score_figures(score, exit_level)
        above = float(shown) > float(level)  # as read: figures alike are "not below"
        return Reason(code="tier_held_hysteresis",
                      text=f"Held at {tier}: score {shown} is "
                      f"{'still above' if above else 'not below'} the exit level {level}",
                      text_zh=f"评分{shown}{'仍高于' if above else '未低于'}退出线{level}，"
                      f"保持{zh_tier}风险", weight=0.0)


_RANK = TIER_RANK
_ZH_TIER = {"low": "低", "medium": "中", "high": "高"}


# the features that count days up to "now": with closures, "now" was moved back by the closed
# time since the last activity, so each is short by that much on the calendar
_DAYS_TO_NOW = ("tenure_days", "days_since_last_activity", "days_since_last_visit",
                "days_since_last_transaction", "days_since_last_complaint")


def calendar_reasons(why: list[Reason], f: dict[str, float], closed_days: float,
                     rules: RuleSet | None) -> list[Reason]:
    """Reasons that count days up to "now" told in calendar days, with the closure said:
    a customer's features count open days only (:class:`Subject`), and "12 days since the last
    visit" on 10 September read wrong beside "last visit 28 June" — "74 days since the last
    visit; usually every 4 days; the store was closed on 62 of those days". Each reason is
    told again from the features moved to the calendar by the same template that told it (a
    rule's, else the model's :func:`~services.scoring.scorecard.describe`); one whose text
    does not change (a spending decline, a held tier) stays as it was. Less than half a day
    closed changes nothing."""
    n = round(closed_days)
    if n <= 0:
        return why
    return [r if told is None else r.model_copy(update={
        "text": f"{told[0]}; the store was closed on {n} of those days",
        "text_zh": f"{told[1]}；其间门店休业{n}天"})
        for r, told in zip(why, _told_later(why, f, closed_days, rules), strict=True)]


def unrecorded_closures_reasons(why: list[Reason], f: dict[str, float],
                                rules: RuleSet | None, *, storeless: bool = False
                                ) -> list[Reason]:
    """Reasons that count days up to "now", for a customer of a business whose rules expect
    closed days (a school's) when their store has none on record: said so, so that whoever
    reads "24 days since the last class" in the third week of an unentered summer break knows
    it may be the break (the console's Team page and ``GET /v1/status`` tell the managers; the
    staff texted about the student read only this). ``storeless``: the customer belongs to no
    store, which is what to fix (a school not entered as a store; in a chain, their profile's
    ``store_id``), not a store's closed days. Reasons that do not count days stay."""
    en, zh = NO_STORE if storeless else UNRECORDED_CLOSURES
    return [r if told is None else r.model_copy(update={
        "text": f"{r.text}; {en}", "text_zh": f"{r.text_zh}；{zh}"})
        for r, told in zip(why, _told_later(why, f, 1.0, rules), strict=True)]


def _told_later(why: list[Reason], f: dict[str, float], days: float,
                rules: RuleSet | None) -> list[tuple[str, str] | None]:
    """Each reason (English, Chinese) told again from the features ``days`` later on the
    calendar (those that count days up to "now", :data:`_DAYS_TO_NOW`), by the template that
    told it: a rule's, else the model's :func:`~services.scoring.scorecard.describe`. None
    for one whose text does not change: it counts no days (a spending decline, a held tier,
    "as usual")."""
    cal = dict(f)
    for k in _DAYS_TO_NOW:
        cal[k] = f[k] + days
    out: list[tuple[str, str] | None] = []
    for r in why:
        told: tuple[str, str] | None = None
        rule = None if rules is None else next(
            (x for x in rules.rules if x.code == r.code and x.holds(f)
             and x.reason(f).text == r.text), None)
        if rule is not None:
            again = rule.reason(cal)
            told = (again.text, again.text_zh)
        else:
            try:
                told = describe(r.code, cal)
            except KeyError:  # not a model reason (a held tier, "as usual", the pattern)
                told = None
        out.append(None if told is None or told[0] == r.text else told)
    return out


def _weaker_reasons(f: dict[str, float],
                    explained: tuple[Sequence[str], Sequence[float]] | None,
                    score: float) -> list[Reason]:
    """Why a customer at medium or high is at risk when no reason is heavy enough to tell
    (MIN_REASON_WEIGHT) or none the features bear out: the lighter ones that push the risk up
    and that they do bear out, else the model's overall pattern — never "as usual" with "no
    action", which would contradict the tier."""
    weak = top_reasons(f, *explained, min_weight=0.0) if explained is not None \
        else explain(f, min_weight=0.0)
    return _merge([], [r for r in weak if r.code != REGULAR.code], f) or [model_pattern(score)]


def _merge(ruled: list[Reason], explained: list[Reason], f: dict[str, float]) -> list[Reason]:
    """Rule reasons first, then the model's; one reason per fact (:func:`fact_of`: "80 days
    since the only visit" is not told again as "only one visit so far")."""
    out: list[Reason] = []
    seen: set[str] = set()
    for r in ruled + explained:
        fact = fact_of(r.code, f)
        if fact in seen or (r.code == REGULAR.code and ruled):
            continue
        seen.add(fact)
        out.append(r)
    return out[:MAX_REASONS]
