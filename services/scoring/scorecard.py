"""The rule scorecard: a documented, explainable score that works with no trained model.

Score = logistic(BASE + sum of contributions). Each contribution is a plain rule on the
features (see ``docs/scoring.md``); the same contributions, largest first, become the
plain-language reasons (en and zh-CN) of every score — also when a trained model serves the
score, so reasons never depend on the model being explainable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.actions import ACTION_OF, ONLINE_ACTION_OF
from services.common.riskchange import Reason, SuggestedAction
from services.scoring.features import FEATURE_NAMES, occasion_words, online_mostly, usual_gap_words
from services.scoring.rules import english_plurals

VERSION = "scorecard-1"
BASE = -2.2
W_OVERDUE = 1.5        # per cadence overdue beyond the first, capped at 4
W_OPEN = 1.2           # per open complaint, at most 2
W_OPEN_HIGH = 0.8      # extra when an open complaint is high severity
W_RECENT_COMPLAINT = 0.3
W_SPEND_DECLINE = 1.2  # times the relative drop in spend against the own baseline
W_TICKET_DECLINE = 0.8
W_REFUND = 0.4
MIN_REASON_WEIGHT = 0.15
# A spending or ticket decline smaller than this is not told as a reason ("down 0%" would
# explain nothing, and a few percent is within a customer's usual spread).
MIN_DECLINE = 0.05


@dataclass(frozen=True)
class Contribution:
    code: str
    weight: float
    text: str
    text_zh: str


def _clip(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def contributions(f: dict[str, float]) -> list[Contribution]:
    """The scorecard's contributions for one customer, strongest first."""
    out: list[Contribution] = []
    over = _clip(f["overdue_ratio"] - 1.0, 0.0, 4.0)
    if over > 0:
        told = _overdue(f)  # (over > 0: the overdue ratio is above 1, always told)
        assert told is not None
        out.append(Contribution("overdue", W_OVERDUE * over, english_plurals(told[0]), told[1]))
    n_open, n_high = int(f["open_complaints"]), int(f["open_high_complaints"])
    if n_open:
        w = W_OPEN * min(n_open, 2) + (W_OPEN_HIGH if n_high else 0.0)
        sev = f", {n_high} of high severity" if n_high else ""
        sev_zh = f"（其中{n_high}个严重）" if n_high else ""
        out.append(Contribution(
            "open_complaint", w,
            f"{n_open} unresolved complaint{'s' if n_open > 1 else ''}{sev}",
            f"有{n_open}个未解决的投诉{sev_zh}",
        ))
    recent = int(f["complaints_90"]) - n_open
    if recent > 0:
        out.append(Contribution(
            "recent_complaints", W_RECENT_COMPLAINT * min(recent, 3),
            f"{recent} complaint{'s' if recent > 1 else ''} in the last 90 days",
            f"近90天内投诉{recent}次",
        ))
    if f["spend_365"] > 0 and f["spend_trend"] < 1.0:
        drop = _clip(1.0 - f["spend_trend"], 0.0, 1.0)
        out.append(Contribution(
            "spend_decline", W_SPEND_DECLINE * drop,
            f"Spending down {round(drop * 100)}% against the customer's usual",
            f"消费较平时下降{round(drop * 100)}%",
        ))
    if f["avg_ticket_365"] > 0 and f["ticket_trend"] < 1.0:
        drop = _clip(1.0 - f["ticket_trend"], 0.0, 1.0)
        out.append(Contribution(
            "ticket_decline", W_TICKET_DECLINE * drop,
            f"Average ticket down {round(drop * 100)}% (now {f['avg_ticket_90']:.2f}, "
            f"usually {f['avg_ticket_365']:.2f})",
            f"客单价下降{round(drop * 100)}%（现{f['avg_ticket_90']:.2f}，平时{f['avg_ticket_365']:.2f}）",
        ))
    if f["refunds_90"] > 0:
        n = int(f["refunds_90"])
        out.append(Contribution("refunds", W_REFUND * min(n, 3),
                                f"{n} refund{'s' if n > 1 else ''} in the last 90 days",
                                f"近90天内退款{n}次"))
    out.sort(key=lambda c: -c.weight)
    return out


def logit(f: dict[str, float]) -> float:
    return BASE + sum(c.weight for c in contributions(f))


