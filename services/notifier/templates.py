"""Texts of the email and SMS notifications: who, what changed, why, what to do.

Plain string templates for now; the reason and action texts come from the risk change in the
recipient's locale (``text_zh`` for ``zh-CN``).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from services.common.riskchange import TIER_RANK, RiskChange
from services.notifier.routing import Recipient

SMS_MAX_CHARS = 480
MAX_REASONS = 3


@dataclass(frozen=True)
class _Labels:
    tiers: dict[str, str]
    subject_worse: str
    subject_better: str
    customer: str
    store: str
    change: str
    score: str
    why: str
    action: str
    no_store: str
    greeting: str
    footer: str


_EN = _Labels(
    tiers={"low": "low", "medium": "medium", "high": "high"},
    subject_worse="[churnwatch] Customer {customer} is now {tier} churn risk (was {previous})",
    subject_better="[churnwatch] Customer {customer} improved to {tier} churn risk (was {previous})",
    customer="Customer", store="Store", change="Risk", score="Score", why="Why",
    action="Suggested action", no_store="(no store)", greeting="Hello {name},",
    footer="Sent by churnwatch. Delivery {delivery_id}.",
)
_ZH = _Labels(
    tiers={"low": "低", "medium": "中", "high": "高"},
    subject_worse="[churnwatch] 客户 {customer} 流失风险升至{tier}（原为{previous}）",
    subject_better="[churnwatch] 客户 {customer} 流失风险降至{tier}（原为{previous}）",
    customer="客户", store="门店", change="风险", score="评分", why="原因",
    action="建议行动", no_store="（无门店）", greeting="{name}，您好：",
    footer="由 churnwatch 发送。投递编号 {delivery_id}。",
)


def _labels(recipient: Recipient) -> _Labels:
    return _ZH if recipient.locale == "zh-CN" else _EN


def _reasons(change: RiskChange, zh: bool) -> list[str]:
    return [(r.text_zh if zh else r.text) for r in change.reasons[:MAX_REASONS]]


def _action(change: RiskChange, zh: bool) -> str:
    return change.suggested_action.text_zh if zh else change.suggested_action.text


def _score(change: RiskChange) -> str:
    if change.previous_score is None:
        return f"{change.score:.2f}"
    return f"{change.previous_score:.2f} → {change.score:.2f}"


def render_subject(change: RiskChange, recipient: Recipient) -> str:
    lb = _labels(recipient)
    worse = TIER_RANK[change.tier] > TIER_RANK[change.previous_tier]
    template = lb.subject_worse if worse else lb.subject_better
    return template.format(customer=change.customer_id, tier=lb.tiers[change.tier],
                           previous=lb.tiers[change.previous_tier])


def render_email(change: RiskChange, recipient: Recipient, *, delivery_id: str
                 ) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of the email about ``change`` for ``recipient``."""
    lb = _labels(recipient)
    zh = recipient.locale == "zh-CN"
    store = change.store_id or lb.no_store
    tiers = f"{lb.tiers[change.previous_tier]} → {lb.tiers[change.tier]}"
    reasons = _reasons(change, zh)
    action = _action(change, zh)
    rows = [(lb.customer, change.customer_id), (lb.store, store), (lb.change, tiers),
            (lb.score, _score(change))]

    text_lines = [lb.greeting.format(name=recipient.name), ""]
    text_lines += [f"{k}: {v}" for k, v in rows]
    text_lines += ["", f"{lb.why}:"] + [f"  - {r}" for r in reasons]
    text_lines += ["", f"{lb.action}: {action}", "", lb.footer.format(delivery_id=delivery_id)]
    text = "\n".join(text_lines) + "\n"

    html_rows = "".join(f"<tr><th align=\"left\">{escape(k)}</th><td>{escape(v)}</td></tr>"
                        for k, v in rows)
    html_reasons = "".join(f"<li>{escape(r)}</li>" for r in reasons)
    html = (
        "<!DOCTYPE html><html><body>"
        f"<p>{escape(lb.greeting.format(name=recipient.name))}</p>"
        f"<table>{html_rows}</table>"
        f"<h3>{escape(lb.why)}</h3><ul>{html_reasons}</ul>"
        f"<p><strong>{escape(lb.action)}:</strong> {escape(action)}</p>"
        f"<p><small>{escape(lb.footer.format(delivery_id=delivery_id))}</small></p>"
        "</body></html>"
    )
    return render_subject(change, recipient), text, html


def render_sms(change: RiskChange, recipient: Recipient) -> str:
    """A short SMS: customer, store, tier change and score, top reason, action."""
    lb = _labels(recipient)
    zh = recipient.locale == "zh-CN"
    reasons = _reasons(change, zh)
    parts = [
        f"churnwatch: {lb.customer} {change.customer_id}",
        f"{lb.store} {change.store_id or lb.no_store}",
        f"{lb.change} {lb.tiers[change.previous_tier]}→{lb.tiers[change.tier]} ({change.score:.2f})",
    ]
    if reasons:
        parts.append(f"{lb.why}: {reasons[0]}")
    parts.append(f"{lb.action}: {_action(change, zh)}")
    text = "; ".join(parts)
    return text if len(text) <= SMS_MAX_CHARS else text[: SMS_MAX_CHARS - 1] + "…"
