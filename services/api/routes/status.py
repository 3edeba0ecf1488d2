"""Pipeline status: counters, scorer lag and the model version serving."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter

from services.web.deps import ReadKey, Res
from services.web.openapi import AUTH, responses

router = APIRouter(tags=["operations"])


@router.get("/v1/status", summary="Pipeline counters and scorer lag",
            description="events_accepted_total (acknowledged by the broker), events_scored_total "
            "(events, single or in envelopes, and tombstones the scorer has processed) and "
            "scorer_lag (records on the events topic not yet processed; an envelope is one "
            "record), plus per-partition detail. Deployment-wide for admin keys of the "
            "default tenant; any other key sees its own tenant's counters (scored = applied + "
            "duplicates) and the scorer's lag.", responses=responses(AUTH))
async def get_status(res: Res, key: ReadKey) -> dict[str, Any]:
    # Deployment-wide counters for admins of the default tenant only; every other key sees
    # its tenant's own (issue 19.8: they showed every tenant's volume to any read key).
    body = await res.status.read(None if key.deployment_wide else key.tenant)
    # follow `churnwatch model activate` here too (at most every model_refresh_seconds)
    with contextlib.suppress(Exception):  # best effort: the counters above were read
        await res.engine.refresh(res.redis, res.keys,
                                 min_interval=res.settings.model_refresh_seconds)
    body["model_version"] = res.engine.model.version
    return body
