"""Reason texts never contradict the features they are told from (issue 14, item 5).

Property tests (Hypothesis) over generated feature vectors and generated customers: every
reason a model's explanation or the scorecard can give, in English and Chinese.
"""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.exceptions import ConfigError
from services.common.riskchange import Reason
from services.scoring.engine import Engine, Subject
from services.scoring.features import FEATURE_NAMES
from services.scoring.rules import BUSINESS_TYPES, load_rules, parse_rules
from services.scoring.scorecard import (
    MIN_DECLINE,
    MIN_REASON_WEIGHT,
    REASON_OF_FEATURE,
    Scorecard,
    contributions,
    describe,
    fact_of,
    suggested_action,
    top_reasons,
)
from services.scoring.tiers import Thresholds
from tests.data import T0, complaint, regular
from tests.unit.test_features import acts, at

CODES = sorted(set(REASON_OF_FEATURE.values()))
COUNTS = {"active_days_30", "active_days_90", "active_days_365", "visits_90",
          "transactions_90", "transactions_365", "open_complaints", "open_high_complaints",
          "complaints_90", "complaints_365", "refunds_90", "has_cadence"}
BAD_EN = re.compile(r"\b1 (?:[a-z-]+ )?(?:days|visits|complaints|refunds)\b|every 1 day|\(s\)|"
                    r"\bSpent\b|Average ticket 0\.00|\bon 0 days\b")


@st.composite
def features(draw: st.DrawFn) -> dict[str, float]:
    f = {n: draw(st.floats(0, 400, allow_nan=False)) for n in FEATURE_NAMES}
    for n in COUNTS:
        f[n] = float(draw(st.integers(0, 3)))
    f["has_cadence"] = float(min(f["has_cadence"], 1))
    f["open_high_complaints"] = min(f["open_high_complaints"], f["open_complaints"])
    f["spend_trend"] = draw(st.sampled_from([0.0, 0.5, 0.94, 0.95, 0.96, 0.99, 1.0, 1.5]))
    f["ticket_trend"] = draw(st.sampled_from([0.0, 0.5, 0.94, 0.95, 0.96, 0.99, 1.0, 1.5]))
    f["overdue_ratio"] = draw(st.sampled_from([0.0, 0.5, 1.0, 1.01, 2.0, 5.0]))
    f["cadence_median_days"] = draw(st.sampled_from([1.0, 1.4, 2.0, 28.0]))
    f["online_share_365"] = draw(st.sampled_from([0.0, 0.004, 0.25, 0.5, 0.51, 1.0]))
    if draw(st.booleans()):  # a customer who never bought
        for n in ("spend_30", "spend_90", "spend_365", "avg_ticket_90", "avg_ticket_365"):
            f[n] = 0.0
    return f


def _check(code: str, f: dict[str, float], en: str, zh: str) -> None:
    assert not BAD_EN.search(en), en
    assert en and zh and "{" not in en + zh
    if "down" in en or "下降" in zh:
        trend = f["spend_trend"] if code == "spend_decline" else f["ticket_trend"]
        assert trend <= 1.0 - MIN_DECLINE + 1e-9, (en, f)
        drop = re.search(r"down (\d+)%", en)
        assert drop and int(drop.group(1)) >= round(MIN_DECLINE * 100), en  # never "down 0%"
    if "ticket" in en.lower():
        assert f["avg_ticket_365"] > 0, en
    if code == "overdue":
        assert f["overdue_ratio"] > 1.0, en
    if code == "refunds":
        assert f["refunds_90"] > 0, en
    if code == "open_complaint":
        assert f["open_complaints"] > 0, en
    if code == "online":  # never "Buys mostly online (25% of orders)", nor of 0 %
        assert round(f["online_share_365"] * 100) > 0, en
        assert ("mostly" in en) == (f["online_share_365"] > 0.5), en


@settings(max_examples=300, deadline=None)
@given(features())
def test_explanations_never_contradict_the_features(f: dict[str, float]) -> None:
    for code in CODES:
        told = describe(code, f)
        if told is not None:
            _check(code, f, *told)
    for c in contributions(f):  # the ones a customer can be told (see scorecard.reasons)
        if c.weight >= MIN_REASON_WEIGHT or describe(c.code, f) is not None:
            _check(c.code, f, c.text, c.text_zh)


