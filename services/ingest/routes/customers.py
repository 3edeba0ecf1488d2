"""Customer risk reads (now, or as it stood at an instant) and erasure."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from services.common.events import TENANT_HEADER, epoch_ms
from services.common.exceptions import BrokerUnavailable
from services.common.riskchange import Reason, SuggestedAction
from services.ingest.deps import AdminKey, ReadKey, Res
from services.scorer.engine import Subject
from services.scorer.state import erase_customer, load_customers

logger = logging.getLogger(__name__)
router = APIRouter(tags=["customers"])


class Risk(BaseModel):
    customer_id: str
    score: float = Field(ge=0, le=1, description="Higher means more likely to churn.")
    tier: str = Field(description="low | medium | high")
    reasons: list[Reason]
    model_version: str
    as_of: str = Field(description="The instant this risk was computed for (RFC 3339).")
    suggested_action: SuggestedAction
    value_tier: str
    lifecycle_stage: str
    features: dict[str, float]
    store_id: str | None = None
    tier_since: str | None = None
    last_event_at: str | None = None
    point_in_time: bool = Field(False, description="True when computed for ?as_of.")


def _iso(ms: str | int | None) -> str | None:
    if ms in (None, ""):
        return None
    return datetime.fromtimestamp(int(float(ms)) / 1000, UTC).isoformat().replace("+00:00", "Z")


def _parse_as_of(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            f"as_of={value!r} must be RFC 3339 with an offset, e.g. 2026-11-23T10:00:00Z")
    return dt


@router.get(
    "/v1/customers/{customer_id:path}/risk",
    response_model=Risk,
    summary="A customer's churn risk and why",
    description="The latest score, tier and plain-language reasons. With `as_of`, the risk as it "
    "stood at that instant: only events up to it are used and the tier is the plain threshold "
    "tier for that score. 404 if the customer is unknown (or had no events by `as_of`).",
    responses={404: {"description": "Unknown customer"}},
)
async def get_risk(customer_id: str, res: Res, key: ReadKey,
                   as_of: str | None = Query(None, description="RFC 3339 instant, e.g. 2026-11-01T00:00:00Z")
                   ) -> Any:
    if as_of is None:
        state = cast(dict[str, str],
                     await res.redis.hgetall(res.keys.customer(customer_id, key.tenant)[2]))
        if state and not key.allows_store(state.get("store")):
            state = {}  # a store-bound key does not see other stores' customers
        if not state or "risk" not in state:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no risk known for customer {customer_id!r}")
        risk = json.loads(state["risk"])
        return Risk(customer_id=customer_id, store_id=state.get("store"),
                    tier_since=_iso(state.get("tier_since")), last_event_at=_iso(state.get("last_ts")),
                    **risk)
    at = _parse_as_of(as_of)
    at_ms = epoch_ms(at)
    cs = (await load_customers(res.redis, res.keys, [(key.tenant, customer_id)])
          ).get((key.tenant, customer_id))
    if cs is not None and not key.allows_store(cs.store_id):
        cs = None
    acts = [a for a in cs.activities if a.ts <= at_ms] if cs else []
    if cs is None or not acts:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no events of customer {customer_id!r} at or before {as_of}")
    first_ms = cs.first_ts if cs.first_ts is not None and cs.first_ts <= at_ms else None
    a = res.engine.assess([Subject(customer_id, acts, first_ms)], at_ms, with_history=False)[0]
    body = a.to_json()
    body["as_of"] = at.isoformat().replace("+00:00", "Z")
    last = max(x.ts for x in acts)
    return Risk(customer_id=customer_id, store_id=cs.store_id, last_event_at=_iso(last),
                point_in_time=True, **body)


@router.delete(
    "/v1/customers/{customer_id:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase a customer",
    description="Deletes the customer's state, risk and delivery log, and writes a tombstone "
    "(null value keyed by customer_id) to the events topic so every scorer forgets them in "
    "order. Idempotent. The risk reads 404 afterwards until new events arrive.",
    responses={503: {"description": "Broker unavailable; nothing erased, retry later"}},
)
async def delete_customer(customer_id: str, res: Res, key: AdminKey) -> Response:
    try:
        await res.publisher.publish(res.settings.topic_events, [(customer_id.encode(), None)],
                                    headers=[(TENANT_HEADER, key.tenant.encode())])
    except BrokerUnavailable:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the event broker is unavailable; retry the erasure later",
                            headers={"Retry-After": "5"}) from None
    await erase_customer(res.redis, res.keys, customer_id, tenant=key.tenant,
                         partitions=res.settings.topic_partitions)
    logger.info("customer erased by %s", key.name, extra={"customer_id": customer_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