def reasons(f: dict[str, float], limit: int = 3, min_weight: float = MIN_REASON_WEIGHT
            ) -> list[Reason]:
    """The scorecard's own explanation: its contributions of at least ``min_weight``,
    strongest first (one below MIN_REASON_WEIGHT only where :func:`describe` says the
    features bear it out: a decline under MIN_DECLINE is not one); else "regular"."""
    top = [c for c in contributions(f) if c.weight >= min_weight and c.weight > 0 and (
        c.weight >= MIN_REASON_WEIGHT or describe(c.code, f) is not None)][:limit]
    if not top:
        return [Reason(code="regular", text="Visiting and spending as usual",
                       text_zh="到店与消费均正常", weight=0.0)]
    return [Reason(code=c.code, text=c.text, text_zh=c.text_zh, weight=round(c.weight, 3))
            for c in top]


# -- explanations of a trained model -------------------------------------------------------
# Each feature belongs to one plain-language reason; a model's per-feature attributions are
# summed per reason and the strongest positive ones are told with the customer's numbers.
REASON_OF_FEATURE: dict[str, str] = {
    **dict.fromkeys(("days_since_last_activity", "days_since_last_visit",
                     "days_since_last_transaction", "overdue_ratio", "cadence_median_days",
                     "cadence_spread_days", "has_cadence", "bgnbd_t_x"), "overdue"),
    **dict.fromkeys(("active_days_30", "active_days_90", "active_days_365", "visits_90",
                     "transactions_90", "transactions_365", "frequency_trend", "bgnbd_x"),
                    "frequency_decline"),
    **dict.fromkeys(("tenure_days", "bgnbd_T"), "new_customer"),
    **dict.fromkeys(("spend_30", "spend_90", "spend_365", "spend_trend"), "spend_decline"),
    **dict.fromkeys(("avg_ticket_90", "avg_ticket_365", "ticket_trend"), "ticket_decline"),
    **dict.fromkeys(("open_complaints", "open_high_complaints"), "open_complaint"),
    **dict.fromkeys(("complaints_90", "complaints_365", "days_since_last_complaint"),
                    "recent_complaints"),
    "refunds_90": "refunds",
    "online_share_365": "online",
}


def describe(code: str, f: dict[str, float]) -> tuple[str, str] | None:
    """The (en, zh-CN) text of one reason with the customer's own numbers, or None when the
    customer's features do not bear the reason out (no decline, no purchase, not overdue):
    a reason never contradicts the features."""
    text = _describe(code, f)
    return None if text is None else (english_plurals(text[0]), text[1])


def _describe(code: str, f: dict[str, float]) -> tuple[str, str] | None:
    return _DESCRIBERS[code](f)  # KeyError: not a reason code


def _overdue(f: dict[str, float]) -> tuple[str, str] | None:
    since, cadence = round(f["days_since_last_activity"]), round(f["cadence_median_days"])
    if f["overdue_ratio"] <= 1.0:
        return None  # on cadence: not overdue
    if f["has_cadence"]:
        word, word_zh = occasion_words(f)
        if _one_gap(f):  # "usually" would rest on a single gap
            return (f"{since} days since the last {word}, which came {cadence} days after "
                    f"the first", f"距上次{word_zh}已{since}天；上次距第一次{cadence}天")
        # in the words of the packaged overdue rules
        usual, usual_zh = usual_gap_words(f)
        return (f"{since} days since the last {word}; usually {usual}",
                f"距上次{word_zh}已{since}天；平时{usual_zh}")
    if online_mostly(f):
        return (f"{since} days since the only purchase, and no other yet",
                f"自唯一一次购买已过{since}天，尚未再次购买")
    return (f"{since} days since the only visit, and no return yet",
            f"自唯一一次到店已过{since}天，尚未回头")


def _one_gap(f: dict[str, float]) -> bool:
    """The customer's cadence is the one gap between their only two active days (both in the
    last year, first seen inside it): no habit to call "usual" yet."""
    return bool(f["has_cadence"]) and round(f["active_days_365"]) == 2 \
        and f["tenure_days"] < 365


