"""The churnwatch HTTP app: ingestion (``services/ingest``), the query and admin API
(``services/api``) and the staff console (``services/console``) composed into one FastAPI app,
with the process's health, readiness and metrics routes.

``create_app`` is what ``churnwatch api`` (``services/server/main.py``), ``churnwatch up`` and the
tests start."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from services.api.routes import ROUTERS as API_ROUTERS
from services.api.routes.actions import link_error_page
from services.api.status import StatusReader
from services.common.profiles import ProfileStore
from services.common.pseudonym import install_key
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.console import routes as console
from services.console.web import error_page as console_error_page
from services.ingest import routes as ingest
from services.ingest.publisher import EventPublisher
from services.records import owners
from services.scoring.engine import Engine
from services.scoring.model import load_model
from services.web.cache import TtlCache
from services.web.deps import Res, Resources
from services.web.metrics import ApiMetrics
from services.web.middleware import RequestContext, install_error_handlers
from services.web.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

DESCRIPTION = """Real-time customer-churn early warning.

POS systems post transaction, visit and complaint events; the scorer keeps per-customer
windows by event time, scores churn risk and publishes tier changes; the notifier alerts
staff. Authenticate with `Authorization: Bearer <key>` (scopes: ingest, read, admin)."""


def create_app(settings: Settings) -> FastAPI:
    model = load_model(settings.model)
    engine = Engine.from_settings(model, settings)  # a bad rules file stops the start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = make_redis(settings)
        keys = Keys(settings.redis_prefix)
        publisher = EventPublisher(settings)
        status_reader = StatusReader(settings, redis, keys)
        app.state.resources = Resources(
            settings=settings, redis=redis, keys=keys, publisher=publisher,
            engine=engine,
            status=status_reader,
            metrics=metrics, intake=intake, profiles=ProfileStore(redis, keys),
            limiter=RateLimiter(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
            cache=TtlCache(settings.analytics_cache_seconds),
        )
        # customer tokens in the logs (services/common/pseudonym.py); retried until Redis answers
        key_task = asyncio.create_task(install_key(settings, redis), name="pseudonym-key")
        # profiles written before owners were indexed (services/records/owners.py), once
        index_task = asyncio.create_task(owners.index_tenants(redis, keys), name="owner-index")
        if not settings.auth_enabled:
            logger.warning("CHURNWATCH_API_KEYS is not set: the API accepts requests without a key "
                           "(development only; refused when CHURNWATCH_ENV=production)")
        try:
            yield
        finally:
            key_task.cancel()
            index_task.cancel()
            await publisher.close()
            await status_reader.close()
            await redis.aclose()

    metrics = ApiMetrics()
    app = FastAPI(title="churnwatch", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    intake = ingest.install(app, metrics.registry)  # its counters in the app's registry
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated document plus what the raw-body ingest route accepts."""
        if app.openapi_schema is None:
            app.openapi_schema = ingest.document(original_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    for router in (ingest.router, *API_ROUTERS, console.router):
        app.include_router(router)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")  # template, not raw path
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    async def error_page(request: Request, status: int, request_id: str) -> Response | None:
        """A person's address answers an error as a page: a one-click acknowledge link's (a
        link garbled in copying) or a console page's; None for the API's JSON."""
        return link_error_page(request, status) or await console_error_page(request, status,
                                                                            request_id)

    install_error_handlers(app, page=error_page)
    app.add_middleware(RequestContext, limit=settings.api_max_json_body_bytes,  # type: ignore[arg-type]
                       exempt=frozenset({"/v1/events"}), page=error_page)

    @app.get("/health", tags=["operations"], summary="200 while the process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="200 when Redis answers")
    async def ready(res: Res) -> JSONResponse:
        try:
            await res.redis.ping()
            redis_ok = True
        except (RedisError, OSError, TimeoutError):
            redis_ok = False
        broker = "connected" if res.publisher.connected else "not yet used"
        if res.publisher.last_error:  # the last publish failed: say so (reads still work)
            broker = f"unavailable: {res.publisher.last_error}"
        body = {"redis": "ok" if redis_ok else "unavailable", "broker": broker}
        return JSONResponse(status_code=200 if redis_ok else 503, content=body)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
