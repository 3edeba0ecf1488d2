"""The access-request document (``GET /v1/customers/{id}/export``): its model is the source of
``schemas/customer_export.schema.json``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CustomerExport(BaseModel):
    """Everything churnwatch holds about one customer (``GET /v1/customers/{id}/export``);
    published as ``schemas/customer_export.schema.json``."""

    model_config = ConfigDict(title="CustomerExport", json_schema_extra={"examples": [{
        "customer_id": "c-1042", "tenant_id": "default", "exported_at": "2026-12-02T10:00:00.000Z",
        "found": True, "profile": {"name": "Alice", "store_id": "salon-downtown"},
        "state": {"store_id": "salon-downtown", "tier": "high", "score": 0.81},
        "events": [{"event_id": "pos-1", "type": "visit", "occurred_at": "2026-06-01T08:00:00Z"}],
        "timeline": [], "notifications": [], "staff_actions": [], "alert_episode": None,
        "console_drafts": [], "staff_alert_lists": [], "acknowledgements": {}, "indexes": {"tier": "high", "holdout_since": None}}]})
    customer_id: str
    tenant_id: str
    exported_at: str = Field(description="When this document was produced (RFC 3339, UTC).")
    found: bool = Field(description="False when nothing at all is held about the customer.")
    profile: dict[str, Any] | None = Field(description="The profile (name, contact, consent, "
                                           "owner, store) as stored; null when none.")
    state: dict[str, Any] | None = Field(description="Store, tier, score, first/last event "
                                         "times and the latest risk snapshot with its reasons "
                                         "and features; null before the first event is scored.")
    events: list[dict[str, Any]] = Field(
        description="The raw events the customer's summary still holds (their newest), "
                                         "oldest first.")
    timeline: list[Any] = Field(description="Tier changes, staff actions, acknowledgements and "
                                "profile changes, newest first.")
    notifications: list[Any] = Field(description="Every notification sent about the customer "
                                     "(channel, recipient, outcome), newest first.")
    staff_actions: list[Any] = Field(description="Win-back actions staff recorded.")
    alert_episode: Any = Field(description="The notifier's alert episode record, or null.")
    console_drafts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Win-back action forms staff could not save in the console (their session "
        "ended, or the form was stale), kept to give back: the action, the note and until when "
        "it is kept (RFC 3339), oldest first.")
    staff_alert_lists: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The alerts about the customer in staff members' console lists (in-app "
        "alerts, and alerts mailed or texted to them): alert id, kind, subject, text, how it "
        "reached them (via), when; one per list holding it, oldest first. Whose list is left "
        "out.")
    acknowledgements: dict[str, Any] = Field(description="Alert id -> who acknowledged it, when.")
    indexes: dict[str, Any] = Field(description="Where the customer is listed: the tier index "
                                    "and the win-back holdout group.")
