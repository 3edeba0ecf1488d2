"""The risk-change event: a CloudEvents 1.0 structured-JSON envelope around ``RiskChange``.

``schemas/risk_change.schema.json`` is generated from :class:`RiskChange`; downstream apps
consume the ``risk_changes`` topic keyed by ``customer_id``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common import jsonfast
from services.common.timefmt import rfc3339

Tier = Literal["low", "medium", "high"]
TIERS: tuple[Tier, ...] = ("low", "medium", "high")
# The order of the risk tiers: the one definition (scoring rules, the notifier's policy and
# templates compare tiers through it).
TIER_RANK: dict[str, int] = {tier: rank for rank, tier in enumerate(TIERS)}
CLOUDEVENT_TYPE = "io.churnwatch.risk.changed.v1"
CLOUDEVENT_SOURCE = "urn:churnwatch:scorer"
CLOUDEVENT_SCHEMA = "urn:churnwatch:schema:risk_change:1"
CONTENT_TYPE = "application/cloudevents+json"
LifecycleStage = Literal["new", "active", "at_risk", "won_back", "dormant", "churned"]
# Stage names before issue 16, still on the topic in older events: read as active.
LEGACY_LIFECYCLE_STAGES = {"growing": "active", "mature": "active"}


class Reason(BaseModel):
    """One plain-language reason behind the score, strongest first."""

    model_config = ConfigDict(frozen=True)
    code: str = Field(description="Stable machine code, e.g. overdue_visit.")
    text: str = Field(description="English text, e.g. '63 days since the last visit; usually every 28 days'.")
    text_zh: str = Field(description="The same reason in Simplified Chinese (zh-CN).")
    weight: float = Field(description="Contribution to the score (log-odds); larger means stronger.")


def lapsed(lifecycle_stage: str | None) -> bool:
    """Silent past the churn horizon (stage ``churned``): listed after the customers who can
    still be kept, in the at-risk lists and the go-live summary."""
    return lifecycle_stage == "churned"


def holds_tier(reason: Any) -> bool:
    """A reason (a :class:`Reason` or its JSON) that says what holds the tier above the
    score's own (a rule, hysteresis, dwell: ``tier_*``) rather than why the customer is at
    risk."""
    code = reason.get("code", "") if isinstance(reason, dict) else getattr(reason, "code", "")
    return str(code).startswith("tier_")


def priority(score: float, features: dict[str, float]) -> float:
    """A customer's order in the at-risk lists and the go-live summary: the score weighted by
    a year's spend, ``score x (1 + spend_365)``."""
    return score * (1.0 + max(float(features.get("spend_365", 0.0)), 0.0))


def score_figures(a: float, b: float) -> tuple[str, str]:
    """Two scores (or a score and a tier level) as staff read them side by side: two
    decimals, more (up to four) while two would show different values alike — "0.75 → 0.75"
    for 0.749 → 0.751 read as no change, "0.65 is still above the exit level 0.65" as a
    mistake."""
    for digits in (2, 3, 4):
        shown = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if a == b or shown[0] != shown[1]:
            return shown
    return shown


def reason_json(r: Reason) -> dict[str, Any]:
    """``r.model_dump()`` without pydantic's serializer: the scorer writes up to four reasons
    per customer it scores."""
    return {"code": r.code, "text": r.text, "text_zh": r.text_zh, "weight": r.weight}


class SuggestedAction(BaseModel):
    model_config = ConfigDict(frozen=True)
    code: str = Field(description="e.g. personal_call, resolve_complaint, win_back_offer, none.")
    text: str
    text_zh: str


