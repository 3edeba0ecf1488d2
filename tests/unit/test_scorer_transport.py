"""How the scorer's consumer sizes what it takes for its batch handler
(services/scorer/transport.py): a batch holds at most a poll's records, and what is taken and
what is being handed over each hold at most half the in-flight bound; and that it finds the
Faust internals it relies on, or says which it lacks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.common.settings import load_settings
from services.scorer import transport
from services.scorer.transport import INTERNALS, PollConsumer, missing_internals
from services.scorer.worker import build_app


def _consumer(budget: int | None, poll_records: int | None = 5000) -> PollConsumer:
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


def test_without_a_poll_size_only_the_bound_cuts_batches() -> None:
    consumer = _consumer(700, poll_records=None)  # Faust's default
    assert _taken(consumer, [100] * 10) == [[100] * 3, [100] * 3, [100] * 3, [100]]
    consumer.max_unacked_bytes = None
    assert _taken(consumer, [100] * 10) == [[100] * 10]


def test_the_scorers_consumer_has_the_faust_internals_it_relies_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built as the scorer builds it (no broker is contacted before start): every internal the
    hand-over uses is there, and a Faust without one stops the consumer with its name."""
    settings = load_settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1",
                             redis_url="redis://127.0.0.1:1/0")
    consumer = build_app(settings).consumer
    assert isinstance(consumer, PollConsumer)
    assert missing_internals(consumer) == []
    assert missing_internals(object()) == list(INTERNALS)

    # as if a faust-streaming release had renamed one of them
    monkeypatch.setattr(transport, "INTERNALS", (*INTERNALS, "_renamed_internal"))
    with pytest.raises(RuntimeError, match="lacks what the scorer's consumer relies on: "
                                           "_renamed_internal"):
        build_app(settings).consumer  # noqa: B018  the property builds the consumer