class Worried(Scorecard):
    """A model that sees high risk in everyone, whatever the scorecard's signs say (a trained
    model can score a customer high on a pattern no single reason tells)."""

    version = "worried-1"

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.full(len(rows), 0.9)


class WorriedExplained(Worried):
    """... which explains itself by attributions, none of which pushes the risk up."""

    version = "worried-explained-1"

    def attributions(self, rows: np.ndarray) -> np.ndarray:
        return -np.ones((len(rows), len(self.feature_names)))


class Alarmed(Worried):
    """... which explains itself by every feature pushing the risk up."""

    version = "alarmed-1"

    def attributions(self, rows: np.ndarray) -> np.ndarray:
        return np.ones((len(rows), len(self.feature_names)))


def test_a_decline_too_small_to_matter_is_not_a_reason() -> None:
    f = dict.fromkeys(FEATURE_NAMES, 1.0) | {"spend_365": 500.0, "avg_ticket_365": 40.0,
                                              "spend_trend": 0.997, "ticket_trend": 0.97}
    assert describe("spend_decline", f) is None  # was "Spending down 0%"
    assert describe("ticket_decline", f) is None
    # a model's heavy weight on spending alone then tells nothing about spending
    assert [r.code for r in top_reasons(f, ["spend_decline"], [2.0])] == ["regular"]
    f["spend_trend"] = 0.8
    told = describe("spend_decline", f)
    assert told is not None and told[0] == "Spending down 20% against the customer's usual"


def test_at_risk_is_never_explained_as_usual() -> None:
    """A customer a model puts at high risk without a sign heavy enough to tell gets the
    lighter signs the features bear out, else the model's pattern — and an action, never
    "Visiting and spending as usual" with "No action needed"."""
    history = regular("g", every_days=7, count=10)
    on_cadence, a_bit_late = at(7 * 9 + 3), at(7 * 9 + 8)  # overdue ratio 8/7: weight 0.2 x 1.5
    for model in (Worried(), WorriedExplained()):
        engine = Engine(model, Thresholds())
        [a] = engine.assess([Subject("g", acts(history))], on_cadence)
        assert a.tier == "high"
        assert [r.code for r in a.reasons] == ["model_pattern"], a.reasons
        assert "score 0.90" in a.reasons[0].text and "0.90" in a.reasons[0].text_zh
        assert a.action.code == "check_in"
    [a] = Engine(Worried(), Thresholds()).assess([Subject("g", acts(history))], a_bit_late)
    assert [r.code for r in a.reasons] == ["overdue"], a.reasons  # light (0.21), but true
    assert a.action.code == "personal_call"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(every=st.integers(1, 30), count=st.integers(1, 12), quiet=st.integers(0, 200),
       complaints=st.integers(0, 2), previous=st.sampled_from([None, "low", "medium", "high"]),
       model=st.sampled_from([Scorecard(), Worried(), WorriedExplained(), Alarmed()]),
       business=st.sampled_from([None, "salon"]))
def test_generated_customers_get_consistent_score_tier_and_reasons(
        every: int, count: int, quiet: int, complaints: int, previous: str | None,
        model: Scorecard, business: str | None) -> None:
    history = regular("g", every_days=every, count=count)
    last = T0 + timedelta(days=every * (count - 1))
    history += [complaint("g", last + timedelta(hours=i + 1), i + 1) for i in range(complaints)]
    now = at(every * (count - 1) + quiet)
    engine = Engine(model, Thresholds(min_dwell_ms=86_400_000),
                    rules=load_rules(None, business) if business else None)
    [a] = engine.assess([Subject("g", acts(history), tier=previous,
                                 tier_since_ms=now - 3_600_000 if previous else None)], now)
    for r in a.reasons:
        if not r.code.startswith("tier_"):
            _check(r.code, a.features, r.text, r.text_zh)
    facts = [fact_of(r.code, a.features) for r in a.reasons]
    assert len(facts) == len(set(facts)), a.reasons  # each fact told once
    if a.tier == "low":
        assert all(r.code != "overdue" for r in a.reasons)
    else:  # at risk: told why, and what to do
        assert all(r.code != "regular" for r in a.reasons), a.reasons
        assert a.action.code != "none", (a.reasons, a.action)
    plain = "high" if a.score >= 0.75 else "medium" if a.score >= 0.45 else "low"
    rank = {"low": 0, "medium": 1, "high": 2}
    if rank[a.tier] > rank[plain]:  # held above the score's tier: the first reason says why
        assert a.reasons[0].code.startswith("tier_"), a.reasons
    else:
        assert not any(r.code.startswith("tier_") for r in a.reasons)