def _frequency_decline(f: dict[str, float]) -> tuple[str, str] | None:
    a90, a365 = round(f["active_days_90"]), round(f["active_days_365"])
    online = online_mostly(f)  # never with no day in a year (no occasion, no share)
    if a365 == 0:
        return ("No visit in the last year", "近一年没有到店")
    if a365 == 1:
        if f["has_cadence"]:
            return (("Only one purchase in the last year", "近一年只购买过一次") if online
                    else ("Only one visit in the last year", "近一年只来过一次"))
        return (("Only one purchase so far", "目前只购买过一次") if online
                else ("Only one visit so far", "目前只来过一次"))
    usual = _usual_days_90(f)
    # days, not visits: the features count the days a customer came (ten purchases on one
    # day are one), and "3 visits" read wrong beside a timeline day of 10 visits
    if a90 < usual - 0.5:
        if a90 == 0:  # not "Came on 0 days in the last 90; usually about 1"
            if online:
                return (f"No order in the last 90 days; usually orders on about {usual:.0f} "
                        f"days in 90", f"近90天没有下单；平时90天内约{usual:.0f}天下单")
            return (f"No visit in the last 90 days; usually comes on about {usual:.0f} days "
                    f"in 90", f"近90天没有到店；平时90天内约{usual:.0f}天到店")
        if online:
            return (f"Ordered on {a90} day{'' if a90 == 1 else 's'} in the last 90; usually "
                    f"about {usual:.0f}", f"近90天有{a90}天下单；平时约{usual:.0f}天")
        return (f"Came on {a90} day{'' if a90 == 1 else 's'} in the last 90; usually about "
                f"{usual:.0f}", f"近90天有{a90}天到店；平时约{usual:.0f}天")
    if online:
        return (f"Orders rarely: on {a365} days in the last year", f"下单不频繁：近一年仅{a365}天下单")
    return (f"Comes rarely: on {a365} days in the last year", f"到店不频繁：近一年仅{a365}天到店")


def _usual_days_90(f: dict[str, float]) -> float:
    """The days a customer usually comes in 90, by their last year (or tenure, if shorter)."""
    span = max(min(f["tenure_days"], 365.0), 1.0)
    return round(f["active_days_365"]) / span * min(90.0, span)


def _new_customer(f: dict[str, float]) -> tuple[str, str] | None:
    t = round(f["tenure_days"])
    return (f"New customer: first seen {t} days ago", f"新客户：{t}天前首次光顾")


def _spend_decline(f: dict[str, float]) -> tuple[str, str] | None:
    if f["spend_365"] > 0 and 1.0 - f["spend_trend"] >= MIN_DECLINE:
        drop = round(_clip(1.0 - f["spend_trend"], 0.0, 1.0) * 100)
        return (f"Spending down {drop}% against the customer's usual",
                f"消费较平时下降{drop}%")
    if f["spend_365"] <= 0:
        return ("No purchase in the last year", "近一年没有消费")
    return None  # spending as usual or more: not a decline


def _ticket_decline(f: dict[str, float]) -> tuple[str, str] | None:
    if f["avg_ticket_365"] > 0 and 1.0 - f["ticket_trend"] >= MIN_DECLINE:
        drop = round(_clip(1.0 - f["ticket_trend"], 0.0, 1.0) * 100)
        return (f"Average ticket down {drop}% (now {f['avg_ticket_90']:.2f}, "
                f"usually {f['avg_ticket_365']:.2f})",
                f"客单价下降{drop}%（现{f['avg_ticket_90']:.2f}，平时{f['avg_ticket_365']:.2f}）")
    return None  # no purchase, or no smaller tickets: not a decline


def _open_complaint(f: dict[str, float]) -> tuple[str, str] | None:
    n_open, n_high = int(f["open_complaints"]), int(f["open_high_complaints"])
    if n_open <= 0:
        return None
    sev = f", {n_high} of high severity" if n_high else ""
    sev_zh = f"（其中{n_high}个严重）" if n_high else ""
    return (f"{n_open} unresolved complaint{'s' if n_open != 1 else ''}{sev}",
            f"有{n_open}个未解决的投诉{sev_zh}")


def _recent_complaints(f: dict[str, float]) -> tuple[str, str] | None:
    n90, n365 = int(f["complaints_90"]), int(f["complaints_365"])
    if n90:
        return (f"{n90} complaint{'s' if n90 > 1 else ''} in the last 90 days",
                f"近90天内投诉{n90}次")
    if n365:
        return (f"{n365} complaint{'s' if n365 > 1 else ''} in the last year",
                f"近一年内投诉{n365}次")
    return None  # no complaint within a year


