"""The customer state's key layout (issue 13): the summary (``sm``) and the risk snapshot
(``rk``) in string keys of their own beside the state hash (``st``), which stays a listpack;
state of the previous layout (``sm`` and ``risk`` inside the hash) still read, and moved by
the customer's next write; erasure deletes the new keys. On a standalone Redis and on a Redis
Cluster (every key of one write in one slot)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis.crc import key_slot

from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.records import population
from services.records.atrisk import AtRiskQuery
from services.scoring.engine import Engine, Subject
from services.scoring.features import DAY_MS, Activity
from services.scoring.model import load_model
from services.scoring.summary import summarize
from services.scoring.tiers import Thresholds
from services.state.store import (
    CustomerWrite,
    StateStore,
    erase_customer,
    load_customers,
    read_states,
    risk_snapshot,
)

pytestmark = pytest.mark.integration


def _snapshot(s: Settings) -> dict[str, Any]:
    engine = Engine(load_model(s.model), Thresholds.from_settings(s))
    now = int(time.time() * 1000)
    acts = [Activity(kind="transaction", ts=now - int(d * DAY_MS), event_id=f"e{d}",
                     amount=45.0, store_id="north") for d in (200, 172, 144, 116, 88)]
    return engine.assess([Subject("x", acts, acts[0].ts)], now, with_history=False)[0].to_json()


def _summary_blob() -> str:
    now = int(time.time() * 1000)
    return summarize([Activity(kind="visit", ts=now - d * DAY_MS, event_id=f"v{d}",
                               store_id="north") for d in range(1, 40, 3)]).encode()


async def _old_layout_then_new(settings: Settings) -> None:
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    store = StateStore.from_settings(redis, settings)
    snap, blob = _snapshot(settings), _summary_blob()
    old_risk = json.dumps(snap)  # the previous layout's snapshot, as an older version wrote it
    ref = ("tenantA", "old")
    st = keys.state("old", "tenantA")
    try:
        await redis.hset(st, mapping={"v": "1", "sm": blob, "risk": old_risk, "tier": "medium",
                                      "score": "0.5", "store": "north",
                                      "last_ts": str(int(time.time() * 1000))})
        assert await redis.object("encoding", st) == "hashtable"
        # read: the fallback, exactly what the hash held
        states, _ = await store.read([ref])
        assert states[ref].state["sm"] == blob and states[ref].state["risk"] == old_risk
        assert states[ref].summary.encode() == blob
        loaded = await load_customers(redis, keys, [ref])
        assert loaded[ref].state["risk"] == old_risk
        assert (await read_states(redis, keys, [ref], ["risk", "tier"]))[0] == {
            "risk": old_risk, "tier": "medium"}
        # a write that names neither sm nor risk still moves them out of the hash
        await store.write([CustomerWrite(ref, "1", {"v": "2", "score": "0.25"})])
        assert not await redis.hexists(st, "sm") and not await redis.hexists(st, "risk")
        assert await redis.get(keys.summary("old", "tenantA")) == blob
        assert await redis.get(keys.risk("old", "tenantA")) == old_risk
        assert await redis.object("encoding", st) in ("listpack", "ziplist")
        assert 0 < await redis.ttl(keys.summary("old", "tenantA")) <= settings.retention_days * 86_400
        states, _ = await store.read([ref])  # the scorer's read: no risk snapshot (unused)
        assert "risk" not in states[ref].state and states[ref].state["sm"] == blob
        assert states[ref].version == "2" and states[ref].score == 0.25
        states = await load_customers(redis, keys, [ref])
        assert states[ref].state["risk"] == old_risk and states[ref].state["sm"] == blob
        # the scorer's write: the compact snapshot; readers see the full one
        await store.write([CustomerWrite(ref, "2", {"v": "3", "sm": blob,
                                                    "risk": risk_snapshot(snap)})])
        stored = await redis.get(keys.risk("old", "tenantA"))
        assert stored is not None and len(stored) < len(old_risk) - 300, stored
        states = await load_customers(redis, keys, [ref])
        full = states[ref].state["risk"]
        assert full == json.dumps(snap, separators=(",", ":"), ensure_ascii=False)
        assert json.loads(full) == snap
        # the API's readers
        await redis.zadd(keys.tier_index("medium", "tenantA"), {"tenantA/old": 1.0})
        page = await AtRiskQuery(redis, keys).page(tenant="tenantA", tier="medium", store=None,
                                                   owner=None, limit=10, cursor=None,
                                                   holdout_share=0.0)
        assert page["items"][0]["suggested_action"] == snap["suggested_action"]
        pop = await population.load(redis, keys, tenant="tenantA", stores=None,
                                    max_customers=10)
        assert pop.members[0].features == snap["features"]
        # a delete of either goes to its key
        await store.write([CustomerWrite(ref, "3", {"v": "4"}, delete=["risk"])])
        assert not await redis.exists(keys.risk("old", "tenantA"))
        assert await redis.exists(keys.summary("old", "tenantA"))
        # erasure deletes the new keys too
        await erase_customer(redis, keys, "old", tenant="tenantA", partitions=1)
        for key in (st, keys.summary("old", "tenantA"), keys.risk("old", "tenantA")):
            assert not await redis.exists(key), key
    finally:
        await redis.aclose()


async def test_state_layout_on_standalone_redis(settings_factory) -> None:
    await _old_layout_then_new(settings_factory(create_topics=False))


async def test_state_layout_on_redis_cluster(cluster_settings_factory) -> None:
    settings = cluster_settings_factory(create_topics=False)
    keys = Keys(settings.redis_prefix)
    slots = {key_slot(k.encode()) for k in keys.customer_all("old", "tenantA")}
    assert len(slots) == 1, slots
    await _old_layout_then_new(settings)
