"""Retention settings reach the code that keeps data (issue 17, item 5; docs/privacy.md):
real Redis and broker, settings from the one settings object, no stack needed."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import Retention, Settings, load_settings
from services.notifier.ledger import Ledger
from services.records import timeline


def test_the_defaults_are_the_retention_the_code_used_before() -> None:
    assert load_settings().retention == Retention()
    assert Retention().customer_ttl_s == 400 * 86_400 and Retention().timeline_max == 500
    s = load_settings(delivery_log_max_entries=20, inbox_days=2, topic_retention_hours=1.5)
    assert s.retention.delivery_log_max == 20 and s.retention.inbox_ttl_s == 2 * 86_400
    assert s.retention.topic_retention_ms == 5_400_000


async def test_customer_lists_are_capped_and_expire_as_configured(settings_factory,
                                                                   redis: Redis) -> None:
    s: Settings = settings_factory(create_topics=False, retention_days=3,
                                   timeline_max_entries=10, delivery_log_max_entries=12)
    keys = Keys(s.redis_prefix)
    ledger = Ledger(redis, keys, owner="t", lease_ms=1000, retention=s.retention)
    for n in range(15):
        await ledger.log_outcome("+8613900000001", {"n": n}, tenant="acme")
        await timeline.append(redis, keys, "+8613900000001", "acme",
                              {"kind": "note", "at": "2026-01-01T00:00:00Z", "n": n},
                              retention=s.retention)
    for key, cap in ((keys.delivery_log("+8613900000001", "acme"), 12),
                     (keys.timeline("+8613900000001", "acme"), 10)):
        assert await redis.llen(key) == cap
        assert 3 * 86_400 - 5 <= await redis.ttl(key) <= 3 * 86_400  # no longer kept forever


async def test_topics_are_created_with_the_configured_retention(settings_factory) -> None:
    s: Settings = settings_factory(topic_retention_hours=36)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        answer = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.topic_events)])
    finally:
        await admin.close()
    entries = {e[0]: e[1] for e in answer[0].resources[0][4]}
    assert entries["retention.ms"] == str(36 * 3_600_000)
