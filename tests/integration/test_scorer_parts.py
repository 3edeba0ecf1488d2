"""A poll is applied in parts (``CHURNWATCH_SCORER_APPLY_MAX_EVENTS``), partition by partition:
what customers end up with does not depend on where the parts were cut, and a customer's
several events in one part are one step (one state read, one scoring, one write). Real broker
and Redis; records as a poll delivers them, the partitions' envelopes interleaved."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.common.envelope import encode_envelopes
from services.common.kafka import start_producer
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.scorer.processor import Processor, Record
from services.scoring.engine import Engine
from services.scoring.model import load_model
from services.state.store import StateStore, read_states
from tests.data import by_time, complaint, regular, visit

pytestmark = pytest.mark.integration

CUSTOMERS = [f"c-{n}" for n in range(24)]


def _history() -> list[dict[str, Any]]:
    """Two dozen customers over four months, some with a complaint: each has many events,
    spread over several envelopes of their partition (envelopes of 20 events)."""
    start = datetime.now(UTC) - timedelta(days=120)
    events: list[dict[str, Any]] = []
    for n, cid in enumerate(CUSTOMERS):
        events += regular(cid, every_days=5 + n % 7, count=10, start=start + timedelta(hours=n))
        if n % 5 == 0:
            events.append(complaint(cid, start + timedelta(days=60, hours=n), n))
    return by_time(events)


def _poll(settings: Settings, events: list[dict[str, Any]]) -> list[Record]:
    """The envelopes as a poll hands them over: the partitions' records interleaved."""
    by_partition: dict[int, list[Record]] = {}
    for env in encode_envelopes(events, settings.topic_partitions, max_events=20):
        mine = by_partition.setdefault(env.partition, [])
        mine.append(Record(settings.topic_events, env.partition, len(mine), env.key, env.value,
                           None, tuple(env.headers)))
    return [r for group in itertools.zip_longest(*by_partition.values())
            for r in group if r is not None]


async def _apply(settings: Settings, records: list[Record]
                 ) -> tuple[list[dict[str, str]], dict[str, str], float]:
    """Process the poll twice; the customers' states, the stats and the write round trips
    of the first time."""
    redis = make_redis(settings)
    producer = await start_producer(settings)
    registry = CollectorRegistry()
    try:
        proc = Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                         producer=producer, registry=registry,
                         engine=Engine.from_settings(load_model(settings.model), settings))
        await proc.process(records)
        writes = registry.get_sample_value("churnwatch_scorer_redis_roundtrip_seconds_count",
                                           {"op": "write"}) or 0.0
        await proc.process(records)  # a redelivery changes nothing
        keys = Keys(settings.redis_prefix)
        states = await read_states(redis, keys, [("default", c) for c in CUSTOMERS],
                                   ["sm", "tier", "score", "tier_since", "first_ts", "last_ts"])
        stats = {str(k): str(v) for k, v in (await redis.hgetall(keys.stats)).items()}
        return states, stats, writes
    finally:
        await producer.stop()
        await redis.aclose()


@pytest.mark.parametrize("cap", [{"scorer_apply_max_events": 30},
                                 {"scorer_apply_max_customers": 3}], ids=["events", "customers"])
