"""POST /v1/events — validate everything, publish all or nothing, 202 only once stored."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from services.common.events import (
    STORE_BOUND_HEADER,
    AnyEvent,
    ComplaintEvent,
    FieldError,
    TransactionEvent,
    VisitEvent,
    parse_json,
)
from services.common.exceptions import BrokerUnavailable
from services.common.retry import TRANSIENT, Backoff
from services.ingest.intake import OFFLOAD_BYTES, OFFLOAD_EVENTS, validate_batch
from services.ingest.metrics import IngestMetrics
from services.web.deps import IngestKey, Res, Resources

logger = logging.getLogger(__name__)
@dataclass
class IngestState:
    """What ingestion keeps between requests: its metrics, and the accepted events Redis could
    not count yet (per tenant; a background retry adds them once Redis is back)."""

    metrics: IngestMetrics
    uncounted_accepted: dict[str, int] = field(default_factory=dict)
    count_retry: asyncio.Task[None] | None = None

    async def accept(self, res: Resources, events: Sequence[AnyEvent],
                     records: Sequence[tuple[bytes, bytes]], *, store_bound: bool) -> None:
        """Events of the API's own (a complaint staff resolved) in through
        :func:`publish_events`, as POST /v1/events takes them (``Resources.intake``)."""
        await publish_events(res, self, events, records, store_bound=store_bound)


def install(app: FastAPI, registry: CollectorRegistry) -> IngestState:
    """Ingestion's state in ``app`` (its metrics in the app's ``registry``)."""
    app.state.ingest = IngestState(IngestMetrics(registry))
    return app.state.ingest  # type: ignore[no-any-return]


def _ingest_state(request: Request) -> IngestState:
    return request.app.state.ingest  # type: ignore[no-any-return]


Ingest = Annotated[IngestState, Depends(_ingest_state)]
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
           403: {"description": "The key lacks the ingest scope"},
           429: {"description": "Rate limit of this key exceeded; see Retry-After"}}


class Accepted(BaseModel):
    accepted: int


class Rejected(BaseModel):
    detail: str
    errors: list[FieldError]


def check_content_type(request: Request) -> None:
    """JSON, or no Content-Type at all; a form, multipart or text body is refused, not guessed."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"Content-Type {media[:80]!r} is not accepted; send the events as "
                            "JSON with Content-Type: application/json")


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


