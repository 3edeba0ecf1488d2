"""Staff marking a complaint resolved closes it in the data, as a POS's resolution event would:
real API and scorer processes, the real broker and Redis, over real HTTP.

Found in the console walkthrough: after "Complaint resolved" the customer's page still said
"Unresolved complaints: 1" and the score kept counting the complaint."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.common.embedded import free_port
from tests.data import T0, complaint, regular
from tests.integration.test_scorer import scorer, wait_processed
from tests.kafkatools import events_in, read_all
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration

KEYS = "ingest-secret-1:ingest,reader-secret-1:read"
INGEST = {"Authorization": "Bearer ingest-secret-1"}
READ = {"Authorization": "Bearer reader-secret-1"}


def _risk(url: str, cid: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/customers/{cid}/risk", headers=READ, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _open(url: str, cid: str) -> float:
    return float(_risk(url, cid)["features"]["open_complaints"])


def _until_open(url: str, cid: str, n: int, timeout: float = 30.0) -> dict[str, Any]:
    """The customer's risk once it counts ``n`` open complaints (not scored yet: not yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/v1/customers/{cid}/risk", headers=READ, timeout=10)
        if r.status_code == 200 and r.json()["features"]["open_complaints"] == n:
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"{cid} does not have {n} open complaints: {r.text}")


def test_complaint_resolved_closes_the_complaints_through_the_scorer(
        settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(api_keys=KEYS)
    last = T0 + timedelta(days=7 * 5)
    events = regular("kim", every_days=7, count=6) + [
        complaint("kim", last + timedelta(hours=1), 1, ref="cmp-1"),
        complaint("kim", last + timedelta(hours=2), 2)]  # no complaint_id: its event id is it
    api = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    with api, scorer(settings, tmp_path):
        url = api.url
        assert httpx.post(f"{url}/v1/events", json=events, headers=INGEST).status_code == 202
        before = _until_open(url, "kim", 2)
        assert any("unresolved" in r["text"].lower() for r in before["reasons"]), before
        days_before = _activity_days(url)

        def act(body: dict[str, Any]) -> httpx.Response:
            return httpx.post(f"{url}/v1/customers/kim/actions", headers=INGEST, timeout=30,
                              json={"staff_id": "mia", **body})

        wrong = act({"action": "called", "complaint_id": "cmp-1"})
        assert wrong.status_code == 422 and "complaint_resolved only" in wrong.text
        unknown = act({"action": "complaint_resolved", "complaint_id": "cmp-9"})
        assert unknown.status_code == 422, unknown.text
        assert "no open complaint 'cmp-9'" in unknown.text and "'cmp-1'" in unknown.text

        one = act({"action": "complaint_resolved", "complaint_id": "cmp-1", "note": "refund"})
        assert one.status_code == 201 and one.json()["resolved_complaints"] == ["cmp-1"], one.text
        _until_open(url, "kim", 1)
        rest = act({"action": "complaint_resolved"})
        assert rest.status_code == 201 and rest.json()["resolved_complaints"] == ["kim-c2"]
        after = _until_open(url, "kim", 0)
        assert not any("unresolved" in r["text"].lower() for r in after["reasons"]), after
        assert after["score"] < before["score"]
        again = act({"action": "complaint_resolved"})  # nothing open: recorded, nothing sent
        assert again.status_code == 201 and again.json()["resolved_complaints"] == []

        # the resolutions are on the events topic as a POS would send them, counted accepted
        sent = [e for e in events_in(asyncio.run(read_all(settings, settings.topic_events,
                                                          idle_ms=500)))
                if e["event_id"].startswith("resolved-")]
        assert sorted((e["complaint_id"], e["status"], e["type"]) for e in sent) == [
            ("cmp-1", "resolved", "complaint"), ("kim-c2", "resolved", "complaint")]
        assert {e["event_id"] for e in sent} == {
            f"resolved-{one.json()['action_id']}-0", f"resolved-{rest.json()['action_id']}-0"}
        # timed at the customer's newest event (after the complaint's), not now: the customer
        # did nothing, so last seen, their activity days and the complaint's age stay
        newest = last + timedelta(hours=2)
        assert sorted(datetime.fromisoformat(e["occurred_at"]) for e in sent) == [
            newest, newest + timedelta(milliseconds=1)]
        assert _activity_days(url) == days_before
        assert after["features"]["days_since_last_complaint"] == pytest.approx(
            before["features"]["days_since_last_complaint"], abs=0.01)
        status = httpx.get(f"{url}/v1/status", headers=READ).json()
        assert status["events_accepted_total"] == len(events) + 2
        timeline = httpx.get(f"{url}/v1/customers/kim/timeline", headers=READ).json()
        resolved = [e["data"].get("resolved_complaints") for e in timeline["entries"]
                    if e["kind"] == "staff_action"]
        assert sorted(map(str, resolved)) == sorted(map(str, [["cmp-1"], ["kim-c2"], []]))

        asyncio.run(_scored(settings, len(events) + 2))  # and scored, both
        new = complaint("kim", last + timedelta(hours=3), 3)
        assert httpx.post(f"{url}/v1/events", json=new, headers=INGEST).status_code == 202
        _until_open(url, "kim", 1)

    # the broker away: the resolution cannot be published, so nothing is recorded: a 503
    away = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}",
                                       "kafka_request_timeout_ms": 1000, "create_topics": False})
    with ServiceProcess("api", away, tmp_path / "api-away.log",
                        health_port_setting="api_port") as down:
        before_actions = _actions(down.url)
        r = httpx.post(f"{down.url}/v1/customers/kim/actions", headers=INGEST, timeout=30,
                       json={"action": "complaint_resolved", "staff_id": "mia"})
        assert r.status_code == 503 and "nothing was recorded" in r.text, r.text
        assert r.headers["retry-after"]
        assert _actions(down.url) == before_actions
        assert _open(down.url, "kim") == 1


async def _scored(settings: Any, n: int) -> None:
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        await wait_processed(redis, settings, n)
    finally:
        await redis.aclose()


def _activity_days(url: str) -> list[str]:
    timeline = httpx.get(f"{url}/v1/customers/kim/timeline", headers=READ, timeout=10).json()
    return sorted(e["at"][:10] for e in timeline["entries"] if e["kind"] == "activity")


def _actions(url: str) -> int:
    timeline = httpx.get(f"{url}/v1/customers/kim/timeline", headers=READ, timeout=10).json()
    return sum(e["kind"] == "staff_action" for e in timeline["entries"])