def _refunds(f: dict[str, float]) -> tuple[str, str] | None:
    n = int(f["refunds_90"])
    if n <= 0:
        return None
    return (f"{n} refund{'s' if n != 1 else ''} in the last 90 days", f"近90天内退款{n}次")


def _online(f: dict[str, float]) -> tuple[str, str] | None:
    pct = round(f["online_share_365"] * 100)
    if pct <= 0:
        return None  # no order online: nothing to tell
    if online_mostly(f):  # the line the online words and tier levels keep to
        return (f"Buys mostly online ({pct}% of orders)", f"主要在线上购买（占{pct}%）")
    return (f"Buys partly online ({pct}% of orders)", f"部分在线上购买（占{pct}%）")


# One describer per reason code: the (en, zh-CN) text, or None when the features do not bear
# the reason out.
_DESCRIBERS: dict[str, Callable[[dict[str, float]], tuple[str, str] | None]] = {
    "overdue": _overdue,
    "frequency_decline": _frequency_decline,
    "new_customer": _new_customer,
    "spend_decline": _spend_decline,
    "ticket_decline": _ticket_decline,
    "open_complaint": _open_complaint,
    "recent_complaints": _recent_complaints,
    "refunds": _refunds,
    "online": _online,
}


def fact_of(code: str, f: dict[str, float]) -> str:
    """The fact a reason tells, so that staff are told each fact once: being away (a rule's
    ``no_return``, ``overdue``, and ``frequency_decline`` where it says "only one visit" or "no
    visit", in the year or in the last 90 days) is one fact, and a complaint still open is not told again as a recent complaint
    when the recent ones are the open ones. Other codes are facts of their own."""
    if code in ("overdue", "no_return"):
        return "away"
    if code == "frequency_decline" and (f["has_cadence"] < 1 or round(f["active_days_365"]) <= 1
                                        or round(f["active_days_90"]) == 0):
        return "away"  # "only one visit", or none in 90 days: what "99 days since" says
    if code == "recent_complaints":
        recent = f["complaints_90"] or f["complaints_365"]
        if 0 < recent <= f["open_complaints"]:
            return "open_complaint"
    return code


def reason_weights(attributions: np.ndarray, names: Sequence[str]
                   ) -> tuple[tuple[str, ...], np.ndarray]:
    """Rows of per-feature attributions (log-odds, positive pushes the risk up) summed per
    reason code, for a whole batch at once: (codes, rows x codes); :func:`top_reasons` tells
    a row's."""
    codes, groups = _reason_groups(tuple(names))
    return codes, np.asarray(attributions, dtype=np.float64) @ groups


