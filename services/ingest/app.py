"""The churnwatch HTTP API: ingest, customer risk, status, webhooks, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.events import DEFAULT_TENANT, ComplaintEvent, TransactionEvent, VisitEvent
from services.common.profiles import ProfileStore
from services.common.pseudonym import install_key
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.console import routes as console
from services.ingest.deps import ReadKey, Res, Resources
from services.ingest.metrics import ApiMetrics
from services.ingest.middleware import RequestContext, install_error_handler
from services.ingest.openapi import AUTH, responses
from services.ingest.publisher import EventPublisher
from services.ingest.queries.cache import TtlCache
from services.ingest.queries.errors import QueryError
from services.ingest.ratelimit import RateLimiter
from services.ingest.routes import (
    actions,
    analytics,
    atrisk,
    customers,
    events,
    profiles,
    pseudonyms,
    webhooks,
    winback,
)
from services.ingest.status import StatusReader
from services.scoring.engine import Engine
from services.scoring.model import load_model
from services.scoring.rules import rules_from_settings
from services.scoring.tiers import Thresholds

logger = logging.getLogger(__name__)
REDIS_RETRY_AFTER_S = 2  # Retry-After of a 503 while Redis is unreachable

DESCRIPTION = """Real-time customer-churn early warning.

POS systems post transaction, visit and complaint events; the scorer keeps per-customer
windows by event time, scores churn risk and publishes tier changes; the notifier alerts
staff. Authenticate with `Authorization: Bearer <key>` (scopes: ingest, read, admin)."""


def create_app(settings: Settings) -> FastAPI:
    model = load_model(settings.model)
    rules = rules_from_settings(settings)  # a bad rules file stops the start, as in the scorer

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = make_redis(settings)
        keys = Keys(settings.redis_prefix)
        publisher = EventPublisher(settings)
        status_reader = StatusReader(settings, redis, keys)
        app.state.resources = Resources(
            settings=settings, redis=redis, keys=keys, publisher=publisher,
            engine=Engine(model, Thresholds.from_settings(settings), rules=rules,
                          horizon_days=settings.churn_inactive_days),
            status=status_reader,
            metrics=metrics, profiles=ProfileStore(redis, keys),
            limiter=RateLimiter(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
            cache=TtlCache(settings.analytics_cache_seconds),
        )
        # customer tokens in the logs (services/common/pseudonym.py); retried until Redis answers
        key_task = asyncio.create_task(install_key(settings, redis), name="pseudonym-key")
        if not settings.auth_enabled:
            logger.warning("CHURNWATCH_API_KEYS is not set: the API accepts requests without a key "
                           "(development only; refused when CHURNWATCH_ENV=production)")
        try:
            yield
        finally:
            key_task.cancel()
            await publisher.close()
            await status_reader.close()
            await redis.aclose()

    metrics = ApiMetrics()
    app = FastAPI(title="churnwatch", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated document plus the event models the raw-body ingest route accepts."""
        if app.openapi_schema is None:
            spec = original_openapi()
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in (TransactionEvent, VisitEvent, ComplaintEvent):
                components[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}")
            for operations in spec.get("paths", {}).values():  # a body that is not JSON: 400
                for op in operations.values():
                    if "requestBody" in op:
                        op.setdefault("responses", {}).setdefault(
                            "400", {"description": "Body is not valid JSON (or not UTF-8)"})
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    for module in (events, atrisk, customers, profiles, actions, analytics, winback,
                   webhooks, pseudonyms, console):
        app.include_router(module.router)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")  # template, not raw path
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    install_error_handler(app)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # A handled exception (not the generic 500 handler, which Starlette re-raises to the
        # server, which then drops the keep-alive connection): 503, and the connection stays.
        logger.warning("Redis unavailable on %s %s: %s", request.method,
                       getattr(request.scope.get("route"), "path", "unmatched"), type(exc).__name__)
        return JSONResponse(status_code=503, headers={"Retry-After": str(REDIS_RETRY_AFTER_S)},
                            content={"detail": "the state store (Redis) is unavailable; nothing "
                                     "was changed, retry later"})

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes each rejected value ("input"): a webhook secret that
        # is too short, a token in the wrong field. Where and why is enough to fix it.
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    app.add_middleware(RequestContext, limit=settings.api_max_json_body_bytes,  # type: ignore[arg-type]
                       exempt=frozenset({"/v1/events"}))

    @app.get("/health", tags=["operations"], summary="200 while the process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="200 when Redis answers")
    async def ready(res: Res) -> JSONResponse:
        try:
            await res.redis.ping()
            redis_ok = True
        except Exception:
            redis_ok = False
        broker = "connected" if res.publisher.connected else "not yet used"
        if res.publisher.last_error:  # the last publish failed: say so (reads still work)
            broker = f"unavailable: {res.publisher.last_error}"
        body = {"redis": "ok" if redis_ok else "unavailable", "broker": broker}
        return JSONResponse(status_code=200 if redis_ok else 503, content=body)

    @app.get("/v1/status", tags=["operations"], summary="Pipeline counters and scorer lag",
             description="events_accepted_total (acknowledged by the broker), events_scored_total "
             "(events, single or in envelopes, and tombstones the scorer has processed) and "
             "scorer_lag (records on the events topic not yet processed; an envelope is one "
             "record), plus per-partition detail. Deployment-wide for admin keys of the "
             "default tenant; any other key sees its own tenant's counters (scored = applied + "
             "duplicates) and the scorer's lag.", responses=responses(AUTH))
    async def get_status(res: Res, key: ReadKey) -> dict[str, Any]:
        # Deployment-wide counters for admins of the default tenant only; every other key sees
        # its tenant's own (issue 19.8: they showed every tenant's volume to any read key).
        wide = key.tenant == DEFAULT_TENANT and key.allows("admin") and key.stores is None
        body = await res.status.read(None if wide else key.tenant)
        # follow `churnwatch model activate` here too (at most every model_refresh_seconds)
        with contextlib.suppress(Exception):  # best effort: the counters above were read
            await res.engine.refresh(res.redis, res.keys,
                                     min_interval=res.settings.model_refresh_seconds)
        body["model_version"] = res.engine.model.version
        return body

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
