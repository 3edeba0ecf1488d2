"""A customer's days are the shop's days, end to end: events POSTed with their local UTC offset
keep it through the API and the events topic, and the real scorer counts a visit and its
payment either side of 00:00 UTC as one day. Real broker, Redis, API and scorer processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.redisconn import Keys, make_redis
from services.state.store import read_states
from tests.integration.test_scorer import scorer, wait_processed
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
             ) -> tuple[list[dict[str, Any]], datetime]:
    """A weekly regular's 30 visits and payments, the last visit on ``last_day`` (a date),
    as the POS writes them: local times with the shop's offset. Returns the events and the
    instant, 23 days after the last visit at the same local time."""
    tz = timezone(timedelta(minutes=minutes))
    last = datetime(last_day.year, last_day.month, last_day.day, *clock, tzinfo=tz)
    events: list[dict[str, Any]] = []
    for w in range(30):
        at = last - timedelta(days=7 * (29 - w))
        events.append({"event_id": f"{cid}-v{w}", "type": "visit", "customer_id": cid,
                       "occurred_at": at.isoformat(), "store_id": cid})
        events.append({"event_id": f"{cid}-t{w}", "type": "transaction", "customer_id": cid,
                       "occurred_at": (at + timedelta(minutes=40)).isoformat(),
                       "store_id": cid, "amount": 45.0, "currency": "USD"})
    return events, last + timedelta(days=23)


async def test_a_weekly_regular_is_judged_the_same_in_every_time_zone(settings_factory,
                                                                      tmp_path: Path) -> None:
    settings = settings_factory(api_keys=KEYS, api_rate_limit_per_second=0)
    last_day = datetime.now(UTC) - timedelta(days=25)
    posted: list[dict[str, Any]] = []
    read_at: dict[str, datetime] = {}
    for cid, minutes, clock in SHOPS:
        events, at = _history(cid, minutes, clock, last_day)
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
                for cid in cids:
                    r = await client.get(f"/v1/customers/{cid}/risk", headers=READ,
                                         params={"as_of": read_at[cid].isoformat()})
                    assert r.status_code == 200, r.text
                    as_of[cid] = r.json()
            states = await read_states(redis, Keys(settings.redis_prefix),
                                       [("default", cid) for cid in cids], ["risk"])
    finally:
        await redis.aclose()

    stored = {cid: json.loads(st["risk"]) for cid, st in zip(cids, states, strict=True)}
    for cid in cids:
        features = stored[cid]["features"]
        # one active day a week, every week: a cadence of 7 days, not 3.5
        assert features["cadence_median_days"] == 7.0, (cid, features)
        assert features["active_days_365"] == 30.0, (cid, features)
        assert stored[cid]["tier"] == "low", (cid, stored[cid])
    # 23 days after the last visit, at the same local time: the same customer everywhere
    assert len({a["score"] for a in as_of.values()}) == 1, as_of
    assert {a["tier"] for a in as_of.values()} == {"low"}, as_of
