"""Real HTTP peers on loopback for tests: webhook receivers, SMS gateways.

A subclass sets ``path`` and implements ``_handle``; ``async with`` (or ``up``/``down``, to
take a receiver down for a while and bring it back on the same port) serves it on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Self

from aiohttp import web

from services.common.embedded import free_port


class LoopbackHttp:
    path = "/"

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}{self.path}"
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()  # set after each request was handled

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        finally:
            self._arrived.set()

    async def until(self, check: Callable[[], object], within_s: float) -> bool:
        """Wait until ``check()`` holds, looked at after each request (not polled), or until
        ``within_s`` passed; whether it holds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while not check():
                    self._arrived.clear()
                    await self._arrived.wait()
        return bool(check())

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.down()
