"""The scorer worker as users run it (``churnwatch scorer``), against the real broker and Redis."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.common.events import epoch_ms
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.scoring.features import DAY_MS
from services.scoring.summary import Summary
from services.state.store import read_states
from tests.data import T0, by_time, complaint, regular
from tests.kafkatools import produce, produce_events, read_all
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration


def scorer(settings: Settings, tmp_path: Path, name: str = "scorer") -> ServiceProcess:
    return ServiceProcess("scorer", settings, tmp_path / f"{name}.log",
                          health_port_setting="scorer_metrics_port")


async def processed(redis: Redis, settings: Settings) -> int:
    """Events (single or in envelopes) and tombstones the scorer has committed: the events
    are ``/v1/status``'s ``events_scored_total``, the tombstones the stats' erasures."""
    keys = Keys(settings.redis_prefix)
    events = await redis.hget(keys.scored(settings.topic_events), "events")  # type: ignore[misc]
    erasures = await redis.hget(keys.stats, "erasures_total")  # type: ignore[misc]
    return int(events or 0) + int(erasures or 0)


async def wait_processed(redis: Redis, settings: Settings, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await processed(redis, settings) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"scorer processed {await processed(redis, settings)} of {n} records")


async def customer_state(redis: Redis, settings: Settings, cid: str) -> dict[str, Any]:
    """The customer's state as the store's readers see it (``st``: the hash's fields, ``sm``
    and ``risk``), its summary decoded (``summary``) and encoded (``sm``: equal summaries
    encode equally, whatever the arrival order)."""
    st = (await read_states(redis, Keys(settings.redis_prefix), [("default", cid)]))[0]
    blob = st.get("sm") or ""
    return {"st": st, "sm": blob, "summary": Summary.decode(blob) if blob else Summary.empty()}


def known(state: dict[str, Any], ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` the customer's summary remembers (applied)."""
    return {i for i in ids if state["summary"].knows(i)}


def held(state: dict[str, Any], events: Iterable[dict[str, Any]]) -> set[str]:
    """The ids of ``events`` (one customer's) that are in the customer's summary: remembered,
    or older than the id memory (30 days behind their newest event), which a summary cannot
    list — those are checked by the applied count instead."""
    summary = state["summary"]
    out = set()
    for e in events:
        old = summary.last_ts is not None and epoch_ms(
            datetime.fromisoformat(str(e["occurred_at"]).replace("Z", "+00:00"))
        ) < summary.last_ts - 30 * DAY_MS
        if old or summary.knows(e["event_id"]):
            out.add(e["event_id"])
    return out


def book() -> list[dict[str, Any]]:
    """Three regulars (one drifting away, one complaining) and a one-time buyer."""
    events = regular("steady", every_days=14, count=20)
    events += regular("drifter", every_days=10, count=12)
    events += regular("moaner", every_days=14, count=20)
    # at the last visit (day 266), not back since: an open serious complaint holds them
    events.append(complaint("moaner", T0 + timedelta(days=266, hours=2), 1, severity="high"))
    events += regular("once", every_days=1, count=1, start=T0 + timedelta(days=200))
    return by_time(events)


