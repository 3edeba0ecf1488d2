"""Small helpers for tests that produce to and read from the real broker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import TopicPartition

from services.common.envelope import MAX_EVENTS, decode, encode_envelopes, is_envelope
from services.common.kafka import make_consumer, make_producer
from services.common.settings import Settings


async def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]],
                  *, headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=headers)
                   for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_events(settings: Settings, events: list[dict[str, Any]]) -> None:
    await produce(settings, settings.topic_events,
                  [(e["customer_id"].encode(), json.dumps(e).encode()) for e in events])


async def produce_envelopes(settings: Settings, events: list[dict[str, Any]], *,
                            max_events: int = MAX_EVENTS) -> None:
    """Events as envelope records (services/common/envelope.py) of at most ``max_events``
    events, each on its partition."""
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic_events, env.value, key=env.key,
                                       partition=env.partition, headers=env.headers)
                   for env in encode_envelopes(events, settings.topic_partitions,
                                               max_events=max_events)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str, *, idle_ms: int = 1500, timeout: float = 20.0,
                   expect: int | None = None) -> list[Any]:
    """Every record on ``topic`` from the beginning (stops after ``idle_ms`` without new ones
    once ``expect`` records, if given, were seen)."""
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if parts:
                break
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_new = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = [r for recs in batch.values() for r in recs]
            if got:
                out.extend(got)
                last_new = loop.time()
            elif (expect is None or len(out) >= expect) and (loop.time() - last_new) * 1000 > idle_ms:
                break
        return out
    finally:
        await consumer.stop()


def events_in(records: list[Any]) -> list[dict[str, Any]]:
    """The events that records read from the events topic carry, single or in envelopes
    (services/common/envelope.py), in record order; tombstones (erasures) carry none. An
    envelope element that is no JSON object fails the test."""
    out: list[dict[str, Any]] = []
    for r in records:
        if r.value is None:
            continue
        if is_envelope(r.headers):
            items = decode(r.value, r.headers)
            assert all(it.error is None for it in items), [it.error for it in items]
            out.extend(it.event for it in items if it.event is not None)
        else:
            out.append(json.loads(r.value))
    return out
