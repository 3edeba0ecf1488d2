"""Generate ``schemas/*.schema.json`` (JSON Schema 2020-12) from the Python models.

The models are the source; the files are generated and a test fails when they drift
(`make schemas` rewrites them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from services.common.envelope import ENVELOPE_HEADER, ENVELOPE_VERSION, MAX_BYTES, MAX_EVENTS
from services.common.events import ComplaintEvent, TransactionEvent, VisitEvent
from services.common.exportdoc import CustomerExport
from services.common.riskchange import (
    CLOUDEVENT_SCHEMA,
    CLOUDEVENT_SOURCE,
    CLOUDEVENT_TYPE,
    RiskChange,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "urn:churnwatch:schema:"


def _model_schema(model: type[BaseModel], name: str, description: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    return {"$schema": DIALECT, "$id": f"{BASE_ID}{name}", "description": description, **schema}


def _event_schema() -> dict[str, Any]:
    return {
        "$schema": DIALECT,
        "$id": f"{BASE_ID}event",
        "title": "Event",
        "description": "Any POS event accepted by POST /v1/events or on the events topic; "
        "`type` selects the variant. Unknown fields are ignored and not forwarded.",
        "oneOf": [
            {"$ref": f"{BASE_ID}transaction"},
            {"$ref": f"{BASE_ID}visit"},
            {"$ref": f"{BASE_ID}complaint"},
        ],
    }


def _envelope_schema() -> dict[str, Any]:
    examples = [m.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
                for m in (VisitEvent, TransactionEvent)]
    return {
        "$schema": DIALECT,
        "$id": f"{BASE_ID}envelope",
        "title": "EventEnvelope",
        "description": "The value of an envelope record on the events topic: several events of "
        f"one partition in one Kafka message. The record carries the header {ENVELOPE_HEADER}: "
        f"{ENVELOPE_VERSION} (without it a record is one event, schemas/event.schema.json); its "
        "partition is the one Kafka's default partitioner (murmur2) gives each event's "
        "customer_id; its key is the customer_id of the first event. At most "
        f"{MAX_EVENTS} events and {MAX_BYTES} bytes. Each event keeps its own event_id and is "
        "validated (and, if invalid, dead-lettered) alone. docs/contract.md, 'Envelopes'.",
        "type": "object",
        "required": ["version", "events"],
        "properties": {
            "version": {"const": ENVELOPE_VERSION,
                        "description": "Format version; the same as the header's value."},
            "events": {
                "type": "array", "minItems": 1, "maxItems": MAX_EVENTS,
                "description": "The events, in the order they happened per customer.",
                "items": {"$ref": f"{BASE_ID}event"},
            },
        },
        "examples": [{"version": ENVELOPE_VERSION, "events": examples}],
    }


def _cloudevent_schema() -> dict[str, Any]:
    return {
        "$schema": DIALECT,
        "$id": f"{BASE_ID}risk_change_cloudevent",
        "title": "RiskChangeCloudEvent",
        "description": "CloudEvents 1.0 structured-mode JSON on the risk_changes topic "
        "(Kafka key = customer_id) and in webhook deliveries.",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "Deterministic: the same customer, transition "
                   "and cause always give the same id, so consumers can deduplicate on it."},
            "source": {"const": CLOUDEVENT_SOURCE},
            "type": {"const": CLOUDEVENT_TYPE},
            "subject": {"type": "string", "description": "The customer_id."},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "dataschema": {"const": CLOUDEVENT_SCHEMA},
            "data": {"$ref": f"{BASE_ID}risk_change"},
        },
    }


def generate() -> dict[str, dict[str, Any]]:
    return {
        "transaction.schema.json": _model_schema(TransactionEvent, "transaction",
                                                 "A POS transaction event."),
        "visit.schema.json": _model_schema(VisitEvent, "visit", "A POS visit event."),
        "complaint.schema.json": _model_schema(ComplaintEvent, "complaint", "A complaint event."),
        "event.schema.json": _event_schema(),
        "envelope.schema.json": _envelope_schema(),
        "risk_change.schema.json": _model_schema(
            RiskChange, "risk_change", "`data` of the risk-change CloudEvent."),
        "risk_change_cloudevent.schema.json": _cloudevent_schema(),
        "customer_export.schema.json": _model_schema(
            CustomerExport, "customer_export",
            "GET /v1/customers/{customer_id}/export: everything held about one customer."),
    }


def _render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(_render(schema), encoding="utf-8")
        written.append(path)
    return written


def check_schemas(directory: Path) -> list[Path]:
    """Files that are missing or differ from what the models generate."""
    stale = []
    for name, schema in generate().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != _render(schema):
            stale.append(path)
    return stale
