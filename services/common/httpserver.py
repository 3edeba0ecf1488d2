"""A small aiohttp server for the workers (scorer, notifier): ``/metrics`` and ``/health``.

``/health`` answers 200 while the process is up and its ``ready`` callable says so, with
a JSON body describing the dependencies; 503 otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

ReadyCheck = Callable[[], dict[str, Any]]


class WorkerHttpServer:
    def __init__(self, *, host: str, port: int, registry: CollectorRegistry, ready: ReadyCheck):
        self.host = host
        self.port = port
        self.registry = registry
        self.ready = ready
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        status = self.ready()
        ok = bool(status.get("ready", True))
        return web.json_response({"status": "ok" if ok else "starting", **status},
                                 status=200 if ok else 503)

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp has no public accessor for the bound port
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("serving /metrics and /health on http://%s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
