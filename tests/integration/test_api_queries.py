"""The query API over the real app, real Redis and the real broker: at-risk list, timeline,
profiles, erasure, tenants and stores, limits and errors.

Customers are seeded the way the scorer stores them (state hash with the risk snapshot of a
real :class:`Engine` assessment, event window, tier indexes ranked by priority)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from redis.asyncio import Redis

from services.common.profiles import owner_of
from services.common.redisconn import customer_token
from services.common.riskchange import TIERS
from services.common.settings import Settings
from services.console.sessions import Draft, SessionStore
from services.notifier.channels.in_app import ConsoleList
from services.records import profiles as profilelog
from services.server.app import create_app
from tests.seeding import Seeder

pytestmark = pytest.mark.integration

KEYS = ("admin-secret-1:admin,reader-secret-1:read,ingest-secret-1:ingest,"
        "acme-admin-01:admin@acme,acme-north-1:read+ingest@acme/north,"
        "acme-both-01:read@acme/north|south,acme-nadm-01:admin@acme/north")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


ADMIN, READ, INGEST = bearer("admin-secret-1"), bearer("reader-secret-1"), bearer("ingest-secret-1")
ACME, NORTH, BOTH = bearer("acme-admin-01"), bearer("acme-north-1"), bearer("acme-both-01")
NORTH_ADMIN = bearer("acme-nadm-01")


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.fixture
def make(settings_factory, redis_server) -> Callable[..., tuple[Settings, Seeder, Redis]]:
    clients: list[Redis] = []

    def build(**overrides: Any) -> tuple[Settings, Seeder, Redis]:
        s = settings_factory(api_keys=KEYS, **overrides)
        r = Redis.from_url(s.redis_url, decode_responses=True)
        clients.append(r)
        return s, Seeder(r, s), r

    return build


async def test_at_risk_pages_by_priority_with_a_stable_cursor(make) -> None:
    settings, seed, redis = make()
    seeded = [await seed.customer(f"c{i:02d}", tier="high", store="north" if i % 2 else "south",
                                  days_ago=[200, 150 - i, 120], amount=10.0 * (i % 7 + 1))
              for i in range(23)]
    index = seed.keys.tier_index("high")
    await redis.zadd(index, {customer_token("tie-a"): 5.0, customer_token("tie-b"): 5.0})
    await seed.customer("low-one", days_ago=[1, 8, 15], tier="low")
    async with api(settings) as client:
        got: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"tier": "high", "limit": 7}
            if cursor:
                params["cursor"] = cursor
            r = await client.get("/v1/customers/at-risk", params=params, headers=READ)
            assert r.status_code == 200, r.text
            got += r.json()["items"]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        ids = [i["customer_id"] for i in got]
        assert sorted(ids) == sorted(s["customer_id"] for s in seeded)  # ties: stale, skipped
        assert len(ids) == len(set(ids))
        prios = [i["priority"] for i in got]
        assert prios == sorted(prios, reverse=True)
        first = got[0]
        assert first["tier"] == "high" and first["top_reason"] and first["store_id"]
        assert not first["top_reason"]["code"].startswith("tier_")  # what holds, not a hold

        north = await client.get("/v1/customers/at-risk", params={"store": "north"}, headers=READ)
        assert {i["store_id"] for i in north.json()["items"]} == {"north"}
        bad = await client.get("/v1/customers/at-risk", params={"cursor": "nope"}, headers=READ)
        assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
        assert (await client.get("/v1/customers/at-risk", params={"tier": "x"},
                                 headers=READ)).status_code == 422

        owned = [s["customer_id"] for s in seeded][::5]
        for cid in owned:
            r = await client.put(f"/v1/customers/{cid}/profile", headers=INGEST,
                                 json={"owner_staff_id": "stylist-7", "store_id": "north"})
            assert r.status_code == 200, r.text
        mine = await client.get("/v1/customers/at-risk", params={"owner": "stylist-7"},
                                headers=READ)
        assert sorted(i["customer_id"] for i in mine.json()["items"]) == sorted(owned)


async def test_tenants_and_store_bound_keys_are_kept_apart(make) -> None:
    settings, seed, redis = make()
    await seed.customer("shared-id", tenant="default", days_ago=[5, 40], store="north")
    await seed.customer("shared-id", tenant="acme", days_ago=[100, 140], store="south",
                        tier="high")
    await seed.customer("n-1", tenant="acme", days_ago=[90, 120], store="north", tier="high")
    async with api(settings) as client:
        mine = await client.get("/v1/customers/shared-id/risk", headers=READ)
        theirs = await client.get("/v1/customers/shared-id/risk", headers=ACME)
        assert mine.status_code == theirs.status_code == 200
        assert mine.json()["store_id"] == "north" and theirs.json()["store_id"] == "south"
        assert (await client.get("/v1/customers/n-1/risk", headers=READ)).status_code == 404
        assert (await client.get("/v1/customers/n-1/timeline", headers=READ)).status_code == 404
        listed = await client.get("/v1/customers/at-risk", headers=READ)
        assert listed.json()["items"] == []
        r = await client.post("/v1/customers/n-1/actions", headers=INGEST,
                              json={"action": "called", "staff_id": "s1"})
        assert r.status_code == 404
        assert (await client.delete("/v1/customers/n-1", headers=ADMIN)).status_code == 204
        assert (await client.get("/v1/customers/n-1/risk", headers=ACME)).status_code == 200

        # bound to acme/north: the south customer does not exist for this key
        assert (await client.get("/v1/customers/shared-id/risk", headers=NORTH)).status_code == 404
        assert (await client.get("/v1/customers/n-1/risk", headers=NORTH)).status_code == 200
        north = await client.get("/v1/customers/at-risk", headers=NORTH)
        assert [i["customer_id"] for i in north.json()["items"]] == ["n-1"]
        south = await client.get("/v1/customers/at-risk", params={"store": "south"}, headers=NORTH)
        assert south.status_code == 403
        ambiguous = await client.get("/v1/customers/at-risk", headers=BOTH)
        assert ambiguous.status_code == 422 and "store" in ambiguous.json()["detail"]
        r = await client.put("/v1/customers/shared-id/profile", headers=NORTH,
                             json={"store_id": "south"})
        assert r.status_code == 403
        r = await client.put("/v1/stores/south", headers=ACME, json={"store_id": "south"})
        assert r.status_code == 200
        assert (await client.get("/v1/stores/south", headers=NORTH)).status_code == 404
        assert (await client.get("/v1/stores/south", headers=READ)).status_code == 404
        acme_sees = (await client.get("/v1/stores", headers=ACME)).json()
        assert "south" in {s["store_id"] for s in acme_sees["stores"]}, acme_sees
        north_sees = (await client.get("/v1/stores", headers=NORTH)).json()
        assert "south" not in {s["store_id"] for s in north_sees["stores"]}, north_sees
        churn = await client.get("/v1/analytics/churn", headers=NORTH)
        assert churn.status_code == 200 and churn.json()["customers"] == 1
        both = await client.get("/v1/analytics/churn", headers=BOTH)
        assert both.status_code == 200 and both.json()["customers"] == 2
        assert (await client.get("/v1/analytics/tiers", headers=BOTH)).status_code == 422
        tiers = await client.get("/v1/analytics/tiers", headers=NORTH)
        assert tiers.json()["current"] == {"low": 0, "medium": 0, "high": 1}


async def test_timeline_merges_actions_notifications_profile_and_events(make) -> None:
    settings, seed, redis = make()
    await seed.customer("t-1", days_ago=[30, 60, 61], tier="high")
    await redis.lpush(seed.keys.delivery_log("t-1"), json.dumps({
        "delivery_id": "d1", "event_id": "alert-1", "channel": "email", "status": "delivered",
        "at": "2020-01-01T00:00:00+00:00", "attempts": 1}))
    await redis.lpush(seed.keys.timeline("t-1"), json.dumps({
        "kind": "tier_change", "at": "2020-01-02T00:00:00Z", "at_ms": 1, "id": "alert-1",
        "from": "low", "to": "high", "score": 0.8, "cause": "silence", "reasons": ["overdue"],
        "suggested_action": "personal_call"}))
    async with api(settings) as client:
        r = await client.post("/v1/customers/t-1/actions", headers=INGEST,
                              json={"action": "coupon_sent", "staff_id": "s-9", "note": "10% off",
                                    "alert_id": "alert-1"})
        assert r.status_code == 201, r.text
        assert r.json()["action"] == "coupon_sent" and r.json()["holdout"] is False
        r = await client.put("/v1/customers/t-1/profile", headers=INGEST,
                             json={"name": "Mei", "email": "mei@example.com", "store_id": "north"})
        assert r.status_code == 200
        t = await client.get("/v1/customers/t-1/timeline", headers=READ)
        assert t.status_code == 200
        entries = t.json()["entries"]
        kinds = [e["kind"] for e in entries]
        assert {"staff_action", "profile_change", "notification", "tier_change",
                "activity"} <= set(kinds)
        assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)
        change = next(e for e in entries if e["kind"] == "profile_change")
        assert change["data"]["fields"] == ["email", "name", "store_id"]
        assert "mei@example.com" not in t.text  # field names only
        tier = next(e for e in entries if e["kind"] == "tier_change")
        assert tier["data"]["alert_id"] == "alert-1"
        older = await client.get("/v1/customers/t-1/timeline", headers=READ,
                                 params={"before": "2020-01-02T00:00:00Z", "limit": 5})
        assert [e["kind"] for e in older.json()["entries"]] == ["notification"]
        assert (await client.get("/v1/customers/t-1/timeline", headers=READ,
                                 params={"before": "yesterday"})).status_code == 422


async def test_profiles_staff_and_stores(make) -> None:
    settings, _, redis = make()
    async with api(settings) as client:
        body = {"owner_staff_id": "stylist-7", "store_id": "north", "phone": "+8613800138000",
                "consent": {"sms": True}, "timezone": "Asia/Shanghai", "birthday": "1990-04-12"}
        assert (await client.put("/v1/customers/p-1/profile", json=body,
                                 headers=READ)).status_code == 403
        r = await client.put("/v1/customers/p-1/profile", json=body, headers=INGEST)
        assert r.status_code == 200
        got = await client.get("/v1/customers/p-1/profile", headers=READ)
        assert got.json()["phone"] == "+8613800138000" and got.json()["consent"]["sms"] is True
        bad = await client.put("/v1/customers/p-1/profile", json={"timezone": "Mars/Base"},
                               headers=INGEST)
        assert bad.status_code == 422 and "timezone" in bad.text
        assert (await client.get("/v1/customers/nobody/profile", headers=READ)).status_code == 404
        staff = {"staff_id": "stylist-7", "name": "Li", "email": "li@example.com",
                 "store_id": "north"}
        assert (await client.put("/v1/staff/stylist-7", json=staff,
                                 headers=INGEST)).status_code == 403
        assert (await client.put("/v1/staff/stylist-7", json=staff,
                                 headers=ADMIN)).status_code == 200
        mismatch = await client.put("/v1/staff/other", json=staff, headers=ADMIN)
        assert mismatch.status_code == 422 and "staff_id" in mismatch.json()["detail"]
        assert (await client.get("/v1/staff/stylist-7", headers=READ)).json()["name"] == "Li"
        for _ in range(2):
            assert (await client.delete("/v1/staff/stylist-7", headers=ADMIN)).status_code == 204
        assert (await client.get("/v1/staff/stylist-7", headers=READ)).status_code == 404
        store = {"store_id": "north", "timezone": "Europe/Berlin", "manager_staff_id": "m-1"}
        assert (await client.put("/v1/stores/north", json=store, headers=ADMIN)).status_code == 200
        assert (await client.get("/v1/stores/north", headers=READ)).json()["timezone"] == "Europe/Berlin"
        # the path names them: the body need not again (it was a 422 "Field required")
        r = await client.put("/v1/staff/stylist-8", json={"name": "Bo", "store_id": "north"},
                             headers=ADMIN)
        assert r.status_code == 200 and r.json()["staff_id"] == "stylist-8", r.text
        got = (await client.get("/v1/staff/stylist-8", headers=READ)).json()
        assert (got["staff_id"], got["name"], got["role"]) == ("stylist-8", "Bo", "staff")
        r = await client.put("/v1/stores/south", json={"timezone": "Asia/Tokyo"}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["store_id"] == "south", r.text
        got = (await client.get("/v1/stores/south", headers=READ)).json()
        assert (got["store_id"], got["timezone"]) == ("south", "Asia/Tokyo")
        mismatch = await client.put("/v1/stores/south", json={"store_id": "east"}, headers=ADMIN)
        assert mismatch.status_code == 422 and "store_id" in mismatch.json()["detail"]
        wrong = await client.put("/v1/staff/stylist-8", json={"name": "Bo", "colour": "red"},
                                 headers=ADMIN)
        assert wrong.status_code == 422 and "colour" in wrong.text  # unknown fields still refused


async def test_a_profile_is_patched_field_by_field_keeping_the_rest(make) -> None:
    """A POS that syncs contact details with PATCH keeps the owner a manager chose: only the
    fields sent change, consent merges field by field, null removes a field; the result is
    validated whole, the timeline names what changed, store-bound keys stay in their stores,
    and the owners' lists follow an owner patched in or out."""
    settings, seed, redis = make()
    merge = "application/merge-patch+json"
    async with api(settings) as client:
        r = await client.put("/v1/customers/p-1/profile", headers=ACME, json={
            "owner_staff_id": "ben", "store_id": "north", "name": "Mei Chen",
            "phone": "+8613800138000", "consent": {"sms": True, "email": True}})
        assert r.status_code == 200, r.text

        async def patch(cid: str, body: Any, key: dict[str, str] = ACME,
                        media: str = "application/json") -> httpx.Response:
            return await client.patch(f"/v1/customers/{cid}/profile", content=json.dumps(body),
                                      headers={"Content-Type": media, **key})

        r = await patch("p-1", {"email": "mei@example.com", "phone": None,
                                "consent": {"email": False}}, media=merge)
        assert r.status_code == 200, r.text
        got = (await client.get("/v1/customers/p-1/profile", headers=ACME)).json()
        assert got == {"owner_staff_id": "ben", "store_id": "north", "name": "Mei Chen",
                       "email": "mei@example.com", "preferred_channel": None,
                       "consent": {"sms": True, "email": False, "sms_opt_out": False},
                       "timezone": None, "segment": None, "birthday": None, "locale": None,
                       "phone": None} == r.json(), got
        entries = (await client.get("/v1/customers/p-1/timeline", headers=ACME)).json()["entries"]
        assert [e["data"]["fields"] for e in entries if e["kind"] == "profile_change"][0] == [
            "consent", "email", "phone"]
        # validated whole, said where: nothing written
        for bad, where in (({"timezone": "Mars/Base"}, "timezone"), ({"colour": "red"}, "colour"),
                           ({"consent": {"sms": "maybe"}}, "sms")):
            r = await patch("p-1", bad)
            assert r.status_code == 422 and where in r.text, r.text
            assert "body" in r.json()["detail"][0]["loc"], r.text
        assert (await patch("p-1", ["email"])).status_code == 422  # not an object
        assert (await client.get("/v1/customers/p-1/profile",
                                 headers=ACME)).json()["email"] == "mei@example.com"
        # store-bound keys: not another store's profile, nor moving one out of theirs
        assert (await patch("p-1", {"name": "x"}, READ)).status_code == 403  # read only
        assert (await patch("p-1", {"store_id": "south"}, NORTH)).status_code == 403
        await seed.customer("s-1", tenant="acme", days_ago=[10], store="south")
        assert (await patch("s-1", {"name": "x"}, NORTH)).status_code == 403  # scored south
        assert (await patch("n-new", {"name": "Ann"}, NORTH)).status_code == 403  # no store
        r = await patch("n-new", {"name": "Ann", "store_id": "north", "owner_staff_id": "li"},
                        NORTH)
        assert r.status_code == 200 and r.json()["name"] == "Ann", r.text
        # the owner patched: the lists follow
        assert (await patch("p-1", {"owner_staff_id": "li"})).status_code == 200
        r = await client.get("/v1/staff/li/customers", headers=ACME)
        assert [c["customer_id"] for c in r.json()["customers"]] == ["n-new", "p-1"], r.text
        assert (await patch("p-1", {"owner_staff_id": None})).status_code == 200
        assert not await redis.sismember(seed.keys.owned("li", "acme"), "p-1")
        assert not await redis.sismember(seed.keys.owned("ben", "acme"), "p-1")


