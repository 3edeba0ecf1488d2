"""Publishes records to Kafka and says "stored" only once the broker acknowledged all of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from services.common.exceptions import BrokerUnavailable
from services.common.kafka import start_producer
from services.common.settings import Settings

logger = logging.getLogger(__name__)
YIELD_EVERY = 50  # records appended to the producer's buffer between two event-loop turns


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

        try:
            await asyncio.wait_for(send_all(), self.timeout)
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
