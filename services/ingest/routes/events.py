"""POST /v1/events — validate everything, publish all or nothing, 202 only once stored."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.common.events import (
    DEFAULT_TENANT,
    AnyEvent,
    FieldError,
    TransactionEvent,
    event_to_json,
    parse_json,
    validate_event,
)
from services.common.exceptions import BrokerUnavailable
from services.common.settings import ApiKey
from services.ingest.deps import IngestKey, Res

logger = logging.getLogger(__name__)
router = APIRouter(tags=["events"])
MAX_REPORTED_ERRORS = 1000
_EVENT_SCHEMA = {"oneOf": [
    {"$ref": "#/components/schemas/TransactionEvent"},
    {"$ref": "#/components/schemas/VisitEvent"},
    {"$ref": "#/components/schemas/ComplaintEvent"},
], "discriminator": {"propertyName": "type"}}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {
            "schema": {"oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA,
                                                 "minItems": 1, "maxItems": 10_000}]},
            "examples": {"one": {"value": TransactionEvent.model_config["json_schema_extra"]["examples"][0]}},  # type: ignore[index]
        }},
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {400: {"description": "Body is not valid JSON (or has duplicate keys, NaN)"},
           401: {"description": "Missing or unknown API key"},
           403: {"description": "The key lacks the ingest scope"}}


class Accepted(BaseModel):
    accepted: int


class Rejected(BaseModel):
    detail: str
    errors: list[FieldError]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            f"request body is over {limit} bytes; split it into smaller batches")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                f"request body is over {limit} bytes; split it into smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_binding(event: AnyEvent, index: int, key: ApiKey) -> list[FieldError]:
    """A key bound to a tenant (and stores) may only send that tenant's (stores') events."""
    if key.name != "anonymous" and event.tenant != key.tenant:
        return [FieldError(index=index, field="tenant_id",
                           message=f"this API key belongs to tenant {key.tenant!r}; "
                           "omit tenant_id or send that value")]
    if not key.allows_store(event.store_id):
        return [FieldError(index=index, field="store_id",
                           message="this API key may only send events of stores "
                           f"{', '.join(sorted(key.stores or ()))}")]
    return []


@router.post(
    "/v1/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Ingest one event or a batch of up to 10,000",
    description="Validates every event; if any is invalid nothing is published and the answer is "
    "422 with one error per problem (index, field, message). Answers 202 only after the broker "
    "acknowledged every event, 503 if it cannot. Re-sending a batch is safe: an event_id "
    "already seen changes nothing.",
    responses={422: {"model": Rejected}, 413: {"description": "Body or batch too large"},
               503: {"description": "Broker unavailable; retry later"}, **_ERRORS},
    openapi_extra=_BODY,
)
async def post_events(request: Request, res: Res, key: IngestKey) -> Any:
    settings = res.settings
    raw = await read_body(request, settings.max_body_bytes)
    try:
        payload = parse_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        res.metrics.rejected.labels("malformed_json").inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not valid JSON: {exc}") from None
    items = payload if isinstance(payload, list) else [payload]
    if isinstance(payload, list) and not payload:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "the batch is empty; send at least one event")
    if len(items) > settings.max_batch_events:
        res.metrics.rejected.labels("batch_too_large").inc(len(items))
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            f"{len(items)} events in one request; the limit is {settings.max_batch_events}")
    now = datetime.now(UTC)
    max_age = timedelta(days=settings.max_event_age_days)
    max_future = timedelta(seconds=settings.max_event_future_seconds)
    events: list[AnyEvent] = []
    errors: list[FieldError] = []
    for i, obj in enumerate(items):
        event, errs = validate_event(obj, i, now=now, max_age=max_age, max_future=max_future)
        if event is not None:
            errs = _check_binding(event, i, key)
            if not errs:
                # The key's tenant is the event's tenant; the default tenant is left implicit.
                events.append(event if key.tenant == DEFAULT_TENANT or event.tenant_id
                              else event.model_copy(update={"tenant_id": key.tenant}))
        errors.extend(errs)
    if errors:
        bad = len({e.index for e in errors})
        res.metrics.rejected.labels("invalid").inc(bad)
        body = Rejected(detail=f"{bad} of {len(items)} events are invalid; nothing was published",
                        errors=errors[:MAX_REPORTED_ERRORS])
        return JSONResponse(status_code=422, content=body.model_dump())
    records = [(e.customer_id.encode(), event_to_json(e)) for e in events]
    with res.metrics.produce_seconds.time():
        try:
            await res.publisher.publish(settings.topic_events, records)
        except BrokerUnavailable as exc:
            logger.warning("refusing %d events: %s", len(records), exc)
            res.metrics.rejected.labels("broker_unavailable").inc(len(records))
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                "the event broker is unavailable; nothing was acknowledged, retry "
                                "the same batch later", headers={"Retry-After": "5"}) from None
    counts: dict[str, int] = {}
    for e in events:
        counts[e.type] = counts.get(e.type, 0) + 1
    for t, n in counts.items():
        res.metrics.accepted.labels(t).inc(n)
    res.metrics.count_stores(e.store_id for e in events)
    try:
        await res.redis.hincrby(res.keys.stats, "events_accepted_total", len(events))
    except Exception as exc:  # the events are stored; only the counter is behind
        logger.warning("cannot count accepted events in Redis: %s", exc)
    return Accepted(accepted=len(events))