async def test_a_leavers_customers_are_found_and_handed_over_within_the_keys_stores(
        make) -> None:
    """Ben leaves acme's north store. His customers are found, also one whose profile was
    written before owners were indexed, and handed over: a north-bound admin moves north's
    and cannot touch south's or give them to south's staff; a customer of south is kept when
    the new owner works at north. Every move is idempotent, timelined and in the team log;
    erasing a customer takes them out of his list."""
    settings, seed, redis = make()
    keys = seed.keys
    await seed.customer("s-1", tenant="acme", days_ago=[100, 130], tier="high", store="south")
    # profiles from before owners were indexed: the API reads them in when it starts
    await redis.set(keys.profile("d-old"), json.dumps({"owner_staff_id": "ben"}))
    await redis.set(keys.profile("a-old", "acme"), json.dumps({"owner_staff_id": "ben"}))
    await redis.sadd(keys.tenants, "acme")
    async with api(settings) as client:
        for _ in range(500):
            if await redis.exists(keys.owners_built(), keys.owners_built("acme")) == 2:
                break
            await asyncio.sleep(0.01)
        assert await redis.smembers(keys.owned("ben")) == {"d-old"}
        assert await redis.smembers(keys.owned("ben", "acme")) == {"a-old"}
        await redis.delete(keys.profile("d-old"), keys.profile("a-old", "acme"))
        for staff_id, store in (("ben", "north"), ("li", "north"), ("sol", "south")):
            r = await client.put(f"/v1/staff/{staff_id}", headers=ACME, json={
                "staff_id": staff_id, "name": staff_id.title(), "store_id": store})
            assert r.status_code == 200, r.text
        for cid, store in (("n-1", "north"), ("n-2", "north"), ("gone", "north"),
                           ("s-1", "south")):
            r = await client.put(f"/v1/customers/{cid}/profile", headers=ACME,
                                 json={"owner_staff_id": "ben", "store_id": store})
            assert r.status_code == 200, r.text
        # one written before the owner sets existed: read into them the first time asked
        await redis.set(keys.profile("n-old", "acme"), json.dumps(
            {"owner_staff_id": "ben", "store_id": "north", "name": "Old Timer"}))
        await redis.delete(keys.owners_built("acme"))
        # default tenant's Ben is another person
        r = await client.put("/v1/customers/d-1/profile", headers=INGEST,
                             json={"owner_staff_id": "ben"})
        assert r.status_code == 200, r.text

        async def theirs(staff_id: str, key: dict[str, str]) -> list[str]:
            r = await client.get(f"/v1/staff/{staff_id}/customers", headers=key)
            assert r.status_code == 200, r.text
            assert r.json()["count"] == len(r.json()["customers"])
            return [c["customer_id"] for c in r.json()["customers"]]

        assert await theirs("ben", ACME) == ["gone", "n-1", "n-2", "n-old", "s-1"]
        assert await theirs("ben", NORTH) == ["gone", "n-1", "n-2", "n-old"]
        assert await theirs("ben", READ) == ["d-1"]
        # erased: out of his list and out of the set
        assert (await client.delete("/v1/customers/gone", headers=ACME)).status_code == 204
        assert not await redis.sismember(keys.owned("ben", "acme"), "gone")
        # a profile given to someone else moves between the lists
        r = await client.put("/v1/customers/n-2/profile", headers=ACME,
                             json={"owner_staff_id": "li", "store_id": "north"})
        assert await theirs("ben", ACME) == ["n-1", "n-old", "s-1"]
        assert await theirs("li", ACME) == ["n-2"]
        assert (await client.delete("/v1/staff/ben", headers=ACME)).status_code == 204
        assert await theirs("ben", ACME) == ["n-1", "n-old", "s-1"]  # gone, still owning
        # alerts he had not acknowledged follow his customers; an acknowledged one stays his
        inbox = ConsoleList(redis, keys)
        for field, alert_id, cid in (("d-1", "a" * 32, "n-1"), ("d-2", "b" * 32, "n-1"),
                                     ("sent:" + "c" * 32, "c" * 32, "s-1")):
            await inbox.add("ben", "acme", field, {"alert_id": alert_id, "customer_id": cid,
                                                   "kind": "alert", "at_ms": 1})
        await redis.set(keys.ack("b" * 32, "acme"), json.dumps({"by": "ben", "at": 1.0}))
        r = await client.put("/v1/stores/south", headers=ACME,
                             json={"store_id": "south", "manager_staff_id": "sol"})
        assert r.status_code == 200, r.text

        async def hand(key: dict[str, str], to: str | None) -> httpx.Response:
            return await client.post("/v1/staff/ben/handover", headers=key,
                                     json={"to_staff_id": to})

        r = await hand(NORTH_ADMIN, "sol")  # south's staff: not this key's to give to
        assert r.status_code == 403, r.text
        for to, says in (("ben", "someone else"), ("nobody", "PUT /v1/staff/nobody")):
            r = await hand(ACME, to)
            assert r.status_code == 422 and says in r.text, r.text
        assert (await hand(NORTH, "li")).status_code == 403  # read+ingest: not admin
        r = await hand(NORTH_ADMIN, "li")
        assert r.status_code == 200 and r.json() == {"moved": 2, "kept": [],
                                                     "alerts_moved": 1, "not_owned": [], "shares": {}}, r.text
        assert await theirs("li", ACME) == ["n-1", "n-2", "n-old"]
        assert await theirs("ben", ACME) == ["s-1"]  # south's: out of the north key's reach
        r = await hand(ACME, "li")  # li works at north: south's customer is kept
        assert r.json() == {"moved": 0, "kept": ["s-1"], "alerts_moved": 0,
                            "not_owned": [], "shares": {}}, r.text
        r = await hand(ACME, None)  # south's manager receives s-1's alerts from now on
        assert r.json() == {"moved": 1, "kept": [], "alerts_moved": 1,
                            "not_owned": [], "shares": {}}, r.text
        assert (await hand(ACME, None)).json() == {"moved": 0, "kept": [], "alerts_moved": 0,
                                                   "not_owned": [], "shares": {}}
        assert set(await redis.hkeys(keys.inbox("li", "acme"))) == {"d-1"}
        assert set(await redis.hkeys(keys.inbox("sol", "acme"))) == {"sent:" + "c" * 32}
        assert set(await redis.hkeys(keys.inbox("ben", "acme"))) == {"d-2"}
        assert "li" in await redis.smembers(keys.inbox_staff("acme"))  # erasure finds it
        assert await theirs("ben", ACME) == []
        s1 = (await client.get("/v1/customers/s-1/profile", headers=ACME)).json()
        assert s1["store_id"] == "south" and s1.get("owner_staff_id") is None
        old = (await client.get("/v1/customers/n-old/profile", headers=ACME)).json()
        assert (old["name"], old["owner_staff_id"]) == ("Old Timer", "li")  # the rest kept
        entries = (await client.get("/v1/customers/n-1/timeline", headers=ACME)).json()["entries"]
        assert [e["data"]["fields"] for e in entries if e["kind"] == "profile_change"][0] == [
            "owner_staff_id"]
        # the team log, read through the API: north's key sees north's changes only
        r = await client.get("/v1/team/changes", headers=ACME, params={"limit": 4})
        assert r.status_code == 200, r.text
        assert [(c["action"], c["id"], c["name"], c["to_staff_id"], c["count"], c["stores"])
                for c in r.json()["changes"]] == [
            ("handed_over", "ben", "Ben", None, 1, ["south"]),
            ("handed_over", "ben", "Ben", "li", 2, ["north"]),
            ("added", "south", None, None, None, ["south"]),
            ("removed", "ben", "Ben", None, None, ["north"])], r.text
        assert r.json()["changes"][0]["at"].endswith("Z")
        north = (await client.get("/v1/team/changes", headers=NORTH)).json()["changes"]
        assert [c["action"] for c in north][:2] == ["handed_over", "removed"], north
        assert all("north" in c["stores"] for c in north) and len(north) == 4, north  # + 2 added
        assert (await client.get("/v1/team/changes", headers=ACME,
                                 params={"limit": 0})).status_code == 422
    assert await redis.smembers(keys.owned("ben")) == {"d-1"}  # default tenant's Ben
    log = [json.loads(e) for e in await redis.lrange(keys.team_log("acme"), 0, -1)]
    handed = [(e["to"], e["count"], e["stores"], e["name"]) for e in log
              if e["action"] == "handed_over"]
    assert handed == [(None, 1, ["south"], "Ben"), ("li", 2, ["north"], "Ben")], handed