def test_one_fact_is_told_once() -> None:
    """A salon customer seen once, 80 days ago, with a complaint still open: the business
    rule's "80 days since the first and only visit" is not told again as the model's "80 days
    since the only visit" and "Only one visit so far", nor the open complaint again as "1
    complaint in the last 90 days" (found in the console walkthrough: three reasons, one fact)."""
    history = regular("g", every_days=30, count=1) + [complaint("g", T0 + timedelta(hours=2), 1)]
    now = at(80)
    codes = list(REASON_OF_FEATURE.values())
    engine = Engine(Alarmed(), Thresholds(), rules=load_rules(None, "salon"))
    [a] = engine.assess([Subject("g", acts(history))], now)
    f = a.features
    assert f["has_cadence"] == 0 and f["open_complaints"] == 1 and f["complaints_90"] == 1
    # every code the model could explain by, all weighing the same: still one reason per fact
    told = top_reasons(f, sorted(set(codes)), [1.0] * len(set(codes)), limit=9)
    assert sorted(fact_of(r.code, f) for r in told) == sorted({fact_of(r.code, f) for r in told})
    assert len([r for r in told if fact_of(r.code, f) == "away"]) == 1, told
    texts = [r.text for r in a.reasons]
    assert sum("visit" in t for t in texts) == 1, texts
    assert sum("complaint" in t for t in texts) == 1, texts
    assert "80 days since the first and only visit" in texts, texts  # the rule's, first


def test_no_visit_in_90_days_is_not_told_beside_the_days_away() -> None:
    """A salon's go-live summary read "99 days since the last visit; usually every 30 days;
    No visit in the last 90 days; usually comes on about 2 days in 90": one fact, twice."""
    history = regular("q", every_days=30, count=10)
    now = at(9 * 30 + 99)
    engine = Engine(Alarmed(), Thresholds(), rules=load_rules(None, "salon"))
    [a] = engine.assess([Subject("q", acts(history))], now)
    f = a.features
    assert round(f["active_days_90"]) == 0 and f["has_cadence"] == 1
    assert fact_of("frequency_decline", f) == fact_of("overdue", f) == "away"
    told = top_reasons(f, ["overdue", "frequency_decline"], [1.0, 0.9])
    assert [r.code for r in told] == ["overdue"], told
    texts = [r.text for r in a.reasons]
    assert sum("visit" in t for t in texts) == 1, texts
    # some visits in the last 90, fewer than usual: a fact of its own beside the days away
    fewer = {**f, "active_days_90": 1.0}
    assert fact_of("frequency_decline", fewer) == "frequency_decline"


def test_an_open_complaint_comes_first_in_what_to_do() -> None:
    """A customer told "64 days since the first and only visit" and "1 unresolved complaint"
    was to be invited back; the complaint is to be resolved first (console walkthrough)."""
    away = Reason(code="no_return", text="64 days since the first and only visit",
                  text_zh="首次到店后已64天未再光顾", weight=0.0)
    complained = Reason(code="open_complaint", text="1 unresolved complaint",
                        text_zh="有1个未解决的投诉", weight=1.0)
    assert suggested_action("medium", [away, complained]).code == "resolve_complaint"
    assert suggested_action("medium", [away]).code == "personal_call"
    # a customer seen once, long ago, is invited back: not "after the first visit" (296 days
    # later, in the second console walkthrough)
    assert suggested_action("medium", [away]).text.endswith("not returned since their first visit")
    assert suggested_action("low", [away, complained]).code == "none"


