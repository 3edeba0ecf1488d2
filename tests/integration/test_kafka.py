"""The shared Kafka plumbing against the real broker."""

from __future__ import annotations

import logging

import pytest

from services.common.kafka import end_offsets, make_consumer, start_producer
from services.common.settings import Settings

pytestmark = pytest.mark.integration


async def test_auto_idempotence_falls_back_on_a_broker_without_init_producer_id(
        settings_factory, caplog: pytest.LogCaptureFixture) -> None:
    settings: Settings = settings_factory(kafka_idempotence="auto")
    with caplog.at_level(logging.WARNING, logger="services.common.kafka"):
        producer = await start_producer(settings)
    try:
        meta = await (await producer.send(settings.topic_events, b"{}", key=b"k"))
        assert meta.offset == 0
    finally:
        await producer.stop()
    # Tansu's memory engine has no InitProducerId; Apache Kafka would not warn here.
    assert any("InitProducerId" in r.getMessage() for r in caplog.records)


async def test_end_offsets_count_every_record_of_multi_record_batches(settings_factory) -> None:
    settings: Settings = settings_factory(topic_partitions=1)
    producer = await start_producer(settings, linger_ms=50)
    try:
        for _ in range(2):
            futures = [await producer.send(settings.topic_events, b"x", partition=0) for _ in range(3)]
            for f in futures:
                await f
    finally:
        await producer.stop()
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        assert await end_offsets(consumer, settings.topic_events) == {0: 6}
    finally:
        await consumer.stop()