async def test_a_hand_over_racing_a_pos_profile_sync_keeps_what_the_pos_wrote(make) -> None:
    """Ben's 600 customers are handed to Li. Once the first is Li's, the POS re-sends the
    profiles of the last 100 with a new e-mail (and Ben as owner, as its records still say).
    No e-mail the POS sent is undone by the hand-over, which read the profiles before: each
    ends with the POS's, owned by Li or (the POS's word came after) by Ben, and each owner's
    list says so. A customer someone else took meanwhile stays theirs."""
    settings, seed, redis = make(api_rate_limit_per_second=0)  # (0: no limit)
    keys = seed.keys
    ids = [f"c-{i:03d}" for i in range(600)]
    for cid in ids:
        await redis.set(keys.profile(cid, "acme"), json.dumps(
            {"owner_staff_id": "ben", "store_id": "north", "email": f"{cid}-0@example.com"}))
    await redis.sadd(keys.tenants, "acme")
    synced = ids[500:]
    async with api(settings) as client:
        for staff_id in ("ben", "li"):
            r = await client.put(f"/v1/staff/{staff_id}", headers=ACME, json={
                "staff_id": staff_id, "name": staff_id.title(), "store_id": "north"})
            assert r.status_code == 200, r.text

        async def pos() -> None:
            for _ in range(5000):  # until the hand-over is writing
                if owner_of(await redis.get(keys.profile(ids[0], "acme"))) == "li":
                    break
                await asyncio.sleep(0.001)
            for cid in synced:
                r = await client.put(f"/v1/customers/{cid}/profile", headers=ACME, json={
                    "owner_staff_id": "ben", "store_id": "north",
                    "email": f"{cid}-1@example.com"})
                assert r.status_code == 200, r.text

        _, r = await asyncio.gather(pos(), client.post(
            "/v1/staff/ben/handover", headers=ACME, json={"to_staff_id": "li"}))
        assert r.status_code == 200, r.text
        assert r.json()["moved"] >= len(ids) - len(synced), r.text
        listed = {}
        for staff_id in ("ben", "li"):
            r = await client.get(f"/v1/staff/{staff_id}/customers", headers=ACME)
            listed[staff_id] = {c["customer_id"] for c in r.json()["customers"]}
    for cid in ids:
        profile = json.loads(await redis.get(keys.profile(cid, "acme")))
        last = 1 if cid in synced else 0
        assert profile["email"] == f"{cid}-{last}@example.com", profile
        assert profile["store_id"] == "north"
        assert cid in listed[profile["owner_staff_id"]], (cid, profile)
        assert await redis.sismember(keys.owned(profile["owner_staff_id"], "acme"), cid)
    assert listed["li"].isdisjoint(listed["ben"]) and listed["ben"] <= set(synced)
    # a customer taken by someone else since the hand-over's list was read stays theirs
    await redis.set(keys.profile("c-000", "acme"), json.dumps({"owner_staff_id": "sol"}))
    assert await profilelog.give(redis, keys, "acme", ["c-000"], "li", only_from="ben",
                                 by="test") == []
    assert owner_of(await redis.get(keys.profile("c-000", "acme"))) == "sol"


