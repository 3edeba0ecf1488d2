"""Shared fixtures: one real broker and one real redis-server per test session (``make test``
runs two pytest-xdist workers, each its own session with its own servers), and fresh topic,
consumer-group and key-prefix names for every test. A real 3-primary Redis Cluster
(``redis_cluster_server``, ``cluster_settings_factory``) starts only for the tests that ask
for it, once per session. Server logs go to ``CHURNWATCH_TEST_LOGS`` (default
/tmp/churnwatch-test-logs), in a directory per worker."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.common.embedded import (
    RedisClusterServer,
    Server,
    start_broker,
    start_redis,
    start_redis_cluster,
)
from services.common.kafka import ensure_topics
from services.common.redisconn import make_redis
from services.common.settings import Settings, load_settings

LOG_DIR = Path(os.environ.get("CHURNWATCH_TEST_LOGS", "/tmp/churnwatch-test-logs")) / \
    os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def broker() -> Iterator[Server]:
    server = start_broker(log_path=LOG_DIR / "broker.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    server = start_redis(log_path=LOG_DIR / "redis.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisClusterServer]:
    """Three cluster-enabled primaries on loopback; started by the first test using it."""
    cluster = start_redis_cluster(log_dir=LOG_DIR)
    yield cluster
    cluster.stop()


def make_test_settings(broker: Server, redis_server: Server | RedisClusterServer, home: Path,
                       **overrides: object) -> Settings:
    run = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "home": home,
        "kafka_bootstrap": broker.address,
        "redis_url": f"redis://{redis_server.address}/0",
        "redis_prefix": f"t{run}",
        "topic_events": f"t{run}.events",
        "topic_risk_changes": f"t{run}.risk-changes",
        "topic_events_dlq": f"t{run}.events.dlq",
        "topic_notifications_dlq": f"t{run}.notifications.dlq",
        "topic_partitions": 2,
        "kafka_idempotence": False,  # Tansu's memory engine lacks InitProducerId
        "scorer_group": f"t{run}-scorer",
        "notifier_group": f"t{run}-notifier",
        "api_port": 0,
        "scorer_metrics_port": 0,
        "notifier_metrics_port": 0,
        # Staff alerts go out at once unless a test is about the settle window.
        "alert_settle": 0,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings_factory(broker: Server, redis_server: Server, tmp_path: Path):
    """Build settings with fresh names; topics are created before they are returned."""

    return _factory(broker, redis_server, tmp_path)


def in_own_loop(coro: Any) -> Any:
    """Run a coroutine to completion on a loop of its own thread: works from sync fixtures
    and from inside async tests alike."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _factory(broker: Server, redis: Server | RedisClusterServer, tmp_path: Path,
             **fixed: object) -> Any:
    def factory(*, create_topics: bool = True, **overrides: object) -> Settings:
        s = make_test_settings(broker, redis, tmp_path, **{**fixed, **overrides})
        if create_topics:
            in_own_loop(ensure_topics(s))
        return s

    return factory


@pytest.fixture
def cluster_settings_factory(broker: Server, redis_cluster_server: RedisClusterServer,
                             tmp_path: Path):
    """``settings_factory`` on the Redis Cluster: ``redis_url`` names one of its nodes and
    ``redis_cluster`` is set."""
    return _factory(broker, redis_cluster_server, tmp_path, redis_cluster=True)


@pytest.fixture
def settings(settings_factory) -> Settings:
    return settings_factory()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = make_redis(settings)
    yield client
    await client.aclose()
