"""Churn analytics and the win-back report, as JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from services.api.schemas_analytics import (
    ChurnReport,
    DefinitionKind,
    FeatureReport,
    TierReport,
)
from services.common.settings import ApiKey
from services.common.timefmt import iso_ms, now_ms
from services.records import churn, population, tierhistory
from services.records.churn import Definition, Period, Segment
from services.web.deps import ReadKey, Res
from services.web.formats import csv_response, wants_csv
from services.web.openapi import AUTH, CSV_CONTENT, responses
from services.web.params import Format, StoreFilter
from services.web.scope import store_for_list

router = APIRouter(tags=["analytics"])
OK_CSV = {200: {"content": CSV_CONTENT, "description": "JSON, or CSV with ?format=csv"}}
_DEF_DOC = ("Churn definition: `definition` inactive_days (no activity for `days`) or "
            "cadence_multiple (no activity for `multiple` x the customer's median cadence); "
            "defaults from CHURNWATCH_CHURN_*. Computed from each customer's first and last event "
            "time and stored risk snapshot, over at most CHURNWATCH_ANALYTICS_MAX_CUSTOMERS "
            "customers (`truncated` says when it stopped early), cached for "
            "CHURNWATCH_ANALYTICS_CACHE_SECONDS.")
Days = Annotated[int | None, Query(ge=1, le=3650, description="inactive_days threshold")]
Multiple = Annotated[float | None, Query(gt=0, le=100, description="cadence multiple")]


def _definition(res: Res, kind: DefinitionKind | None, days: int | None,
                multiple: float | None) -> Definition:
    s = res.settings
    return Definition(kind or s.churn_definition, days or s.churn_inactive_days,
                      multiple or s.churn_cadence_multiple, s.churn_min_days)


async def _population(res: Res, key: ApiKey, store: str | None) -> population.Population:
    stores = frozenset({store}) if store is not None else key.stores

    async def load() -> population.Population:
        return await population.load(res.redis, res.keys, tenant=key.tenant, stores=stores,
                                     max_customers=res.settings.analytics_max_customers)

    cache_key = ("population", key.tenant, tuple(sorted(stores)) if stores else None)
    return await res.cache.get(cache_key, load)  # type: ignore[no-any-return]


async def _scope(res: Res, key: ApiKey, definition: DefinitionKind | None, days: int | None,
                 multiple: float | None, store: str | None
                 ) -> tuple[Definition, population.Population, int]:
    """What a churn report is about: the definition, the key's (or one store's) customers and
    the tenant's now."""
    d = _definition(res, definition, days, multiple)
    pop = await _population(res, key, scoped_store(key, store))
    return d, pop, await now_ms(res.settings, res.redis, res.keys, key.tenant)


def scoped_store(key: ApiKey, store: str | None) -> str | None:
    """The one store asked for (checked against the key); None: all of the key's stores."""
    return store_for_list(key, store) if store is not None else None


@router.get("/v1/analytics/churn", response_model=ChurnReport, responses=responses(AUTH, OK_CSV),
            summary="Churn rate and retention by period and segment",
            description="For each of the last `periods` calendar periods (UTC) and each segment "
            "(`by`: all, store, value_tier, lifecycle_stage): the cohort active at the period's "
            "start, how many of them churned during it, churn and retention rates. " + _DEF_DOC)
async def get_churn(request: Request, res: Res, key: ReadKey, period: Period = "month",
                    periods: Annotated[int, Query(ge=1, le=36)] = 6, by: Segment = "all",
                    definition: DefinitionKind | None = None, days: Days = None,
                    multiple: Multiple = None, store: StoreFilter = None,
                    format: Format = None) -> Any:
    d, pop, now = await _scope(res, key, definition, days, multiple, store)
    rows = churn.churn_table(pop, d, period=period, count=periods, by=by, now_ms=now)
    if wants_csv(request, format):
        return csv_response(rows, "churn")
    return {"definition": d.describe(), "as_of": iso_ms(now), "customers": len(pop.members),
            "truncated": pop.truncated, "rows": rows}


@router.get("/v1/analytics/features", response_model=FeatureReport,
            responses=responses(AUTH, OK_CSV),
            summary="Active vs churned customers, feature by feature",
            description="Mean and median of every scoring feature for customers churned as of "
            "now versus those still active. " + _DEF_DOC)
async def get_features(request: Request, res: Res, key: ReadKey,
                       definition: DefinitionKind | None = None, days: Days = None,
                       multiple: Multiple = None, store: StoreFilter = None,
                       format: Format = None) -> Any:
    d, pop, now = await _scope(res, key, definition, days, multiple, store)
    body = churn.feature_comparison(pop, d, now_ms=now)
    if wants_csv(request, format):
        return csv_response(body["features"], "features")
    return {"definition": d.describe(), "as_of": iso_ms(now), "truncated": pop.truncated, **body}


@router.get("/v1/analytics/tiers", response_model=TierReport, responses=responses(AUTH, OK_CSV),
            summary="Tier distribution now and over time",
            description="Customers per tier now; reading it also records today's counts in a "
            "per-day history (a day appears once the distribution was read that day, holding "
            "that day's last reading), returned for the last `days` days. Keys bound to "
            "several stores pass `store`.")
async def get_tiers(request: Request, res: Res, key: ReadKey, store: StoreFilter = None,
                    days: Annotated[int, Query(ge=1, le=3660)] = 90,
                    format: Format = None) -> Any:
    scoped = store_for_list(key, store)  # counts are per store or tenant-wide, never mixed
    now = await now_ms(res.settings, res.redis, res.keys, key.tenant)
    body = await tierhistory.snapshot_and_read(res.redis, res.keys, tenant=key.tenant,
                                               store=scoped, days=days, now_ms=now)
    if wants_csv(request, format):
        return csv_response(body["history"], "tiers")
    return body