async def test_some_of_a_persons_customers_are_handed_over_by_name(make) -> None:
    """Ben's customers are shared among colleagues: those named go to Li; named ids that are
    not his within the key's stores (another store's, unknown, already moved) are said and
    left as they are."""
    settings, seed, redis = make()
    async with api(settings) as client:
        for staff_id, store in (("ben", "north"), ("li", "north")):
            r = await client.put(f"/v1/staff/{staff_id}", headers=ACME, json={
                "staff_id": staff_id, "name": staff_id.title(), "store_id": store})
            assert r.status_code == 200, r.text
        for cid, store in (("n-1", "north"), ("n-2", "north"), ("s-1", "south")):
            r = await client.put(f"/v1/customers/{cid}/profile", headers=ACME,
                                 json={"owner_staff_id": "ben", "store_id": store})
            assert r.status_code == 200, r.text

        async def hand(named: Any) -> httpx.Response:
            return await client.post("/v1/staff/ben/handover", headers=NORTH_ADMIN,
                                     json={"to_staff_id": "li", "customer_ids": named})

        r = await hand(["n-1", "s-1", "nobody-1"])
        assert r.status_code == 200 and r.json() == {
            "moved": 1, "kept": [], "alerts_moved": 0,
            "not_owned": ["nobody-1", "s-1"], "shares": {}}, r.text
        assert (await hand(["n-1"])).json()["not_owned"] == ["n-1"]  # Li's by now
        for bad in ([], [""], ["x"] * 10_001):
            assert (await hand(bad)).status_code == 422, bad
        r = await client.get("/v1/staff/ben/customers", headers=ACME)
        assert [c["customer_id"] for c in r.json()["customers"]] == ["n-2", "s-1"]
        r = await client.get("/v1/team/changes", headers=ACME, params={"limit": 1})
        assert (r.json()["changes"][0]["action"], r.json()["changes"][0]["count"]) == (
            "handed_over", 1), r.text


