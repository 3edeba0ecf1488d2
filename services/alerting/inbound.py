"""Decoding the records of the risk-changes topic: CloudEvents 1.0 structured JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.common.riskchange import CLOUDEVENT_TYPE, RiskChange


class InvalidRecord(ValueError):
    """A record that is not a risk-change CloudEvent; the message says what is wrong."""


@dataclass(frozen=True)
class RiskChangeEvent:
    raw: bytes  # exactly as consumed: webhooks receive these bytes
    id: str
    change: RiskChange


def decode_risk_change(value: bytes | None) -> RiskChangeEvent:
    if not value:
        raise InvalidRecord("empty record value; expected a CloudEvent JSON object")
    try:
        raw_text = value.decode("utf-8")
        event: Any = json.loads(raw_text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRecord(f"not UTF-8 JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidRecord(f"expected a CloudEvent JSON object, got {type(event).__name__}")
    if event.get("specversion") != "1.0":
        raise InvalidRecord(f"specversion is {event.get('specversion')!r}; expected '1.0'")
    for attr in ("id", "source", "type"):
        if not isinstance(event.get(attr), str) or not event[attr]:
            raise InvalidRecord(f"CloudEvent attribute {attr!r} is missing or not a string")
    if event["type"] != CLOUDEVENT_TYPE:
        raise InvalidRecord(f"unsupported CloudEvent type {event['type']!r}; expected {CLOUDEVENT_TYPE!r}")
    if len(event["id"]) > 256:
        raise InvalidRecord("CloudEvent id is longer than 256 characters")
    try:
        change = RiskChange.model_validate(event.get("data"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(data)"
        raise InvalidRecord(f"data is not a RiskChange: {where}: {first.get('msg')} "
                            f"({exc.error_count()} error(s))") from None
    return RiskChangeEvent(raw=bytes(value), id=event["id"], change=change)
