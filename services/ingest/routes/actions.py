"""The win-back loop: staff record what they did about an at-risk customer; alerts are acked."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from services.ingest.deps import IngestKey, Res
from services.ingest.models import Ack, Action, NewAction
from services.ingest.openapi import AUTH, NOT_FOUND, TOO_LARGE, responses
from services.ingest.params import CustomerId
from services.ingest.queries import timeline, winback
from services.ingest.queries.holdout import holdout
from services.ingest.queries.timefmt import iso_ms, now_ms
from services.notifier.acks import InvalidAck, acknowledge
from services.notifier.escalation import Escalations

router = APIRouter(tags=["win-back"])
AlertId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                              description="The risk-change CloudEvent id.",
                              examples=["3f1c0a9e5b7d4e2f8a6b1c0d9e8f7a6b"])]


@router.post("/v1/customers/{customer_id:anypath}/actions", response_model=Action,
             status_code=status.HTTP_201_CREATED,
             summary="Record a staff action on an at-risk customer",
             description="called, message_sent, coupon_sent, exclusive_offer, complaint_resolved or other; "
             "by whom, optionally about which alert (risk-change id). Stored with the customer "
             "(erased with them) and shown in their timeline. The action counts as a win-back "
             "when the customer has an event within CHURNWATCH_WINBACK_ATTRIBUTION_DAYS after "
             "it (see GET /v1/analytics/winback). The answer says whether the customer is in "
             "the holdout group (such actions are reported apart).",
             responses=responses(AUTH, NOT_FOUND, TOO_LARGE))
async def post_action(customer_id: CustomerId, body: NewAction, res: Res, key: IngestKey) -> Any:
    _, _, st = res.keys.customer(customer_id, key.tenant)
    found: list[str | None] = await res.redis.hmget(st, ["tier", "store"])  # type: ignore[misc,assignment]
    tier, store = found
    if tier is None or not key.allows_store(store):
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no scored customer {customer_id!r}; actions need a known customer")
    at = await now_ms(res.settings, res.redis, res.keys, key.tenant)
    action = await winback.record(
        res.redis, res.keys, tenant=key.tenant, customer_id=customer_id,
        body=body.model_dump(), at_ms=at, store_id=store,
        holdout=holdout(tier, key.tenant, customer_id, res.settings.holdout_share))
    res.metrics.winback_actions.labels(body.action).inc()
    return action


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str | None = Field(None, min_length=1, max_length=128,
                           description="Staff id acknowledging; defaults to the key's name.")
    customer_id: str | None = Field(None, min_length=1, max_length=128,
                                    description="The alert's customer: the acknowledgement is "
                                    "then shown in their timeline.")


@router.post("/v1/alerts/{alert_id}/ack", response_model=Ack,
             summary="Acknowledge an alert",
             description="Marks the risk change (its CloudEvent id) as seen, so the notifier's "
             "escalation to the store manager stops. Only the key's tenant's alerts (and, for "
             "store-bound keys, their stores' alerts) are affected. Idempotent: `acknowledged` is false when "
             "it already was (the first acknowledger is kept).",
             responses=responses(AUTH, TOO_LARGE))
async def ack_alert(alert_id: AlertId, res: Res, key: IngestKey,
                    body: AckBody | None = None) -> Any:
    by = (body.by if body and body.by else None) or key.name
    if key.stores is not None:  # a store-bound key: only alerts and customers of its stores
        pending = await Escalations(res.redis, res.keys, after_s=0).pending(alert_id)
        if pending is not None and (pending.change.tenant_id != key.tenant
                                    or not key.allows_store(pending.change.store_id)):
            raise HTTPException(status.HTTP_404_NOT_FOUND,
                                f"no alert {alert_id!r} in this API key's stores")
        if body is not None and body.customer_id is not None:
            store: str | None = await res.redis.hget(  # type: ignore[misc,assignment]
                res.keys.customer(body.customer_id, key.tenant)[2], "store")
            if not key.allows_store(store):
                raise HTTPException(status.HTTP_404_NOT_FOUND,
                                    f"no customer {body.customer_id!r} in this API key's stores")
    try:
        done = await acknowledge(res.redis, res.keys, alert_id, by, tenant=key.tenant)
    except InvalidAck as exc:
        raise HTTPException(422, str(exc)) from None
    if done and body is not None and body.customer_id is not None:
        await timeline.append(res.redis, res.keys, body.customer_id, key.tenant, {
            "kind": "acknowledged", "at": iso_ms(int(time.time() * 1000)),
            "alert_id": alert_id, "by": by})
    return {"alert_id": alert_id, "acknowledged": done}