async def test_a_leavers_customers_are_shared_evenly_among_colleagues(make) -> None:
    """Ben leaves north with 9 customers there (2 at high risk, 3 at medium) and one at south.
    Shared among Li, Mo and Ada (all north): each gets three, Li and Mo one at
    high risk each, the medium ones one each; south's customer is kept (none works there) and
    his open alert goes with its customer. Then Sol (south) and Li share what is left: south's
    to Sol. Bad requests change nothing."""
    settings, seed, redis = make()
    keys = seed.keys
    tiers = {"n-1": "high", "n-2": "high", "n-3": "medium", "n-4": "medium", "n-5": "medium",
             "n-6": "low", "n-7": "low", "n-8": "low", "n-9": "low"}
    for cid, tier in tiers.items():
        await seed.customer(cid, tenant="acme", days_ago=[100, 130], tier=tier, store="north")
    await seed.customer("s-1", tenant="acme", days_ago=[100, 130], tier="high", store="south")
    async with api(settings) as client:
        for staff_id, store in (("ben", "north"), ("li", "north"), ("mo", "north"),
                                ("ada", "north"), ("sol", "south")):
            r = await client.put(f"/v1/staff/{staff_id}", headers=ACME, json={
                "staff_id": staff_id, "name": staff_id.title(), "store_id": store})
            assert r.status_code == 200, r.text
        for cid in [*tiers, "s-1"]:
            r = await client.put(f"/v1/customers/{cid}/profile", headers=ACME, json={
                "owner_staff_id": "ben", "store_id": "south" if cid == "s-1" else "north"})
            assert r.status_code == 200, r.text
        await ConsoleList(redis, keys).add("ben", "acme", "d-1", {
            "alert_id": "a" * 32, "customer_id": "n-1", "kind": "alert", "at_ms": 1})

        async def hand(body: dict[str, Any], key: dict[str, str] = ACME) -> httpx.Response:
            return await client.post("/v1/staff/ben/handover", headers=key, json=body)

        for bad, says in (({"share_among": ["li"]}, "at least 2"),
                          ({"share_among": ["li", "li"]}, "twice"),
                          ({"share_among": ["li", "mo"], "to_staff_id": None}, "not both"),
                          ({}, "to_staff_id is required"),
                          ({"share_among": ["li", "ben"]}, "someone else"),
                          ({"share_among": ["li", "nobody"]}, "PUT /v1/staff/nobody")):
            r = await hand(bad)
            assert r.status_code == 422 and says in r.text, (bad, r.text)
        r = await hand({"share_among": ["li", "sol"]}, NORTH_ADMIN)  # sol: south's staff
        assert r.status_code == 403, r.text
        assert len((await client.get("/v1/staff/ben/customers", headers=ACME)).json()[
            "customers"]) == 10  # nothing moved

        r = await hand({"share_among": ["li", "mo", "ada"]})
        assert r.status_code == 200, r.text
        assert r.json() == {"moved": 9, "kept": ["s-1"], "alerts_moved": 1, "not_owned": [],
                            "shares": {"li": 3, "mo": 3, "ada": 3}}, r.text
        got = {}
        for staff_id in ("li", "mo", "ada"):
            r = await client.get(f"/v1/staff/{staff_id}/customers", headers=ACME)
            got[staff_id] = [tiers[c["customer_id"]] for c in r.json()["customers"]]
        assert sorted(got["li"]).count("high") == 1 and got["mo"].count("high") == 1, got
        assert all(t.count("medium") == 1 for t in got.values()), got
        owner_of_n1 = json.loads(await redis.get(keys.profile("n-1", "acme")))["owner_staff_id"]
        assert set(await redis.hkeys(keys.inbox(owner_of_n1, "acme"))) == {"d-1"}
        r = await hand({"share_among": ["sol", "li"]})
        assert r.json() == {"moved": 1, "kept": [], "alerts_moved": 0, "not_owned": [],
                            "shares": {"sol": 1, "li": 0}}, r.text
        assert (await hand({"share_among": ["sol", "li"]})).json()["moved"] == 0
        r = await client.get("/v1/team/changes", headers=ACME, params={"limit": 5})
        assert [(c["action"], c["to_staff_id"], c["count"], c["stores"])
                for c in r.json()["changes"] if c["action"] == "handed_over"] == [
            ("handed_over", "sol", 1, ["south"]), ("handed_over", "ada", 3, ["north"]),
            ("handed_over", "mo", 3, ["north"]), ("handed_over", "li", 3, ["north"])], r.text


