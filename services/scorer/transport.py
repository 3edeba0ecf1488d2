"""Faust's aiokafka transport with two changes, made through Faust's own seams (transport ->
consumer -> consumer thread), not by patching Faust's modules:

- **A configurable fetch wait.** faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for
  its worker consumer. Apache Kafka answers a fetch as soon as data arrives, but some
  Kafka-protocol brokers (Tansu 0.6) hold it for the whole wait, which put ~650 ms between an
  event and its score. The scorer sets the wait from ``CHURNWATCH_SCORER_FETCH_MAX_WAIT_MS``.
- **Delivery a poll at a time.** Faust hands each fetched message to its streams inside
  ``Service.wait_first(deliver(message), suspend_flow.wait())``: four asyncio tasks, one
  ``asyncio.wait`` and three cancellations *per message*, about half of what a trivial
  agent costs per message. :meth:`PollConsumer._drain_messages` does the same steps (read
  offsets, gaps, commits every ``broker_commit_every`` acks, the conductor's callback) for a
  whole poll inside one ``wait_first``, so a rebalance's flow suspension still interrupts
  delivery at once. A poll interrupted that way leaves its undelivered messages' read
  offsets where they were: after the rebalance they are fetched again from the committed
  offsets, as Faust does.
- **Records handed over in batches.** Even delivered a poll at a time, each record still
  passes the conductor, the topic's queue, the stream's iterator and ``take_events``'s
  buffer (~25 µs a record), and ``take_events`` then waits ``within`` while its next batch
  gathers at that pace: a fifth of the scorer's time, and batches of ~2,000 single-event
  records whatever the batch size. The records of a topic in ``batch_handlers`` skip all
  that: they are taken (tracked as the conductor tracks a message) and handed to the
  handler in one call per batch, then acknowledged, so Faust's commits, ``wait_empty`` at a
  rebalance and stopping see them as they see a stream's. The hand-over runs beside the
  drain loop, which goes on fetching and taking the next batch meanwhile: under a backlog a
  batch is everything that arrived while the last one was applied (at most a poll's
  records, ``CHURNWATCH_SCORER_BATCH_MAX``), on a quiet topic a record goes as soon as it
  is fetched. The hand-over is not under ``wait_first``: a rebalance waits for a batch
  being applied instead of cancelling it half way, and it needs nothing of the drain loop
  (which a rebalance holds in ``getmany``) to finish what was taken.
- **A bound on the bytes in flight.** Records delivered and not yet acknowledged may hold at
  most ``max_unacked_bytes`` of keys and values: stream delivery waits for acknowledgements
  beyond it, and the batch being handed over and the one being taken each hold at most
  half of it. A poll is counted in records, and an envelope record holds up to 500 events,
  so without it a poll of envelopes could hold gigabytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

logger = logging.getLogger(__name__)


BatchHandler = Callable[[list[Any]], Awaitable[None]]


def _size(message: Any) -> int:
    return len(message.value or b"") + len(message.key or b"")


# What PollConsumer uses of Faust's consumer beyond its public API (tested on faust-streaming
# 0.15.3; pyproject.toml keeps to 0.15.x): a version without them stops the scorer at start
# with their names, instead of delivering records wrongly.
INTERNALS = ("_read_offset", "_unacked_messages", "_commit_every", "_n_acked", "_add_gap",
             "track_message", "ack", "commit", "getmany", "wait_first", "add_future", "sleep",
             "suspend_flow", "consumer_stopped_errors", "should_stop", "transport", "diag")


def missing_internals(consumer: object) -> list[str]:
    """The names of :data:`INTERNALS` that ``consumer`` lacks."""
    return [name for name in INTERNALS if not hasattr(consumer, name)]


class PollConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer delivering each poll in one task (see the module doc)."""

    max_unacked_bytes: int | None = None  # set by transport_app
    waits = 0  # times delivery waited for acknowledgements (metrics read it)
    _unchecked_bytes = 0  # delivered since the bytes in flight were last counted
    _ack_signal: asyncio.Event | None = None
    # topic -> handler of a list of its records: those records skip the streams (set by
    # transport_app; see the module doc)
    batch_handlers: dict[str, BatchHandler] = {}
    _taken: list[Any]  # records taken for the handlers, not yet handed over
    _taken_bytes: int
    _room: asyncio.Event  # set when the hand-over took what was taken
    _handing: asyncio.Future[Any] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = missing_internals(self)
        if missing:
            raise RuntimeError(
                f"this faust-streaming ({faust.__version__}) lacks what the scorer's consumer "
                f"relies on: {', '.join(missing)}; install the version pyproject.toml names")
        self._taken, self._taken_bytes, self._handing = [], 0, None
        self._room = asyncio.Event()

    def ack(self, message: Any) -> bool:
        done = bool(super().ack(message))
        if self._ack_signal is not None:
            self._ack_signal.set()
        return done

    def unacked_bytes(self) -> int:
        """Keys and values of the records delivered and not acknowledged (Faust's own set of
        them: weak references, so a record dropped with its partition leaves it too)."""
        return sum(_size(m) for m in list(self._unacked_messages) if not m.acked)

    async def _within_budget(self, size: int) -> None:
        """Wait until ``size`` more bytes fit. Counting walks the unacknowledged records, so
        it is done only once every eighth of the budget delivered."""
        budget = self.max_unacked_bytes
        if budget is None:
            return
        self._unchecked_bytes += size
        if self._unchecked_bytes < budget // 8:
            return
        if self._ack_signal is None:
            self._ack_signal = asyncio.Event()
        while (held := self.unacked_bytes()) and held + size > budget:
            # The agent's batch is flushed when full or after its `within`: acks follow.
            self.waits += 1
            self._ack_signal.clear()
            await self._ack_signal.wait()
        self._unchecked_bytes = 0

    async def _deliver(self, batch: list[tuple[Any, Any]]) -> None:
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        handled = self.batch_handlers
        for tp, message in batch:
            if message.topic not in handled:
                # Back to the loop after each record, so that the streams drain as it goes:
                # yielding every 100 (as Faust's loop does) left them starved, half the speed.
                await asyncio.sleep(0)
                await self._within_budget(_size(message))
            offset = message.offset
            last = read_offset[tp]
            if last is not None and offset < last:
                continue  # read already (Faust drops these too)
            if last and offset - last > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)  # a gap, as Faust records it
            if message.topic in handled:
                await self._take(message)
            else:
                await callback(message)
            read_offset[tp] = offset

    async def _take(self, message: Any) -> None:
        """Take a record for its batch handler, once there is room (see :meth:`_fits`). Always
        through ``self._taken``: the hand-over swaps that list at any await."""
        size = _size(message)
        while self._taken and not self._fits(len(self._taken), self._taken_bytes, size):
            self.waits += 1  # until the hand-over takes what was taken
            self._room.clear()
            self._kick()
            await self._room.wait()
        self.track_message(message)  # pending until acknowledged, as the conductor does
        self._taken.append(message)
        self._taken_bytes += size

    def _fits(self, records: int, held: int, size: int) -> bool:
        """Whether a record of ``size`` bytes joins ``records`` records of ``held`` bytes
        taken: a batch holds at most a poll's records, and what is taken and what is being
        handed over each hold at most half the in-flight bound."""
        budget = self.max_unacked_bytes
        most = self.app.conf.broker_max_poll_records  # None: Faust's default, no bound
        return (most is None or records < most) and (
            budget is None or held + size <= budget // 2)

    def _kick(self) -> None:
        """Start handing over what was taken unless a hand-over is running. It runs as one of
        the consumer's futures: stopped with the consumer, and what it raises crashes the
        consumer (as a stream's agent crashing would)."""
        if self._handing is not None and self._handing.done():
            self._handing = None
        if self._handing is None and self._taken:
            self._handing = self.add_future(self._hand_over())

    async def _hand_over(self) -> None:
        """What was taken, again and again until nothing is: each topic's records in order to
        its handler, then acknowledged. It runs beside the drain loop, which fetches and takes
        the next batch meanwhile, and on its own, so a rebalance (which holds the drain loop
        in ``getmany``) still sees everything taken acknowledged. What a handler raises
        crashes the consumer and the worker exits with an error: nothing of that batch is
        acknowledged (tests/integration/test_scorer_handover.py)."""
        try:
            while self._taken:
                taken, self._taken, self._taken_bytes = self._taken, [], 0
                self._room.set()
                by_topic: dict[str, list[Any]] = {}
                for message in taken:
                    by_topic.setdefault(message.topic, []).append(message)
                for topic, messages in by_topic.items():
                    await self.batch_handlers[topic](messages)
                ack = self.ack
                for message in taken:
                    ack(message)
        finally:
            self._room.set()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's thread
        getmany = self.getmany
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        commit_every = self._commit_every
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batch = [pair async for pair in getmany(timeout=1.0)]
                await self.sleep(0)  # getmany may not have yielded to the loop
                if batch and not self.should_stop:
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
                self._kick()
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


def transport_app(fetch_max_wait_ms: int, *, poll_delivery: bool = True,
                  max_unacked_bytes: int | None = None,
                  batch_handlers: dict[str, BatchHandler] | None = None) -> type[faust.App]:
    """A ``faust.App`` subclass whose worker consumer waits at most ``fetch_max_wait_ms``
    and (``poll_delivery``) delivers a poll at a time, with at most ``max_unacked_bytes``
    unacknowledged (None: no bound); the records of a topic in ``batch_handlers`` go to its
    handler a poll at a time instead of to the topic's streams."""

    class WaitThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            if hasattr(consumer, "_fetch_max_wait_ms"):
                consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by start()
            else:  # pragma: no cover - a future aiokafka: keep Faust's default
                logger.warning("cannot set fetch_max_wait_ms on this aiokafka version")
            return consumer

    base = PollConsumer if poll_delivery else faust_aiokafka.Consumer
    max_unacked_bytes_ = max_unacked_bytes
    batch_handlers_ = dict(batch_handlers or {})
    if batch_handlers_ and not poll_delivery:
        raise ValueError("batch handlers need poll delivery")

    class WaitConsumer(base):  # type: ignore[valid-type,misc]
        if poll_delivery:
            max_unacked_bytes = max_unacked_bytes_
            batch_handlers = batch_handlers_

        def _new_consumer_thread(self) -> Any:
            return WaitThread(self, loop=self.loop, beacon=self.beacon)

    class WaitTransport(faust_aiokafka.Transport):
        Consumer = WaitConsumer

    class WaitApp(faust.App):
        def _new_transport(self) -> Any:
            return WaitTransport(self.conf.broker_consumer, self)

    return WaitApp
