"""Real HTTP peers on loopback for tests: webhook receivers, SMS gateways.

A subclass sets ``path`` and implements ``_handle``; ``async with`` (or ``up``/``down``, to
take a receiver down for a while and bring it back on the same port) serves it on 127.0.0.1.
"""

from __future__ import annotations

from aiohttp import web

from services.common.embedded import free_port


class LoopbackHttp:
    path = "/"

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}{self.path}"
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LoopbackHttp:
        await self.up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.down()
