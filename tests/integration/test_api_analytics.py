"""Churn analytics and the win-back loop over the real app, real Redis and the real broker."""

from __future__ import annotations

import csv
import io
import time

import pytest

from services.alerting.acks import record_alert
from services.common.redisconn import Keys, customer_token
from services.records.holdout import in_holdout
from services.scoring.features import DAY_MS
from tests.integration.test_api_queries import ACME, ADMIN, INGEST, KEYS, READ, api, make  # noqa: F401

pytestmark = pytest.mark.integration


async def test_churn_rate_retention_and_features(make) -> None:  # noqa: F811
    settings, seed, _ = make(churn_inactive_days=30, analytics_cache_seconds=0)
    # churned: last seen 100 / 45 days ago; active: seen 3 and 10 days ago; all old customers
    for cid, days in (("gone-1", [300, 200, 100]), ("gone-2", [300, 250, 45]),
                      ("here-1", [300, 100, 3]), ("here-2", [280, 150, 10])):
        await seed.customer(cid, days_ago=days, store="north" if cid.endswith("1") else "south")
    async with api(settings) as client:
        r = await client.get("/v1/analytics/churn", headers=READ,
                             params={"period": "month", "periods": 12})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["customers"] == 4 and body["definition"]["days"] == 30
        churned = sum(row["churned"] for row in body["rows"])
        assert churned == 2  # each churned customer churns in exactly one period
        for row in body["rows"]:
            assert row["churn_rate"] + row["retention_rate"] == pytest.approx(1.0)
            assert 0 <= row["churned"] <= row["cohort"]
        by_store = await client.get("/v1/analytics/churn", headers=READ,
                                    params={"by": "store", "periods": 12})
        assert {row["segment"] for row in by_store.json()["rows"]} == {"north", "south"}
        longer = await client.get("/v1/analytics/churn", headers=READ,
                                  params={"days": 120, "periods": 12})
        assert sum(row["churned"] for row in longer.json()["rows"]) == 0
        cad = await client.get("/v1/analytics/churn", headers=READ,
                               params={"definition": "cadence_multiple", "multiple": 2})
        assert cad.status_code == 200 and cad.json()["definition"]["kind"] == "cadence_multiple"

        as_csv = await client.get("/v1/analytics/churn", headers=READ | {"Accept": "text/csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert rows and {"period_start", "segment", "churn_rate"} <= set(rows[0])

        f = await client.get("/v1/analytics/features", headers=READ)
        assert f.json()["active"] == 2 and f.json()["churned"] == 2
        days_since = next(x for x in f.json()["features"]
                          if x["feature"] == "days_since_last_activity")
        assert days_since["churned_mean"] > days_since["active_mean"]
        assert (await client.get("/v1/analytics/features", headers=READ,
                                 params={"format": "csv"})).text.startswith("feature,")

        t = await client.get("/v1/analytics/tiers", headers=READ)
        assert sum(t.json()["current"].values()) == 4
        assert len(t.json()["history"]) == 1
        assert (await client.get("/v1/analytics/churn", headers=READ,
                                 params={"period": "year"})).status_code == 422


async def test_winback_rates_holdout_uplift_and_metrics(make) -> None:  # noqa: F811
    settings, seed, redis = make(holdout_share=0.5, winback_attribution_days=14)
    keys = Keys(settings.redis_prefix)
    ids = [f"w{i}" for i in range(40)]
    held = [c for c in ids if in_holdout("default", c, 0.5)]
    acted = [c for c in ids if c not in held]
    assert held and len(acted) >= 6
    for cid in ids:
        await seed.customer(cid, days_ago=[200, 150, 100], tier="high", store="north")
    async with api(settings) as client:
        listed = await client.get("/v1/customers/at-risk", headers=READ, params={"limit": 100})
        flags = {i["customer_id"]: i["holdout"] for i in listed.json()["items"]}
        assert flags == {c: c in held for c in ids}
        risk = await client.get(f"/v1/customers/{held[0]}/risk", headers=READ)
        assert risk.json()["holdout"] is True
        actions = [("called", "s1"), ("called", "s2"), ("coupon_sent", "s1"),
                   ("coupon_sent", "s1"), ("exclusive_offer", "s2"), ("other", "s2")]
        for cid, (action, staff) in zip(acted, actions, strict=False):
            r = await client.post(f"/v1/customers/{cid}/actions", headers=INGEST,
                                  json={"action": action, "staff_id": staff})
            assert r.status_code == 201 and r.json()["holdout"] is False
        bad = await client.post(f"/v1/customers/{acted[0]}/actions", headers=INGEST,
                                json={"action": "hugged", "staff_id": "s1"})
        assert bad.status_code == 422
        # the first two acted customers and one holdout customer come back
        now = int(time.time() * 1000)
        for cid in (acted[0], acted[2], held[0]):
            await seed.add_event(cid, now + 60_000)
        r = await client.get("/v1/analytics/winback", headers=READ)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["overall"] == {"actions": 6, "returned": 2, "not_returned": 0, "pending": 4,
                                   "winback_rate": 1.0}
        by_action = {g["key"]: g for g in body["by_action"]}
        assert by_action["called"]["returned"] == 1 and by_action["coupon_sent"]["returned"] == 1
        assert {g["key"] for g in body["by_staff"]} == {"s1", "s2"}
        assert body["holdout"]["customers"] == len(held) and body["holdout"]["returned"] == 1
        # age everything past the window: pending ones become not_returned
        past = now - 20 * DAY_MS
        index = seed.keys.winback_index()
        for member in await redis.zrange(index, 0, -1):
            await redis.zadd(index, {member: past})
        for cid in held:
            await redis.zadd(seed.keys.holdout_index(), {customer_token(cid): past})
        for cid in (acted[0], acted[2], held[0]):
            await seed.add_event(cid, past + DAY_MS)
        body = (await client.get("/v1/analytics/winback", headers=READ)).json()
        assert body["overall"]["returned"] == 2 and body["overall"]["not_returned"] == 4
        assert body["overall"]["winback_rate"] == pytest.approx(2 / 6, abs=1e-4)
        base = 1 / len(held)
        assert body["holdout"]["return_rate"] == pytest.approx(base, abs=1e-4)
        assert body["uplift"] == pytest.approx(2 / 6 - base, abs=1e-3)
        rows = list(csv.DictReader(io.StringIO((await client.get(
            "/v1/analytics/winback", headers=READ, params={"format": "csv"})).text)))
        assert {r["group"] for r in rows} == {"action", "store", "staff"}
        assert (await client.get("/v1/analytics/winback", headers=ACME)).json()["overall"][
            "actions"] == 0
        metrics = (await client.get("/metrics")).text
        assert 'churnwatch_winback_actions_total{action="called"} 2.0' in metrics
        assert 'churnwatch_winback_returned_total{action="called"} 1.0' in metrics
        assert 'churnwatch_winback_returned_total{action="coupon_sent"} 1.0' in metrics
        made_up = await client.post("/v1/alerts/alert-123/ack", headers=INGEST, json={"by": "s1"})
        assert made_up.status_code == 404 and "alert-123" in made_up.json()["detail"]
        assert not await redis.exists(keys.ack("alert-123"))  # nothing written for it
        await record_alert(redis, keys, "alert-123", tenant="default", customer_id=acted[0],
                           store_id="north")  # the notifier sent it
        ack = await client.post("/v1/alerts/alert-123/ack", headers=INGEST,
                                json={"by": "s1", "customer_id": acted[0]})
        first = ack.json()
        assert ack.status_code == 200 and first["acknowledged"] and first["new"]
        assert first["by"] == "s1"
        again = await client.post("/v1/alerts/alert-123/ack", headers=INGEST, json={"by": "s2"})
        assert again.status_code == 200  # idempotent: the first acknowledgement is kept
        assert again.json() == first | {"new": False}
        assert (await client.post("/v1/alerts/alert-123/ack", headers=ACME)).status_code == 404
        assert (await client.post("/v1/alerts/alert-123/ack", headers=READ)).status_code == 403
        t = (await client.get(f"/v1/customers/{acted[0]}/timeline", headers=READ)).json()
        assert "acknowledged" in [e["kind"] for e in t["entries"]]