class Cause(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["event", "silence", "model"] = Field(
        description="event: new events arrived; silence: time passed without events; "
        "model: the scoring changed (another model, or other rules or tier levels) and "
        "re-scored the customer."
    )
    event_id: str | None = Field(default=None, description="Newest event of the customer when scored.")
    occurred_at: datetime | None = Field(
        default=None, description="When the cause happened (event time): the newest event of "
        "the batch that changed the tier (kind event); for kind silence, when the scorer was "
        "due to look at the customer again (its clock when it looked on time); for kind "
        "model, the scorer's clock. Absent in changes from older scorers.")
    event_type: Literal["transaction", "visit", "complaint"] | None = Field(
        default=None, description="Type of that newest event (kind event only): a visit or "
        "transaction means the customer came back themselves; a complaint update does not.")


class RiskChange(BaseModel):
    """``data`` of the risk-change CloudEvent."""

    model_config = ConfigDict(
        frozen=True,
        title="RiskChange",
        json_schema_extra={"examples": [{
            "customer_id": "c-1042", "store_id": "salon-downtown", "previous_tier": "low",
            "tier": "high", "score": 0.81, "previous_score": 0.22,
            "reasons": [{"code": "overdue", "text": "63 days since the last visit; usually every 28 days",
                         "text_zh": "距上次到店已63天；平时每28天一次", "weight": 1.9}],
            "suggested_action": {"code": "personal_call", "text": "Call the customer personally",
                                 "text_zh": "亲自致电客户"},
            "value_tier": "high", "lifecycle_stage": "at_risk", "model_version": "scorecard-1",
            "as_of": "2026-11-23T10:00:00Z", "cause": {"kind": "silence", "event_id": "visit-55120"},
            "features": {"days_since_last_activity": 63.0},
        }]},
    )
    customer_id: str
    tenant_id: str = Field(default="default", description="The business the customer belongs to.")
    store_id: str | None = None
    previous_tier: Tier
    tier: Tier
    score: float = Field(ge=0, le=1, description="Churn probability-like score; higher is riskier.")
    previous_score: float | None = Field(default=None, ge=0, le=1)
    reasons: list[Reason]
    suggested_action: SuggestedAction
    value_tier: Literal["low", "medium", "high"] = Field(
        description="Customer value relative to the tenant's other customers: spend and active "
        "days over a year; the top 20 % high, the next 30 % medium (fixed amounts for a "
        "tenant with fewer than 50 customers). docs/scoring.md.")
    lifecycle_stage: LifecycleStage = Field(
        description="new (first 30 days), active, at_risk (risk tier medium or high), won_back "
        "(returned within 30 days after a silence that had made them dormant or churned), "
        "dormant (silent 3 cadences, at least half the churn horizon), churned (silent past "
        "the churn horizon and, with a cadence, 4 cadences; at most twice the horizon). "
        "docs/scoring.md. Older events may say growing or mature: read them as active.")
    model_version: str
    as_of: datetime = Field(description="The instant the customer was scored at (event or wall clock).")
    cause: Cause
    features: dict[str, float] = Field(description="The feature values the score was computed from.")
    catching_up: bool = Field(
        default=False, description="Produced while catching up on old data: the cause is "
        "older than CHURNWATCH_ALERT_MAX_AGE by the wall clock when scored (an import of "
        "history, a replay, a long backlog), or a model switch re-scored every customer "
        "(cause model). Staff are not alerted about it one by one (at most one summary); "
        "downstream apps may filter on it.")
    holdout: bool = Field(default=False, description="The customer is in the win-back holdout "
                          "group: measured, not acted on (no staff alert is sent).")

    @field_validator("lifecycle_stage", mode="before")
    @classmethod
    def _legacy_stage(cls, value: Any) -> Any:
        """Events published before issue 16 (growing, mature) still parse, as active."""
        return LEGACY_LIFECYCLE_STAGES.get(value, value) if isinstance(value, str) else value


def before_alerts(change: RiskChange, now_ms: int, max_age_s: float | None) -> bool:
    """No staff alert about ``change`` one by one: the scorer marked it as produced while
    catching up, or its cause is older than ``max_age_s`` (``CHURNWATCH_ALERT_MAX_AGE``) by the
    wall clock at ``now_ms``. The notifier's test, and what ``churnwatch up`` counts instead of
    printing."""
    if change.catching_up:
        return True
    at = change.cause.occurred_at
    return (at is not None and max_age_s is not None
            and now_ms - at.timestamp() * 1000 > max_age_s * 1000)


def risk_change_id(customer_id: str, previous_tier: str, tier: str, cause: Cause,
                   tenant_id: str = "default") -> str:
    """Deterministic id: a redelivery of the same cause repeats the same id."""
    h = hashlib.sha256()
    parts: tuple[str, ...] = (customer_id, previous_tier, tier, cause.kind, cause.event_id or "")
    if tenant_id != "default":  # ids of the default tenant stay what they always were
        parts += (tenant_id,)
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


def to_cloudevent(change: RiskChange) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": risk_change_id(change.customer_id, change.previous_tier, change.tier, change.cause,
                             change.tenant_id),
        "source": CLOUDEVENT_SOURCE,
        "type": CLOUDEVENT_TYPE,
        "subject": change.customer_id,
        "time": rfc3339(change.as_of),
        "datacontenttype": "application/json",
        "dataschema": CLOUDEVENT_SCHEMA,
        "data": change.model_dump(mode="json"),
    }


def encode_cloudevent(event: dict[str, Any]) -> bytes:
    return jsonfast.dumps_bytes(event)