def test_an_online_buyer_is_invited_to_order_not_to_book() -> None:
    """An online shop's owner read "Call or message the customer personally with an
    invitation to book" about a customer who orders on the web. The same action (its code:
    what the notifier pairs with a reason) in an online buyer's words, both languages."""
    from services.common.actions import ACTION_OF
    from services.scoring.model import load_model

    for code in ("overdue", "frequency_decline", "no_return"):
        reason = Reason(code=code, text="x", text_zh="x", weight=1.0)
        theirs = suggested_action("high", [reason], online=True)
        assert theirs.code == ACTION_OF[code].code
        assert "book" not in theirs.text and "visit" not in theirs.text
        assert "order" in theirs.text and "下单" in theirs.text_zh
        assert suggested_action("high", [reason]) == ACTION_OF[code]
    complained = Reason(code="open_complaint", text="1 unresolved complaint", text_zh="x",
                        weight=1.0)
    assert suggested_action("high", [complained], online=True) == ACTION_OF["open_complaint"]
    engine = Engine(load_model(None), Thresholds())
    for channel, words in (("online", "order again"), ("in_store", "invitation to book")):
        history = regular("c", every_days=20, count=6)
        for e in history:
            e["channel"] = channel
        [a] = engine.assess([Subject("c", acts(history))], at(100 + 90), with_history=False)
        assert a.tier != "low" and a.action.code == "personal_call", a
        assert words in a.action.text, (channel, a.action.text)


def test_frequency_reasons_count_days_not_visits() -> None:
    """The features count the days a customer came; "3 visits in the last year" read wrong
    beside a timeline day of ten visits (third console walkthrough)."""
    from services.scoring.scorecard import _frequency_decline
    f = {"active_days_90": 1.0, "active_days_365": 3.0, "tenure_days": 400.0,
         "has_cadence": 1.0}
    assert _frequency_decline(f) == ("Comes rarely: on 3 days in the last year",
                                     "到店不频繁：近一年仅3天到店")
    f = {"active_days_90": 1.0, "active_days_365": 24.0, "tenure_days": 400.0,
         "has_cadence": 1.0}
    assert _frequency_decline(f) == ("Came on 1 day in the last 90; usually about 6",
                                     "近90天有1天到店；平时约6天")


def test_the_list_card_tells_the_complaint_it_says_to_resolve() -> None:
    """The at-risk card read "Why: 49 days since the only visit, and no return yet" beside
    "Suggested action: Resolve the open complaint first" (third console walkthrough): the
    complaint it says to resolve is its reason; a tier_* reason is never the card's."""
    import json

    from services.records.atrisk import _item

    risk = {"reasons": [
        {"code": "tier_held_hysteresis", "text": "Held at high", "weight": 0.0},
        {"code": "no_return", "text": "49 days since the only visit, and no return yet"},
        {"code": "open_complaint", "text": "1 unresolved complaint"}],
        "suggested_action": {"code": "resolve_complaint", "text": "Resolve it first"}}
    item = _item("c1", "t", ["high", "0.7", "s1", "0", json.dumps(risk), None], "0.7", None, 0.0)
    assert item["top_reason"]["code"] == "open_complaint"
    risk["suggested_action"] = {"code": "personal_call", "text": "Call"}
    item = _item("c1", "t", ["high", "0.7", "s1", "0", json.dumps(risk), None], "0.7", None, 0.0)
    assert item["top_reason"]["code"] == "no_return"


def test_spending_that_only_follows_fewer_visits_is_told_as_the_visits() -> None:
    """A 4-weekly regular five weeks away read "Came on 2 days in the last 90; usually about
    3" and "Spending down 32% against the customer's usual": one fact twice (same tickets,
    fewer days), and its offer on usual purchases misses why. Told once, as the visits, with
    both weights; a spending drop the visits do not explain is still told."""
    from services.common.settings import load_settings
    from services.scoring.model import load_model
    from services.scoring.scorecard import spend_follows_visits
    engine = Engine(load_model(load_settings().model), Thresholds())
    history = regular("r", every_days=28, count=13)
    [a] = engine.assess([Subject("r", acts(history))], at(28 * 12 + 35), with_history=False)
    f = a.features
    assert spend_follows_visits(f) and f["spend_trend"] < 1 - MIN_DECLINE
    assert [r.code for r in a.reasons] == ["frequency_decline"], a.reasons
    assert a.reasons[0].text == "Came on 2 days in the last 90; usually about 3"
    told = top_reasons(f, ["frequency_decline", "spend_decline"], [0.3, 0.5])
    assert [(r.code, r.weight) for r in told] == [("frequency_decline", 0.8)]
    # the same days, but tickets down by half: spending fell further than the visits did
    halved = {**f, "ticket_trend": 0.5, "spend_trend": f["frequency_trend"] * 0.5}
    assert not spend_follows_visits(halved)
    assert [r.code for r in top_reasons(halved, ["frequency_decline", "spend_decline"],
                                        [0.3, 0.5])] == ["spend_decline", "frequency_decline"]
    # as many days as usual, spending down: not the visits
    assert not spend_follows_visits({**f, "active_days_90": f["active_days_365"] / 4,
                                     "frequency_trend": 1.0})


