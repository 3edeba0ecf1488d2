"""Fixtures shared by integration test modules."""

from __future__ import annotations

import pytest

from services.common.kafka import ensure_topics
from services.common.settings import Settings
from tests.conftest import in_own_loop, make_test_settings
from tests.integration.test_scorer_guarantees import QUIET, run_in_chunks, story


@pytest.fixture(scope="session")
def sigkill_reference(broker, redis_server, tmp_path_factory: pytest.TempPathFactory
                      ) -> Settings:
    """One uninterrupted run of :func:`story` in chunks (standalone Redis), shared by the
    SIGKILL tests on a standalone Redis and on a Redis Cluster."""
    home = tmp_path_factory.mktemp("sigkill-reference")
    reference = make_test_settings(broker, redis_server, home, clock="event",
                                   topic_partitions=1, **QUIET)
    events = story()
    chunks = [events[i:i + 12] for i in range(0, len(events), 12)]

    async def run() -> None:
        await ensure_topics(reference)
        await run_in_chunks(reference, home, chunks, {}, "reference")

    in_own_loop(run())
    return reference
