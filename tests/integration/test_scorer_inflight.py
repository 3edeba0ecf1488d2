"""The scorer's records in flight are bounded in bytes (``CHURNWATCH_SCORER_INFLIGHT_MAX_MB``):
a poll is counted in records and an envelope holds up to 500 events, so the batch being
applied and the one being taken each hold at most half the bound. Real broker, Redis and
scorer process: envelopes several times the bound all land, once each, and the waits show
in the scorer's metrics (how batches are cut: tests/unit/test_scorer_transport.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.common.envelope import encode_envelopes
from services.common.redisconn import Keys, make_redis
from tests.data import by_time, regular
from tests.integration.test_scorer import scorer, wait_processed
from tests.kafkatools import produce_envelopes

pytestmark = pytest.mark.integration


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


async def test_envelopes_beyond_the_inflight_bound_wait_for_acks_and_all_land_once(
        settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(scorer_inflight_max_mb=0.03,  # ~31 KB: about 3 envelopes
                                scorer_gauges_interval_seconds=0.2)
    start = datetime.now(UTC) - timedelta(days=200)
    events = by_time([e for n in range(40) for e in
                      regular(f"if-{n}", every_days=6, count=30, start=start + timedelta(hours=n))])
    envelopes = encode_envelopes(events, settings.topic_partitions, max_events=40)
    assert sum(len(e.value) for e in envelopes) > 10 * 31_000, "the backlog is many bounds"
    await produce_envelopes(settings, events, max_events=40)

    redis = make_redis(settings)
    try:
        with scorer(settings, tmp_path) as proc:
            await wait_processed(redis, settings, len(events))
            async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
                deadline = time.monotonic() + 20
                while _metric((await client.get("/metrics")).text,
                              "churnwatch_scorer_inflight_waits_total") == 0:
                    assert time.monotonic() < deadline, "delivery never waited on the bound"
                    await asyncio.sleep(0.1)
        stats = await redis.hgetall(Keys(settings.redis_prefix).stats)
        assert int(stats["events_applied_total"]) == len(events)
        assert int(stats.get("events_duplicate_total", 0)) == 0
    finally:
        await redis.aclose()