def test_a_new_customer_is_told_as_new_with_a_welcome_not_asked_to_book() -> None:
    """An online shop's new customer sat at medium the morning after the first order, and a
    salon's new client 4-13 days after the first visit, as "Only one visit so far" with "Call
    ... with an invitation to book": half of a generated shop's digest entries. Until they are
    14 days away they are told as new, with both weights, and the welcome follow-up; after
    that, their one visit is being away, told as it was."""
    from services.common.settings import load_settings
    from services.scoring.model import load_model
    from services.scoring.scorecard import new_not_away
    engine = Engine(load_model(load_settings().model), Thresholds())
    history = acts(regular("n", every_days=30, count=1))
    [fresh] = engine.assess([Subject("n", history)], at(5), with_history=False)
    f = fresh.features
    assert new_not_away(f)
    told = top_reasons({**f, "online_share_365": 0.25},
                       ["frequency_decline", "new_customer", "online"], [0.9, 0.2, 0.5])
    assert [(r.code, r.weight) for r in told] == [("new_customer", 1.1), ("online", 0.5)]
    assert told[0].text == "New customer: first seen 5 days ago"
    assert told[1].text == "Buys partly online (25% of orders)"
    assert suggested_action("medium", told).code == "welcome_follow_up"
    [away] = engine.assess([Subject("n", history)], at(20), with_history=False)
    assert not new_not_away(away.features)
    told = top_reasons(away.features, ["frequency_decline", "new_customer"], [0.9, 0.2])
    assert [r.code for r in told] == ["frequency_decline", "new_customer"]
    assert told[0].text == "Only one visit so far"
    assert suggested_action("medium", told).code == "personal_call"
    # a customer back after a year away, one day in the last year: not new
    assert not new_not_away({**f, "tenure_days": 400.0})


def test_an_online_customer_is_told_of_purchases_not_visits() -> None:
    """An online shop's customer read "Only one visit so far" about their first web order and
    "63 days since the last visit": mostly online, app or delivery orders, their reasons say
    purchase and ordered; a customer of the shop floor (or of a POS sending no channel) still
    reads visit and came."""
    base = dict.fromkeys(FEATURE_NAMES, 0.0) | {
        "days_since_last_activity": 63.0, "cadence_median_days": 28.0, "overdue_ratio": 2.25,
        "has_cadence": 1.0, "active_days_90": 1.0, "active_days_365": 9.0, "tenure_days": 365.0}
    online = {**base, "online_share_365": 0.9}

    def en(code: str, f: dict[str, float]) -> str:
        told = describe(code, f)
        assert told is not None, (code, f)
        return told[0]

    assert describe("overdue", online) == ("63 days since the last purchase; usually every 28 days",
                                           "距上次购买已63天；平时每28天一次")
    assert en("frequency_decline", online) == "Ordered on 1 day in the last 90; usually about 2"
    assert en("overdue", base) == "63 days since the last visit; usually every 28 days"
    assert en("frequency_decline", base) == "Came on 1 day in the last 90; usually about 2"
    # none in 90 days: not "Came on 0 days in the last 90; usually about 2"
    gone = {"active_days_90": 0.0}
    assert describe("frequency_decline", base | gone) == (
        "No visit in the last 90 days; usually comes on about 2 days in 90",
        "近90天没有到店；平时90天内约2天到店")
    assert en("frequency_decline", online | gone) == \
        "No order in the last 90 days; usually orders on about 2 days in 90"
    assert en("frequency_decline", base | gone | {"active_days_365": 4.0}) == \
        "No visit in the last 90 days; usually comes on about 1 day in 90"
    once = {**online, "active_days_365": 1.0, "has_cadence": 0.0, "overdue_ratio": 1.4}
    assert describe("frequency_decline", once) == ("Only one purchase so far", "目前只购买过一次")
    assert en("overdue", once) == "63 days since the only purchase, and no other yet"
    assert en("frequency_decline", {**once, "online_share_365": 0.5}) == "Only one visit so far"


