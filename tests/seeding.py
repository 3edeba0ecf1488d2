"""Customers written the way the scorer stores them (state hash with the risk snapshot of a
real :class:`Engine` assessment, summary of the events, tier indexes ranked by priority): for tests of
what reads that state (the query API, the console) without running a scorer."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from services.common.holdout import in_holdout
from services.common.redisconn import Keys, customer_token
from services.common.riskchange import TIERS
from services.common.settings import Settings
from services.scoring.engine import Engine, Subject
from services.scoring.features import DAY_MS, Activity
from services.scoring.model import load_model
from services.scoring.summary import Summary, summarize
from services.scoring.tiers import Thresholds
from services.state.store import index_score, read_states, risk_snapshot


class Seeder:
    """Writes customers as the scorer does (see services/scorer/processor.py)."""

    def __init__(self, redis: Redis, settings: Settings):
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.engine = Engine(load_model(settings.model), Thresholds.from_settings(settings))
        self.holdout_share = settings.holdout_share

    async def customer(self, cid: str, *, tenant: str = "default", store: str | None = "north",
                       days_ago: list[float], amount: float = 40.0, tier: str | None = None,
                       now_ms: int | None = None) -> dict[str, Any]:
        now = now_ms or int(time.time() * 1000)
        acts = [Activity(kind="transaction", ts=int(now - d * DAY_MS), event_id=f"{cid}-{i}",
                         amount=amount, store_id=store) for i, d in enumerate(days_ago)]
        a = self.engine.assess([Subject(cid, acts, min(x.ts for x in acts))], now,
                               with_history=False)[0]
        tier = tier or a.tier
        snap = a.to_json() | {"tier": tier}
        st = self.keys.state(cid, tenant)
        token = customer_token(cid, tenant)
        pipe = self.redis.pipeline(transaction=False)
        fields: dict[FieldT, EncodableT] = {"first_ts": min(x.ts for x in acts),
                                  "last_ts": max(x.ts for x in acts), "tier": tier,
                                  "score": a.score, "tier_since": now}
        if store:
            fields["store"] = store
        pipe.hset(st, mapping=fields)  # the layout the scorer writes (services/state/store.py)
        pipe.set(self.keys.summary(cid, tenant), summarize(acts).encode())
        pipe.set(self.keys.risk(cid, tenant), risk_snapshot(snap))
        pipe.sadd(self.keys.tenants, tenant)  # as the scorer's commit does
        for t in TIERS:
            pipe.zrem(self.keys.tier_index(t, tenant), token)
        rank = index_score(a.priority, a.lifecycle_stage)
        pipe.zadd(self.keys.tier_index(tier, tenant), {token: rank})
        if store:
            pipe.zadd(self.keys.tier_index(tier, tenant, store), {token: rank})
            pipe.sadd(self.keys.store_set(tenant), store)  # the tenant's stores, as the scorer's
        if tier == "high" and in_holdout(tenant, cid, self.holdout_share):
            pipe.zadd(self.keys.holdout_index(tenant), {token: now}, nx=True)
        await pipe.execute()
        return {"customer_id": cid, "priority": a.priority, "tier": tier, "score": a.score}

    async def add_event(self, cid: str, ts: int, tenant: str = "default") -> None:
        st = self.keys.state(cid, tenant)
        act = Activity(kind="visit", ts=ts, event_id=f"{cid}-late-{ts}")
        blob = (await read_states(self.redis, self.keys, [(tenant, cid)], ["sm"]))[0].get("sm")
        summary = Summary.decode(blob) if blob else Summary.empty()
        summary.fold(act)
        await self.redis.set(self.keys.summary(cid, tenant), summary.encode())
        await self.redis.hset(st, mapping={"last_ts": summary.last_ts or ts})
