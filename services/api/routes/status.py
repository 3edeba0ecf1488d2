"""Pipeline status: counters, scorer lag and the model version serving."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter

from services.common.settings import ApiKey
from services.scoring.closures import closed_days_missing
from services.state.store import read_tenant_stores
from services.web.deps import ReadKey, Res, Resources
from services.web.openapi import AUTH, responses

router = APIRouter(tags=["operations"])


@router.get("/v1/status", summary="Pipeline counters and scorer lag",
            description="events_accepted_total (acknowledged by the broker), events_scored_total "
            "(events, single or in envelopes, and tombstones the scorer has processed) and "
            "scorer_lag (records on the events topic not yet processed; an envelope is one "
            "record), plus per-partition detail. Deployment-wide for admin keys of the "
            "default tenant; any other key sees its own tenant's counters (scored = applied + "
            "duplicates) and the scorer's lag. warnings: what to set up (a tenant judged as a "
            "school whose stores have no closed days on record: code closed_days_missing).",
            responses=responses(AUTH))
async def get_status(res: Res, key: ReadKey) -> dict[str, Any]:
    # Deployment-wide counters for admins of the default tenant only; every other key sees
    # its tenant's own (issue 19.8: they showed every tenant's volume to any read key).
    body = await res.status.read(None if key.deployment_wide else key.tenant)
    # follow `churnwatch model activate` here too (at most every model_refresh_seconds)
    with contextlib.suppress(Exception):  # best effort: the counters above were read
        await res.engine.refresh(res.redis, res.keys,
                                 min_interval=res.settings.model_refresh_seconds)
    body["model_version"] = res.engine.model.version
    body["warnings"] = await _warnings(res, key)
    return body


async def _warnings(res: Resources, key: ApiKey) -> list[dict[str, Any]]:
    """What the deployment (an admin key of the default tenant) or the key's tenant should set
    up: each tenant (the key's, and for a deployment-wide key every tenant the scorer has
    seen) judged by rules that expect closed days (a school's) whose stores in the key's
    reach (a store-bound key's own, on record or not), or which has no store, have none on
    record."""
    tenants = {key.tenant}
    if key.deployment_wide:  # and every tenant the scorer has seen
        tenants.update(str(t) for t in await res.redis.smembers(res.keys.tenants))  # type: ignore[misc]
    expecting = [t for t in sorted(tenants) if res.engine.business_of(t).expects_closed_days]
    out = []
    read = await read_tenant_stores(res.redis, res.keys, expecting, named=expecting)
    for tenant, stores in read.items():
        on_record = stores.closures_on_record()  # a store-bound key: its own stores
        has = on_record if key.stores is None else {s: on_record.get(s, False) for s in key.stores}
        if (missing := closed_days_missing(res.engine.business_of(tenant).rules, has)) \
                is not None:
            out.append({"code": "closed_days_missing", "tenant": tenant,
                        "stores": list(missing.stores), "message": missing.describe(tenant)})
    return out
