"""A small in-process TTL cache with one computation in flight per key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

MAX_ENTRIES = 256


class TtlCache:
    def __init__(self, ttl_seconds: float):
        self.ttl = ttl_seconds
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
        if self.ttl <= 0:
            return await compute()
        hit = self._values.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            value = await compute()
            if len(self._values) >= MAX_ENTRIES:
                self._values.clear()
                self._locks = {key: lock}
            self._values[key] = (time.monotonic() + self.ttl, value)
            return value
