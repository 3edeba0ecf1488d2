"""The scorer on a real Redis Cluster (three primaries, ``CHURNWATCH_REDIS_CLUSTER=true``), as
on a standalone Redis: SIGKILL at five points ends in the state and risk changes of an
uninterrupted standalone run; the API ingests, scores, lists at-risk customers and erases one.

No scorer script or transaction spans two hash slots (services/state/store.py), so on this
cluster a cross-slot one would fail and so would these tests."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from services.common.embedded import ServiceProcess
from services.common.redisconn import Keys, customer_token, is_cluster, make_redis
from services.common.settings import Settings
from tests.data import T0, iso, regular
from tests.integration.test_api_queries import KEYS, READ, bearer
from tests.integration.test_scorer import customer_state, processed, scorer
from tests.integration.test_scorer_guarantees import (
    QUIET,
    change_ids,
    lost_and_doubled,
    run_in_chunks,
    state_of,
    story,
)

pytestmark = pytest.mark.integration


async def test_sigkill_at_several_points_on_a_cluster_ends_as_a_standalone_run(
        sigkill_reference: Settings, cluster_settings_factory, tmp_path: Path) -> None:
    events = story()
    chunks = [events[i:i + 12] for i in range(0, len(events), 12)]
    cids = sorted({e["customer_id"] for e in events})
    reference = sigkill_reference
    crashy = cluster_settings_factory(clock="event", topic_partitions=1, **QUIET)
    # Three of the standalone test's five points (each costs a consumer-group rebalance):
    # before the batch, after its customers' writes and before the partition commit, later.
    kills = await run_in_chunks(crashy, tmp_path, chunks, {1: 0.0, 5: 0.3, 7: 1.5}, "crashy")
    assert kills == 3
    ref_redis, redis = make_redis(reference), make_redis(crashy)
    assert is_cluster(redis) and not is_cluster(ref_redis)
    try:
        lost, doubled = await lost_and_doubled(ref_redis, reference, redis, crashy, cids, len(events))
        assert (lost, doubled) == (0, 0)
        assert await state_of(redis, crashy, cids) == await state_of(ref_redis, reference, cids)
        assert await change_ids(crashy) == await change_ids(reference)
        stats = await redis.hgetall(Keys(crashy.redis_prefix).stats)
        assert int(stats["events_applied_total"]) == len(events)
    finally:
        await ref_redis.aclose()
        await redis.aclose()


async def wait_for(redis, settings: Settings, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while await processed(redis, settings) < n:
        assert time.monotonic() < deadline, f"scorer processed {await processed(redis, settings)}"
        await asyncio.sleep(0.1)


async def test_ingest_score_at_risk_and_erase_on_a_cluster(
        cluster_settings_factory, tmp_path: Path) -> None:
    settings = cluster_settings_factory(api_keys=KEYS, api_rate_limit_per_second=0, clock="event",
                                        sweep_interval_seconds=3600.0, model="scorecard")
    lapsed = regular("lapsed", every_days=14, count=8, start=T0, store="north")
    steady = regular("steady", every_days=7, count=30, start=T0, store="north")
    complainer = regular("moaner", every_days=7, count=30, start=T0, store="south") + [{
        "event_id": "moaner-c", "type": "complaint", "customer_id": "moaner",
        "occurred_at": iso(T0 + timedelta(days=205)), "severity": "high", "status": "open"}]
    events = lapsed + steady + complainer
    ingest = bearer("ingest-secret-1")
    admin = bearer("admin-secret-1")
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    try:
        with ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port") as api, \
                scorer(settings, tmp_path):
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                r = await client.post("/v1/events", json=events, headers=ingest)
                assert r.status_code == 202, r.text
                await wait_for(redis, settings, len(events))
                moaner = (await client.get("/v1/customers/moaner/risk", headers=READ)).json()
                assert moaner["tier"] in ("medium", "high"), moaner
                assert (await client.get("/v1/customers/steady/risk", headers=READ)
                        ).json()["tier"] == "low"
                past = await client.get("/v1/customers/moaner/risk", headers=READ,
                                        params={"as_of": iso(T0 + timedelta(days=100))})
                assert past.status_code == 200 and past.json()["point_in_time"], past.text
                listed = (await client.get("/v1/customers/at-risk", headers=READ,
                                           params={"tier": moaner["tier"]})).json()
                assert "moaner" in [c["customer_id"] for c in listed["items"]], listed
                timeline = await client.get("/v1/customers/moaner/timeline", headers=READ)
                assert timeline.status_code == 200
                assert any(e["kind"] == "activity" for e in timeline.json()["entries"])
                gone = await client.delete("/v1/customers/moaner", headers=admin)
                assert gone.status_code in (200, 202, 204), gone.text
                deadline = time.monotonic() + 30
                while (await client.get("/v1/customers/moaner/risk", headers=READ)
                       ).status_code != 404:
                    assert time.monotonic() < deadline, "erased customer still answers"
                    await asyncio.sleep(0.1)
                listed = (await client.get("/v1/customers/at-risk", headers=READ,
                                           params={"tier": moaner["tier"]})).json()
                assert "moaner" not in [c["customer_id"] for c in listed["items"]]
        state = await customer_state(redis, settings, "moaner")
        assert state["st"] == {}
        token = customer_token("moaner")
        for tier in ("low", "medium", "high"):
            assert await redis.zscore(keys.tier_index(tier), token) is None
    finally:
        await redis.aclose()
