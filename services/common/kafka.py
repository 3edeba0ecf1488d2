"""The one place that knows how to talk to Kafka: settings in, aiokafka clients out."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    UnknownError,
    UnsupportedVersionError,
)

from services.common.retry import TRANSIENT, Backoff
from services.common.settings import Settings

logger = logging.getLogger(__name__)


def security_options(settings: Settings) -> dict[str, object]:
    """aiokafka's TLS/SASL options from CHURNWATCH_KAFKA_SECURITY_PROTOCOL and friends
    (empty for PLAINTEXT). Shared by producers, consumers and the admin client."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, object] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
        if settings.kafka_ssl_certfile and settings.kafka_ssl_keyfile:
            context.load_cert_chain(str(settings.kafka_ssl_certfile),
                                    str(settings.kafka_ssl_keyfile))
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=password.get_secret_value() if password else None)
    return options


def faust_credentials(settings: Settings) -> object | None:
    """The same TLS/SASL settings as Faust ``broker_credentials`` (None for PLAINTEXT)."""
    import faust  # only the scorer needs it; keep it out of the API's imports

    options = security_options(settings)
    if not options:
        return None
    context = options.get("ssl_context")
    assert context is None or isinstance(context, ssl.SSLContext)
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=str(options["sasl_plain_username"]), password=str(options["sasl_plain_password"]),
        ssl_context=context, mechanism=settings.kafka_sasl_mechanism)


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer that does not lose acknowledged records: acks=all, idempotent."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence is not False,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "client_id": "churnwatch",
        **security_options(settings),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)  # type: ignore[arg-type]


async def start_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A started producer. With ``CHURNWATCH_KAFKA_IDEMPOTENCE=auto`` a broker that refuses
    InitProducerId gets a non-idempotent producer (still acks=all) and a warning."""
    producer = make_producer(settings, **overrides)
    try:
        await producer.start()
        return producer
    except (UnknownError, UnsupportedVersionError, ClusterAuthorizationFailedError) as exc:
        await producer.stop()
        if settings.kafka_idempotence != "auto":
            raise
        logger.warning(
            "the broker at %s refused the idempotent producer (InitProducerId: %s); producing "
            "with acks=all and no idempotence. Set CHURNWATCH_KAFKA_IDEMPOTENCE=false to skip "
            "this probe", settings.kafka_bootstrap, type(exc).__name__)
        producer = make_producer(settings, **{**overrides, "enable_idempotence": False})
        await producer.start()
        return producer


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: object
                  ) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": max(settings.kafka_request_timeout_ms, 40_000),
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "rebalance_timeout_ms": 10_000,
        "client_id": "churnwatch",
        **security_options(settings),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)  # type: ignore[arg-type]


def all_topics(settings: Settings) -> list[str]:
    return [settings.topic_events, settings.topic_risk_changes,
            settings.topic_events_dlq, settings.topic_notifications_dlq]


def topic_configs(settings: Settings) -> dict[str, str]:
    """The configs of every topic churnwatch creates (docs/privacy.md, "Readable records in
    Kafka"): records are deleted, not compacted, after CHURNWATCH_TOPIC_RETENTION_HOURS, and
    segments roll often enough that deletion follows the retention closely (Kafka deletes whole
    segments, once their newest record has aged out). All three are plain Kafka topic configs, set explicitly so that a
    broker-wide ``log.cleanup.policy`` or ``log.roll.hours`` does not change the bound."""
    retention = settings.retention
    return {"cleanup.policy": "delete",
            "retention.ms": str(retention.topic_retention_ms),
            "segment.ms": str(retention.topic_segment_ms)}


async def _warn_on_longer_retention(admin: AIOKafkaAdminClient, settings: Settings,
                                    names: list[str]) -> None:
    """Say so when a topic that exists already keeps records longer than the settings promise
    (it was created before, by hand, or with another retention): the erasure bound in
    docs/privacy.md then does not hold for it. Best effort: never fails the caller."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    wanted = topic_configs(settings)
    limits = {k: int(wanted[k]) for k in ("retention.ms", "segment.ms")}
    try:
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        for answer in answers:
            for resource in answer.resources:
                name, entries = resource[3], {e[0]: e[1] for e in resource[4]}
                # a config the broker does not report (some Kafka-protocol brokers list only
                # the ones set on the topic) is not judged
                longer = [k for k, limit in limits.items()
                          if entries.get(k) is not None
                          and not 0 <= int(entries[k]) <= limit]
                policy = entries.get("cleanup.policy")
                if longer or (policy is not None and "delete" not in policy):
                    found = ", ".join(f"{k}={entries.get(k)}" for k in wanted)
                    want = ", ".join(f"{k}={v}" for k, v in wanted.items())
                    logger.warning(
                        "topic %s keeps records longer than CHURNWATCH_TOPIC_RETENTION_HOURS "
                        "allows (%s; wanted %s): erased customers stay readable there longer "
                        "than docs/privacy.md says until you alter it", name, found, want)
    except (KafkaError, OSError, TimeoutError, ValueError) as exc:  # no DescribeConfigs, ACLs: not worth failing
        logger.info("could not check the retention of existing topics: %s", exc)


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None,
                        *, timeout: float = 30.0) -> None:  # noqa: ASYNC109  a retry deadline
    """Create the topics churnwatch uses if they are missing (idempotent), with
    :func:`topic_configs`; warn about existing ones that keep records longer."""
    names = list(names) if names is not None else all_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=settings.kafka_request_timeout_ms,
                                **security_options(settings))  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time() + timeout
    backoff = Backoff(0.25, 2.0)  # the services' retry policy (services/common/retry.py)
    while True:
        try:
            await admin.start()
            break
        except TRANSIENT as exc:  # anything else (a bad address, a bug) fails at once
            if asyncio.get_running_loop().time() > deadline:
                raise
            logger.info("waiting for the broker at %s: %s", settings.kafka_bootstrap, exc)
            await asyncio.sleep(backoff.next())
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        present = [n for n in names if n in existing]
        if present:
            await _warn_on_longer_retention(admin, settings, present)
        if missing:
            try:
                configs = topic_configs(settings)
                await admin.create_topics([
                    NewTopic(n, num_partitions=settings.topic_partitions,
                             replication_factor=settings.topic_replication,
                             topic_configs=configs) for n in missing
                ])
            except TopicAlreadyExistsError:
                pass
            logger.info("created topics %s", missing)
    finally:
        await admin.close()


async def end_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    """High watermark per partition of ``topic``, for a consumer without a group.

    ListOffsets(latest) alone is not trusted: some Kafka-protocol brokers (Tansu 0.6) answer it
    with the base offset of the last batch. The high watermark a Fetch response carries is
    authoritative, so the consumer fetches at the listed end and keeps the larger of the two.
    """
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - only way to refresh
        partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        return {}
    listed = await consumer.end_offsets(tps)
    if set(consumer.assignment()) != set(tps):
        consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, listed[tp])
    await consumer.getmany(*tps, timeout_ms=200, max_records=1)
    out: dict[int, int] = {}
    for tp in tps:
        high = consumer.highwater(tp)
        out[tp.partition] = max(listed[tp], high if high is not None else 0)
    return out
