"""How the scorer's consumer sizes what it takes for its batch handler
(services/scorer/transport.py): a batch holds at most a poll's records, and what is taken and
what is being handed over each hold at most half the in-flight bound."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.scorer.transport import PollConsumer


def _consumer(budget: int | None, poll_records: int = 5000) -> PollConsumer:
    consumer = PollConsumer.__new__(PollConsumer)  # _fits reads only these attributes
    consumer.max_unacked_bytes = budget
    app: Any = SimpleNamespace(conf=SimpleNamespace(broker_max_poll_records=poll_records))
    consumer.app = app  # only its conf is read
    return consumer


def _taken(consumer: PollConsumer, sizes: list[int]) -> list[list[int]]:
    """The batches ``sizes`` (bytes per record, in order) are taken in."""
    batches: list[list[int]] = [[]]
    held = 0
    for size in sizes:
        if batches[-1] and not consumer._fits(len(batches[-1]), held, size):
            batches.append([])
            held = 0
        batches[-1].append(size)
        held += size
    return batches


def test_within_half_the_bound_it_is_one_batch() -> None:
    assert _taken(_consumer(2000), [100] * 10) == [[100] * 10]
    assert _taken(_consumer(None), [100] * 10) == [[100] * 10]


def test_batches_hold_half_the_bound_at_most() -> None:
    assert _taken(_consumer(700), [100] * 10) == [[100] * 3, [100] * 3, [100] * 3, [100]]


def test_a_record_larger_than_half_the_bound_goes_alone() -> None:
    assert _taken(_consumer(700), [100, 5000, 100]) == [[100], [5000], [100]]


def test_a_batch_holds_at_most_a_polls_records() -> None:
    assert _taken(_consumer(None, poll_records=4), [1] * 10) == [[1] * 4, [1] * 4, [1] * 2]
