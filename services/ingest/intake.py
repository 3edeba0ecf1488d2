"""Validation of an ingest batch, free of HTTP: every event checked, bound to the key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.common.events import (
    DEFAULT_TENANT,
    AnyEvent,
    FieldError,
    TimeBounds,
    event_to_json,
    validate_event_in,
)
from services.common.settings import ApiKey

OFFLOAD_EVENTS = 50  # batches larger than this are validated in a worker thread
OFFLOAD_BYTES = 64 * 1024


def validate_batch(items: list[Any], key: ApiKey, now: datetime, max_age: timedelta,
                   max_future: timedelta
                   ) -> tuple[list[AnyEvent], list[FieldError], list[tuple[bytes, bytes]]]:
    """The valid events, the errors, and the records to publish: (customer id, canonical
    event JSON), in request order. The publisher sends them one Kafka message each (keyed by
    the customer) or grouped into envelopes by partition (services/common/envelope.py)."""
    events: list[AnyEvent] = []
    forms: list[bytes] = []
    errors: list[FieldError] = []
    seen: dict[tuple[str, str], tuple[int, bytes]] = {}  # (tenant, event_id) -> first index, form
    bounds = TimeBounds(now, max_age, max_future)
    for i, obj in enumerate(items):
        event, _, errs = validate_event_in(obj, bounds, i)
        if event is not None:
            errs = _check_binding(event, i, key)
            if not errs:
                # The key's tenant is the event's tenant; the default tenant is left implicit.
                event = event if key.tenant == DEFAULT_TENANT or event.tenant_id \
                    else event.model_copy(update={"tenant_id": key.tenant})
                # event_id is unique: the same id twice in a batch is fine only as the very
                # same event (a resend); two different events under one id are refused.
                form = event_to_json(event)
                first = seen.setdefault((event.tenant, event.event_id), (i, form))
                if first[1] != form:
                    errs = [FieldError(index=i, field="event_id", message=(
                        f"event_id {event.event_id[:128]!r} is also used by event {first[0]} of "
                        "this batch with different content; every event needs its own id"))]
                else:
                    events.append(event)
                    forms.append(form)
        errors.extend(errs)
    records = [] if errors else [(e.customer_id.encode(), f) for e, f in zip(events, forms, strict=True)]
    return events, errors, records


def _check_binding(event: AnyEvent, index: int, key: ApiKey) -> list[FieldError]:
    """A key bound to a tenant (and stores) may only send that tenant's (stores') events."""
    # No tenant_id means "the key's tenant" (schemas/): only a different explicit one is refused.
    if key.name != "anonymous" and event.tenant_id is not None and event.tenant_id != key.tenant:
        return [FieldError(index=index, field="tenant_id",
                           message=f"this API key belongs to tenant {key.tenant!r}; "
                           "omit tenant_id or send that value")]
    if not key.allows_store(event.store_id):
        return [FieldError(index=index, field="store_id",
                           message="this API key may only send events of stores "
                           f"{', '.join(sorted(key.stores or ()))}")]
    return []