@functools.lru_cache(maxsize=16)
def _reason_groups(names: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """The reason codes the features map to, and the (features x codes) 0/1 matrix."""
    codes = tuple(sorted({REASON_OF_FEATURE[n] for n in names if n in REASON_OF_FEATURE}))
    groups = np.zeros((len(names), len(codes)))
    for i, name in enumerate(names):
        if name in REASON_OF_FEATURE:
            groups[i, codes.index(REASON_OF_FEATURE[name])] = 1.0
    return codes, groups


def spend_follows_visits(f: dict[str, float]) -> bool:
    """The customer's spending is down because they come less often: their average ticket
    is as usual, they came on fewer days than usual in the last 90 (what the frequency
    reason tells), and spending fell no more than their days did (within 10 points). Then
    "Spending down 32%" beside "Came on 2 days in the last 90; usually about 3" tells one
    fact twice, and its offer on their usual purchases misses why."""
    if f["spend_365"] <= 0 or 1.0 - f["ticket_trend"] >= MIN_DECLINE:
        return False
    if f["has_cadence"] < 1 or round(f["active_days_365"]) <= 1:
        return False
    if round(f["active_days_90"]) >= _usual_days_90(f) - 0.5:
        return False  # as often as usual: _frequency_decline tells no decline
    return f["spend_trend"] >= f["frequency_trend"] - 2 * MIN_DECLINE


NEW_DAYS = 14  # as the packaged overdue rules wait: before this a one-visit customer is new


def new_not_away(f: dict[str, float]) -> bool:
    """A customer first seen less than :data:`NEW_DAYS` ago who came on that one day only: new,
    not away. Their "Only one visit so far" tells only that they are new, and its call with an
    invitation to book came days after their first visit (a salon's new client 4-13 days on, an
    online shop's the morning after the first order): they are told as the new customer, with
    the welcome follow-up."""
    return round(f["active_days_365"]) <= 1 and f["tenure_days"] < NEW_DAYS


def _told_as(pairs: list[tuple[str, float]], code: str, into: str) -> list[tuple[str, float]]:
    """``pairs`` with ``code``'s weight added to ``into``'s and ``code`` left out: one fact,
    told once, as ``into`` (a weight that lowers the risk is left where it is)."""
    weight = dict(pairs).get(code, 0.0)
    if weight <= 0:
        return pairs
    return [(c, w + weight if c == into else w) for c, w in pairs if c != code]


def top_reasons(f: dict[str, float], codes: Sequence[str], weights: Sequence[float],
                limit: int = 3, min_weight: float = MIN_REASON_WEIGHT) -> list[Reason]:
    """The ``limit`` heaviest reasons (``weights``: one per code, log-odds; at least
    ``min_weight`` and positive) that the customer's features bear out (:func:`describe`),
    heaviest first, one per fact (:func:`fact_of`); else "regular". A spending decline that
    only follows fewer visits (:func:`spend_follows_visits`) is told as the frequency
    decline, with both weights; so is the one visit of a new customer as the new customer
    (:func:`new_not_away`)."""
    pairs = list(zip(codes, weights, strict=True))
    if "spend_decline" in codes and "frequency_decline" in codes and spend_follows_visits(f):
        pairs = _told_as(pairs, "spend_decline", "frequency_decline")
    if "new_customer" in codes and new_not_away(f):  # rare: checked before any lookup
        pairs = _told_as(pairs, "frequency_decline", "new_customer")
    top = sorted(((w, c) for c, w in pairs if w >= min_weight and w > 0), reverse=True)
    out = []
    facts = set()
    for w, code in top:
        told = describe(code, f)
        fact = fact_of(code, f)
        if told is not None and fact not in facts:  # each fact told once
            facts.add(fact)
            # validated: faster than model_construct (pydantic-core's check ~1.5 µs, its
            # Python-level construct ~3 µs), on the scorer's hot path
            out.append(Reason(code=code, text=told[0], text_zh=told[1], weight=round(w, 3)))
        if len(out) == limit:
            break
    return out or [REGULAR]


REGULAR = Reason(code="regular", text="Visiting and spending as usual", text_zh="到店与消费均正常",
                 weight=0.0)


def model_pattern(score: float) -> Reason:
    """Why a customer is at medium or high when no single sign the features bear out pushes
    the score up: the model's judgement of the whole pattern, said as such (never "as
    usual", which would contradict the tier)."""
    return Reason(code="model_pattern",
                  text=f"At risk by the model's overall pattern (score {score:.2f}); "
                       "no single sign stands out",
                  text_zh=f"模型综合判断有流失风险（评分{score:.2f}），无单一突出迹象", weight=0.0)


NO_ACTION = SuggestedAction(code="none", text="No action needed", text_zh="无需处理")


def suggested_action(tier: str, reason_list: Sequence[Reason], *,
                     online: bool = False) -> SuggestedAction:
    """What to do about a customer at medium or high: the first reason's action — but an
    unresolved complaint among the reasons comes first, whatever else is told before it
    (inviting back a customer whose complaint is still open is not what to do). ``online``:
    in an online buyer's words (the same action code)."""
    if tier == "low" or not reason_list or reason_list[0].code == "regular":
        return NO_ACTION
    if any(r.code == "open_complaint" for r in reason_list):
        return ACTION_OF["open_complaint"]
    code = reason_list[0].code if reason_list[0].code in ACTION_OF else "overdue"
    if online and code in ONLINE_ACTION_OF:
        return ONLINE_ACTION_OF[code]
    return ACTION_OF[code]


class Scorecard:
    """The rule scorecard as a model: ``predict`` takes rows in :data:`FEATURE_NAMES` order."""

    version = VERSION
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def predict(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows))
        for i, row in enumerate(rows):
            f = dict(zip(self.feature_names, row.tolist(), strict=True))
            out[i] = 1.0 / (1.0 + math.exp(-logit(f)))
        return out