def test_rules_tell_an_open_complaint_in_the_models_words() -> None:
    """The packaged rules told "Unresolved complaints: 1, 1 of high severity" where the model
    says "1 unresolved complaint, 1 of high severity": one fact, one wording."""
    f = dict.fromkeys(FEATURE_NAMES, 0.0) | {
        "open_complaints": 1.0, "open_high_complaints": 1.0, "days_since_last_activity": 3.0,
        "days_since_last_complaint": 3.0, "complaints_90": 1.0, "complaints_365": 1.0,
        "active_days_365": 5.0, "has_cadence": 1.0, "tenure_days": 300.0}
    model = describe("open_complaint", f)
    assert model == ("1 unresolved complaint, 1 of high severity", "有1个未解决的投诉（其中1个严重）")
    for business in BUSINESS_TYPES:
        told = [r for r in load_rules(business_type=business).apply("low", f)[1]
                if r.code == "open_complaint"]
        assert [(r.text, r.text_zh) for r in told] == [model], business
        two = {**f, "open_complaints": 2.0}
        told = [r for r in load_rules(business_type=business).apply("low", two)[1]
                if r.code == "open_complaint"]
        assert told and (told[0].text, told[0].text_zh) == describe("open_complaint", two), \
            (business, told)


def test_rules_say_purchase_for_an_online_customer_as_the_model_does() -> None:
    """A rule's reason beside the model's: an online shop's customer read "63 days since the
    last visit" from the rule and "Ordered on 1 day in the last 90" from the model. The packaged
    rules' ``{occasion}`` follows the same customer-level choice; a custom rules file may use
    it, and a word that is neither a feature nor ``{occasion}`` is refused at start-up."""
    base = dict.fromkeys(FEATURE_NAMES, 0.0) | {
        "days_since_last_activity": 63.0, "cadence_median_days": 14.0, "overdue_ratio": 4.5,
        "has_cadence": 1.0, "active_days_90": 1.0, "active_days_365": 20.0, "tenure_days": 365.0}
    online = {**base, "online_share_365": 0.9}
    for business in ("default", "salon", "restaurant"):
        shop, floor = (load_rules(business_type=business).apply("low", f)[1] for f in (online, base))
        assert shop and floor, business
        assert shop[0].text == "63 days since the last purchase; usually every 14 days", business
        assert shop[0].text_zh == "距上次购买已63天；平时每14天一次", business
        assert floor[0].text == "63 days since the last visit; usually every 14 days", business
        assert floor[0].text_zh == "距上次到店已63天；平时每14天一次", business
    once = {**online, "has_cadence": 0.0, "active_days_365": 1.0, "days_since_last_activity": 80.0}
    told = load_rules(business_type="salon").apply("low", once)[1]
    assert [(r.text, r.text_zh) for r in told] == [
        ("80 days since the first and only purchase", "首次购买后已80天未再光顾")]
    custom = parse_rules({"rules": [{
        "id": "gone", "when": "days_since_last_activity >= 30", "min_tier": "medium",
        "reason": {"en": "No {occasion} for {days_since_last_activity:.0f} days",
                   "zh-CN": "{days_since_last_activity:.0f}天未{occasion}"}}]}, "custom.yaml")
    assert custom.apply("low", online)[1][0].text == "No purchase for 63 days"
    assert custom.apply("low", base)[1][0].text_zh == "63天未到店"
    with pytest.raises(ConfigError, match=r"\{ocasion\} is not a feature.*\{occasion\}"):
        parse_rules({"rules": [{"id": "gone", "when": "days_since_last_activity >= 30",
                                "min_tier": "medium",
                                "reason": {"en": "No {ocasion}", "zh-CN": "无"}}]}, "custom.yaml")


