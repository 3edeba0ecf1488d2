"""Publishes records to Kafka and says "stored" only once the broker acknowledged all of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from services.common.envelope import encode_envelopes
from services.common.exceptions import BrokerUnavailable
from services.common.kafka import start_producer
from services.common.settings import Settings

logger = logging.getLogger(__name__)
YIELD_EVERY = 50  # records appended to the producer's buffer between two event-loop turns
ENCODE_IN_THREAD = 200  # events; a larger batch is grouped into envelopes in a worker thread
ENVELOPE_YIELD_EVERY = 4  # envelopes (up to 500 events each) between two event-loop turns


class EventPublisher:
    """A lazily started producer (acks=all) that survives the broker being away at start-up."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.timeout = settings.kafka_request_timeout_ms / 1000 + 2.0
        self.last_error: str | None = None  # why the last publish failed; None after a success

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                try:
                    self._producer = await asyncio.wait_for(start_producer(self.settings),
                                                            self.timeout)
                except Exception as exc:
                    raise BrokerUnavailable(f"cannot reach the broker at "
                                            f"{self.settings.kafka_bootstrap}: {exc}") from exc
        return self._producer

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes | None]], *,
                      headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send every (key, value) and wait for every acknowledgement, or raise BrokerUnavailable.

        After BrokerUnavailable some records may still have been stored; the caller's retry is
        safe because consumers deduplicate by event id."""
        try:
            producer = await self._ensure()
        except BrokerUnavailable as exc:
            self.last_error = str(exc)
            raise

        async def send_all() -> None:
            futures = []
            for i, (key, value) in enumerate(records):
                if i and i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the loop answer reads between chunks
                futures.append(await producer.send(topic, value, key=key, headers=headers))
            await asyncio.gather(*futures)

        await self._acknowledged(send_all())

    async def publish_envelopes(self, topic: str, records: Sequence[tuple[bytes, bytes]], *,
                                headers: list[tuple[str, bytes]] | None = None) -> int:
        """Send the (customer key, event JSON) records as envelopes (services/common/envelope.py)
        and wait for every acknowledgement, or raise BrokerUnavailable; returns how many Kafka
        messages that took. Each envelope's partition is the one its customers' keys hash to
        under Kafka's default partitioner, so a customer's events stay on one partition whether
        they arrive enveloped or one by one."""
        try:
            producer = await self._ensure()
            partitions = await asyncio.wait_for(producer.partitions_for(topic), self.timeout)
        except BrokerUnavailable as exc:
            self.last_error = str(exc)
            raise
        except Exception as exc:
            self.last_error = f"cannot read the partitions of {topic}: {type(exc).__name__}: {exc}"
            raise BrokerUnavailable(self.last_error) from exc
        if sorted(partitions) != list(range(len(partitions))):  # never seen; the hash needs it
            self.last_error = f"the partitions of {topic} are not 0..n-1: {sorted(partitions)}"
            raise BrokerUnavailable(self.last_error)
        # Hashing 10,000 customer ids takes ~25 ms: big batches are encoded off the event loop.
        envelopes = await asyncio.to_thread(encode_envelopes, records, len(partitions),
                                            headers=headers) \
            if len(records) > ENCODE_IN_THREAD else \
            encode_envelopes(records, len(partitions), headers=headers)

        async def send_all() -> None:
            futures = []
            for i, env in enumerate(envelopes):
                if i and i % ENVELOPE_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                futures.append(await producer.send(topic, env.value, key=env.key,
                                                   partition=env.partition, headers=env.headers))
            await asyncio.gather(*futures)

        await self._acknowledged(send_all())
        return len(envelopes)

    async def _acknowledged(self, sending: Coroutine[Any, Any, None]) -> None:
        try:
            await asyncio.wait_for(sending, self.timeout)
        except TimeoutError as exc:
            self.last_error = "the broker did not acknowledge the events in time"
            raise BrokerUnavailable(self.last_error) from exc
        except Exception as exc:
            self.last_error = f"the broker refused the events: {type(exc).__name__}: {exc}"
            raise BrokerUnavailable(self.last_error) from exc
        self.last_error = None

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
