"""A small aiohttp server for the workers (scorer, notifier): ``/metrics``, ``/health``,
``/live`` and ``/ready``.

- ``/live`` — liveness: 200 while the event loop answers (a Kubernetes liveness probe).
- ``/ready`` — readiness: runs the ``ready`` callback the worker passes (sync or async; it
  checks the worker's own state, e.g. partitions assigned) plus every dependency probe passed
  as ``probes={"redis": redis.ping}``; it answers 200 when the callback reports
  ``"ready": true`` and every probe succeeds, else 503, with the details as the JSON body. A
  callback or probe that raises or takes longer than :data:`READY_TIMEOUT_S` counts as not
  ready.
- ``/health`` — the same answer as ``/ready`` (what ``churnwatch up`` and the tests wait on).

The registry the worker passes also gets the process and platform collectors, so every
``/metrics`` carries ``process_resident_memory_bytes``, ``process_cpu_seconds_total``, ...
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

logger = logging.getLogger(__name__)

ReadyCheck = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
Probe = Callable[[], Awaitable[Any]]
READY_TIMEOUT_S = 2.0


def register_process_collectors(registry: CollectorRegistry) -> None:
    """Add the process and platform collectors to ``registry`` (once; repeat calls are no-ops)."""
    for collector in (ProcessCollector, PlatformCollector):
        try:
            collector(registry=registry)
        except ValueError:  # already registered on this registry
            pass


class WorkerHttpServer:
    def __init__(self, *, host: str, port: int, registry: CollectorRegistry, ready: ReadyCheck,
                 probes: Mapping[str, Probe] | None = None):
        self.host = host
        self.port = port
        self.registry = registry
        self.ready = ready
        self.probes = dict(probes or {})
        self._runner: web.AppRunner | None = None
        register_process_collectors(registry)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def check(self) -> dict[str, Any]:
        """The ready callback's answer plus the probes'; ``"ready"`` is False if any fails."""
        try:
            result = self.ready()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, READY_TIMEOUT_S)
            out = dict(result)
        # a probe answers "not ready", never a 500: whatever the callback raises is the answer
        except Exception as exc:  # noqa: BLE001  reported in the answer, traceback at debug level
            logger.debug("the ready callback failed", exc_info=True)
            out = {"ready": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
        for name, probe in self.probes.items():
            try:
                await asyncio.wait_for(probe(), READY_TIMEOUT_S)
                out[name] = "ok"
            except Exception as exc:  # noqa: BLE001  likewise: a failing probe means not ready
                logger.debug("the %s probe failed", name, exc_info=True)
                out[name] = f"unavailable: {type(exc).__name__}"
                out["ready"] = False
        return out

    async def _ready(self, request: web.Request) -> web.Response:
        status = await self.check()
        ok = bool(status.get("ready", True))
        return web.json_response({"status": "ok" if ok else "starting", **status},
                                 status=200 if ok else 503)

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._ready)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/live", self._live)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp has no public accessor for the bound port
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("serving /metrics, /live and /ready on http://%s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
