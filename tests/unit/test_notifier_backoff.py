from __future__ import annotations

import random

import pytest

from services.notifier.backoff import retry_delay
from services.notifier.channels.httpstatus import parse_retry_after


@pytest.mark.parametrize("attempt, low, high", [(1, 1, 2), (2, 2, 4), (3, 4, 8), (6, 30, 60), (30, 30, 60)])
def test_exponential_with_equal_jitter_and_a_cap(attempt: int, low: float, high: float) -> None:
    rng = random.Random(7)
    delays = [retry_delay(attempt, base_s=2, max_s=60, rng=rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 100  # jittered, not all the same


def test_retry_after_raises_the_delay_but_stays_capped() -> None:
    assert retry_delay(1, base_s=2, max_s=60, retry_after_s=30) == 30
    assert retry_delay(1, base_s=2, max_s=60, retry_after_s=7200) == 60
    assert retry_delay(5, base_s=2, max_s=60, retry_after_s=1) >= 16


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
