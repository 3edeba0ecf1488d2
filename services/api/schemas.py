"""Response and request bodies of the customer routes (their OpenAPI schemas)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.events import Identifier
from services.common.profiles import Store
from services.common.riskchange import Reason, SuggestedAction, Tier
from services.records.profiles import SHARE_MAX
from services.records.winback import ACTION_TYPES

TierName = Tier
LifecycleName = Literal["new", "active", "at_risk", "won_back", "dormant", "churned"]
# what the at-risk list's filter accepts: the stages, and the names before issue 16 (growing
# and mature), which mean active
LifecycleFilter = Literal["new", "active", "at_risk", "won_back", "dormant", "churned",
                          "growing", "mature"]
ActionType = Literal["called", "message_sent", "coupon_sent", "exclusive_offer",
                     "complaint_resolved", "other"]
assert get_args(ActionType) == ACTION_TYPES  # one list: services.records.winback.ACTION_TYPES


class ShadowScore(BaseModel):
    model_version: str
    score: float = Field(ge=0, le=1)
    tier: str = Field(description="The challenger's plain threshold tier (it decides nothing).")


class Risk(BaseModel):
    customer_id: str
    score: float = Field(ge=0, le=1, description="Higher means more likely to churn.")
    tier: str = Field(description="low | medium | high")
    reasons: list[Reason]
    model_version: str
    as_of: str = Field(description="The instant this risk was computed for (RFC 3339).")
    suggested_action: SuggestedAction
    value_tier: str = Field(description="low | medium | high: spend and active days over a "
                            "year relative to the tenant's other customers (docs/scoring.md)")
    lifecycle_stage: str = Field(description="new | active | at_risk | won_back | dormant | "
                                 "churned (docs/scoring.md)")
    features: dict[str, float]
    store_id: str | None = None
    tier_since: str | None = None
    last_event_at: str | None = None
    point_in_time: bool = Field(False, description="True when computed for ?as_of.")
    holdout: bool = Field(False, description="In the win-back holdout group: do not act on "
                          "this customer (the control group that measures uplift).")
    shadow: ShadowScore | None = Field(None, description="The challenger model served in "
                                       "shadow (`churnwatch model shadow`), when one is: its "
                                       "score and tier for this customer, never acted on.")


class AtRiskItem(BaseModel):
    customer_id: str
    tier: str
    score: float = Field(ge=0, le=1)
    priority: float = Field(ge=0, description="score x (1 + spend over 365 days): the sort key "
                            "(churned customers after all the others).")
    value_tier: str | None = None
    lifecycle_stage: str | None = None
    top_reason: Reason | None = None
    tier_reason: Reason | None = Field(
        None, description="Why the tier is above what the score alone gives (a business "
        "rule, hysteresis or minimum dwell: a `tier_*` reason), else null.")
    suggested_action: SuggestedAction | None = None
    store_id: str | None = None
    owner_staff_id: str | None = None
    name: str | None = Field(None, description="The customer's name from their profile.")
    last_event_at: str | None = None
    holdout: bool = False


class AtRiskPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "tier": "high", "items": [{"customer_id": "c-1042", "tier": "high", "score": 0.81,
                                   "priority": 486.81, "store_id": "salon-downtown",
                                   "holdout": False}],
        "next_cursor": "WyI0ODYuODEiLCJkZWZhdWx0L2MtMTA0MiJd", "scanned": 1}]})
    tier: TierName
    items: list[AtRiskItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at "
                                    "the end. A page may be short when filtering by owner.")
    scanned: int = Field(description="Index entries examined for this page.")


class TimelineEntry(BaseModel):
    kind: str = Field(description="tier_change | notification | staff_action | acknowledged | "
                      "profile_change | activity (events of one day, summarized; data.day is "
                      "that day, the shop's calendar date)")
    at: str = Field(description="RFC 3339")
    data: dict[str, Any] = Field(default_factory=dict)


class Timeline(BaseModel):
    customer_id: str
    entries: list[TimelineEntry] = Field(description="Newest first.")


class NewAction(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "action": "called", "staff_id": "stylist-7", "note": "Booked for Friday",
        "alert_id": "3f1c0a9e5b7d4e2f8a6b1c0d9e8f7a6b"}]})
    action: ActionType
    staff_id: Identifier
    note: str | None = Field(None, max_length=1000)
    alert_id: str | None = Field(None, min_length=1, max_length=128,
                                 pattern=r"^[A-Za-z0-9._:-]+$",
                                 description="The risk-change CloudEvent id acted upon.")
    complaint_id: Identifier | None = Field(
        None, description="With complaint_resolved: the one open complaint resolved (its "
        "complaint_id, or the event_id of a complaint sent without one); left out, every "
        "complaint of the customer still open is resolved.")

    @model_validator(mode="after")
    def _complaint_only_when_resolving(self) -> NewAction:
        if self.complaint_id is not None and self.action != "complaint_resolved":
            raise ValueError("complaint_id goes with the action complaint_resolved only")
        return self


class Action(BaseModel):
    action_id: str
    customer_id: str
    action: ActionType
    staff_id: str
    note: str | None = None
    alert_id: str | None = None
    at: str
    store_id: str | None = None
    holdout: bool = False
    resolved_complaints: list[str] = Field(
        default_factory=list,
        description="complaint_resolved: the complaints closed by the resolution events the "
        "API published for them (the score follows once the scorer has read them).")
    acknowledged_alerts: list[str] = Field(
        default_factory=list,
        description="The customer's alerts (risk-change ids) nobody had acknowledged yet, "
        "acknowledged by this action's staff_id: acting on the customer is having seen them, "
        "so their escalation stops.")


class Ack(BaseModel):
    alert_id: str
    acknowledged: bool = Field(description="Always true: the alert is acknowledged (by this "
                               "call or an earlier one).")
    new: bool = Field(description="True when this call recorded the acknowledgement; false when "
                      "it was already acknowledged (the first acknowledgement is kept).")
    by: str = Field(description="Who acknowledged first.")
    at: str = Field(description="When it was first acknowledged (RFC 3339).")


class OwnedCustomer(BaseModel):
    customer_id: str
    store_id: str | None = Field(description="Their home store: the profile's, else the store "
                                 "of their latest events.")


class Stores(BaseModel):
    count: int
    stores: list[Store] = Field(
        description="Every store of the tenant within the key's stores, by store_id: what "
        "PUT /v1/stores/{store_id} took (time zone, manager, closed days). Saved to a file, "
        "this answer is what `churnwatch train --stores` reads.")


class StaffCustomers(BaseModel):
    staff_id: str
    count: int
    customers: list[OwnedCustomer] = Field(
        description="Every customer whose profile names this staff member their owner, within "
        "the key's stores, by id.")


HANDOVER_MAX_NAMED = 10_000


class HandOverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"to_staff_id": "stylist-9"}, {"to_staff_id": None},
        {"to_staff_id": "stylist-9", "customer_ids": ["c-1042", "c-2201"]},
        {"share_among": ["stylist-9", "stylist-12", "stylist-14"]}]})
    to_staff_id: Identifier | None = Field(
        default=None, description="The staff member who owns them from now on; null: nobody "
        "(the store's manager then receives their alerts). Required unless share_among is "
        "given.")
    share_among: list[Identifier] | None = Field(
        default=None, min_length=2, max_length=SHARE_MAX,
        description="Instead of to_staff_id: colleagues who each get an even share of the "
        "customers, and of those at high and at medium risk (a customer goes only to a "
        "colleague who works at their store or at no store).")
    customer_ids: list[Identifier] | None = Field(
        default=None, min_length=1, max_length=HANDOVER_MAX_NAMED,
        description="Only these of the staff member's customers (to choose who gets whom: "
        "one request per colleague); absent: all of them.")

    @model_validator(mode="after")
    def _one_way_to_give(self) -> HandOverRequest:
        if self.share_among is not None:
            if "to_staff_id" in self.model_fields_set:
                raise ValueError("give either to_staff_id or share_among, not both")
            if len(set(self.share_among)) != len(self.share_among):
                raise ValueError("share_among names a colleague twice")
        elif "to_staff_id" not in self.model_fields_set:
            raise ValueError("to_staff_id is required (null: nobody), or share_among")
        return self


class HandOverResult(BaseModel):
    moved: int = Field(description="Customers given to the new owner (with share_among: "
                       "to the colleagues, see shares).")
    kept: list[str] = Field(description="Customers left with the old owner because the new "
                            "owner (with share_among: every one of them) works at another "
                            "store than theirs.")
    alerts_moved: int = Field(description="Unacknowledged alerts about the customers moved "
                              "from the old owner's console list to the new owner's (to the "
                              "store's manager's when handed to nobody).")
    not_owned: list[str] = Field(
        default_factory=list, description="Customers named in customer_ids that the staff "
        "member does not own within the key's stores (left as they are).")
    shares: dict[str, int] = Field(
        default_factory=dict, description="With share_among: how many customers each "
        "colleague was given (empty otherwise).")


class TeamChange(BaseModel):
    at: str = Field(description="When (RFC 3339, UTC).")
    what: Literal["staff", "store"]
    id: str = Field(description="The staff member's or store's id.")
    name: str | None = Field(None, description="Their name then (kept after a removal).")
    action: Literal["added", "changed", "removed", "handed_over"]
    fields: list[str] = Field(description="The fields that changed (names, never values).")
    by: str = Field(description="Who: a staff id (the console) or an API key's name.")
    stores: list[str] = Field(description="The stores the change is about.")
    to_staff_id: str | None = Field(None, description="handed_over: the new owner (null: "
                                    "nobody).")
    count: int | None = Field(None, description="handed_over: how many customers.")


class TeamChanges(BaseModel):
    changes: list[TeamChange] = Field(description="Newest first; the tenant keeps its newest "
                                      "200.")