async def test_a_pos_still_naming_a_leaver_does_not_undo_a_hand_over(make) -> None:
    """Ben left north and his customers were handed to Li; the POS's records still name Ben.
    Its nightly PUTs (and a PATCH naming him) change the e-mail but keep Li as the owner, and
    say so in the answer. Where nobody on the team owns the customer, what the POS names is
    written. Once Ben is on the team again, naming him moves the customer back. Someone
    removed before leavers were remembered is known from the team log when the API starts."""
    settings, seed, redis = make()
    keys = seed.keys
    for staff_id in ("old", "back"):  # removed as an earlier version logged it; back re-added
        await redis.lpush(keys.team_log("acme"), json.dumps({
            "at_ms": 1, "what": "staff", "id": staff_id, "action": "removed", "fields": [],
            "by": "m-1", "stores": ["north"], "name": staff_id.title()}))
    await redis.hset(keys.staff("acme"), "back", json.dumps({"staff_id": "back"}))
    await redis.sadd(keys.tenants, "acme")
    async with api(settings) as client:
        for _ in range(500):  # the API reads the team log in the background when it starts
            if await redis.sismember(keys.former_staff("acme"), "old"):
                break
            await asyncio.sleep(0.01)
        assert await redis.smembers(keys.former_staff("acme")) == {"old"}
        for staff_id in ("ben", "li"):
            r = await client.put(f"/v1/staff/{staff_id}", headers=ACME, json={
                "staff_id": staff_id, "name": staff_id.title(), "store_id": "north"})
            assert r.status_code == 200, r.text

        async def pos(cid: str, owner: str | None, email: str) -> dict[str, Any]:
            r = await client.put(f"/v1/customers/{cid}/profile", headers=ACME, json={
                "store_id": "north", "owner_staff_id": owner, "email": email})
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        async def owners() -> dict[str, list[str]]:
            out = {}
            for staff_id in ("ben", "li"):
                r = await client.get(f"/v1/staff/{staff_id}/customers", headers=ACME)
                out[staff_id] = [c["customer_id"] for c in r.json()["customers"]]
            return out

        for cid in ("c-1", "c-2"):
            await pos(cid, "ben", f"{cid}@example.com")
        await pos("c-3", "sol", "c-3@example.com")  # sol: never on the team
        assert (await client.delete("/v1/staff/ben", headers=ACME)).status_code == 204
        r = await client.post("/v1/staff/ben/handover", headers=ACME, json={"to_staff_id": "li"})
        assert r.json()["moved"] == 2, r.text
        # the nightly sync: the e-mail changes, the owner stays Li
        got = await pos("c-1", "ben", "new@example.com")
        assert (got["owner_staff_id"], got["email"]) == ("li", "new@example.com"), got
        r = await client.patch("/v1/customers/c-2/profile", headers=ACME,
                               json={"owner_staff_id": "ben", "phone": "+14155550100"})
        assert r.status_code == 200, r.text
        assert (r.json()["owner_staff_id"], r.json()["phone"]) == ("li", "+14155550100")
        assert await owners() == {"ben": [], "li": ["c-1", "c-2"]}
        entries = (await client.get("/v1/customers/c-1/timeline", headers=ACME)).json()["entries"]
        assert [e["data"]["fields"] for e in entries if e["kind"] == "profile_change"][0] == [
            "email"], entries
        # nobody on the team owns c-3 (sol never was), c-4 has no owner: the POS's word is taken
        assert (await pos("c-3", "ben", "c-3@example.com"))["owner_staff_id"] == "ben"
        assert (await pos("c-4", "ben", "c-4@example.com"))["owner_staff_id"] == "ben"
        # Ben back on the team: naming him is meant
        r = await client.put("/v1/staff/ben", headers=ACME, json={
            "staff_id": "ben", "name": "Ben", "store_id": "north"})
        assert r.status_code == 200, r.text
        assert (await pos("c-1", "ben", "new@example.com"))["owner_staff_id"] == "ben"
        assert await owners() == {"ben": ["c-1", "c-3", "c-4"], "li": ["c-2"]}
        assert (await pos("c-2", "old", "c-2@example.com"))["owner_staff_id"] == "li"