def test_one_gap_is_not_called_a_habit() -> None:
    """Two visits five days apart, then 40 days of silence: "usually every 5 days" would rest
    on that one gap. The text says what happened; a regular's says what is usual."""
    from services.scoring.features import DAY_MS, Activity, compute_features

    start = 1_780_000_000_000
    twice = [Activity("visit", start, "a"), Activity("visit", start + 5 * DAY_MS, "b")]
    f = compute_features(twice, start + 45 * DAY_MS)
    assert f["has_cadence"] == 1.0 and f["cadence_median_days"] == 5.0
    told = describe("overdue", f)
    assert told == ("40 days since the last visit, which came 5 days after the first",
                    "距上次到店已40天；上次距第一次5天")
    [c] = [c for c in contributions(f) if c.code == "overdue"]
    assert (c.text, c.text_zh) == told
    weekly = [Activity("visit", start + 7 * d * DAY_MS, f"w{d}") for d in range(8)]
    f = compute_features(weekly, start + 7 * 7 * DAY_MS + 30 * DAY_MS)
    assert describe("overdue", f) == ("30 days since the last visit; usually every 7 days",
                                      "距上次到店已30天；平时每7天一次")
    online = [Activity(a.kind, a.ts, a.event_id, channel="online") for a in twice]
    en, _ = describe("overdue", compute_features(online, start + 45 * DAY_MS)) or ("", "")
    assert en == "40 days since the last purchase, which came 5 days after the first"


def test_a_customer_who_comes_in_runs_is_not_said_to_come_every_few_days() -> None:
    """An online shop's buyer ordered 10 days apart four times, twice a year, and read "121 days
    since the last purchase; usually every 10 days" beside "No order in the last 90 days;
    usually orders on about 2 days in 90" (16 % of a generated shop's overdue customers, 4 % of
    a restaurant's). Their usual gap is told with the breaks their year shows, by the model and
    by the packaged rules alike; a regular who lapsed (their year ends early) is not one."""
    from services.scoring.features import DAY_MS, Activity, compute_features

    start = 1_780_000_000_000
    runs = [Activity("visit", start + (run * 180 + 10 * k) * DAY_MS, f"r{run}-{k}",
                     channel="online") for run in range(3) for k in range(4)]
    now = start + (360 + 30 + 121) * DAY_MS
    f = compute_features(runs, now)
    assert (f["cadence_median_days"], f["active_days_365"]) == (10.0, 8.0), f
    told = ("121 days since the last purchase; usually every 10 days, with longer breaks "
            "between", "距上次购买已121天；平时每10天一次，其间时有较长间隔")
    assert describe("overdue", f) == told
    assert describe("frequency_decline", f) == (
        "No order in the last 90 days; usually orders on about 2 days in 90",
        "近90天没有下单；平时90天内约2天下单")
    for business in BUSINESS_TYPES:
        rules = [r for r in load_rules(business_type=business).apply("low", f)[1]
                 if r.code == "overdue"]
        assert rules, business
        if business == "school":  # a school's say "class" to everyone
            assert rules[0].text.startswith("121 days since the last class;"), rules[0].text
        elif business != "retail":  # retail's rules say "purchase" to everyone
            assert (rules[0].text, rules[0].text_zh) == told, business
        assert rules[0].text.endswith("usually every 10 days, with longer breaks between")
    # a weekly regular for a year, then gone: their year ends early, the habit was weekly
    weekly = [Activity("visit", start + 7 * d * DAY_MS, f"w{d}") for d in range(30)]
    f = compute_features(weekly, start + (29 * 7 + 150) * DAY_MS)
    assert describe("overdue", f) == ("150 days since the last visit; usually every 7 days",
                                      "距上次到店已150天；平时每7天一次")
    custom = parse_rules({"rules": [{
        "id": "away", "when": "overdue_ratio >= 2", "min_tier": "medium",
        "reason": {"en": "Away; usually {usual_gap}", "zh-CN": "平时{usual_gap}"}}]}, "c.yaml")
    assert [(r.text, r.text_zh) for r in custom.apply("low", f)[1]] == [
        ("Away; usually every 7 days", "平时每7天一次")]
