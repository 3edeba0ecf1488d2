"""The scorer's errors are classified (real Redis and broker): one that retrying does not fix —
here a key of the wrong type, WRONGTYPE — stalls the batch loudly (ERROR log with the cause,
``churnwatch_scorer_unexpected_errors_total``, a failing readiness probe) instead of silently,
and loses nothing: once the cause is fixed the batch is applied. A valid event that breaks
scoring (a deterministic poison) costs only its customer's score, never the stream."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.common.kafka import start_producer
from services.common.redisconn import Keys, make_redis
from services.scorer.processor import Processor, Record
from services.scoring.engine import Engine
from services.scoring.model import SklearnModel, load_model
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


class _PoisonEstimator:
    """A classifier that fails, every time, on one customer's features — those of a single
    purchase of exactly 666.0: a valid event that breaks scoring (a deterministic poison)."""

    def __init__(self, column: int):
        self.column = column

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        if np.any(rows[:, self.column] == 666.0):
            raise ValueError("cannot score a spend of exactly 666")
        p = np.full(len(rows), 0.1)
        return np.column_stack([1 - p, p])


async def test_a_valid_event_that_breaks_scoring_skips_only_its_customer(
        settings_factory, caplog: pytest.LogCaptureFixture) -> None:
    """The poison customer's events are kept and counted once, its score is left alone and the
    error counted and logged; the other customers of the batch, and later batches, are scored;
    the partition's offsets move on (nothing waits on it, nothing is counted twice)."""
    settings = settings_factory()
    keys = Keys(settings.redis_prefix)
    redis = make_redis(settings)
    producer = await start_producer(settings)
    registry = CollectorRegistry()
    names = ("spend_365", "days_since_last_activity")
    model = SklearnModel(_PoisonEstimator(0), names, "poison-1")
    proc = Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                     producer=producer, registry=registry,
                     engine=Engine(model, Thresholds.from_settings(settings)))
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()

    def tx(eid: str, customer: str, amount: float) -> bytes:
        return json.dumps({"event_id": eid, "type": "transaction", "customer_id": customer,
                           "occurred_at": at, "amount": amount}).encode()
    try:
        with caplog.at_level(logging.ERROR, logger="services.scorer.processor"):
            await asyncio.wait_for(proc.process([
                Record(settings.topic_events, 0, 0, b"ann", tx("p-1", "ann", 666.0)),
                Record(settings.topic_events, 0, 1, b"bob", tx("p-2", "bob", 20.0))]), 20)
            # a redelivery of the same records changes nothing; a later batch is scored
            await asyncio.wait_for(proc.process([
                Record(settings.topic_events, 0, 0, b"ann", tx("p-1", "ann", 666.0)),
                Record(settings.topic_events, 0, 1, b"bob", tx("p-2", "bob", 20.0)),
                Record(settings.topic_events, 0, 2, b"cid", tx("p-3", "cid", 30.0))]), 20)
        ann, bob, cid = await read_states(redis, keys, [("default", c) for c in ("ann", "bob", "cid")],
                                          ["sm", "tier", "score"])
        assert ann.get("sm") and not ann.get("tier")  # kept, not scored
        assert bob.get("tier") and cid.get("tier")  # the rest carried on
        assert registry.get_sample_value("churnwatch_scorer_scoring_errors_total") == 1
        assert any("scoring failed" in r.getMessage() and r.exc_info for r in caplog.records)
        assert not proc.stuck
        assert await redis.hget(keys.offsets(settings.topic_events), "0") == "3"
        stats = await redis.hgetall(keys.stats)
        assert int(stats["events_applied_total"]) == 3  # ann's event counted once
        assert int(stats.get("events_duplicate_total", 0)) == 0  # below the committed offset
    finally:
        await producer.stop()
        await redis.aclose()
