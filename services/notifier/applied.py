"""Up to when the notifier's view of the risk stream is whole.

The notifier's timed decisions — an alert's settle window ending, an escalation coming due, a
morning digest, a go-live summary — judge a customer by the episode the notifier keeps
(services/alerting/episodes.py), which only the risk changes it has applied move. When the
notifier is behind — restarted after a crash or an outage with changes waiting on the topic,
or slow under a burst — that view is old: an escalation that came due while it was down was
judged between a customer's dip to medium and their return to high, found them "no longer
high" and was dropped for good; an alert's settle window could end before the change that
reverts it was read.

:class:`AppliedMark` answers "every risk change published before which instant has been
applied?": it notes the topic's end offsets at an instant and, once the notifier group's
committed offsets have reached them on every partition (the notifier commits a batch only
after applying it), that instant is the mark. The timed jobs then judge only what was due by
the mark, so a decision never precedes a change published before it came due. The group's
offsets, not this process's: with several notifiers, one may judge a customer whose
partition another is still reading.

A quiet, caught-up notifier's mark is the last refresh (every ``min_interval_s``); one
reading a backlog holds its timed jobs until it has read what was waiting, and the gauge
``churnwatch_notifier_decisions_behind_seconds`` says by how long.

The end offsets come from ``ends`` (the worker passes :func:`services.common.kafka.end_offsets`
on a consumer without a group), not from ListOffsets alone: Tansu answers that with the base
offset of the last batch, so a backlog published as one batch of 121 changes read as ending
at its first, and an escalation that came due while the notifier was down was judged before
the customer's return to high was read, and dropped (one run in two with both cores busy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

logger = logging.getLogger(__name__)

WARN_EVERY_S = 60.0


class OffsetSource(Protocol):
    """What :class:`AppliedMark` needs of the group's consumer (``AIOKafkaConsumer`` has it)."""

    async def committed(self, partition: TopicPartition) -> int | None: ...


class AppliedMark:
    def __init__(self, consumer: OffsetSource, topic: str,
                 ends: Callable[[], Awaitable[dict[int, int]]], *, min_interval_s: float = 0.2):
        """``ends``: the topic's end offset per partition (its high watermarks)."""
        self.consumer = consumer
        self.topic = topic
        self.ends = ends
        self.min_interval_s = min_interval_s
        self.mark_ms = 0  # nothing is known to be applied before the first check
        self._pending: tuple[int, dict[TopicPartition, int]] | None = None
        self._checked = -float("inf")
        self._warned = -float("inf")
        self._since_ms = int(time.time() * 1000)  # behind since the start until a first mark

    def behind_s(self, now_ms: int) -> float:
        """How far the timed jobs lag ``now_ms``: seconds since the mark (or the start)."""
        return max(0.0, (now_ms - (self.mark_ms or self._since_ms)) / 1000)

    async def refresh(self, now_ms: int) -> int:
        """The mark after checking the group's progress (at most every ``min_interval_s``):
        the newest instant whose end offsets the group has committed on every partition."""
        if time.monotonic() - self._checked < self.min_interval_s:
            return self.mark_ms
        self._checked = time.monotonic()
        try:
            if self._pending is None:
                ends = await self.ends()
                if not ends:  # no metadata yet: nothing to compare against
                    return self.mark_ms
                self._pending = (now_ms, {TopicPartition(self.topic, p): e
                                          for p, e in sorted(ends.items())})
            at, ends = self._pending
            waiting = [tp for tp, end in ends.items() if end > 0]
            committed = await asyncio.gather(*(self.consumer.committed(tp) for tp in waiting))
            if all((c or 0) >= ends[tp] for tp, c in zip(waiting, committed, strict=True)):
                self.mark_ms, self._pending = max(self.mark_ms, at), None
        except (KafkaError, OSError, TimeoutError) as exc:
            # the broker is away (or slow past the worker's timeout): the mark waits, the jobs
            # with it
            if time.monotonic() - self._warned >= WARN_EVERY_S:
                self._warned = time.monotonic()
                logger.warning("cannot read the risk topic's offsets (%s: %s); timed alerts, "
                               "escalations and digests wait until the notifier is known to "
                               "have read what was published", type(exc).__name__, exc)
        return self.mark_ms
