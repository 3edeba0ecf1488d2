"""Faust's aiokafka transport with one change: a configurable fetch wait.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Apache Kafka
answers a fetch as soon as data arrives, but some Kafka-protocol brokers (Tansu 0.6) hold it
for the whole wait, which put ~650 ms between an event and its score. The scorer sets the
wait from ``CHURNWATCH_SCORER_FETCH_MAX_WAIT_MS`` through Faust's own seams (transport ->
consumer -> consumer thread), not by patching Faust's module.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

logger = logging.getLogger(__name__)


def transport_app(fetch_max_wait_ms: int) -> type[faust.App]:
    """A ``faust.App`` subclass whose worker consumer waits at most ``fetch_max_wait_ms``."""

    class WaitThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            if hasattr(consumer, "_fetch_max_wait_ms"):
                consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by start()
            else:  # pragma: no cover - a future aiokafka: keep Faust's default
                logger.warning("cannot set fetch_max_wait_ms on this aiokafka version")
            return consumer

    class WaitConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return WaitThread(self, loop=self.loop, beacon=self.beacon)

    class WaitTransport(faust_aiokafka.Transport):
        Consumer = WaitConsumer

    class WaitApp(faust.App):
        def _new_transport(self) -> Any:
            return WaitTransport(self.conf.broker_consumer, self)

    return WaitApp
