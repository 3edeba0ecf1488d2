"""The win-back report: win-back rate by action, store and staff, and the holdout uplift."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from services.api.routes.analytics import OK_CSV, scoped_store
from services.api.schemas_analytics import WinbackReport
from services.common.timefmt import now_ms, parse_iso, utc_now
from services.records import winback
from services.records.errors import Invalid
from services.scoring.features import DAY_MS
from services.web.deps import ReadKey, Res
from services.web.formats import csv_response, wants_csv
from services.web.openapi import AUTH, responses
from services.web.params import Format, StoreFilter

router = APIRouter(tags=["analytics"])


@router.get("/v1/analytics/winback", response_model=WinbackReport,
            responses=responses(AUTH, OK_CSV),
            summary="Win-back rate by action type, store and staff member, and uplift",
            description="Actions recorded between `since` and `until` (default: the last 90 "
            "days). returned: the customer had an event within the attribution window after "
            "the action; pending: the window is still open; winback_rate = returned / "
            "(returned + not_returned). The holdout group's return rate is measured from when "
            "each holdout customer was entered the high tier; uplift = winback_rate - "
            "holdout return_rate.")
async def get_winback(request: Request, res: Res, key: ReadKey,
                      since: Annotated[str | None, Query(max_length=64,
                                                         examples=["2026-09-01T00:00:00Z"])] = None,
                      until: Annotated[str | None, Query(max_length=64)] = None,
                      store: StoreFilter = None, format: Format = None) -> Any:
    now = await now_ms(res.settings, res.redis, res.keys, key.tenant)
    bounds = []
    for name, value, default in (("since", since, now - 90 * DAY_MS), ("until", until, now)):
        dt = parse_iso(value) if value is not None else None
        if value is not None and dt is None:
            raise Invalid(f"{name}={value!r} must be RFC 3339 with an offset")
        bounds.append(int(dt.timestamp() * 1000) if dt else default)
    scoped = scoped_store(key, store)
    stores = frozenset({scoped}) if scoped is not None else key.stores
    body, newly = await winback.report(
        res.redis, res.keys, tenant=key.tenant, stores=stores, since_ms=bounds[0],
        until_ms=bounds[1], now_ms=now, window_days=res.settings.winback_attribution_days,
        limit=res.settings.analytics_max_customers)
    for action, _ in newly:
        res.metrics.winback_returned.labels(action).inc()
    if wants_csv(request, format):
        rows = [{"group": g, **r} for g in ("action", "store", "staff") for r in body[f"by_{g}"]]
        return csv_response(rows, "winback")
    body["generated_at"] = utc_now()
    return body
