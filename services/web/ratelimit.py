"""Per-key token buckets, in process (each API process limits on its own; see docs/api.md)."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """``rate`` requests a second on average, ``burst`` at once, per key name. rate 0: off."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000):
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, updated)
        self._lock = threading.Lock()

    def take(self, name: str, now: float | None = None) -> float:
        """Spend one token; 0.0 when allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, updated = self._buckets.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - updated) * self.rate)
            if tokens >= 1.0:
                if len(self._buckets) >= self.max_keys and name not in self._buckets:
                    self._buckets.clear()  # bounded memory; keys are few in practice
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
