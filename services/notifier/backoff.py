"""Retry delays: exponential backoff with jitter, honouring a receiver's Retry-After."""

from __future__ import annotations

import random


def retry_delay(attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None = None,
                rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first try).

    "Equal jitter": a uniform pick in [d/2, d] with d = min(max_s, base_s * 2**(attempt-1)),
    so retries of many deliveries spread out but never come sooner than half the step. A
    ``Retry-After`` hint raises the delay to at least that much (capped at ``max_s``).
    """
    step = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    delay = (rng or random).uniform(step / 2, step)
    if retry_after_s is not None and retry_after_s > 0:
        delay = max(delay, min(retry_after_s, max_s))
    return delay
