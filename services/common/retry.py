"""The retry policy of the services' own loops, in one place: which errors are transient
(the infrastructure being away, busy or failing over — they go away by themselves) and how
long to wait between attempts (doubling, capped).

Everything else is not retried quietly: a caller either stops loudly (the scorer's batch
waits with an ERROR log, a metric and a failing readiness probe), gives the one record up
after a few attempts (the notifier's planner), or lets the error reach its own guard. The
notifier's *deliveries* have a policy of their own (services/notifier/backoff.py: jittered,
persistent across restarts, a bounded number of attempts per message).
"""

from __future__ import annotations

from aiokafka.errors import KafkaError
from redis.exceptions import BusyLoadingError, ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Errors of the infrastructure, which go away: Redis or the broker unreachable, timing out,
# loading, failing over; the network.
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, BusyLoadingError, TryAgainError, ClusterDownError,
    KafkaError, OSError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


class Backoff:
    """Waits between attempts: ``first``, then doubling up to ``cap`` (seconds).
    ``next()`` gives the wait before the next attempt; ``reset()`` after a success."""

    def __init__(self, first: float = 0.1, cap: float = 5.0, factor: float = 2.0):
        if first <= 0 or cap < first or factor < 1:
            raise ValueError("backoff needs 0 < first <= cap and factor >= 1")
        self.first, self.cap, self.factor = first, cap, factor
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first