async def test_parts_of_an_interleaved_poll_give_what_one_part_gives(settings_factory,
                                                                     cap: dict[str, int]) -> None:
    events = _history()
    whole = settings_factory(topic_partitions=4, clock="event")
    small = settings_factory(topic_partitions=4, clock="event", **cap)
    poll = _poll(whole, events)
    assert len({r.partition for r in poll[:4]}) > 1, "the poll interleaves partitions"
    one, one_stats, one_writes = await _apply(whole, poll)
    parts, parts_stats, parts_writes = await _apply(small, _poll(small, events))
    # summaries, tiers and their times: the same; scores up to the last bits (the model scores
    # each part's rows in one vectorized call, and SIMD sums depend on the batch's layout)
    assert [{**s, "score": ""} for s in one] == [{**s, "score": ""} for s in parts]
    assert [float(s["score"]) for s in one] == pytest.approx([float(s["score"]) for s in parts],
                                                             rel=1e-9)
    assert all(s.get("sm") and s.get("tier") for s in one)
    assert one_stats == parts_stats
    assert int(one_stats["events_applied_total"]) == len(events)  # once each, redelivery too
    # one part: one write for all 24 customers; parts of 30 events (one or two envelopes,
    # partition by partition), or of envelopes of at most 3 customers: many more
    assert one_writes == 1 and parts_writes >= min(len(events) // 30, len(CUSTOMERS) // 3)


async def test_under_the_wall_clock_a_parts_events_are_folded_newest_first(settings_factory
                                                                          ) -> None:
    """Under the wall clock a customer's new events of one part are folded newest first (the
    summary's newest day moves once): each summary equals folding the customer's events in
    time order, a redelivery changes nothing; and an event the summary already holds is a
    duplicate even when the tenant's id registry has forgotten it and the part's newer events
    push it out of the id memory before it is folded."""
    from services.common.events import validate_event
    from services.scoring.activity import activity_from_event
    from services.scoring.summary import summarize

    events = _history()
    settings = settings_factory(topic_partitions=4, clock="wall")
    states, stats, _ = await _apply(settings, _poll(settings, events))
    for cid, state in zip(CUSTOMERS, states, strict=True):
        acts = [activity_from_event(validate_event(e)[0])  # type: ignore[arg-type]
                for e in events if e["customer_id"] == cid]
        assert state["sm"] == summarize(acts).encode(), cid
    assert int(stats["events_applied_total"]) == len(events)

    # ten visits over ten days; later, the first again (a re-sent export) with nine visits
    # 50 days on, in one part: the nine move the newest day past the first's id memory
    settings = settings_factory(topic_partitions=1, clock="wall")
    start = datetime.now(UTC) - timedelta(days=100)
    first = [{"event_id": f"v{i}", "type": "visit", "customer_id": "c-0",
              "occurred_at": (start + timedelta(days=i)).isoformat()} for i in range(10)]
    again = [first[0]] + [{**e, "event_id": f"w{i}", "occurred_at": (
        start + timedelta(days=50 + i)).isoformat()} for i, e in enumerate(first[1:])]

    def records(batch: list[dict[str, Any]], offset: int) -> list[Record]:
        return [Record(settings.topic_events, 0, offset + i, b"c-0", json.dumps(e).encode())
                for i, e in enumerate(batch)]

    await _apply(settings, records(first, 0))
    redis = make_redis(settings)
    try:  # the registry forgets (its generations expire after 30-60 days of wall time)
        await redis.delete(*[k async for k in redis.scan_iter(f"{settings.redis_prefix}:ids:*")])
    finally:
        await redis.aclose()
    states, stats, _ = await _apply(settings, records(again, len(first)))
    acts = [activity_from_event(validate_event(e)[0])  # type: ignore[arg-type]
            for e in first + again[1:]]
    assert states[0]["sm"] == summarize(acts).encode()
    assert (int(stats["events_applied_total"]), int(stats["events_duplicate_total"])) == (19, 1)


@pytest.mark.parametrize("clock", ["wall", "event"])
@pytest.mark.parametrize("max_age", [None, 400 * 86_400.0], ids=["history", "as-if-live"])
async def test_a_tier_from_part_of_a_history_holds_nothing(settings_factory, clock: str,
                                                           max_age: float | None) -> None:
    """A year imported at go-live reaches the scorer in parts: a customer's oldest weekly
    visits alone read as months away (high) — under the wall clock scored at "now", under the
    event clock by the silence sweep at the tenant's clock (two other customers' events of
    today set it). The rest of their history, in a later part, gives a score in the
    hysteresis band. That tier came from a view without history that had already happened:
    the rest decides their tier from the score alone (medium), not "Held at high". Events
    younger than ``alert_max_age`` against the last scoring (here: the same events, with the
    age set past them) keep hysteresis."""
    from services.common.events import validate_event
    from services.scoring.activity import activity_from_event
    from services.scoring.engine import Subject

    now = datetime.now(UTC)
    events = regular("h", every_days=7, count=40, start=now - timedelta(days=300))
    events = [e for e in events if e["occurred_at"] < (now - timedelta(days=20)).isoformat()]
    oldest, rest = events[:20], events[20:]  # visits from 300 to 237 days ago; the rest
    today = [e for n in range(2) for e in visit(f"x{n}", now - timedelta(hours=1), 0)]
    probe = settings_factory(create_topics=False)
    engine = Engine.from_settings(load_model(probe.model), probe)

    def score(part: list[dict[str, Any]]) -> float:
        acts = [activity_from_event(validate_event(e)[0]) for e in part]  # type: ignore[arg-type]
        return engine.assess([Subject("h", acts)], int(now.timestamp() * 1000),
                             with_history=False)[0].score

    away, back = score(oldest), score(events)
    assert away > back + 0.05, (away, back)  # the oldest visits alone read as riskier
    high_exit = back * 0.9  # the full view lies inside the high band: held if high before
    levels = {"tier_high_enter": (away + back) / 2, "tier_high_exit": high_exit,
              "tier_medium_enter": high_exit, "tier_medium_exit": high_exit * 0.9}
    extra = {} if max_age is None else {"alert_max_age": max_age}
    settings = settings_factory(topic_partitions=1, clock=clock, **levels, **extra)
    redis = make_redis(settings)
    producer = await start_producer(settings)
    try:
        proc = Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                         producer=producer, registry=CollectorRegistry(),
                         engine=Engine.from_settings(load_model(settings.model), settings))
        records = [Record(settings.topic_events, 0, i, e["customer_id"].encode(),
                          json.dumps(e).encode()) for i, e in enumerate(oldest + today + rest)]
        keys = Keys(settings.redis_prefix)
        await proc.process(records[:len(oldest) + len(today)])
        if clock == "event":
            await proc.sweep([0])
        assert await redis.hget(keys.state("h"), "tier") == "high"
        await proc.process(records[len(oldest) + len(today):])
        [state] = await read_states(redis, keys, [("default", "h")], ["tier", "risk"])
        held = [r["text"] for r in json.loads(state["risk"])["reasons"]
                if r["code"].startswith("tier_held")]
        if max_age is None:
            assert (state["tier"], held) == ("medium", []), (state["tier"], held)
        else:
            assert state["tier"] == "high" and held and held[0].startswith("Held at high"), held
    finally:
        await producer.stop()
        await redis.aclose()
