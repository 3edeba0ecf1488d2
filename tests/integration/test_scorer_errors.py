"""The scorer's errors are classified (real Redis and broker): one that retrying does not fix —
here a key of the wrong type, WRONGTYPE — stalls the batch loudly (ERROR log with the cause,
``churnwatch_scorer_unexpected_errors_total``) instead of silently, and loses nothing: once
the cause is fixed the batch is applied."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from services.common.kafka import start_producer
from services.common.redisconn import Keys, make_redis
from services.scorer.processor import Processor, Record
from services.scoring.engine import Engine
from services.scoring.model import load_model
from services.scoring.tiers import Thresholds
from services.state.store import StateStore, read_states

pytestmark = pytest.mark.integration


async def test_an_error_retrying_cannot_fix_is_loud_and_loses_nothing(
        settings_factory, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_factory()
    keys = Keys(settings.redis_prefix)
    redis = make_redis(settings)
    producer = await start_producer(settings)
    registry = CollectorRegistry()
    proc = Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                     producer=producer, registry=registry,
                     engine=Engine(load_model(settings.model), Thresholds.from_settings(settings)))
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    event = {"event_id": "e-1", "type": "visit", "customer_id": "ann", "occurred_at": at}
    # an operator's mistake: the scorer's offsets hash is a string now
    await redis.set(keys.offsets(settings.topic_events), "oops")
    try:
        with caplog.at_level(logging.ERROR, logger="services.scorer.processor"):
            task = asyncio.create_task(proc.process(
                [Record(settings.topic_events, 0, 0, b"ann", json.dumps(event).encode())]))
            for _ in range(100):
                if registry.get_sample_value("churnwatch_scorer_unexpected_errors_total",
                                             {"step": "read"}):
                    break
                await asyncio.sleep(0.02)
            assert not task.done()  # waiting, not skipping the batch
            assert "WRONGTYPE" in proc.stuck["read"]  # the worker's readiness probe says so
            await redis.delete(keys.offsets(settings.topic_events))  # the fix
            await asyncio.wait_for(task, 10)
        assert any("WRONGTYPE" in r.getMessage() and r.exc_info for r in caplog.records)
        assert not proc.stuck  # ready again
        state = (await read_states(redis, keys, [("default", "ann")], ["sm"]))[0]
        assert state.get("sm")  # applied once the cause was gone
    finally:
        await producer.stop()
        await redis.aclose()