async def test_a_customer_given_to_another_owner_takes_their_open_alerts_along(make) -> None:
    """Not only a hand-over: a POS's profile PUT naming another stylist, a PATCH taking the
    owner away and a manager's "give" on the customer's page move the alerts the former owner
    had not acknowledged about that customer to whoever receives them now (the new owner; the
    store's manager for nobody), their escalations waiting for the new owner's own window
    (none for alerts the manager now holds); a first owner takes those the manager received
    while the customer had none."""
    settings, seed, redis = make()
    keys = seed.keys
    async with api(settings) as client:
        for staff_id in ("ben", "li", "mo"):
            r = await client.put(f"/v1/staff/{staff_id}", headers=ACME,
                                 json={"staff_id": staff_id, "store_id": "north"})
            assert r.status_code == 200, r.text
        r = await client.put("/v1/stores/north", headers=ACME,
                             json={"store_id": "north", "manager_staff_id": "mo"})
        assert r.status_code == 200, r.text
        for cid, store in (("c-1", "north"), ("c-2", "north"), ("c-3", None), ("c-9", "north")):
            r = await client.put(f"/v1/customers/{cid}/profile", headers=ACME,
                                 json={"owner_staff_id": "ben", "store_id": store})
            assert r.status_code == 200, r.text
        await redis.hset(keys.state("c-3", "acme"), "store", "north")  # type: ignore[misc]
        inbox = ConsoleList(redis, keys)
        ids = {f: f[0] * 32 for f in ("a1", "b2", "c3", "d4", "e9")}
        for field, cid in (("a1", "c-1"), ("b2", "c-1"), ("c3", "c-2"), ("d4", "c-3"),
                           ("e9", "c-9")):
            await inbox.add("ben", "acme", field, {"alert_id": ids[field], "customer_id": cid,
                                                   "kind": "alert", "at_ms": 1})
        await redis.set(keys.ack(ids["b2"], "acme"), json.dumps({"by": "ben", "at": 1.0}))
        await redis.zadd(keys.escalation_queue, dict.fromkeys(ids.values(), 9e12))

        async def held(staff_id: str) -> set[str]:  # the fields of their console list
            return set(await redis.hkeys(keys.inbox(staff_id, "acme")))  # type: ignore[misc]

        async def marks() -> dict[str, bool]:
            raw = await redis.hgetall(keys.escalation_handed)  # type: ignore[misc]
            return {k[0] + k[-1]: json.loads(v)["manager"] for k, v in raw.items()}

        # the POS names Li now: c-1's open alert is hers, the acknowledged one stays Ben's
        r = await client.put("/v1/customers/c-1/profile", headers=ACME,
                             json={"owner_staff_id": "li", "store_id": "north"})
        assert r.status_code == 200, r.text
        assert await held("li") == {"a1"}
        assert await marks() == {"aa": False}
        r = await client.put("/v1/customers/c-1/profile", headers=ACME,  # the same again
                             json={"owner_staff_id": "li", "store_id": "north", "name": "Cy"})
        assert await held("li") == {"a1"}
        # owner taken away: the store's manager receives c-2's alerts, and holds this one
        r = await client.patch("/v1/customers/c-2/profile", headers=ACME,
                               json={"owner_staff_id": None})
        assert r.status_code == 200, r.text
        assert await held("mo") == {"c3"}
        assert await marks() == {"aa": False, "cc": True}
        # a manager gives c-3 (its store known from its events) to nobody on its page
        assert await profilelog.give(redis, keys, "acme", ["c-3"], None, by="mo") == ["c-3"]
        assert await held("mo") == {"c3", "d4"}
        assert await marks() == {"aa": False, "cc": True, "dd": True}
        assert await held("ben") == {"b2", "e9"}  # c-9 his
        # an owner given to a customer who had none takes the alerts the manager received
        # about them meanwhile; the manager keeps what was theirs as the manager (an
        # escalation), and the moved alert's escalation waits for the new owner's window
        await inbox.add("mo", "acme", "f5", {"alert_id": "f" * 32, "customer_id": "c-2",
                                             "kind": "escalation", "at_ms": 2})
        r = await client.patch("/v1/customers/c-2/profile", headers=ACME,
                               json={"owner_staff_id": "li"})
        assert r.status_code == 200, r.text
        assert await held("mo") == {"d4", "f5"}
        assert await held("li") == {"a1", "c3"}
        assert await marks() == {"aa": False, "cc": False, "dd": True}
        # the same on a customer's page: Mo gives c-3 (nobody's) to Li
        assert await profilelog.give(redis, keys, "acme", ["c-3"], "li", by="mo") == ["c-3"]
        assert await held("mo") == {"f5"}
        assert await held("li") == {"a1", "c3", "d4"}
        assert await marks() == {"aa": False, "cc": False, "dd": False}
        # Mo, the manager, taking one himself keeps what he holds
        r = await client.put("/v1/customers/c-5/profile", headers=ACME,
                             json={"store_id": "north"})
        await inbox.add("mo", "acme", "g6", {"alert_id": "6" * 32, "customer_id": "c-5",
                                             "kind": "alert", "at_ms": 3})
        r = await client.patch("/v1/customers/c-5/profile", headers=ACME,
                               json={"owner_staff_id": "mo"})
        assert r.status_code == 200, r.text
        assert await held("mo") == {"f5", "g6"}


async def test_erasure_removes_everything_and_is_audited(make) -> None:
    settings, seed, redis = make()
    await seed.customer("gone", days_ago=[100, 130], tier="high", store="north")
    async with api(settings) as client:
        await client.put("/v1/customers/gone/profile", json={"store_id": "north"}, headers=INGEST)
        await client.post("/v1/customers/gone/actions", json={"action": "called",
                                                              "staff_id": "s"}, headers=INGEST)
        await redis.set(seed.keys.episode("gone"), "{}")  # the notifier alerted about them
        for _ in range(2):
            assert (await client.delete("/v1/customers/gone", headers=ADMIN)).status_code == 204
        assert (await client.get("/v1/customers/gone/risk", headers=READ)).status_code == 404
        assert (await client.get("/v1/customers/gone/timeline", headers=READ)).status_code == 404
    keys = seed.keys
    assert await redis.exists(*keys.customer_all("gone")) == 0
    for tier in TIERS:
        assert await redis.zscore(keys.tier_index(tier), customer_token("gone")) is None
        assert await redis.zscore(keys.tier_index(tier, "default", "north"),
                                  customer_token("gone")) is None
    assert await redis.zcard(keys.winback_index()) == 0
    audit = await redis.xrange(keys.audit())
    assert len(audit) == 2 and audit[0][1]["action"] == "erase_customer"
    assert "gone" not in json.dumps(audit) and audit[0][1]["by"] == "key1"


