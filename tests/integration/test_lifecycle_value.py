"""Lifecycle stages and relative value tiers on the real Redis and the real app: boundaries
computed from a tenant's stored customers change a customer's value tier relative to the
tenant's others; the at-risk list filters by the new stages and still understands the old
names. Customers are seeded the way the scorer stores them (tests/seeding.py), or scored by
the real scorer from events on the real broker (the at-risk list's order)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.common.redisconn import make_redis
from services.common.settings import Settings
from services.scoring import valuebounds
from services.scoring.engine import Subject
from services.scoring.features import DAY_MS, Activity
from services.scoring.lifecycle import MIN_CUSTOMERS
from services.state.store import read_states, risk_snapshot
from tests.data import T0, by_time, regular
from tests.integration.test_api_queries import api, bearer
from tests.kafkatools import produce_events
from tests.procs import ServiceProcess
from tests.seeding import Seeder

pytestmark = pytest.mark.integration

KEYS = "lv-read-0001:read,lv-acme-0001:read@acme"
READ, ACME = bearer("lv-read-0001"), bearer("lv-acme-0001")


async def test_refreshed_boundaries_make_value_relative_to_the_tenant(settings: Settings,
                                                                      redis: Redis) -> None:
    seed = Seeder(redis, settings)
    now = int(time.time() * 1000)
    # "corner": small spenders; "premium": big ones; "tiny": too few customers to rank
    for i in range(MIN_CUSTOMERS + 5):
        await seed.customer(f"s{i}", tenant="corner", days_ago=[3, 40], amount=10.0 + i % 7,
                            now_ms=now)
        await seed.customer(f"p{i}", tenant="premium", days_ago=[3, 10, 17, 24, 31, 38],
                            amount=400.0 + i, now_ms=now)
    for i in range(5):
        await seed.customer(f"t{i}", tenant="tiny", days_ago=[3], amount=5.0, now_ms=now)
    # the same customer history in each tenant: 2 x 100 spent, 2 active days
    probe = [Activity("transaction", now - d * DAY_MS, f"probe-{d}", amount=100.0)
             for d in (5, 60)]
    engine = seed.engine

    def tiers() -> dict[str, str]:
        got = engine.assess([Subject("probe", probe, tenant=t)
                             for t in ("corner", "premium", "tiny")], now, with_history=False)
        return dict(zip(("corner", "premium", "tiny"), (a.value_tier for a in got), strict=True))

    await engine.refresh_value_bounds(redis, seed.keys)
    assert tiers() == {"corner": "medium", "premium": "medium", "tiny": "medium"}  # fixed: >= 150

    stored = await valuebounds.refresh_stale(redis, seed.keys, now, 3_600_000)
    assert {t: (b.n, b.relative) for t, b in stored.items()} == {
        "corner": (MIN_CUSTOMERS + 5, True), "premium": (MIN_CUSTOMERS + 5, True),
        "tiny": (5, False)}
    await engine.refresh_value_bounds(redis, seed.keys)
    assert tiers() == {"corner": "high", "premium": "low", "tiny": "medium"}

    # a tenant larger than the sample: a random sample, every tier in proportion
    sampled = await valuebounds.sample_customers(redis, seed.keys, "corner", limit=20)
    assert 17 <= len(sampled) <= 23 and len(set(sampled)) > 1  # rounding per tier

    # fresh boundaries are not recomputed; stale ones are, from what is stored now
    raw = await redis.get(seed.keys.value_bounds("corner"))
    again = await valuebounds.refresh_stale(redis, seed.keys, now + 1000, 3_600_000)
    assert await redis.get(seed.keys.value_bounds("corner")) == raw
    assert again["corner"] == stored["corner"]
    later = await valuebounds.refresh_stale(redis, seed.keys, now + 3_600_000, 3_600_000)
    assert later["corner"].computed_at_ms == now + 3_600_000


async def test_at_risk_list_filters_by_stage_and_reads_old_names(settings_factory) -> None:
    settings = settings_factory(api_keys=KEYS)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    seed = Seeder(redis, settings)
    try:
        await seed.customer("regular", tier="high", days_ago=[2, 9, 16, 23, 30, 37])
        await seed.customer("back", tier="high", days_ago=[2, 80, 87, 94, 101])
        await seed.customer("gone", tier="high", days_ago=[100, 107, 114])
        await seed.customer("old", tier="high", days_ago=[2, 9, 16, 23, 30, 37])
        [state] = await read_states(redis, seed.keys, [("default", "old")], ["risk"])
        snap = json.loads(state["risk"]) | {"lifecycle_stage": "mature"}  # before issue 16
        await redis.set(seed.keys.risk("old"), risk_snapshot(snap))

        async with api(settings) as client:
            async def listed(stage: str) -> list[str]:
                r = await client.get("/v1/customers/at-risk",
                                     params={"tier": "high", "lifecycle_stage": stage},
                                     headers=READ)
                assert r.status_code == 200, r.text
                return sorted(i["customer_id"] for i in r.json()["items"])

            assert await listed("won_back") == ["back"]
            assert await listed("churned") == ["gone"]
            # the seeded snapshots say the model's own tier (low): active, not at_risk
            assert await listed("active") == ["old", "regular"]
            assert await listed("mature") == await listed("growing") == ["old", "regular"]
            r = await client.get("/v1/customers/at-risk",
                                 params={"lifecycle_stage": "loyal"}, headers=READ)
            assert r.status_code == 422
            r = await client.get("/v1/customers/old/risk", headers=READ)
            assert r.status_code == 200 and r.json()["lifecycle_stage"] == "active"
            r = await client.get("/v1/analytics/churn",
                                 params={"by": "lifecycle_stage", "periods": 1}, headers=READ)
            assert r.status_code == 200, r.text
            assert {row["segment"] for row in r.json()["rows"]} <= {
                "new", "active", "at_risk", "won_back", "dormant", "churned"}
    finally:
        await redis.aclose()


async def test_boundaries_on_a_redis_cluster(cluster_settings_factory) -> None:
    settings = cluster_settings_factory(create_topics=False)
    redis = make_redis(settings)
    seed = Seeder(redis, settings)
    try:
        now = int(time.time() * 1000)
        for i in range(MIN_CUSTOMERS):
            await seed.customer(f"c{i}", tenant="acme", days_ago=[3, 40], amount=10.0 + i,
                                now_ms=now)
        for limit in (MIN_CUSTOMERS, 20):  # whole indexes, then a sample (ZRANDMEMBER)
            assert len(await valuebounds.sample_customers(redis, seed.keys, "acme", limit)) \
                in range(17, MIN_CUSTOMERS + 1)
        stored = await valuebounds.refresh_stale(redis, seed.keys, now, 3_600_000)
        assert stored["acme"].relative
        assert await valuebounds.load_bounds(redis, seed.keys) == stored
    finally:
        await redis.aclose()


async def test_the_at_risk_list_puts_lapsed_customers_after_those_still_to_keep(
        settings_factory, tmp_path: Path) -> None:
    """Through the real scorer: big spenders silent for months past the horizon (churned) and
    smaller ones overdue for weeks (at risk) land in one tier; the list gives the ones still
    to keep first, whatever their priority, then the lapsed, each group by priority, and
    every item's priority is still score x (1 + a year's spend). (A year imported at go-live
    left the high tier mostly churned customers, first on its pages by priority alone.)"""
    settings = settings_factory(api_keys=KEYS, clock="event", sweep_interval_seconds=0.5,
                                model="scorecard")
    # the tenant's clock: the second-newest customer's newest event (two regulars keep it)
    anchor = [e for name in ("anchor-a", "anchor-b")
              for e in regular(name, every_days=7, count=47, start=T0)]
    gone = [e for i in range(3) for e in regular(f"gone-{i}", every_days=14, count=8,
                                                 start=T0 + timedelta(days=i), amount=300.0)]
    slipping = [e for i in range(3) for e in regular(
        f"slip-{i}", every_days=7, count=12, start=T0 + timedelta(days=200 + i), amount=20.0)]
    # came every four weeks for eight months, unseen for 100 days at the tenant's clock: past
    # the 90-day horizon, short of four of their gaps — still to keep (dormant), not lapsed
    monthly = regular("monthly", every_days=28, count=8, start=T0 + timedelta(days=26))
    events = by_time(anchor + gone + slipping + monthly)
    redis = make_redis(settings)
    try:
        with ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                            health_port_setting="scorer_metrics_port"):
            await produce_events(settings, events)
            async with api(settings) as client:
                async def listed(tier: str) -> list[dict[str, Any]]:
                    r = await client.get("/v1/customers/at-risk", params={"tier": tier},
                                         headers=READ)
                    assert r.status_code == 200, r.text
                    return list(r.json()["items"])

                deadline = time.monotonic() + 60
                while True:  # every event applied and the silent ones swept to churned
                    high = await listed("high")
                    stages = {i["customer_id"]: i["lifecycle_stage"] for i in high}
                    if all(stages.get(f"gone-{i}") == "churned" for i in range(3)) and \
                            all(f"slip-{i}" in stages for i in range(3)) and \
                            stages.get("monthly") == "dormant":
                        break
                    assert time.monotonic() < deadline, high
                    await asyncio.sleep(0.2)
                order = [i["customer_id"] for i in high]
                lapsed = [i for i in high if i["lifecycle_stage"] == "churned"]
                keep = [i for i in high if i["lifecycle_stage"] != "churned"]
                assert high == keep + lapsed, order
                assert {f"slip-{i}" for i in range(3)} | {"monthly"} <= {
                    i["customer_id"] for i in keep}
                # the order this replaces: a lapsed big spender before every slipping one
                assert min(i["priority"] for i in lapsed) > max(i["priority"] for i in keep)
                for group in (keep, lapsed):
                    assert [i["priority"] for i in group] == sorted(
                        (i["priority"] for i in group), reverse=True), order
                for item in high:
                    r = await client.get(f"/v1/customers/{item['customer_id']}/risk",
                                         headers=READ)
                    risk = r.json()
                    want = risk["score"] * (1 + risk["features"]["spend_365"])
                    assert item["priority"] == pytest.approx(want, rel=1e-6, abs=1e-5), risk
                # a page boundary between the groups: the cursor goes on into the lapsed
                r = await client.get("/v1/customers/at-risk", headers=READ,
                                     params={"tier": "high", "limit": len(keep)})
                first = r.json()
                assert [i["customer_id"] for i in first["items"]] == order[:len(keep)]
                r = await client.get("/v1/customers/at-risk", headers=READ,
                                     params={"tier": "high", "cursor": first["next_cursor"]})
                assert [i["customer_id"] for i in r.json()["items"]] == order[len(keep):]
    finally:
        await redis.aclose()