async def test_scores_dedupes_and_dead_letters(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(clock="event")
    redis = make_redis(settings)
    events = book()
    # Re-posted: every event within 30 days of its customer's newest (the summary remembers
    # their ids), and one far older (the tenant's id registry remembers it: a re-post).
    newest: dict[str, str] = {}
    for e in events:
        newest[e["customer_id"]] = max(newest.get(e["customer_id"], ""), e["occurred_at"])
    again = [e for e in events if datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
             >= datetime.fromisoformat(newest[e["customer_id"]].replace("Z", "+00:00"))
             - timedelta(days=30)]
    ancient = next(e for e in events if e["customer_id"] == "steady")
    with scorer(settings, tmp_path) as proc:
        await produce_events(settings, events)
        await wait_processed(redis, settings, len(events))
        await produce_events(settings, again + [ancient])
        await produce(settings, settings.topic_events, [
            (b"junk", b"{not json"),
            (b"x", json.dumps({"event_id": "bad-1", "type": "visit", "customer_id": "x",
                               "occurred_at": "yesterday"}).encode()),
        ])
        # An envelope holding a new event, a poison event and a non-object: the two are
        # dead-lettered alone, the event is applied; an envelope that is not JSON goes whole.
        fresh = {"event_id": "env-1", "type": "visit", "customer_id": "enveloped",
                 "occurred_at": events[-1]["occurred_at"]}
        poison = {**fresh, "event_id": "env-2", "occurred_at": "yesterday"}
        await produce(settings, settings.topic_events, [
            (b"enveloped", json.dumps({"version": 1, "events": [poison, fresh, 42]}).encode()),
            (b"enveloped", b'{"version": 1, "events": [tr'),
        ], headers=[("churnwatch-envelope", b"1")])
        total = len(events) + len(again) + 1 + 2 + 4
        await wait_processed(redis, settings, total)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{proc.url}/metrics")).text
    assert 'churnwatch_scorer_events_total{outcome="beyond_id_memory"}' not in metrics
    queryable = re.search(r"^churnwatch_scorer_event_to_queryable_seconds_count (\S+)$", metrics,
                          re.MULTILINE)
    assert queryable and float(queryable.group(1)) >= len(events), "latency not observed"

    stats = await redis.hgetall(Keys(settings.redis_prefix).stats)
    assert int(stats["events_applied_total"]) == len(events) + 1
    assert int(stats["events_duplicate_total"]) == len(again) + 1
    assert int(stats["events_dead_lettered_total"]) == 2 + 3

    dead = await read_all(settings, settings.topic_events_dlq, expect=5)
    by_reason = {dict(r.headers)["churnwatch-error"].decode(): r for r in dead}
    reasons = sorted(by_reason)
    assert len(dead) == 5
    assert reasons[0].startswith("envelope: not valid JSON")
    assert reasons[1].startswith("event 0 of the envelope") and "occurred_at" in reasons[1]
    assert reasons[2].startswith("event 2 of the envelope") and "JSON object" in reasons[2]
    assert reasons[3].startswith("not valid JSON")
    assert "occurred_at" in reasons[4]
    # an envelope's poison event is dead-lettered alone, and says where it came from
    alone = by_reason[reasons[1]]
    assert json.loads(alone.value) == poison
    assert dict(alone.headers)["churnwatch-source"].decode().endswith("/0")
    assert by_reason[reasons[0]].value == b'{"version": 1, "events": [tr'
    assert (await customer_state(redis, settings, "enveloped"))["st"]["tier"]

    moaner = json.loads((await customer_state(redis, settings, "moaner"))["st"]["risk"])
    steady = json.loads((await customer_state(redis, settings, "steady"))["st"]["risk"])
    assert moaner["tier"] in ("medium", "high")
    # a rule may hold the tier above the score's own: then the first reason says which
    own = [r["code"] for r in moaner["reasons"] if not r["code"].startswith("tier_")]
    assert own[0] == "open_complaint"
    assert moaner["reasons"][0]["code"] in ("open_complaint", "tier_raised_by_rule")
    assert steady["tier"] == "low"
    steady = [e for e in events if e["customer_id"] == "steady"]
    assert len(steady) == 40
    assert held(await customer_state(redis, settings, "steady"), steady) == \
        {e["event_id"] for e in steady}

    changes = await read_all(settings, settings.topic_risk_changes)
    assert changes, "expected at least one risk change"
    kinds = []
    for rec in changes:
        ce = json.loads(rec.value)
        assert rec.key.decode() == ce["subject"] == ce["data"]["customer_id"]
        assert ce["specversion"] == "1.0" and ce["data"]["tier"] != ce["data"]["previous_tier"]
        # Issue 14: when the cause happened, what it was, and that it is old news (the book's
        # events are months old by the wall clock).
        cause = ce["data"]["cause"]
        kinds.append(cause["kind"])
        # (a silence change: the sweep ran between two batches of the book, on a busy
        # machine, after the clock had passed the drifter's next look)
        assert (cause["kind"], cause["event_type"] in ("visit", "transaction", "complaint")) \
            in (("event", True), ("silence", False)), cause
        def at(text: str) -> datetime:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert at(cause["occurred_at"]) <= at(ce["time"])  # the cause is never after the scoring
        assert ce["data"]["catching_up"] is True
    assert "event" in kinds, kinds
    await redis.aclose()


async def test_sigkill_mid_stream_changes_nothing_twice(settings_factory, tmp_path: Path) -> None:
    """Kill -9 the worker at several points; the stored state equals an uninterrupted run's."""
    events = book()
    chunks = [events[i:i + 25] for i in range(0, len(events), 25)]

    reference = settings_factory(clock="event")
    ref_redis = make_redis(reference)
    with scorer(reference, tmp_path, "reference"):
        await produce_events(reference, events)
        await wait_processed(ref_redis, reference, len(events))

    crashy = settings_factory(clock="event", scorer_batch_max=10)
    redis = make_redis(crashy)
    proc = scorer(crashy, tmp_path, "crashy").start()
    kills = 0
    for i, chunk in enumerate(chunks):
        await produce_events(crashy, chunk)
        if i % 2 == 1:
            await asyncio.sleep(0.3 + 0.2 * kills)
            proc.kill()
            kills += 1
            proc = scorer(crashy, tmp_path, "crashy").start()
    await wait_processed(redis, crashy, len(events))
    proc.stop()
    assert kills >= 2

    for cid in ("steady", "drifter", "moaner", "once"):
        a = await customer_state(ref_redis, reference, cid)
        b = await customer_state(redis, crashy, cid)
        assert a["sm"] == b["sm"]
        assert a["st"]["first_ts"] == b["st"]["first_ts"] and a["st"]["last_ts"] == b["st"]["last_ts"]
    stats = await redis.hgetall(Keys(crashy.redis_prefix).stats)
    assert int(stats["events_applied_total"]) == len(events)  # redelivered events not re-applied
    for c in (ref_redis, redis):
        await c.aclose()


async def test_silence_raises_the_tier_without_new_events(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(clock="event", sweep_interval_seconds=0.2)
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    regular_history = regular("regular", every_days=7, count=15)
    with scorer(settings, tmp_path):
        await produce_events(settings, regular_history)
        await wait_processed(redis, settings, len(regular_history))
        risk = json.loads((await read_states(redis, keys, [("default", "regular")]))[0].get("risk") or "{}")
        assert risk["tier"] == "low"
        # Other customers' activity moves the event clock six weeks on (the default rules
        # raise a regular three gaps away to high after six); "regular" stays silent. (Two
        # of them: the clock is the second newest customer's newest event, so that one
        # customer's outlier moves nobody else, see docs/scorer.md.)
        last = T0 + timedelta(days=7 * 14)
        clock = [e for who in ("other", "other-2")
                 for e in regular(who, every_days=1, count=1, start=last + timedelta(days=43))]
        await produce_events(settings, clock)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            risk = json.loads((await read_states(redis, keys, [("default", "regular")]))[0].get("risk") or "{}")
            if risk.get("tier") == "high":
                break
            await asyncio.sleep(0.2)
        assert risk["tier"] == "high", risk
        own = [r["code"] for r in risk["reasons"] if not r["code"].startswith("tier_")]
        assert own[0] == "overdue"
        assert risk["reasons"][0]["code"] in ("overdue", "tier_raised_by_rule")
    changes = [json.loads(r.value) for r in await read_all(settings, settings.topic_risk_changes)]
    silence = [c for c in changes if c["subject"] == "regular"]
    assert silence and silence[-1]["data"]["cause"]["kind"] == "silence"
    await redis.aclose()


async def test_tombstone_erases_the_customer(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    redis = make_redis(settings)
    events = regular("gone", every_days=20, count=3, start=T0)
    with scorer(settings, tmp_path):
        await produce_events(settings, events)
        await produce(settings, settings.topic_events, [(b"gone", None)])
        await wait_processed(redis, settings, len(events) + 1)
    state = await customer_state(redis, settings, "gone")
    assert state["st"] == {}
    # a tombstone is not an event: events_scored_total stays what was accepted
    scored = await redis.hget(Keys(settings.redis_prefix).scored(settings.topic_events),  # type: ignore[misc]
                              "events")
    assert int(scored or 0) == len(events)
    await redis.aclose()


async def test_old_history_is_trimmed_but_the_customer_stays_known(settings_factory, tmp_path: Path) -> None:
    """Wall clock, a history that ended two years ago: the customer stays known and scored
    from their summary, and a re-post of recent events changes nothing."""
    settings = settings_factory(clock="wall")
    redis = make_redis(settings)
    old = regular("old-timer", every_days=5, count=60, start=T0 - timedelta(days=1000))
    with scorer(settings, tmp_path):
        await produce_events(settings, old)
        await produce_events(settings, old[-10:])  # a re-post of kept events changes nothing
        await wait_processed(redis, settings, len(old) + 10)
    state = await customer_state(redis, settings, "old-timer")
    newest = sorted(old, key=lambda e: (e["occurred_at"], e["event_id"]))[-1]["event_id"]
    assert state["summary"].newest_event_id() == newest
    risk = json.loads(state["st"]["risk"])
    assert risk["tier"] == "high" and risk["features"]["days_since_last_activity"] > 365
    stats = await redis.hgetall(Keys(settings.redis_prefix).stats)
    assert int(stats["events_duplicate_total"]) == 10
    assert int(stats["events_applied_total"]) == len(old)
    await redis.aclose()


async def test_a_customer_with_hundreds_of_purchases_a_day_is_scored(settings_factory,
                                                                     tmp_path: Path) -> None:
    """A wholesale account or a shared loyalty card: 300 purchases in one day, then more the
    next days. A day's count past 255 once made the summary's encoder fail, so the scorer
    stopped on the batch and every restart met it again; now the customer is scored."""
    settings = settings_factory(clock="wall")
    redis = make_redis(settings)
    day = T0.replace(hour=8, minute=0, second=0, microsecond=0)
    events = [{"event_id": f"bulk-{i}", "type": "transaction", "customer_id": "wholesale",
               "occurred_at": (day + timedelta(seconds=60 * i)).isoformat(), "amount": 2.5}
              for i in range(300)]
    events += [{"event_id": f"bulk-next-{d}", "type": "transaction", "customer_id": "wholesale",
                "occurred_at": (day + timedelta(days=d)).isoformat(), "amount": 10.0}
               for d in (1, 2)]
    with scorer(settings, tmp_path) as proc:
        await produce_events(settings, events)
        await wait_processed(redis, settings, len(events))
        assert proc.proc is not None and proc.proc.poll() is None, proc.tail()
    state = await customer_state(redis, settings, "wholesale")
    features = json.loads(state["st"]["risk"])["features"]
    assert features["transactions_365"] == 302.0 and features["spend_365"] == 770.0
    await redis.aclose()
