"""A customer's days are the shop's days, end to end: events POSTed with their local UTC offset
keep it through the API and the events topic, and the real scorer counts a visit and its
payment either side of 00:00 UTC as one day. Real broker, Redis, API and scorer processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from services.common.redisconn import Keys, make_redis
from services.state.store import read_states
from tests.data import iso
from tests.integration.test_scorer import scorer, wait_processed
from tests.kafkatools import produce_events
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration

KEYS = "ingest-secret-1:ingest,reader-secret-1:read"
INGEST = {"Authorization": "Bearer ingest-secret-1"}
READ = {"Authorization": "Bearer reader-secret-1"}
# (customer, UTC offset in minutes, the local time of the visit): in New York, Los Angeles and
# Tokyo the visit and its payment 40 minutes later fall either side of 00:00 UTC
SHOPS = (("london", 0, (12, 0)), ("new-york", -300, (18, 45)), ("los-angeles", -480, (15, 45)),
         ("tokyo", 540, (8, 50)))


def _history(cid: str, minutes: int, clock: tuple[int, int], last_day: datetime
             ) -> tuple[list[dict[str, Any]], datetime, str]:
    """A weekly regular's 30 visits and payments, the last visit on ``last_day`` (a date),
    as the POS writes them: local times with the shop's offset. Returns the events, the
    instant 23 days after the last visit at the same local time, and the last payment's
    time as written."""
    tz = timezone(timedelta(minutes=minutes))
    last = datetime(last_day.year, last_day.month, last_day.day, *clock, tzinfo=tz)
    events: list[dict[str, Any]] = []
    for w in range(30):
        at = last - timedelta(days=7 * (29 - w))
        events.append({"event_id": f"{cid}-v{w}", "type": "visit", "customer_id": cid,
                       "occurred_at": iso(at), "store_id": cid})
        events.append({"event_id": f"{cid}-t{w}", "type": "transaction", "customer_id": cid,
                       "occurred_at": iso(at + timedelta(minutes=40)),
                       "store_id": cid, "amount": 45.0, "currency": "USD"})
    return events, last + timedelta(days=23), events[-1]["occurred_at"]


async def test_a_weekly_regular_is_judged_the_same_in_every_time_zone(settings_factory,
                                                                      tmp_path: Path) -> None:
    settings = settings_factory(api_keys=KEYS, api_rate_limit_per_second=0)
    last_day = datetime.now(UTC) - timedelta(days=25)
    posted: list[dict[str, Any]] = []
    read_at: dict[str, datetime] = {}
    last_paid: dict[str, str] = {}
    for cid, minutes, clock in SHOPS:
        events, at, last_paid[cid] = _history(cid, minutes, clock, last_day)
        posted += events
        read_at[cid] = at
    cids = [cid for cid, _, _ in SHOPS]
    redis = make_redis(settings)
    try:
        with scorer(settings, tmp_path), ServiceProcess(
                "api", settings, tmp_path / "api.log", health_port_setting="api_port") as api:
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                r = await client.post("/v1/events", json=posted, headers=INGEST)
                assert r.status_code == 202, r.text
                await wait_processed(redis, settings, len(posted))
                as_of: dict[str, dict[str, Any]] = {}
                stored_reads: dict[str, dict[str, Any]] = {}
                for cid in cids:
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=READ)
                    assert r.status_code == 200, r.text
                    stored_reads[cid] = r.json()
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=READ,
                                         params={"as_of": read_at[cid].isoformat()})
                    assert r.status_code == 200, r.text
                    as_of[cid] = r.json()
                r = await client.get("/v1/customers/at-risk", headers=READ,
                                     params={"tier": "low"})
                assert r.status_code == 200, r.text
                listed = {i["customer_id"]: i for i in r.json()["items"]}
            states = await read_states(redis, Keys(settings.redis_prefix),
                                       [("default", cid) for cid in cids], ["risk", "tz"])
            # Tokyo's next order comes in UTC (straight to Kafka, as a web shop may write it):
            # the stored offset is the newest event's, so it goes
            web = {"event_id": "tokyo-web", "type": "transaction", "customer_id": "tokyo",
                   "occurred_at": iso(datetime.now(UTC) - timedelta(hours=1)), "amount": 20.0,
                   "channel": "online"}
            await produce_events(settings, [web])
            await wait_processed(redis, settings, len(posted) + 1)
            [tokyo_after] = await read_states(redis, Keys(settings.redis_prefix),
                                              [("default", "tokyo")], ["tz", "last_ts"])
    finally:
        await redis.aclose()

    stored = {cid: json.loads(st["risk"]) for cid, st in zip(cids, states, strict=True)}
    # the newest event's offset is kept for readers (none at 0), and follows the newest event
    assert [st.get("tz") for st in states] == [None, "-300", "-480", "540"]
    assert "tz" not in tokyo_after and "last_ts" in tokyo_after
    for cid in cids:
        features = stored[cid]["features"]
        # one active day a week, every week: a cadence of 7 days, not 3.5
        assert features["cadence_median_days"] == 7.0, (cid, features)
        assert features["active_days_365"] == 30.0, (cid, features)
        assert stored[cid]["tier"] == "low", (cid, stored[cid])
        # last seen as the shop wrote it: 19:25 on the evening of the visit in New York, not
        # 00:25 the next day in UTC (the console and the at-risk list show its date)
        assert stored_reads[cid]["last_event_at"] == last_paid[cid], stored_reads[cid]
        assert listed[cid]["last_event_at"] == last_paid[cid], listed[cid]
        assert as_of[cid]["last_event_at"] == last_paid[cid], as_of[cid]
    # 23 days after the last visit, at the same local time: the same customer everywhere
    assert len({a["score"] for a in as_of.values()}) == 1, as_of
    assert {a["tier"] for a in as_of.values()} == {"low"}, as_of


# (customer, store, its IANA zone, the local time of the visit): a POS writing every time in
# UTC; summer time ends on 1 November in both American zones, inside the history
ZONED = (("ny-z", "ny-5th", "America/New_York", (18, 45)),
         ("la-z", "la-melrose", "America/Los_Angeles", (15, 45)),
         ("tokyo-z", "tokyo-ginza", "Asia/Tokyo", (8, 50)))


def _history_in_utc(cid: str, store: str | None, zone: str, clock: tuple[int, int],
                    last_day: datetime, *, home: str) -> list[dict[str, Any]]:
    """The same weekly regular as ``_history``, each time written in UTC (``Z``); the
    payments name ``store``, the visits name none (the customer's store is ``home``)."""
    zi = ZoneInfo(zone)
    events: list[dict[str, Any]] = []
    for w in range(30):
        day = last_day - timedelta(days=7 * (29 - w))
        at = datetime(day.year, day.month, day.day, *clock, tzinfo=zi)
        visit: dict[str, Any] = {"event_id": f"{cid}-v{w}", "type": "visit", "customer_id": cid,
                                 "occurred_at": iso(at.astimezone(UTC))}
        if w == 0:
            visit["store_id"] = home  # the first event names the customer's store
        events.append(visit)
        pay: dict[str, Any] = {"event_id": f"{cid}-t{w}", "type": "transaction",
                               "customer_id": cid, "amount": 45.0, "currency": "USD",
                               "occurred_at": iso((at + timedelta(minutes=40)).astimezone(UTC))}
        if store is not None:
            pay["store_id"] = store
        events.append(pay)
    return events


async def test_a_pos_writing_utc_is_counted_on_its_stores_clock(settings_factory,
                                                                tmp_path: Path) -> None:
    """Many POS systems write every ``occurred_at`` in UTC. A store given a time zone through
    the API has its events at offset 0 counted on its own calendar days (summer time
    included), events naming no store on their customer's store's; an event written with
    another offset keeps it, and a store without a zone keeps UTC days."""
    settings = settings_factory(api_keys=KEYS + ",admin-secret-1:admin",
                                api_rate_limit_per_second=0)
    admin = {"Authorization": "Bearer admin-secret-1"}
    last_day = datetime.now(UTC) - timedelta(days=25)
    posted: list[dict[str, Any]] = []
    for cid, store, zone, clock in ZONED:
        posted += _history_in_utc(cid, store, zone, clock, last_day, home=store)
    # a New York regular of a store nobody gave a zone: UTC days, as before
    posted += _history_in_utc("ny-nozone", "ny-queens", "America/New_York", (18, 45), last_day,
                              home="ny-queens")
    # a New York store's customer whose online payments name no store: her store's clock
    posted += _history_in_utc("ny-online", None, "America/New_York", (18, 45), last_day,
                              home="ny-5th")
    # a POS that writes Tokyo's offset at a New York store: the written offset is kept
    tokyo_written, _, _ = _history("ny-tokyo-time", 540, (8, 50), last_day)
    for e in tokyo_written:
        e["store_id"] = "ny-5th"
    posted += tokyo_written
    cids = [c for c, *_ in ZONED] + ["ny-nozone", "ny-online", "ny-tokyo-time"]
    redis = make_redis(settings)
    try:
        with ServiceProcess("api", settings, tmp_path / "api.log",
                            health_port_setting="api_port") as api:
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                for _, store, zone, _ in ZONED:
                    r = await client.put(f"/v1/stores/{store}", headers=admin,
                                         json={"store_id": store, "timezone": zone})
                    assert r.status_code == 200, r.text
                r = await client.put("/v1/stores/ny-queens", headers=admin,
                                     json={"store_id": "ny-queens"})  # UTC, the default
                assert r.status_code == 200, r.text
                r = await client.post("/v1/events", json=posted, headers=INGEST)
                assert r.status_code == 202, r.text
                with scorer(settings, tmp_path):
                    await wait_processed(redis, settings, len(posted))
                reads = {}
                for cid in cids:
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=READ)
                    assert r.status_code == 200, r.text
                    reads[cid] = r.json()
            states = await read_states(redis, Keys(settings.redis_prefix),
                                       [("default", cid) for cid in cids], ["risk", "tz"])
    finally:
        await redis.aclose()

    features = {cid: json.loads(st["risk"])["features"] for cid, st in zip(cids, states, strict=True)}
    tz = {cid: st.get("tz") for cid, st in zip(cids, states, strict=True)}
    for cid in ("ny-z", "la-z", "tokyo-z", "ny-online", "ny-tokyo-time"):
        # one active day a week, every week, across the change of clocks
        assert features[cid]["cadence_median_days"] == 7.0, (cid, features[cid])
        assert features[cid]["active_days_365"] == 30.0, (cid, features[cid])
    # the store's offset at the last payment (summer time or not) is kept, and "last seen"
    # is written on the shop's clock
    last_paid = {e["customer_id"]: e["occurred_at"] for e in posted}  # the last, per customer
    for cid, zone in (("ny-z", "America/New_York"), ("la-z", "America/Los_Angeles"),
                      ("tokyo-z", "Asia/Tokyo"), ("ny-online", "America/New_York")):
        at = datetime.fromisoformat(last_paid[cid]).astimezone(ZoneInfo(zone))
        minutes = int(at.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
        assert tz[cid] == str(minutes), (cid, tz)
        assert reads[cid]["last_event_at"] == at.isoformat(), reads[cid]
    assert tz["ny-tokyo-time"] == "540", tz
    # without a zone the same New York evenings fall either side of 00:00 UTC in winter
    assert tz["ny-nozone"] is None
    assert features["ny-nozone"]["active_days_365"] > 30.0, features["ny-nozone"]
