"""The at-risk list and a customer's timeline."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from services.api.schemas import AtRiskPage, LifecycleFilter, TierName, Timeline
from services.common.timefmt import canonical, parse_iso
from services.records import timeline
from services.records.atrisk import AtRiskQuery
from services.scoring.lifecycle import stage_name
from services.web.deps import ReadKey, Res
from services.web.openapi import AUTH, NOT_FOUND, responses
from services.web.params import CustomerId, StoreFilter
from services.web.scope import check_store_read, customer_store, store_for_list

router = APIRouter(tags=["customers"])


@router.get(
    "/v1/customers/at-risk",
    response_model=AtRiskPage,
    summary="Customers at risk, most valuable first",
    description="One tier's customers sorted by priority = score x (1 + spend over 365 days), "
    "highest first, those with `lifecycle_stage` `churned` (silent past the churn horizon and "
    "four of their own gaps) "
    "after all the others, in pages. Pass `next_cursor` back as `cursor` for the next page; the cursor "
    "encodes the last item's (priority, customer) so pages neither repeat nor skip customers "
    "whose priority did not change meanwhile (ties are ordered by customer). With `owner`, "
    "`value_tier` or `lifecycle_stage`, each page examines a bounded number of index entries, so a page may hold fewer than "
    "`limit` items while `next_cursor` is not null. Store-bound keys see only their stores "
    "(pass `store` when bound to several). `holdout: true` items are the control group: do "
    "not act on them.",
    responses=responses(AUTH),
)
async def at_risk(res: Res, key: ReadKey, tier: TierName = "high", store: StoreFilter = None,
                  owner: Annotated[str | None, Query(min_length=1, max_length=128,
                                                     description="owner_staff_id of the profile",
                                                     examples=["stylist-7"])] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  cursor: Annotated[str | None, Query(max_length=1024)] = None,
                  value_tier: Annotated[TierName | None, Query(
                      description="only customers of this value tier")] = None,
                  lifecycle_stage: Annotated[LifecycleFilter | None, Query(
                      description="only this lifecycle stage (growing and mature, the names "
                      "before issue 16, select active)")] = None
                  ) -> Any:
    scoped = store_for_list(key, store)
    page = await AtRiskQuery(res.redis, res.keys).page(
        tenant=key.tenant, tier=tier, store=scoped, owner=owner, limit=limit, cursor=cursor,
        holdout_share=res.settings.holdout_share, value_tier=value_tier,
        lifecycle=stage_name(lifecycle_stage))
    return page


@router.get(
    "/v1/customers/{customer_id:anypath}/timeline",
    response_model=Timeline,
    summary="What happened to a customer, newest first",
    description="Tier changes, notifications sent about them (with delivery status), staff "
    "actions and acknowledgements, profile changes (field names only), and their recent "
    "events summarized per day. `before` pages back in time.",
    responses=responses(AUTH, NOT_FOUND),
)
async def get_timeline(customer_id: CustomerId, res: Res, key: ReadKey,
                       limit: Annotated[int, Query(ge=1, le=500)] = 100,
                       before: Annotated[str | None, Query(max_length=64,
                                                           description="RFC 3339 instant",
                                                           examples=["2026-11-01T00:00:00Z"])]
                       = None) -> Any:
    if before is not None and parse_iso(before) is None:
        raise HTTPException(422,
                            f"before={before!r} must be RFC 3339 with an offset")
    known, store = await customer_store(res.redis, res.keys, customer_id, key.tenant,
                                        res.keys.timeline(customer_id, key.tenant))
    check_store_read(key, known or None, store, f"no customer {customer_id!r}")
    cutoff = canonical(before) if before else None
    entries = await timeline.read(res.redis, res.keys, customer_id, key.tenant, limit=limit,
                                  before=cutoff)
    return {"customer_id": customer_id, "entries": entries}
