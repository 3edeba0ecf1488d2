"""How the scorer's consumer cuts a poll for its batch handler (services/scorer/transport.py):
pieces in the poll's order whose handled records fit the in-flight bound."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.scorer.transport import PollConsumer


def _consumer(budget: int | None, topics: tuple[str, ...] = ("events",)) -> PollConsumer:
    consumer = PollConsumer.__new__(PollConsumer)  # _chunks reads only these two attributes
    consumer.max_unacked_bytes = budget

    async def handler(messages: list[Any]) -> None:  # pragma: no cover - never called here
        del messages

    consumer.batch_handlers = dict.fromkeys(topics, handler)
    return consumer


def _poll(*records: tuple[str, int]) -> list[tuple[Any, Any]]:
    """(topic, value size) per record, offsets in order."""
    return [(("tp", topic), SimpleNamespace(topic=topic, offset=i, key=b"k", value=b"x" * size))
            for i, (topic, size) in enumerate(records)]


def _shape(chunks: list[list[tuple[Any, Any]]]) -> list[list[int]]:
    return [[m.offset for _, m in chunk] for chunk in chunks]


def test_a_poll_within_the_bound_is_one_piece() -> None:
    poll = _poll(*[("events", 99)] * 10)  # 100 bytes each with the key
    assert _shape(_consumer(1000)._chunks(poll)) == [list(range(10))]
    assert _shape(_consumer(None)._chunks(poll)) == [list(range(10))]


def test_pieces_fit_the_bound_and_keep_the_polls_order() -> None:
    poll = _poll(*[("events", 99)] * 10)
    chunks = _consumer(350)._chunks(poll)
    assert _shape(chunks) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_a_record_larger_than_the_bound_goes_alone() -> None:
    poll = _poll(("events", 99), ("events", 5000), ("events", 99))
    assert _shape(_consumer(350)._chunks(poll)) == [[0], [1], [2]]


def test_records_for_streams_do_not_count_against_the_pieces() -> None:
    # Other topics' records go through Faust's streams, whose delivery waits on the bound
    # by itself; they stay in their place in the poll.
    poll = _poll(("events", 199), ("other", 5000), ("events", 99), ("events", 99))
    assert _shape(_consumer(350)._chunks(poll)) == [[0, 1, 2], [3]]
