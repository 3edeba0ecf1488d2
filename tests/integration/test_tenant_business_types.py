"""One deployment, several kinds of business (``CHURNWATCH_TENANT_BUSINESS_TYPES``): the real
scorer judges each tenant's customers by that tenant's rules and tier levels (a tenant's own
rules file may set its own levels), the risk-change events staff are alerted from carry the
difference, and the API's reads — stored and ``as_of`` — say the same as the scorer. Real
broker, Redis, scorer and API processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.redisconn import Keys, make_redis
from services.state.store import read_states
from tests.data import iso, regular
from tests.integration.test_scorer import scorer, wait_processed
from tests.kafkatools import produce_events, read_all
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration

TENANTS = ("default", "cuts", "shop", "diner")
KEYS = ("dflt-read-0001:read,cuts-read-0001:read@cuts,shop-read-0001:read@shop,"
        "dinr-read-0001:read@diner")
SECRET = {"default": "dflt-read-0001", "cuts": "cuts-read-0001", "shop": "shop-read-0001",
          "diner": "dinr-read-0001"}


async def test_each_tenant_is_scored_as_its_own_kind_of_business(settings_factory,
                                                                 tmp_path: Path) -> None:
    # a diner whose owner wants to hear early: its own rules file, no rules, its own levels
    diner = tmp_path / "diner.yaml"
    diner.write_text(json.dumps({"business_type": "restaurant", "rules": [], "tiers": {
        "medium": {"enter": 0.002, "exit": 0.001}, "high": {"enter": 0.004, "exit": 0.003}}}))
    settings = settings_factory(tenant_business_types=f"cuts=salon,shop=online,diner={diner}",
                                api_keys=KEYS, api_rate_limit_per_second=0)
    # The same weekly regular in each tenant, last seen three weeks ago (wall clock), at
    # midday UTC: a visit and its payment 40 minutes apart across 00:00 UTC are two active
    # days, and halve the cadence the customer is judged against.
    now = datetime.now(UTC).replace(microsecond=0)
    last = now.replace(hour=12, minute=0, second=0) - timedelta(days=23)
    history = regular("w", every_days=7, count=30, start=last - timedelta(days=7 * 29))
    events = [{**e, "event_id": f"{t}-{e['event_id']}", "tenant_id": t}
              for t in TENANTS for e in history]
    redis = make_redis(settings)
    try:
        with scorer(settings, tmp_path), ServiceProcess(
                "api", settings, tmp_path / "api.log", health_port_setting="api_port") as api:
            await produce_events(settings, events)
            await wait_processed(redis, settings, len(events))
            states = await read_states(redis, Keys(settings.redis_prefix),
                                       [(t, "w") for t in TENANTS], ["risk"])
            stored = {t: json.loads(st["risk"]) for t, st in zip(TENANTS, states, strict=True)}
            reads: dict[str, dict[str, Any]] = {}
            as_of: dict[str, dict[str, Any]] = {}
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                for t in TENANTS:
                    auth = {"Authorization": f"Bearer {SECRET[t]}"}
                    r = await client.get("/v1/customers/w/risk", headers=auth)
                    assert r.status_code == 200, r.text
                    reads[t] = r.json()
                    r = await client.get("/v1/customers/w/risk", headers=auth,
                                         params={"as_of": iso(now)})
                    assert r.status_code == 200, r.text
                    as_of[t] = r.json()
        changes = [json.loads(r.value) for r in await read_all(
            settings, settings.topic_risk_changes, idle_ms=500)]
    finally:
        await redis.aclose()

    # the model scores the four alike; the salon's rule raises its regular to high, the
    # diner's own levels put the same score there
    assert len({round(stored[t]["score"], 6) for t in TENANTS}) == 1, stored
    assert stored["cuts"]["tier"] == "high"
    assert stored["cuts"]["reasons"][0]["code"] == "tier_raised_by_rule"
    assert stored["cuts"]["reasons"][0]["text"].startswith("Raised to high by a business rule")
    assert stored["diner"]["tier"] == "high" and stored["diner"]["score"] >= 0.004
    assert not any(r["code"].startswith("tier_") for r in stored["diner"]["reasons"])
    for t in ("default", "shop"):
        assert stored[t]["tier"] == "low", (t, stored[t])
        assert not any(r["code"].startswith("tier_") for r in stored[t]["reasons"]), stored[t]
    # the API reads what the scorer stored, and judges a point in time by the same rules
    for t in TENANTS:
        assert reads[t]["tier"] == stored[t]["tier"], (t, reads[t])
        assert as_of[t]["tier"] == stored[t]["tier"], (t, as_of[t])
    # staff are alerted from the risk topic: the salon's and the diner's regulars rose,
    # nobody else's did
    risen = {(c["data"]["tenant_id"], c["data"]["customer_id"]) for c in changes
             if c["data"]["tier"] in ("medium", "high")}
    assert risen == {("cuts", "w"), ("diner", "w")}, changes
