"""What the scorer's consumer does when its batch handler raises (services/scorer/transport.py;
real broker, real Faust worker processes): a bug there must not leave a worker alive with a
stalled partition, nor lose what it was handed. The worker exits with an error (a supervisor
or ``churnwatch up`` restarts it) and nothing of the failed batch is committed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from services.common.kafka import make_consumer
from services.common.settings import Settings
from tests.kafkatools import produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def worker(settings: Settings, tmp_path: Path, name: str, *,
           crash: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.handover_worker", settings.kafka_bootstrap,
         settings.topic_events, f"{settings.scorer_group}-handover",
         str(tmp_path / f"{name}-data")],
        cwd=ROOT, env={**os.environ, "CRASH_ON_BOOM": "1" if crash else "0"},
        stdout=open(tmp_path / f"{name}.log", "wb"), stderr=subprocess.STDOUT)


async def committed(settings: Settings) -> int | None:
    consumer = make_consumer(settings, group_id=f"{settings.scorer_group}-handover")
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(settings.topic_events, 0))
    finally:
        await consumer.stop()


async def test_a_handler_that_raises_stops_the_worker_and_loses_nothing(
        settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(topic_partitions=1)
    await produce(settings, settings.topic_events,
                  [(b"k", b"first"), (b"k", b"boom"), (b"k", b"last")])
    crashing = worker(settings, tmp_path, "crashing", crash=True)
    try:
        code = crashing.wait(60)
    except subprocess.TimeoutExpired:
        crashing.kill()
        raise AssertionError("the worker lived on after its handler raised") from None
    log = (tmp_path / "crashing.log").read_text()
    assert code != 0, log
    assert "a bug in the batch handler" in log
    assert "handled 1 boom" not in log
    # A worker of the group starts again from the committed offset: at or before the failed
    # record, so it gets that record and every one after it (the SIGKILL tests show a
    # restarted scorer does so).
    position = await committed(settings)
    assert position is None or position <= 1, "the failed batch's offsets were committed"
