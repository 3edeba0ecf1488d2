"""Customer risk reads (now, or as it stood at an instant) and erasure."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from services.api.schemas import Risk
from services.common.events import TENANT_HEADER, epoch_ms
from services.common.exceptions import BrokerUnavailable
from services.common.exportdoc import CustomerExport
from services.common.profiles import home_store_of
from services.common.timefmt import iso_ms, iso_ms_at, local_iso, parse_iso, rfc3339
from services.records import erasure, export
from services.records.holdout import holdout
from services.scoring.closures import (
    Closures,
    calendar_closures,
    calendar_of,
    home_store,
    only_store,
)
from services.scoring.engine import Subject
from services.scoring.lifecycle import stage_name
from services.state.store import CustomerState, load_customers, read_states
from services.web.deps import AdminKey, ReadKey, Res, Resources
from services.web.middleware import request_id
from services.web.openapi import AUTH, NOT_FOUND, responses
from services.web.params import CustomerId
from services.web.scope import check_customer_admin, check_store_read, customer_store

logger = logging.getLogger(__name__)
router = APIRouter(tags=["customers"])


@router.get(
    "/v1/customers/{customer_id:anypath}/risk",
    response_model=Risk,
    summary="A customer's churn risk and why",
    description="The latest score, tier, plain-language reasons and the features used. With "
    "`as_of`, the risk as it stood at that instant: only events up to it are used and the tier "
    "is the plain threshold tier for that score. 404 if the customer is unknown to this key's "
    "tenant (and stores), or had no events by `as_of`. `holdout: true` means: do not act.",
    responses=responses(AUTH, NOT_FOUND),
)
async def get_risk(customer_id: CustomerId, res: Res, key: ReadKey,
                   as_of: str | None = Query(None, max_length=64, description="RFC 3339 instant",
                                             examples=["2026-11-01T00:00:00Z"])) -> Any:
    share = res.settings.holdout_share
    if as_of is None:
        state = (await read_states(res.redis, res.keys, [(key.tenant, customer_id)],
                                   ["risk", "store", "tier_since", "last_ts", "tz"]))[0]
        # a store-bound key does not see other stores' customers
        state = check_store_read(key, state if state and "risk" in state else None,
                                 state.get("store") if state else None,
                                 f"no risk known for customer {customer_id!r}")
        risk = json.loads(state["risk"])
        if risk.get("lifecycle_stage") is not None:  # scored before issue 16: growing/mature
            risk["lifecycle_stage"] = stage_name(risk["lifecycle_stage"])
        held = holdout(risk.get("tier"), key.tenant, customer_id, share)
        return Risk.model_validate({**risk, "customer_id": customer_id,
                                    "store_id": state.get("store"),
                                    "tier_since": iso_ms(state.get("tier_since")),
                                    "last_event_at": local_iso(state.get("last_ts"),
                                                               state.get("tz")),
                                    "holdout": held})
    at = parse_iso(as_of)
    if at is None:
        raise HTTPException(422,
                            f"as_of={as_of!r} must be RFC 3339 with an offset, e.g. 2026-11-23T10:00:00Z")
    at_ms = epoch_ms(at)
    cs = (await load_customers(res.redis, res.keys, [(key.tenant, customer_id)])
          ).get((key.tenant, customer_id))
    missing = f"no events of customer {customer_id!r} at or before {as_of}"
    cs = check_store_read(key, cs, cs.store_id if cs else None, missing)
    last = cs.summary.last_at_or_before(at_ms)
    if last is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, missing)
    first_ms = cs.first_ts if cs.first_ts is not None and cs.first_ts <= at_ms else None
    # follow `churnwatch model activate` (reads Redis at most every model_refresh_seconds)
    await res.engine.refresh(res.redis, res.keys, min_interval=res.settings.model_refresh_seconds)
    # the tenant's value-tier boundaries as the scorer last computed them (re-read every 60 s)
    await res.engine.refresh_value_bounds(res.redis, res.keys, min_interval=60.0)
    closures, storeless = await _closures(res, key.tenant, cs)
    a = res.engine.assess([Subject(customer_id, (), first_ms, summary=cs.summary,
                                   tenant=key.tenant, closures=closures, storeless=storeless)],
                          at_ms, with_history=False)[0]
    body = a.to_json()
    body["as_of"] = rfc3339(at)
    return Risk.model_validate({**body, "customer_id": customer_id, "store_id": cs.store_id,
                                "last_event_at": iso_ms_at(last, cs.summary.tz_minutes),
                                "point_in_time": True,
                                "holdout": holdout(a.tier, key.tenant, customer_id, share)})


async def _closures(res: Resources, tenant: str, cs: CustomerState
                    ) -> tuple[Closures | None, bool]:
    """The closed days of the customer's store, as the scorer counts them: for a customer
    whose events name no store, their profile's ``store_id``; without a store of their own,
    the tenant's only store's (:func:`only_store`). And whether they belong to no store."""
    key = res.keys.stores(tenant)
    profile = None if cs.store_named else home_store_of(
        await res.redis.get(res.keys.profile(cs.customer_id, tenant)))
    store_id = home_store(cs.store_id, profile, None)  # the only store: read below if need be
    if store_id:
        calendar = calendar_of(await res.redis.hget(key, store_id))
    elif await res.redis.hlen(key) == 1:
        # the one record, read as the scorer reads them (names are str: decode_responses)
        calendars = {str(s): c for s, raw in (await res.redis.hgetall(key)).items()
                     if (c := calendar_of(raw)) is not None}
        only = only_store(calendars)
        if only is None:  # (its record unreadable: the scorer takes no store either)
            return None, True
        calendar = calendars[only]
    else:
        return None, True
    return (calendar_closures(calendar) if calendar is not None else None), False


@router.delete(
    "/v1/customers/{customer_id:anypath}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase a customer",
    description="Deletes the customer's state, risk, events, profile, delivery log, timeline, "
    "staff actions and index entries, writes a tombstone (null value keyed by customer_id, "
    "tenant in the `churnwatch-tenant` header) to the events topic so every scorer forgets "
    "them in order (and records the erasure, so that no replay of the topic brings back their "
    "earlier events), and appends an audit record (the customer named by a SHA-256 digest). "
    "Idempotent. The risk reads 404 afterwards until new events arrive. Store-bound keys "
    "may only erase their stores' customers.",
    responses=responses(AUTH, {403: AUTH[403], 503: {
        "description": "Broker unavailable; nothing erased, retry later"}}),
)
async def delete_customer(customer_id: CustomerId, request: Request, res: Res,
                          key: AdminKey) -> Response:
    if key.stores is not None:  # (an unbound key may erase anyone: no round trip)
        _, store = await customer_store(res.redis, res.keys, customer_id, key.tenant)
        check_customer_admin(key, store, "erase")
    try:
        await res.publisher.publish(res.settings.topic_events, [(customer_id.encode(), None)],
                                    headers=[(TENANT_HEADER, key.tenant.encode())])
    except BrokerUnavailable:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the event broker is unavailable; retry the erasure later",
                            headers={"Retry-After": "5"}) from None
    await erasure.erase(res.redis, res.keys, customer_id, tenant=key.tenant,
                        partitions=res.settings.topic_partitions, by=key.name,
                        request_id=request_id(request),
                        audit_max=res.settings.retention.audit_max)
    logger.info("customer erased by %s", key.name, extra={"request_id": request_id(request)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/customers/{customer_id:anypath}/export",
    response_model=CustomerExport,
    summary="Everything held about a customer (access request)",
    description="One JSON document with the customer's profile, state and latest risk, the "
    "events held, timeline, notifications, staff actions, alert episode, acknowledgements and "
    "index entries (schema: `schemas/customer_export.schema.json`). 200 also when nothing is "
    "held (`found: false`). Audited like an erasure: the tenant's audit stream records who "
    "exported whom (the customer named by digest). Store-bound keys may only export their "
    "stores' customers.",
    responses=responses(AUTH, {403: AUTH[403]}),
)
async def export_customer(customer_id: CustomerId, request: Request, res: Res,
                          key: AdminKey) -> Any:
    doc = await export.collect(res.redis, res.keys, customer_id, tenant=key.tenant)
    check_customer_admin(key, (doc["state"] or {}).get("store_id")
                         or (doc["profile"] or {}).get("store_id"), "export")
    await export.audit(res.redis, res.keys, customer_id, tenant=key.tenant, by=key.name,
                       request_id=request_id(request), audit_max=res.settings.retention.audit_max)
    logger.info("customer exported by %s", key.name, extra={"request_id": request_id(request)})
    return doc
