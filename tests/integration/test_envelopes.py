"""POST /v1/events publishes envelopes (issue 20), read back from the real broker: each on the
partition Kafka's own partitioner gives its customers, every event once, each customer's order
kept, the store-bound header carried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.envelope import ENVELOPE_HEADER, MAX_EVENTS, decode, is_envelope, partition_for
from services.common.events import STORE_BOUND_HEADER
from tests.data import T0, iso
from tests.kafkatools import produce, read_all
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration

KEYS = "ingest-secret-1:ingest,store-secret-1:ingest@default/salon-north"
INGEST = {"Authorization": "Bearer ingest-secret-1"}
STORE = {"Authorization": "Bearer store-secret-1"}
PARTITIONS = 4


@pytest.fixture
def api(settings_factory, tmp_path: Path) -> Iterator[tuple[ServiceProcess, Any]]:
    settings = settings_factory(api_keys=KEYS, ingest_envelopes=True, topic_partitions=PARTITIONS)
    proc = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    with proc:
        yield proc, settings


def batch(customers: int, per_customer: int, prefix: str, store: str = "salon-downtown"
          ) -> list[dict[str, Any]]:
    """Customers' events interleaved as a POS would send them (c0 e0, c1 e0, ..., c0 e1, ...)."""
    return [{"event_id": f"{prefix}-{c}-{i}", "type": "visit", "customer_id": f"{prefix}-c{c}",
             "occurred_at": iso(T0 + timedelta(hours=i)), "store_id": store}
            for i in range(per_customer) for c in range(customers)]


def envelope_events(records: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
    out: list[tuple[Any, dict[str, Any]]] = []
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert is_envelope(r.headers), r.headers
        items = decode(r.value, r.headers, partition=r.partition, partitions_count=PARTITIONS)
        assert all(it.error is None for it in items), [it.error for it in items]
        out.extend((r, it.event) for it in items if it.event is not None)
    return out


def test_batch_goes_out_as_envelopes_on_each_customers_partition(api) -> None:
    proc, settings = api
    # 40 customers x 20 events, and one customer with more events than an envelope holds
    events = batch(40, 20, "b") + batch(1, MAX_EVENTS + 100, "big")
    r = httpx.post(f"{proc.url}/v1/events", json=events, headers=INGEST, timeout=30)
    assert r.status_code == 202 and r.json() == {"accepted": len(events)}

    records = asyncio.run(read_all(settings, settings.topic_events, idle_ms=800))
    got = envelope_events(records)
    # every event once, exactly as posted (canonical JSON of what was sent)
    assert sorted(e["event_id"] for _, e in got) == sorted(e["event_id"] for e in events)
    assert {e["event_id"]: e for _, e in got} == {e["event_id"]: e for e in events}
    # far fewer messages than events; bounded envelopes (the big customer needs two)
    assert len(records) <= PARTITIONS + 1 + 1
    assert all(len(json.loads(r.value)["events"]) <= MAX_EVENTS for r in records)
    assert all(len(r.value) <= 512 * 1024 for r in records)
    assert {r.partition for r in records} == set(range(PARTITIONS))
    # each customer's events in the order posted
    for c in {e["customer_id"] for e in events}:
        assert [e["event_id"] for _, e in got if e["customer_id"] == c] == \
            [e["event_id"] for e in events if e["customer_id"] == c]
    # the key hashes to the envelope's partition; no store-bound header from this key
    for rec in records:
        assert partition_for(rec.key, PARTITIONS) == rec.partition
        assert dict(rec.headers) == {ENVELOPE_HEADER: b"1"}

    # The partition is the one aiokafka's own default partitioner gives a single-event record
    # keyed by the customer: send one per customer through a plain producer and compare.
    customers = sorted({e["customer_id"] for e in events})
    topic = settings.topic_events_dlq  # a topic of the same partition count, still empty
    asyncio.run(produce(settings, topic, [(c.encode(), b"{}") for c in customers]))
    singles = asyncio.run(read_all(settings, topic, expect=len(customers), idle_ms=500))
    assert len(singles) == len(customers)
    enveloped = {e["customer_id"]: rec.partition for rec, e in got}
    assert {s.key.decode(): s.partition for s in singles} == enveloped
    assert len(set(enveloped.values())) == PARTITIONS


def test_store_bound_key_and_single_events_alongside(api) -> None:
    proc, settings = api
    events = batch(6, 3, "s", store="salon-north")
    r = httpx.post(f"{proc.url}/v1/events", json=events, headers=STORE)
    assert r.status_code == 202
    one = batch(1, 1, "one")[0]
    r = httpx.post(f"{proc.url}/v1/events", json=one, headers=INGEST)  # one event: one envelope
    assert r.status_code == 202

    records = asyncio.run(read_all(settings, settings.topic_events, expect=2, idle_ms=800))
    got = envelope_events(records)
    assert sorted(e["event_id"] for _, e in got) == sorted(e["event_id"] for e in [*events, one])
    for rec, e in got:
        bound = (STORE_BOUND_HEADER, b"1") in list(rec.headers)
        assert bound == (e["event_id"] != one["event_id"])


def test_an_envelope_of_the_largest_size_is_accepted_by_the_broker(settings_factory) -> None:
    """512 KB is over the producer's batch size (256 KB) and under Kafka's default 1 MB
    message limit: a full envelope must go through our producer settings as one record."""
    from services.common.envelope import MAX_BYTES, encode_envelopes
    from services.common.kafka import make_producer

    settings = settings_factory(topic_partitions=PARTITIONS)
    events = [{**e, "note": "x" * 4000} for e in batch(1, 400, "huge")]
    envelopes = encode_envelopes(events, PARTITIONS)
    assert len(envelopes) == 4 and max(len(e.value) for e in envelopes) > MAX_BYTES - 5000

    async def send() -> None:
        producer = make_producer(settings)
        await producer.start()
        try:
            futures = [await producer.send(settings.topic_events, e.value, key=e.key,
                                           partition=e.partition, headers=e.headers)
                       for e in envelopes]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())
    records = asyncio.run(read_all(settings, settings.topic_events, expect=4, idle_ms=500))
    assert [r.value for r in sorted(records, key=lambda r: r.offset)] == [e.value for e in envelopes]
    assert sorted(e["event_id"] for _, e in envelope_events(records)) == \
        sorted(e["event_id"] for e in events)
