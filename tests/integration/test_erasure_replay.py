"""Erasure that holds across replays (docs/privacy.md): the events topic is replayed from its
beginning into a scorer whose progress was reset (what a new consumer group, a reset offset or
a disaster recovery does) after a customer was erased — the customer stays gone, no risk
change names them again, and their next new event starts a fresh customer. Real broker and
Redis; the records are the topic's own, read back from Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.common import pseudonym
from services.common.events import TENANT_HEADER
from services.common.kafka import start_producer
from services.common.redisconn import Keys, make_redis
from services.scorer.processor import Processor, Record
from services.scoring.engine import Engine
from services.scoring.model import load_model
from services.state.store import StateStore, read_states
from tests.data import complaint, regular
from tests.kafkatools import produce, produce_events, read_all
from tests.reliability import record

pytestmark = pytest.mark.integration


def _records(raw: list[Any]) -> list[Record]:
    return sorted((Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp,
                          tuple(r.headers or ())) for r in raw),
                  key=lambda r: (r.partition, r.offset))


async def test_an_erased_customer_stays_erased_when_the_topic_is_replayed(settings_factory) -> None:
    settings = settings_factory(topic_partitions=1)
    keys = Keys(settings.redis_prefix)
    redis = make_redis(settings)
    producer = await start_producer(settings)
    store = StateStore.from_settings(redis, settings)

    def processor() -> Processor:
        return Processor(settings=settings, store=store, producer=producer,
                         registry=CollectorRegistry(),
                         engine=Engine.from_settings(load_model(settings.model), settings))

    now = datetime.now(UTC)
    alice = regular("alice", every_days=14, count=6, start=now - timedelta(days=120))
    alice.append(complaint("alice", now - timedelta(days=3), 1))
    bob = regular("bob", every_days=10, count=5, start=now - timedelta(days=60))
    try:
        await produce_events(settings, alice + bob)
        await produce(settings, settings.topic_events, [(b"alice", None)],
                      headers=[(TENANT_HEADER, b"default")])  # the API's erasure tombstone
        history = _records(await read_all(settings, settings.topic_events, idle_ms=300,
                                          expect=len(alice) + len(bob) + 1))
        first = processor()
        await first.process(history)
        assert not (await read_states(redis, keys, [("default", "alice")]))[0]
        bob_before = (await read_states(redis, keys, [("default", "bob")], ["sm", "v"]))[0]
        # the ledger names alice by a keyed digest, never by id
        ledger = await redis.hgetall(keys.erased("default"))
        digest = pseudonym.pseudonym(await pseudonym.load_key(settings, redis), "default", "alice")
        assert list(ledger) == [digest] and "alice" not in json.dumps(ledger)
        changes_before = await read_all(settings, settings.topic_risk_changes, idle_ms=300)

        # the replay: the scorer's progress is gone, every record comes again from offset 0
        await redis.delete(keys.offsets(settings.topic_events))
        replay = processor()
        assert history[-1].value is None  # the tombstone comes last: stop the replay before it
        await replay.process(history[:-1])
        back = (await read_states(redis, keys, [("default", "alice")]))[0]
        await replay.process(history[-1:])
        bob_after = (await read_states(redis, keys, [("default", "bob")], ["sm", "v"]))[0]
        stats = await redis.hgetall(keys.stats)
        changes = await read_all(settings, settings.topic_risk_changes, idle_ms=300)
        record(kind="security", name="erasure-replay",
               tried="a customer erased, then the events topic replayed from offset 0 into a "
                     "scorer whose progress was reset (a new group, a reset offset, lost "
                     "progress), stopped just before the tombstone",
               load=f"{len(alice)} events of the erased customer and {len(bob)} of another, "
                    "then the tombstone, read back from Kafka",
               checked="the erased customer stays gone mid-replay and after, no risk change is "
                       "published again, the other customer is unchanged, a new event starts "
                       "a fresh customer; the ledger holds a keyed digest, no id",
               sent=len(history) - 1, lost=int(bob_after["sm"] != bob_before["sm"]),
               doubled=int(bool(back)) + len(changes) - len(changes_before),
               test="tests/integration/test_erasure_replay.py::"
                    "test_an_erased_customer_stays_erased_when_the_topic_is_replayed",
               measured={"events_left_out": int(stats.get("events_erased_total", 0))})
        assert not back, "a replay brought the erased customer back"
        assert bob_after["sm"] == bob_before["sm"]  # the others: duplicates, nothing changes
        assert int(stats["events_erased_total"]) == len(alice)
        assert len(changes) == len(changes_before), "the replay published risk changes again"

        # alice comes back after her erasure: a fresh customer with only her new event
        new: dict[str, Any] = {"event_id": "alice-new", "type": "visit", "customer_id": "alice",
                               "occurred_at": (now - timedelta(hours=1)).isoformat()}
        await produce_events(settings, [new])
        everything = _records(await read_all(settings, settings.topic_events, idle_ms=300,
                                             expect=len(history) + 1))
        await replay.process([r for r in everything if r.offset >= len(history)])
        state = (await read_states(redis, keys, [("default", "alice")], ["sm", "first_ts"]))[0]
        from services.scoring.summary import Summary
        summary = Summary.decode(state["sm"])
        assert summary.knows("alice-new") and not summary.knows(alice[0]["event_id"])
        assert int(state["first_ts"]) >= int((now - timedelta(hours=2)).timestamp() * 1000)
    finally:
        await producer.stop()
        await redis.aclose()


async def test_erasure_removes_the_customers_alerts_from_every_staff_inbox(settings_factory) -> None:
    """The console's in-app alert lists (one per staff member) lose the erased customer's
    entries and keep everyone else's; so do the model-quality cohorts (a pending sample is
    kept under the customer token) and the alert records and acknowledgements."""
    from services.notifier.channels.base import Message
    from services.notifier.channels.in_app import ConsoleList, InAppChannel
    from services.state.store import erase_customer

    settings = settings_factory()
    keys = Keys(settings.redis_prefix)
    redis = make_redis(settings)
    channel = InAppChannel(redis, keys)
    try:
        for n, (staff, customer) in enumerate([("ana", "alice"), ("ana", "bob"), ("ben", "alice"),
                                               ("ben", "carol")]):
            await channel.send(Message(
                delivery_id=f"d-{n}", channel="in_app", event_id=f"e-{n}", customer_id=customer,
                to=staff, event=b"{}", subject=f"{customer} is at risk", text=f"Call {customer}",
                tenant="t1", kind="alert", created_ms=1_000 + n))
        await channel.send(Message(delivery_id="d-9", channel="in_app", event_id="e-9",
                                   customer_id="alice", to="ana", event=b"{}", tenant="t2",
                                   kind="alert"))  # another tenant's alice is someone else
        # an alert mailed and texted to ana: listed once, by both channels (a redelivery
        # changes nothing), erased with its customer as the in-app ones are
        listed = ConsoleList(redis, keys)
        for ch in ("email", "sms", "email"):
            assert await listed.record_sent(Message(
                delivery_id=f"m-{ch}", channel=ch, event_id="e-m", customer_id="alice",
                to="ana@example.com", event=b"{}", subject="alice is at risk", tenant="t1",
                kind="alert", created_ms=2_000, recipient_key="staff:t1:ana"))
        assert not await listed.record_sent(Message(  # a won-back notice asks for nothing
            delivery_id="m-w", channel="email", event_id="e-w", customer_id="bob", to="x",
            event=b"{}", tenant="t1", kind="won_back", recipient_key="staff:t1:ana"))
        assert not await listed.record_sent(Message(  # nobody with a console identity
            delivery_id="m-o", channel="email", event_id="e-o", customer_id="bob", to="x",
            event=b"{}", tenant="t1", kind="alert", recipient_key="routing:ops"))
        sent = json.loads(await redis.hget(keys.inbox("ana", "t1"), "sent:e-m") or "{}")  # type: ignore[misc]
        assert sent["via"] == ["email", "sms"] and sent["customer_id"] == "alice", sent
        from services.alerting.acks import acknowledge, record_alert
        from services.common.redisconn import customer_token
        for alert_id, customer in (("a-alice", "alice"), ("a-bob", "bob")):
            await record_alert(redis, keys, alert_id, tenant="t1", customer_id=customer,
                               store_id="s1")
            await acknowledge(redis, keys, alert_id, "Ana", tenant="t1")
        cohort = keys.quality_cohort("m-1", 20_000)
        await redis.zadd(keys.quality_cohorts, {"m-1|20000|90": 20_000})
        await redis.hset(cohort, mapping={customer_token("alice", "t1"): "[0.5]",
                                          customer_token("bob", "t1"): "[0.2]", "~abc": "[0.1]"})
        await erase_customer(redis, keys, "alice", tenant="t1",
                             partitions=settings.topic_partitions)
        assert sorted(await redis.hkeys(cohort)) == sorted([customer_token("bob", "t1"), "~abc"])
        # the alert sent about her and its acknowledgement are gone; bob's stay
        assert not await redis.exists(keys.alert("a-alice", "t1"), keys.ack("a-alice", "t1"))
        assert await redis.exists(keys.alert("a-bob", "t1"), keys.ack("a-bob", "t1")) == 2
        left = {who: sorted(json.loads(v)["customer_id"]
                            for v in (await redis.hgetall(keys.inbox(who, "t1"))).values())
                for who in ("ana", "ben")}
        assert left == {"ana": ["bob"], "ben": ["carol"]}
        assert len(await redis.hgetall(keys.inbox("ana", "t2"))) == 1
    finally:
        await redis.aclose()
