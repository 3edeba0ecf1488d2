"""After a model switch every stored score is re-scored with the new model, in the background,
on a real Redis and broker: a fresh deployment re-scores nothing, a switch re-scores every
customer once (tier changes published with cause ``model`` and marked ``catching_up``, so staff
get one summary), an interrupted pass resumes where it stopped in a new process, and the rate
is measured."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.common.kafka import start_producer
from services.common.redisconn import Keys, make_redis
from services.scorer.processor import Processor, Record
from services.scoring.engine import Engine
from services.scoring.model import ShadowModel, load_model
from services.scoring.scorecard import Scorecard
from services.state.store import StateStore, read_states
from tests.kafkatools import read_all

pytestmark = pytest.mark.integration

CUSTOMERS = 1500


class Alarmist(Scorecard):
    """A model that sees more risk than the default one: its switch moves tiers."""

    version = "alarmist-1"

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.minimum(super().predict(rows) + 0.6, 1.0)


def _processor(settings: Any, store: StateStore, producer: Any, model: Any) -> Processor:
    return Processor(settings=settings, store=store, producer=producer,
                     registry=CollectorRegistry(),
                     engine=Engine.from_settings(model, settings))


async def _parts(settings: Any) -> tuple[Keys, Any, Any, StateStore]:
    """What a test's processors share: the keys, a Redis client, a started producer (the
    caller stops it and closes the client) and the state store."""
    redis = make_redis(settings)
    producer = await start_producer(settings)
    return Keys(settings.redis_prefix), redis, producer, StateStore.from_settings(redis, settings)


async def _versions(redis: Any, keys: Keys, ids: list[str]) -> dict[str, int]:
    states = await read_states(redis, keys, [("default", c) for c in ids], ["risk"])
    out: dict[str, int] = {}
    for s in states:
        v = json.loads(s["risk"])["model_version"]
        out[v] = out.get(v, 0) + 1
    return out


async def test_a_switch_rescores_every_customer_once_and_resumes_after_a_restart(
        settings_factory) -> None:
    settings = settings_factory(topic_partitions=2)
    keys, redis, producer, store = await _parts(settings)
    default = load_model(None)
    proc = _processor(settings, store, producer, default)
    now = datetime.now(UTC)
    ids = [f"c-{i}" for i in range(CUSTOMERS)]
    try:
        parts: list[list[Record]] = [[], []]
        for i, cid in enumerate(ids):
            for n in range(3):
                at = now - timedelta(days=40 + 30 * n + i % 20)
                e = {"event_id": f"{cid}-{n}", "type": "visit", "customer_id": cid,
                     "occurred_at": at.isoformat(), "store_id": "s1"}
                mine = parts[i % 2]
                mine.append(Record(settings.topic_events, i % 2, len(mine), cid.encode(),
                                   json.dumps(e).encode()))
        for mine in parts:
            for start in range(0, len(mine), 1000):
                await proc.process(mine[start:start + 1000])
        assert await _versions(redis, keys, ids) == {default.version: CUSTOMERS}

        # a fresh deployment: nothing was scored by another model, nothing is re-scored
        assert await proc.rescore_step([0, 1], budget=1000) == 0
        assert await redis.hget(keys.rescore(0), "version") == default.version
        assert await proc.rescore_step([0, 1], budget=1000) == 0  # remembered: no Redis

        # the switch: a bounded step, then the process "dies"
        proc.engine.active.current = new = Alarmist()
        first = await proc.rescore_step([0, 1], budget=300)
        assert 0 < first < CUSTOMERS // 2  # a partial pass (ZSCAN's COUNT is a hint)
        assert (await redis.hget(keys.rescore(0), "pass")) == "running"

        # a new process (a restart, or another worker after a rebalance) resumes the pass
        again = _processor(settings, store, producer, new)
        started, total, steps = time.monotonic(), 0, 0
        while (n := await again.rescore_step([0, 1], budget=1000)):
            total += n
            steps += 1
        took = time.monotonic() - started
        assert await _versions(redis, keys, ids) == {new.version: CUSTOMERS}
        assert first + total >= CUSTOMERS  # everyone once (a ZSCAN may return one twice)
        assert first + total <= CUSTOMERS * 1.05
        assert again.metrics.rescored._value.get() == total  # type: ignore[attr-defined]
        assert again.metrics.rescore_remaining._value.get() == 0  # type: ignore[attr-defined]
        assert await redis.hget(keys.rescore(1), "pass") == "done"
        assert await again.rescore_step([0, 1], budget=1000) == 0
        assert total / took > 500, f"{total / took:.0f} customers/s"  # bench: make bench

        changes = [json.loads(r.value) for r in
                   await read_all(settings, settings.topic_risk_changes, idle_ms=500)]
        from_model = [c for c in changes if c["data"]["cause"]["kind"] == "model"]
        assert len(from_model) >= CUSTOMERS // 2, "the alarmist model raises most customers"
        assert all(c["data"]["catching_up"] for c in from_model)  # one summary, not N alerts
        assert all(c["data"]["model_version"] == new.version for c in from_model)

        # a challenger in shadow: everyone gets its score beside the served one, nothing is
        # published for it, and `churnwatch model compare` reads the two side by side
        again.engine.shadow = ShadowModel()
        again.engine.shadow.shadow = default
        shadowed = 0
        while (n := await again.rescore_step([0, 1], budget=1000)):
            shadowed += n
        assert shadowed >= CUSTOMERS
        states = await read_states(redis, keys, [("default", c) for c in ids], ["risk"])
        risks = [json.loads(s["risk"]) for s in states]
        assert all(r["model_version"] == new.version and
                   r["shadow"]["model_version"] == default.version for r in risks)
        after = [json.loads(r.value) for r in
                 await read_all(settings, settings.topic_risk_changes, idle_ms=500)]
        before_ids = {c["id"] for c in changes}
        assert not [c for c in after if c["id"] not in before_ids
                    and c["data"]["cause"]["kind"] == "model"]
        out = (await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "services.cli.main", "model", "compare"],
            env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=60,
            check=True)).stdout
        report = json.loads(out)
        assert report["customers"] == CUSTOMERS
        assert report["served_vs_shadow"] == {f"{new.version} vs {default.version}": CUSTOMERS}
        assert sum(sum(row.values()) for row in report["tiers"].values()) == CUSTOMERS
        assert report["shadow_lowers_from_high"] > 0  # the alarmist's highs the default keeps lower
    finally:
        await producer.stop()
        await redis.aclose()


async def test_new_rules_or_levels_rescore_every_customer_as_a_model_switch_does(
        settings_factory) -> None:
    """Rules and tier levels are part of the scoring: a deployment that changes its business
    type (or rules file, or levels, or a tenant's type) re-scores every stored customer at
    the next start, as after a model switch — staff get the customers it raises in one
    summary (cause ``model``, ``catching_up``), not whenever each next sends an event. A
    record from before rules were tracked starts no pass."""
    settings = settings_factory(topic_partitions=2)
    keys, redis, producer, store = await _parts(settings)
    model = load_model(None)

    def processor(s: Any) -> Processor:
        return _processor(s, store, producer, model)

    now = datetime.now(UTC)
    ids = [f"w-{i}" for i in range(200)]  # weekly regulars, last seen three weeks ago
    try:
        proc = processor(settings)
        records: list[Record] = []
        for i, cid in enumerate(ids):
            for n in range(30):
                at = now - timedelta(days=22 + 7 * (29 - n), minutes=i)
                e = {"event_id": f"{cid}-{n}", "type": "visit", "customer_id": cid,
                     "occurred_at": at.isoformat(), "store_id": "s1"}
                records.append(Record(settings.topic_events, i % 2, len(records), cid.encode(),
                                      json.dumps(e).encode()))
        await proc.process(records)
        assert await proc.rescore_step([0, 1], budget=1000) == 0  # fresh: nothing to redo

        async def tiers() -> set[str]:
            states = await read_states(redis, keys, [("default", c) for c in ids], ["tier"])
            return {s["tier"] for s in states}
        assert await tiers() == {"low"}

        # an older record, without the rules' fingerprint: kept as today's, no pass
        for p in (0, 1):
            await redis.hdel(keys.rescore(p), "judging")  # type: ignore[misc]
        assert await processor(settings).rescore_step([0, 1], budget=1000) == 0
        assert await redis.hget(keys.rescore(0), "judging") == proc.engine.judging

        # the same business, now known to be a salon: its regulars three weeks away are high
        salon = settings.model_copy(update={"tenant_business_types": "default=salon"})
        again = processor(salon)
        assert again.engine.judging != proc.engine.judging
        total = 0
        while (n := await again.rescore_step([0, 1], budget=1000)):
            total += n
        assert len(ids) <= total <= len(ids) * 1.05
        assert await tiers() == {"high"}
        assert await again.rescore_step([0, 1], budget=1000) == 0
        changes = [json.loads(r.value) for r in
                   await read_all(settings, settings.topic_risk_changes, idle_ms=500)]
        raised = [c["data"] for c in changes if c["data"]["tier"] == "high"]
        assert {d["customer_id"] for d in raised} == set(ids)
        assert all(d["cause"]["kind"] == "model" and d["catching_up"] for d in raised)
        assert all(d["reasons"][0]["code"] == "tier_raised_by_rule" for d in raised)
        # and back: the levels and rules of before re-score them again
        back = processor(settings)
        while await back.rescore_step([0, 1], budget=1000):
            pass
        assert await tiers() == {"low"}
    finally:
        await producer.stop()
        await redis.aclose()