def decode_body(request: Request, raw: bytes, limit: int) -> bytes:
    """``Content-Encoding: gzip`` is decoded (the decoded body is held to the same limit);
    any other encoding is refused with 415 rather than read as JSON by mistake."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"Content-Encoding {encoding[:40]!r} is not accepted; send the body "
                            "as is or gzip-compressed (Content-Encoding: gzip)")
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"body is not valid gzip (Content-Encoding: gzip): {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            f"the decompressed body is over {limit} bytes; split it into "
                            "smaller batches")
    if not inflater.eof:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            "body is not valid gzip (Content-Encoding: gzip): it ends early")
    return out


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
               415: {"description": "Content-Type is not JSON"},
               503: {"description": "Broker unavailable; retry later"}, **_ERRORS},
    openapi_extra=_BODY,
)
async def post_events(request: Request, res: Res, key: IngestKey, ing: Ingest) -> Any:
    settings = res.settings
    check_content_type(request)
    raw = decode_body(request, await read_body(request, settings.max_body_bytes),
                      settings.max_body_bytes)
    try:
        payload = await asyncio.to_thread(parse_json, raw) if len(raw) > OFFLOAD_BYTES \
            else parse_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        ing.metrics.rejected.labels("malformed_json").inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not valid JSON: {exc}") from None
    items = payload if isinstance(payload, list) else [payload]
    if isinstance(payload, list) and not payload:
        empty = Rejected(detail="the batch is empty; send at least one event", errors=[])
        return JSONResponse(status_code=422, content=empty.model_dump())
    if len(items) > settings.max_batch_events:
        ing.metrics.rejected.labels("batch_too_large").inc(len(items))
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            f"{len(items)} events in one request; the limit is {settings.max_batch_events}")
    args = (items, key, datetime.now(UTC), timedelta(days=settings.max_event_age_days),
            timedelta(seconds=settings.max_event_future_seconds))
    # Big batches are validated and encoded in a worker thread: the event loop keeps serving
    # risk reads meanwhile (see bench/api_bench.py).
    if len(items) > OFFLOAD_EVENTS:
        events, errors, records = await asyncio.to_thread(validate_batch, *args)
    else:
        events, errors, records = validate_batch(*args)
    if errors:
        bad = len({e.index for e in errors})
        ing.metrics.rejected.labels("invalid").inc(bad)
        body = Rejected(detail=f"{bad} of {len(items)} events are invalid; nothing was published",
                        errors=errors[:MAX_REPORTED_ERRORS])
        return JSONResponse(status_code=422, content=body.model_dump())
    try:
        await publish_events(res, ing, events, records, store_bound=key.stores is not None)
    except BrokerUnavailable:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the event broker is unavailable; nothing was acknowledged, retry "
                            "the same batch later", headers={"Retry-After": "5"}) from None
    return Accepted(accepted=len(events))


async def publish_events(res: Resources, ing: IngestState, events: Sequence[AnyEvent],
                         records: Sequence[tuple[bytes, bytes]], *, store_bound: bool) -> None:
    """Publish validated events (``records``: their (customer key, canonical JSON)) to the
    events topic — as envelopes when CHURNWATCH_INGEST_ENVELOPES — and count them accepted once
    the broker acknowledged every one; BrokerUnavailable (counted as rejected) if it did not.
    The one way events enter churnwatch from the API: POST /v1/events, and what staff do in
    the API or the console (a complaint marked resolved) through ``Resources.intake``."""
    settings = res.settings
    with ing.metrics.produce_seconds.time():
        try:
            headers = [(STORE_BOUND_HEADER, b"1")] if store_bound else None
            if settings.ingest_envelopes:  # grouped by partition (services/common/envelope.py)
                await res.publisher.publish_envelopes(settings.topic_events, records,
                                                      headers=headers)
            else:
                await res.publisher.publish(settings.topic_events, records, headers=headers)
        except BrokerUnavailable as exc:
            logger.warning("refusing %d events: %s", len(records), exc)
            ing.metrics.rejected.labels("broker_unavailable").inc(len(records))
            raise
    counts: dict[str, int] = {}
    for e in events:
        counts[e.type] = counts.get(e.type, 0) + 1
    for t, n in counts.items():
        ing.metrics.accepted.labels(t).inc(n)
    ing.metrics.count_stores(e.store_id for e in events)
    per_tenant: dict[str, int] = {}
    for e in events:
        per_tenant[e.tenant] = per_tenant.get(e.tenant, 0) + 1
    await _count_accepted(res, ing, per_tenant)


async def _count_accepted(res: Resources, ing: IngestState, per_tenant: dict[str, int]) -> None:
    """The events are stored in the broker: a Redis outage must not lose their count (the
    deployment's and each tenant's). What could not be added is kept in memory and added by a
    background retry once Redis is back."""
    for tenant, n in per_tenant.items():
        ing.uncounted_accepted[tenant] = ing.uncounted_accepted.get(tenant, 0) + n
    if ing.count_retry is not None and not ing.count_retry.done():
        return  # Redis is known to be away: the retry adds these too
    if not await _flush_count(res, ing):
        ing.count_retry = asyncio.get_running_loop().create_task(_retry_count(res, ing))


async def _flush_count(res: Resources, ing: IngestState) -> bool:
    pending, ing.uncounted_accepted = ing.uncounted_accepted, {}
    if not pending:
        return True
    try:
        # Not MULTI: the keys are in different slots under Redis Cluster. A failure half-way
        # (rare: Redis goes away between two commands) could count a few events twice.
        pipe = res.redis.pipeline(transaction=False)
        pipe.hincrby(res.keys.stats, "events_accepted_total", sum(pending.values()))
        for tenant, n in pending.items():
            pipe.hincrby(res.keys.tenant_stats(tenant), "events_accepted_total", n)
        await pipe.execute()
        return True
    except TRANSIENT as exc:  # the events are stored; only the counter is behind
        for tenant, n in pending.items():
            ing.uncounted_accepted[tenant] = ing.uncounted_accepted.get(tenant, 0) + n
        logger.warning("cannot count accepted events in Redis (%d kept to add later): %s",
                       sum(ing.uncounted_accepted.values()), type(exc).__name__)
        return False


async def _retry_count(res: Resources, ing: IngestState) -> None:
    backoff = Backoff(0.5, 5.0)  # the services' retry policy (services/common/retry.py)
    while ing.uncounted_accepted:
        await asyncio.sleep(backoff.next())
        if await _flush_count(res, ing):
            return


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """Completes the app's OpenAPI document for the raw-body ingest route: the event models it
    accepts, and the 400 every route with a body answers to a body that is not JSON."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (TransactionEvent, VisitEvent, ComplaintEvent):
        components[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}")
    for operations in spec.get("paths", {}).values():  # a body that is not JSON: 400
        for op in operations.values():
            if "requestBody" in op:
                op.setdefault("responses", {}).setdefault(
                    "400", {"description": "Body is not valid JSON (or not UTF-8)"})
    return spec
