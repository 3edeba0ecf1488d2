"""Per-endpoint circuit breaker (in memory, per notifier process).

An endpoint (one webhook subscription, the SMTP server, the SMS gateway) opens after
``failures`` consecutive retryable failures and stays open for the retry delay the failure
asked for (at most ``max_open_s``). While open, deliveries to it are queued untried instead
of each waiting for a timeout. When the pause is over one probe is let through (half-open);
its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0
    probing_until: float = 0.0


class CircuitBreaker:
    def __init__(self, *, failures: int = 1, max_open_s: float = 60.0, probe_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.threshold = max(1, failures)
        self.max_open_s = max_open_s
        self.probe_s = probe_s
        self.clock = clock
        self._states: dict[str, _State] = {}

    def blocked_for(self, key: str) -> float:
        """0 when a delivery to ``key`` may go now (and, when the breaker was open, this call
        takes the half-open probe); else seconds to wait."""
        state = self._states.get(key)
        if state is None:
            return 0.0
        now = self.clock()
        if now < state.open_until:
            return state.open_until - now
        if state.failures >= self.threshold:
            if now < state.probing_until:
                return state.probing_until - now
            state.probing_until = now + self.probe_s
        return 0.0

    def is_open(self, key: str) -> bool:
        state = self._states.get(key)
        return state is not None and self.clock() < state.open_until

    def success(self, key: str) -> None:
        self._states.pop(key, None)

    def failure(self, key: str, *, delay_s: float) -> None:
        state = self._states.setdefault(key, _State())
        state.failures += 1
        state.probing_until = 0.0
        if state.failures >= self.threshold:
            state.open_until = self.clock() + min(delay_s, self.max_open_s)
