"""Assess customers: features -> one vectorized model call -> tier -> reasons and action.

Used by the streaming scorer (with tier history, hysteresis and dwell) and by the risk API's
``as_of`` reads (point in time, entry thresholds), so both score exactly alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.riskchange import Reason, SuggestedAction
from services.scorer.features import Activity, compute_features, lifecycle_stage, value_tier
from services.scorer.model import RiskModel, predict_features
from services.scorer.scorecard import reasons as explain
from services.scorer.scorecard import suggested_action
from services.scorer.tiers import Thresholds, decide_tier, plain_tier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    """What the engine needs of one customer."""

    customer_id: str
    activities: Sequence[Activity]
    first_seen_ms: int | None = None
    tier: str | None = None
    tier_since_ms: int | None = None


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

    @property
    def as_of(self) -> datetime:
        return datetime.fromtimestamp(self.as_of_ms / 1000, UTC)

    def to_json(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "tier": self.tier,
            "reasons": [r.model_dump() for r in self.reasons],
            "suggested_action": self.action.model_dump(),
            "value_tier": self.value_tier,
            "lifecycle_stage": self.lifecycle_stage,
            "model_version": self.model_version,
            "as_of": self.as_of.isoformat().replace("+00:00", "Z"),
            "features": {k: round(v, 6) for k, v in self.features.items()},
        }


class Engine:
    def __init__(self, model: RiskModel, thresholds: Thresholds):
        self.model = model
        self.thresholds = thresholds

    def assess(self, subjects: Sequence[Subject], now_ms: int, *, with_history: bool = True
               ) -> list[Assessment]:
        feats = [compute_features(s.activities, now_ms, s.first_seen_ms) for s in subjects]
        scores = predict_features(self.model, feats)
        out: list[Assessment] = []
        for s, f, score in zip(subjects, feats, scores, strict=True):
            score = float(min(max(score, 0.0), 1.0))
            if with_history:
                tier = decide_tier(s.tier, s.tier_since_ms, score, now_ms, self.thresholds)
            else:
                tier = plain_tier(score, self.thresholds)
            why = explain(f)
            out.append(Assessment(
                customer_id=s.customer_id, score=score, tier=tier, reasons=why,
                action=suggested_action(tier, why), features=f, value_tier=value_tier(f),
                lifecycle_stage=lifecycle_stage(f), model_version=self.model.version,
                as_of_ms=now_ms,
            ))
        return out
