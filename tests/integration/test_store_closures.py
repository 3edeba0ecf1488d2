"""A store's closed days do not count as its customers' silence, end to end: a school closed
for the summer, whose students were last seen when it closed, does not see them as gone, while
the same students at a school that stayed open are. Real broker, Redis, API and scorer
processes; the closures are written with ``PUT /v1/stores/{store_id}``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.common.kafka import start_producer
from services.common.profiles import CustomerProfile, ProfileStore, Store
from services.common.redisconn import Keys, make_redis
from services.common.timefmt import now_ms
from services.records import owners
from services.records.atrisk import tenant_stores
from services.records.profiles import patch_profile
from services.scorer.processor import Processor, Record
from services.scoring.engine import Engine
from services.scoring.model import load_model
from services.state.store import StateStore, look_again_soon, read_states
from services.training.dataset import read_stores
from tests.data import iso
from tests.integration.test_notifier import wait_until
from tests.integration.test_scorer import scorer, wait_processed
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration

KEYS = ("ingest-secret-1:ingest,reader-secret-1:read,admin-secret-1:admin,"
        "one-secret-1:ingest+read+admin@oneschool,late-secret-1:ingest+read+admin@lateschool,"
        "two-secret-1:ingest+read+admin@twoschools")
INGEST = {"Authorization": "Bearer ingest-secret-1"}
READ = {"Authorization": "Bearer reader-secret-1"}
ADMIN = {"Authorization": "Bearer admin-secret-1"}
ONE = {"Authorization": "Bearer one-secret-1"}  # a tenant with a single school
LATE = {"Authorization": "Bearer late-secret-1"}  # one whose school is entered afterwards
TWO = {"Authorization": "Bearer two-secret-1"}  # two schools, a student's on their profile
BERLIN = ZoneInfo("Europe/Berlin")  # every school's time zone here


class _Feed:
    """Hands a processor events as the records of partition 0, offsets counting on."""

    def __init__(self, topic: str):
        self.topic, self.offset = topic, 0

    async def apply(self, proc: Processor, events: list[dict[str, Any]]) -> None:
        records = [Record(self.topic, 0, self.offset + i, e["customer_id"].encode(),
                          json.dumps(e).encode()) for i, e in enumerate(events)]
        self.offset += len(records)
        await proc.process(records)


def _student(cid: str, store: str | None, last: datetime) -> list[dict[str, Any]]:
    """Two classes a week for half a year, the last one at ``last`` (at ``store``, or at
    none named)."""
    return [{"event_id": f"{cid}-{i}", "type": "visit", "customer_id": cid,
             "occurred_at": iso(last - timedelta(days=3.5 * i)),
             **({"store_id": store} if store else {})}
            for i in range(52)]


async def test_a_closed_store_s_customers_are_not_seen_as_gone(settings_factory,
                                                               tmp_path: Path) -> None:
    settings = settings_factory(api_keys=KEYS, api_rate_limit_per_second=0)
    now = datetime.now(UTC)
    last = now - timedelta(days=45)  # the last class, the evening before the break
    # the schools' days are Berlin's (from 22:00 UTC the UTC date is the day before)
    first_closed = (last.astimezone(BERLIN) + timedelta(days=1)).date()
    break_ = {"first": first_closed.isoformat(),
              "last": (now + timedelta(days=10)).date().isoformat(), "note": "summer break"}
    events = _student("ana", "closed-school", last) + _student("ben", "open-school", last)
    # a student of the closed school who stopped coming a month before it closed
    events += _student("cy", "closed-school", now - timedelta(days=75))
    stored: dict[str, Any] = {}
    as_of: dict[str, Any] = {}
    redis = make_redis(settings)
    try:
        with scorer(settings, tmp_path), ServiceProcess(
                "api", settings, tmp_path / "api.log", health_port_setting="api_port") as api:
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                # what to fix, said plainly; nothing stored
                r = await client.put("/v1/stores/closed-school", headers=ADMIN, json={
                    "timezone": "Europe/Berlin",
                    "closures": [{"first": "2026-08-31", "last": "2026-07-01"}]})
                assert r.status_code == 422, r.text
                assert "must not be before first" in r.text
                r = await client.put("/v1/stores/closed-school", headers=ADMIN, json={
                    "timezone": "Europe/Berlin", "closures": [break_], "never_closes": True})
                assert r.status_code == 422, r.text
                assert "a store that never closes has no closures" in r.text
                r = await client.put("/v1/stores/closed-school", headers=ADMIN, json={
                    "timezone": "Europe/Berlin", "closures": [break_]})
                assert r.status_code == 200, r.text
                assert r.json()["closures"] == [break_]
                r = await client.get("/v1/stores/closed-school", headers=READ)
                assert r.json()["closures"] == [break_]
                # GET /v1/stores, saved, is what `churnwatch train --stores` reads
                r = await client.put("/v1/stores/open-school", headers=ADMIN,
                                     json={"timezone": "Europe/Berlin"})
                assert r.status_code == 200, r.text
                r = await client.get("/v1/stores", headers=READ)
                assert r.json()["count"] == 2, r.text
                saved = tmp_path / "stores.json"
                saved.write_bytes(r.content)
                book = read_stores(saved)
                assert set(book.closures) == {"closed-school"}, book
                assert set(book.zones) == {"closed-school", "open-school"}, book
                r = await client.post("/v1/events", json=events, headers=INGEST)
                assert r.status_code == 202, r.text
                # a school on its own, whose register names no store: its one store's break
                r = await client.put("/v1/stores/the-school", headers=ONE, json={
                    "timezone": "Europe/Berlin", "closures": [break_]})
                assert r.status_code == 200, r.text
                alone = _student("dee", None, last)
                r = await client.post("/v1/events", json=alone, headers=ONE)
                assert r.status_code == 202, r.text
                late = _student("fay", None, last)
                r = await client.post("/v1/events", json=late, headers=LATE)
                assert r.status_code == 202, r.text
                # two schools, a register that names neither: the profile says which
                for store, body in (("north", {"closures": [break_]}), ("south", {})):
                    r = await client.put(f"/v1/stores/{store}", headers=TWO,
                                         json={"timezone": "Europe/Berlin", **body})
                    assert r.status_code == 200, r.text
                r = await client.put("/v1/customers/gil/profile", headers=TWO,
                                     json={"store_id": "north"})
                assert r.status_code == 200, r.text
                two = _student("gil", None, last) + _student("hal", None, last)
                r = await client.post("/v1/events", json=two, headers=TWO)
                assert r.status_code == 202, r.text
                await wait_processed(redis, settings,
                                     len(events) + len(alone) + len(late) + len(two))
                for cid in ("gil", "hal"):
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=TWO)
                    assert r.status_code == 200, r.text
                    stored[cid] = r.json()
                # hal's profile comes after his classes: a read as of now counts the break
                r = await client.put("/v1/customers/hal/profile", headers=TWO,
                                     json={"store_id": "north"})
                assert r.status_code == 200, r.text
                for cid in ("gil", "hal"):
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=TWO,
                                         params={"as_of": iso(now)})
                    assert r.status_code == 200, r.text
                    as_of[cid] = r.json()
                # and the scorer's next sweep (1 s) makes north his store, with its break,
                # not his next look days later
                async def moved() -> Any:
                    found = (await client.get("/v1/customers/hal/risk", headers=TWO)).json()
                    return found if found["store_id"] == "north" else None

                stored["hal later"] = await wait_until(moved, what="hal in north")
                # scored before its school was entered: a read as of now counts the break
                r = await client.put("/v1/stores/the-other-school", headers=LATE, json={
                    "timezone": "Europe/Berlin", "closures": [break_]})
                assert r.status_code == 200, r.text
                r = await client.get("/v1/customers/fay/risk", headers=LATE,
                                     params={"as_of": iso(now)})
                assert r.status_code == 200, r.text
                as_of["fay"] = r.json()
                r = await client.get("/v1/customers/dee/risk", headers=ONE)
                assert r.status_code == 200, r.text
                stored["dee"] = r.json()
                r = await client.get("/v1/customers/dee/risk", headers=ONE,
                                     params={"as_of": iso(now)})
                as_of["dee"] = r.json()
                for cid in ("ana", "ben", "cy"):
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=READ)
                    assert r.status_code == 200, r.text
                    stored[cid] = r.json()
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=READ,
                                         params={"as_of": iso(now)})
                    assert r.status_code == 200, r.text
                    as_of[cid] = r.json()
    finally:
        await redis.aclose()

    # the open school's student: 45 days away from twice a week
    ben = stored["ben"]
    assert ben["features"]["days_since_last_activity"] > 44, ben
    assert ben["tier"] == "high", ben
    # the closed school's: the break does not count, only the evening before it did
    ana = stored["ana"]
    assert ana["features"]["days_since_last_activity"] < 2, ana
    assert ana["tier"] == "low", ana
    assert ana["score"] < ben["score"]
    # a read as of now counts the same days as the scorer
    assert as_of["ana"]["features"]["days_since_last_activity"] < 2, as_of["ana"]
    assert as_of["ana"]["tier"] == "low" and as_of["ben"]["tier"] == "high", as_of
    # the last visit is still shown as it was
    assert ana["last_event_at"].startswith(last.astimezone(BERLIN).date().isoformat()), ana

    # the one away before the break: at risk on the 30 open days, told on the calendar
    for cy in (stored["cy"], as_of["cy"]):
        assert cy["tier"] == "high", cy
        assert 29 < cy["features"]["days_since_last_activity"] < 32, cy
        [overdue] = [r for r in cy["reasons"] if r["code"] == "overdue"]
        m = re.fullmatch(r"(\d+) days since the last visit; usually every 4 days; the store was "
                         r"closed on (\d+) of those days", overdue["text"])
        assert m is not None and int(m[1]) in (74, 75, 76) and int(m[2]) in (43, 44, 45), overdue
        assert overdue["text_zh"].endswith(f"；其间门店休业{m[2]}天"), overdue

    # the single school's student, whose events name no store: the school's, and its break
    for dee in (stored["dee"], as_of["dee"]):
        assert dee["store_id"] == "the-school", dee
        assert dee["features"]["days_since_last_activity"] < 2, dee
        assert dee["tier"] == "low", dee
    # the chain's student whose profile names the closed school: its break is theirs
    for gil in (stored["gil"], as_of["gil"]):
        assert gil["store_id"] == "north", gil
        assert gil["tier"] == "low", gil
    # without a profile then, a student of no school is away 45 days; as of now, the break
    assert stored["hal"]["tier"] == "high" and stored["hal"]["store_id"] is None, stored["hal"]
    assert as_of["hal"]["tier"] == "low", as_of["hal"]
    assert as_of["hal"]["features"]["days_since_last_activity"] < 2, as_of["hal"]
    hal = stored["hal later"]
    assert (hal["store_id"], hal["tier"]) == ("north", "low"), hal
    fay = as_of["fay"]
    assert fay["store_id"] is None, fay  # until an event of theirs comes
    assert fay["features"]["days_since_last_activity"] < 2 and fay["tier"] == "low", fay


@pytest.mark.parametrize("redis_kind", ["standalone", "cluster"])
async def test_a_customer_whose_events_name_no_store_belongs_to_their_profile_s(
        request: pytest.FixtureRequest, redis_kind: str) -> None:
    """A chain of two schools whose register names no store: the store on a student's
    profile decides their closed days and becomes their store — at their next event (``kai``),
    or at the silence sweep when the profile came after their events (``ivy``), following the
    profile when it names another school. A student without a profile has no closures
    (``jon``). The processor against a real Redis and broker, under the event clock so that
    the sweep runs when it would have days later; on a Redis Cluster too."""
    factory = request.getfixturevalue(
        "cluster_settings_factory" if redis_kind == "cluster" else "settings_factory")
    settings = factory(topic_partitions=1, clock="event")
    now = datetime.now(UTC)
    last = now - timedelta(days=45)
    break_ = {"first": (last.astimezone(BERLIN) + timedelta(days=1)).date(),
              "last": (now + timedelta(days=10)).date()}
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    profiles = ProfileStore(redis, keys)
    producer = await start_producer(settings)
    feed = _Feed(settings.topic_events)

    async def state(cid: str) -> dict[str, str]:
        [row] = await read_states(redis, keys, [("default", cid)], ["tier", "store", "store_by"])
        return row

    try:
        await profiles.put_store(Store.model_validate(
            {"store_id": "north", "timezone": "Europe/Berlin", "closures": [break_]}))
        await profiles.put_store(Store.model_validate({"store_id": "south"}))
        await profiles.put_profile("kai", CustomerProfile(store_id="north"))
        proc = Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                         producer=producer, registry=CollectorRegistry(),
                         engine=Engine.from_settings(load_model(settings.model), settings))
        # the students' history, scored at their own last class; the chain's clock at "now"
        await feed.apply(proc, _student("ivy", None, last) + _student("jon", None, last)
                         + _student("kai", None, last)
                         + [{"event_id": f"{c}-1", "type": "visit", "customer_id": c,
                             "occurred_at": iso(now - timedelta(hours=1)), "store_id": "south"}
                            for c in ("x", "y")])  # two customers set the clock, not one
        assert (await state("kai"))["store"] == "north"  # at their events
        assert (await state("kai"))["store_by"] == "profile"
        assert "store" not in await state("ivy")
        await profiles.put_profile("ivy", CustomerProfile(store_id="north"))
        assert await proc.sweep([0]) >= 3  # 45 days later on the chain's clock
        ivy, jon, kai = await state("ivy"), await state("jon"), await state("kai")
        assert (ivy["tier"], ivy["store"], ivy["store_by"]) == ("low", "north", "profile"), ivy
        assert (kai["tier"], kai["store"]) == ("low", "north"), kai
        assert jon["tier"] == "high" and "store" not in jon, jon  # the break is not theirs

        # the profile names the other school: the next event moves them; a class that names
        # a store makes it theirs, whatever the profile says
        await profiles.put_profile("kai", CustomerProfile(store_id="south"))
        await profiles.put_profile("jon", CustomerProfile(store_id="south"))
        await feed.apply(proc, [
            {"event_id": "kai-n", "type": "visit", "customer_id": "kai",
             "occurred_at": iso(now - timedelta(minutes=30))},
            {"event_id": "jon-n", "type": "visit", "customer_id": "jon",
             "occurred_at": iso(now - timedelta(minutes=30)), "store_id": "north"}])
        kai, jon = await state("kai"), await state("jon")
        assert (kai["store"], kai["store_by"]) == ("south", "profile"), kai
        assert jon["store"] == "north" and "store_by" not in jon, jon
    finally:
        await producer.stop()
        await redis.aclose()


async def test_a_profile_s_store_is_theirs_in_a_tenant_with_no_store_on_record(
        settings_factory) -> None:
    """A chain whose register names no store and which never entered its stores, only each
    customer's store on their profile: a customer takes their profile's store (its lists);
    a profile written before the mark existed counts once the API's start looks through them
    (:func:`~services.records.owners.note_profile_stores`); a patch naming a store marks the
    tenant too, and the sweep's next look moves the customer (as the API asks after such a
    write). The processor against a real Redis and broker, under the event clock."""
    settings = settings_factory(topic_partitions=1, clock="event")
    now = datetime.now(UTC)
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    profiles = ProfileStore(redis, keys)
    producer = await start_producer(settings)
    feed = _Feed(settings.topic_events)

    async def state(cid: str, tenant: str = "default") -> dict[str, str]:
        [row] = await read_states(redis, keys, [(tenant, cid)], ["store", "store_by"])
        return row

    def processor() -> Processor:
        return Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                         producer=producer, registry=CollectorRegistry(),
                         engine=Engine.from_settings(load_model(settings.model), settings))

    try:
        # the default tenant: profiles written by this version mark it
        await profiles.put_profile("lea", CustomerProfile(store_id="north"))
        assert await redis.get(keys.profile_stores()) == "1"
        # the old tenant: a profile written before the mark existed, none marked yet
        await redis.set(keys.profile("max", "old"), json.dumps({"store_id": "east"}))
        await owners.note_profile_stores(redis, keys, "old")
        assert await redis.get(keys.profile_stores("old")) == "1"
        # a tenant whose profiles name no store is looked through once, and a patch marks it
        await profiles.put_profile("ned", CustomerProfile(name="Ned"), "plain")
        await owners.note_profile_stores(redis, keys, "plain")
        assert await redis.get(keys.profile_stores("plain")) == "0"
        proc = processor()
        await feed.apply(proc, [
            {"event_id": f"{c}-{i}", "type": "visit", "customer_id": c,
             "occurred_at": iso(now - timedelta(days=10 * i)),
             **({"tenant_id": t} if t != "default" else {})}
            for c, t in (("lea", "default"), ("max", "old"), ("ned", "plain")) for i in range(3)])
        assert (await state("lea"))["store"] == "north", await state("lea")
        assert (await state("lea"))["store_by"] == "profile"
        assert (await state("max", "old"))["store"] == "east"
        assert "store" not in await state("ned", "plain")
        lists = [await redis.zrange(keys.tier_index(tier, "default", "north"), 0, -1)
                 for tier in ("low", "medium", "high")]
        assert sum(map(len, lists)) == 1, lists  # lea is on her store's list

        await patch_profile(redis, keys, "plain", "ned", {"store_id": "west"}, by="test")
        assert await redis.get(keys.profile_stores("plain")) == "1"
        # as the API does after a write naming another store: the next sweep moves him
        await look_again_soon(redis, keys, "ned", tenant="plain", partitions=1,
                              now_ms=await now_ms(settings, redis, keys, "plain"))
        proc = processor()  # (a running scorer reads the mark within 5 s)
        assert await proc.sweep([0]) == 1
        assert (await state("ned", "plain"))["store"] == "west"
        # the tenant's stores (the console's and the at-risk list's) name it, tier changed
        # or not
        assert await tenant_stores(redis, keys, "plain") == ["west"]
    finally:
        await producer.stop()
        await redis.aclose()


async def test_a_school_without_closed_days_on_record_is_warned(settings_factory,
                                                                caplog: pytest.LogCaptureFixture,
                                                                tmp_path: Path) -> None:
    """A tenant judged as a ``school`` whose stores have no closed days on record: its summer
    would read as every student leaving, so the scorer says so in its log, once while the
    stores lacking them stay the same, and counts the tenant in
    ``churnwatch_scorer_tenants_without_closures`` (a worker started since, too, before any
    event); with a closure on record it does neither, until
    its students' events name a store that has none. A student of such a store, away, is said
    to be at one without closed days on record, until it is recorded as never closing; one
    of no store, to belong to none (also as read by the API). The processor against a real Redis and
    broker."""
    settings = settings_factory(topic_partitions=1, business_type="school", api_keys=KEYS,
                                api_rate_limit_per_second=0)
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    producer = await start_producer(settings)
    registry = CollectorRegistry()
    proc = Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                     producer=producer, registry=registry,
                     engine=Engine.from_settings(load_model(settings.model), settings))
    feed = _Feed(settings.topic_events)

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if "judged as a school" in r.getMessage()]

    async def visits(n: int, **fields: Any) -> float | None:
        for _ in range(n):
            await feed.apply(proc, [{"event_id": f"s-{feed.offset}", "type": "visit",
                                     "customer_id": "s", "occurred_at": iso(datetime.now(UTC)),
                                     **fields}])
            proc._zones_read.clear()  # read the stores again, as 5 s later
        return registry.get_sample_value("churnwatch_scorer_tenants_without_closures")

    try:
        await ProfileStore(redis, keys).put_store(Store(store_id="north"))
        caplog.clear()
        assert await visits(2) == 1
        [said] = warned()
        assert "no closed day is on record for its store north;" in said
        assert "PUT /v1/stores/{store_id}" in said
        # a worker started since (a restart over the school's break) counts it too, before
        # any event of the tenant reaches it: from its gauges' refresh
        restarted = CollectorRegistry()
        await Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                        producer=producer, registry=restarted,
                        engine=Engine.from_settings(load_model(settings.model), settings)
                        ).refresh_gauges({})
        assert restarted.get_sample_value("churnwatch_scorer_tenants_without_closures") == 1
        await ProfileStore(redis, keys).put_store(Store.model_validate(
            {"store_id": "north", "closures": [{"first": "2026-07-01", "last": "2026-08-31"}]}))
        caplog.clear()
        assert await visits(2) == 0 and not warned()
        # a student at a store the events name, with no record: it has no closed days either
        assert await visits(2, customer_id="w", store_id="west") == 1
        [said] = warned()
        assert "for its store west;" in said, said
        # and the staff texted about a student of west read why a break may be behind it;
        # north's, whose closed days are on record (last summer), read the days alone
        away = datetime.now(UTC) - timedelta(days=30)
        await feed.apply(proc, _student("wes", "west", away) + _student("nor", "north", away))
        for cid, hinted in (("wes", True), ("nor", False)):
            [row] = await read_states(redis, keys, [("default", cid)], ["tier", "risk"])
            assert row["tier"] == "high", row
            [overdue] = [r for r in json.loads(row["risk"])["reasons"]
                         if r["code"] == "overdue"]
            assert overdue["text"].endswith("; their store has no closed days on record") \
                is hinted, overdue
            assert overdue["text_zh"].endswith("；其门店尚未记录停业日期") is hinted, overdue
        # west is an online course, which never closes: so recorded, nothing is missing, and
        # its student's reasons (scored again with a late event) say nothing of closed days
        await ProfileStore(redis, keys).put_store(Store(store_id="west", never_closes=True))
        proc._zones_read.clear()
        caplog.clear()
        assert await visits(1, customer_id="w", store_id="west") == 0 and not warned()
        await feed.apply(proc, [{"event_id": "wes-late", "type": "visit", "customer_id": "wes",
                                 "occurred_at": iso(away - timedelta(hours=1)),
                                 "store_id": "west"}])
        [row] = await read_states(redis, keys, [("default", "wes")], ["tier", "risk"])
        assert row["tier"] == "high", row
        reasons = json.loads(row["risk"])["reasons"]
        assert any(r["code"] == "overdue" for r in reasons), reasons
        assert not any("on record" in r["text"] for r in reasons), reasons
        # a student of no store (two stores on record, none named, no profile): what to fix is
        # their store, not a store's closed days; a read as of now (the API) says the same
        await feed.apply(proc, _student("nob", None, away))
        [row] = await read_states(redis, keys, [("default", "nob")], ["tier", "risk", "store"])
        assert row["tier"] == "high" and not row.get("store"), row
        no_store = ("; no store is on record for them, so no closed days count",
                    "；尚未记录其所属门店，停业日期无法计入")
        with ServiceProcess("api", settings, tmp_path / "api.log",
                            health_port_setting="api_port") as api:
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                r = await client.get("/v1/customers/nob/risk", headers=READ,
                                     params={"as_of": iso(datetime.now(UTC))})
                assert r.status_code == 200, r.text
                read_now = r.json()
                r = await client.get("/v1/customers/wes/risk", headers=READ,
                                     params={"as_of": iso(datetime.now(UTC))})
                wes_now = r.json()
        for risk in (json.loads(row["risk"]), read_now):
            [overdue] = [r for r in risk["reasons"] if r["code"] == "overdue"]
            assert (overdue["text"].endswith(no_store[0])
                    and overdue["text_zh"].endswith(no_store[1])), overdue
        assert not any("on record" in r["text"] for r in wes_now["reasons"]), wes_now
    finally:
        await producer.stop()
        await redis.aclose()