async def test_export_holds_everything_the_timeline_shows_and_is_audited(make) -> None:
    settings, seed, redis = make()
    keys = seed.keys
    await seed.customer("alice", tenant="acme", days_ago=[100, 130], tier="high", store="north")
    await seed.customer("bob", tenant="acme", days_ago=[10], store="south")
    alert = {"kind": "tier_change", "at": "2026-11-01T10:00:00Z", "id": "a" * 32,
             "from": "low", "to": "high"}
    await redis.lpush(keys.timeline("alice", "acme"), json.dumps(alert))
    await redis.lpush(keys.delivery_log("alice", "acme"), json.dumps(
        {"at": "2026-11-01T10:00:05Z", "channel": "email", "event_id": "a" * 32,
         "outcome": "delivered"}))
    await redis.set(keys.ack("a" * 32, "acme"), json.dumps({"by": "m-1", "at": "2026-11-01T11:00:00Z"}))
    await redis.set(keys.episode("alice", "acme"), json.dumps({"open": True, "rank": 2}))
    # a staff member's win-back form the console could not save (their session had ended)
    sessions = SessionStore(redis, keys, session_seconds=3600, link_seconds=900)
    await sessions.put_draft("a-session-id", "acme", Draft("alice", "called",
                                                           "Left a message about Friday"))
    # ...and an alert about her in a staff member's console list, as the notifier keeps it
    await ConsoleList(redis, keys).add("m-1", "acme", "d-1", {
        "alert_id": "a" * 32, "customer_id": "alice", "kind": "alert",
        "subject": "Alice Liddell: low -> high", "text": "Call her", "at_ms": 1_762_000_000_000})
    async with api(settings) as client:
        profile = {"name": "Alice Liddell", "email": "alice@example.com", "store_id": "north"}
        r = await client.put("/v1/customers/alice/profile", json=profile, headers=ACME)
        assert r.status_code == 200, r.text
        r = await client.post("/v1/customers/alice/actions", json={"action": "called",
                                                                  "staff_id": "m-1"}, headers=ACME)
        assert r.status_code in (200, 201), r.text
        r = await client.get("/v1/customers/alice/export", headers=ACME)
        assert r.status_code == 200, r.text
        doc = r.json()
        shown = await client.get("/v1/customers/alice/timeline", headers=ACME,
                                 params={"limit": 500})
        kinds = {e["kind"] for e in shown.json()["entries"]}
        # the API's own refusals: a store-bound admin key of another store, an unknown customer
        other = await client.get("/v1/customers/bob/export", headers=NORTH_ADMIN)
        unknown = await client.get("/v1/customers/nobody/export", headers=ACME)
        wrong_tenant = await client.get("/v1/customers/alice/export", headers=ADMIN)
    schema = json.loads((Path(__file__).parents[2] / "schemas/customer_export.schema.json")
                        .read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["found"] and doc["customer_id"] == "alice" and doc["tenant_id"] == "acme"
    assert doc["profile"]["name"] == "Alice Liddell"
    assert doc["state"]["tier"] == "high" and doc["state"]["risk"]["reasons"]
    assert sorted(e["event_id"] for e in doc["events"]) == ["alice-0", "alice-1"]
    assert {"tier_change", "staff_action"} <= {e["kind"] for e in doc["timeline"]}
    assert doc["notifications"][0]["channel"] == "email"
    assert doc["staff_actions"][0]["action"] == "called"
    assert doc["acknowledgements"] == {"a" * 32: {"by": "m-1", "at": "2026-11-01T11:00:00Z"}}
    assert doc["alert_episode"] == {"open": True, "rank": 2}
    [draft] = doc["console_drafts"]  # staff's words about the customer are theirs to see
    assert (draft["action"], draft["note"]) == ("called", "Left a message about Friday")
    assert draft["kept_until"] > doc["exported_at"] and "a-session-id" not in json.dumps(doc)
    assert doc["staff_alert_lists"] == [{
        "alert_id": "a" * 32, "kind": "alert", "subject": "Alice Liddell: low -> high",
        "text": "Call her", "at": "2025-11-01T12:26:40Z"}]  # whose list: left out
    assert doc["indexes"]["tier"] == "high"
    # every kind of entry the timeline shows is in the export too
    assert kinds <= {"activity", "notification"} | {e["kind"] for e in doc["timeline"]}
    assert other.status_code == 403
    assert unknown.status_code == 200 and unknown.json()["found"] is False
    assert wrong_tenant.json()["found"] is False  # another tenant's key sees nothing of acme's
    audit = await redis.xrange(keys.audit("acme"))
    assert [a[1]["action"] for a in audit].count("export_customer") == 2
    assert "alice" not in json.dumps(audit)


async def test_rate_limits_body_limits_and_errors_without_internals(make) -> None:
    settings, seed, redis = make(api_rate_limit_per_second=1, api_rate_limit_burst=3)
    await redis.hset(seed.keys.state("broken"), mapping={"risk": "{not json", "tier": "x"})
    async with api(settings) as client:
        codes = [(await client.get("/v1/customers/none/risk", headers=READ)).status_code
                 for _ in range(4)]
        assert codes[:3] == [404, 404, 404] and codes[3] == 429
        r = await client.get("/v1/customers/none/risk", headers=READ)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert (await client.get("/v1/customers/none/risk", headers=ADMIN)).status_code == 404
        big = {"name": "x", "segment": "y" * 100_000}
        r = await client.put("/v1/customers/b/profile", json=big, headers=INGEST)
        assert r.status_code == 413
        assert (await client.get("/v1/customers/x/risk")).status_code == 401
        assert (await client.get("/v1/analytics/churn")).status_code == 401
        assert (await client.get("/health")).status_code == 200
        r = await client.get("/v1/customers/broken/risk", headers=ADMIN,
                             params={}, )
        assert r.status_code == 500
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert "Traceback" not in r.text and "json" not in r.text.lower()
        long_id = "x" * 200
        assert (await client.get(f"/v1/customers/{long_id}/risk", headers=ADMIN)).status_code == 422
