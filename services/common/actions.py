"""The action suggested for each reason code: one table for the scorer (which suggests them,
``services.scoring.scorecard.suggested_action``) and the notifier (whose SMS gives the reason
an action answers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from services.common.riskchange import SuggestedAction, holds_tier

R = TypeVar("R")

ACTIONS = {
    "open_complaint": ("resolve_complaint", "Resolve the open complaint first, then follow up personally",
                       "先解决未结投诉，再亲自回访"),
    "recent_complaints": ("service_recovery", "Reach out about the recent complaints and offer a make-good",
                          "就近期投诉主动联系并给予补偿"),
    "overdue": ("personal_call", "Call or message the customer personally with an invitation to book",
                "亲自致电或发消息邀请客户预约"),
    "spend_decline": ("win_back_offer", "Offer an exclusive deal on the customer's usual purchases",
                      "针对客户常购项目提供专属优惠"),
    "ticket_decline": ("win_back_offer", "Offer an exclusive deal on the customer's usual purchases",
                       "针对客户常购项目提供专属优惠"),
    "refunds": ("service_recovery", "Check what went wrong with the recent purchases",
                "了解近期购买出了什么问题"),
    "no_return": ("personal_call", "Invite the customer back personally: they have not returned since their first visit",
                  "亲自邀请客户再来：首次光顾后至今未再来"),
    "frequency_decline": ("personal_call", "Call or message the customer personally with an invitation to book",
                          "亲自致电或发消息邀请客户预约"),
    "new_customer": ("welcome_follow_up", "Follow up on the first visits with a welcome offer",
                     "对新客户回访并提供欢迎优惠"),
    "online": ("win_back_offer", "Send a personal offer through the customer's online channel",
               "通过线上渠道发送专属优惠"),
    "model_pattern": ("check_in", "Check in with the customer personally to see how they are doing",
                      "亲自联系客户，了解近况"),
}


# one immutable action per reason, built once (not validated again for every customer)
ACTION_OF = {reason: SuggestedAction(code=code, text=text, text_zh=zh)
             for reason, (code, text, zh) in ACTIONS.items()}
# The same actions in an online buyer's words (features.online_mostly): an online shop's
# owner read "with an invitation to book" about a customer who orders on the web.
ONLINE_WORDS = {
    "overdue": ("Message the customer personally with an offer to order again",
                "亲自发消息邀请客户再次下单"),
    "frequency_decline": ("Message the customer personally with an offer to order again",
                          "亲自发消息邀请客户再次下单"),
    "no_return": ("Invite the customer back personally: they have not ordered again since "
                  "their first order", "亲自邀请客户再次下单：首次下单后至今未再购买"),
}
ONLINE_ACTION_OF = {reason: SuggestedAction(code=ACTION_OF[reason].code, text=text, text_zh=zh)
                    for reason, (text, zh) in ONLINE_WORDS.items()}


# The clause a reason counting days up to now ends with, for a customer of a business whose
# rules expect closed days (a school's) and whose store has none on record, or who belongs to
# no store (``services.scoring.engine.unrecorded_closures_reasons``); English, Chinese. A
# message listing several customers who all have it says it once (``services.notifier
# .templates.said_once``).
UNRECORDED_CLOSURES = ("their store has no closed days on record", "其门店尚未记录停业日期")
NO_STORE = ("no store is on record for them, so no closed days count",
            "尚未记录其所属门店，停业日期无法计入")


def action_code_of(reason_code: str) -> str | None:
    """The code of the action suggested for a reason (None: a reason without one)."""
    action = ACTION_OF.get(reason_code)
    return action.code if action is not None else None


def first_reasons(reasons: Sequence[R], action_code: str, limit: int) -> list[R]:
    """The first ``limit`` of ``reasons`` (Reason objects or their JSON), with the first one
    ``action_code`` answers among them — in the last place kept when it came later: whatever
    suggests "Resolve the open complaint first" (a risk read, an e-mail) names the complaint,
    not only the three reasons before it."""
    kept = list(reasons[:max(limit, 0)])
    answered = next((r for r in reasons if action_code_of(_code(r)) == action_code), None)
    if answered is not None and limit > 0 and all(r is not answered for r in kept):
        kept = [*kept[:limit - 1], answered]
    return kept


def reasons_why(reasons: Sequence[R], action_code: str, limit: int) -> list[R]:
    """:func:`first_reasons` of those that say why the customer is at risk, leaving out that
    a rule, hysteresis or the dwell holds the tier: what an at-risk card, an SMS, an e-mail's
    list and the stack's lines name — the same reason first everywhere."""
    return first_reasons([r for r in reasons if not holds_tier(r)], action_code, limit)


def _code(reason: Any) -> str:
    return str(reason.get("code", "") if isinstance(reason, dict) else getattr(reason, "code", ""))
