"""Response bodies of the analytics routes (their OpenAPI schemas)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

DefinitionKind = Literal["inactive_days", "cadence_multiple"]


class ChurnDefinition(BaseModel):
    kind: DefinitionKind
    text: str
    days: int | None = None
    multiple: float | None = None
    min_days: int | None = None


class ChurnRow(BaseModel):
    period_start: str
    period_end: str
    segment: str
    cohort: int = Field(description="Customers active at the period's start.")
    churned: int = Field(description="Of them, churned during the period.")
    churn_rate: float
    retention_rate: float
    complete: bool = Field(description="False for the current, still running period.")


class ChurnReport(BaseModel):
    definition: ChurnDefinition
    as_of: str | None
    customers: int
    truncated: bool
    rows: list[ChurnRow]


class FeatureRow(BaseModel):
    feature: str
    active_mean: float | None
    active_median: float | None
    churned_mean: float | None
    churned_median: float | None


class FeatureReport(BaseModel):
    definition: ChurnDefinition
    as_of: str | None
    truncated: bool
    active: int
    churned: int
    features: list[FeatureRow]


class TierCounts(BaseModel):
    low: int
    medium: int
    high: int


class TierDay(TierCounts):
    date: str


class TierReport(BaseModel):
    store: str | None
    current: TierCounts
    history: list[TierDay]


class Outcomes(BaseModel):
    actions: int
    returned: int
    not_returned: int
    pending: int
    winback_rate: float | None


class GroupOutcomes(Outcomes):
    key: str


class HoldoutOutcomes(BaseModel):
    customers: int
    returned: int
    not_returned: int
    pending: int
    return_rate: float | None


class WinbackReport(BaseModel):
    window_days: int
    since: str | None
    until: str | None
    overall: Outcomes
    by_action: list[GroupOutcomes]
    by_store: list[GroupOutcomes]
    by_staff: list[GroupOutcomes]
    holdout: HoldoutOutcomes
    actions_on_holdout_customers: int
    uplift: float | None = Field(description="winback_rate - holdout return_rate.")
    truncated: bool
    generated_at: str | None = None
    extra: dict[str, Any] | None = None
