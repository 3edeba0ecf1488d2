"""The notifier process: risk-change CloudEvents in, webhooks / email / SMS out.

Consumes ``settings.topic_risk_changes`` in group ``settings.notifier_group`` and commits a
record only once every delivery it needs is delivered, dead-lettered or durably queued for a
retry in Redis. A second loop works the retry queue a bounded batch per tick. Unreadable
records go to ``settings.topic_notifications_dlq`` and the consumer carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import jinja2
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from services.alerting.acks import AckLinks
from services.alerting.escalation import Escalations
from services.alerting.inbound import InvalidRecord, RiskChangeEvent, decode_risk_change
from services.alerting.webhooks import (
    WebhookHealth,
    get_subscription_with_secret,
    load_subscriptions_with_secrets,
    tenant_of,
)
from services.common import pseudonym
from services.common.exceptions import ConfigError
from services.common.httpserver import WorkerHttpServer
from services.common.kafka import end_offsets, ensure_topics, make_consumer, start_producer
from services.common.logs import setup_logging
from services.common.profiles import ProfileStore, owner_of
from services.common.pseudonym import install_key
from services.common.redisconn import Keys, make_redis
from services.common.runtime import stop_on_signals, tune_gc
from services.common.settings import Settings
from services.notifier.applied import AppliedMark
from services.notifier.breaker import CircuitBreaker
from services.notifier.channels import registry
from services.notifier.channels.base import (
    Channel,
    Message,
    delivery_id,
    staff_id_of,
    staff_key,
)
from services.notifier.channels.in_app import ConsoleList
from services.notifier.deadletters import DeadLetters
from services.notifier.delivery import MAX_COOLING_S, Deliverer
from services.notifier.digests import Digester, digest_changes
from services.notifier.golive import Summaries
from services.notifier.ledger import OWNER_CHANGED, RECIPIENT_LEFT, Ledger
from services.notifier.metrics import NotifierMetrics
from services.notifier.migrate import adopt_untagged_keys
from services.notifier.noise import EpisodeLedger, RateLimiter
from services.notifier.planner import READDRESSED, Planner
from services.notifier.recipients import ProfileRecipientResolver, RecipientResolver
from services.notifier.routing import Recipient, Routing, load_routing
from services.notifier.settle import SettleQueue
from services.notifier.templates import Templates
from services.state.store import ledger_entries

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
POLL_MAX_RECORDS = 50
APPLIED_EVERY_S = 0.2  # how often the applied mark asks the broker (services/notifier/applied.py)
RETRY_BATCH = 50
SHUTDOWN_GRACE_S = 30.0
BATCH_FAILURE_PAUSE_S = 2.0
PLAN_ATTEMPTS = 3  # planning a record that hits a bug: tries before it is dead-lettered
STARTUP_TIMEOUT_S = 60.0


def _created_ms(record: ConsumerRecord[Any, Any]) -> int:
    """When the risk change was published (the record's timestamp), else now."""
    ts = record.timestamp
    now = int(time.time() * 1000)
    return int(ts) if isinstance(ts, int) and 0 < ts <= now + 60_000 else now


def build_channels(settings: Settings, routing: Routing, redis: Any, keys: Keys
                   ) -> dict[str, Channel]:
    """The configured channels (services/notifier/channels/registry.py); each one the routing
    asks for but is not configured is logged once (its deliveries are then left out, not
    failed)."""
    used = set(routing.used_channels) | set(routing.policies.escalation_channels)
    built = registry.Built(settings=settings, redis=redis, keys=keys, used=used)
    channels: dict[str, Channel] = {}
    for spec in registry.specs():
        channel = spec.build(built)
        if channel is not None:
            channels[spec.name] = channel
        elif spec.name in routing.used_channels and spec.off:
            logger.warning("%s notifications are off: %s (routes in %s ask for %s)",
                           spec.name, spec.off, routing.source, spec.name)
    return channels


async def _gather_strict(aws: Sequence[Awaitable[Any]]) -> None:
    """Run all to completion, then raise the first exception any of them raised."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class _Stopped(Exception):
    """Stop was requested before start-up finished."""


KafkaClient = TypeVar("KafkaClient", AIOKafkaProducer, AIOKafkaConsumer)


async def _started(client: KafkaClient) -> KafkaClient:
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise
    return client


async def _start_client(start: Callable[[], Awaitable[KafkaClient]], what: str,
                        stop: asyncio.Event) -> KafkaClient:
    """Start a Kafka client, retrying for a while: a broker that has just started may refuse
    the first requests for a moment."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            return await start()
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("the %s could not start (%s: %s); retrying", what,
                           type(exc).__name__, exc)
        await _sleep_unless(stop, 1.0)
        if stop.is_set():
            raise _Stopped()


class Notifier:
    consumer: AIOKafkaConsumer
    applied: AppliedMark
    dead_letters: DeadLetters
    deliverer: Deliverer

    def __init__(self, settings: Settings, *, registry: CollectorRegistry,
                 resolver: RecipientResolver | None = None):
        self.settings = settings
        self.metrics = NotifierMetrics(registry)
        routing = load_routing(settings.routing_file)
        if settings.notifier_escalate_after_seconds is not None:
            routing = replace(routing, policies=replace(
                routing.policies, escalate_after_s=settings.notifier_escalate_after_seconds))
        self.routing = routing
        self.templates = Templates(settings.notifier_templates_dir)
        self.templates.check()
        if settings.env == "production" and not settings.public_url:
            logger.warning("CHURNWATCH_PUBLIC_URL is not set: the acknowledge links in alerts "
                           "point at %s, which staff outside this host cannot reach; set it "
                           "to where staff reach the API", settings.api_public_url)
        self.redis = make_redis(settings)
        self.keys = Keys(settings.redis_prefix)
        self.channels = build_channels(settings, self.routing, self.redis, self.keys)
        self._ledger_key: bytes | None = None  # the pseudonym key (erasure ledger digests)
        # (topic, partition, offset) -> planning attempts that failed with a bug (not input)
        self._plan_failures: dict[tuple[str, int, int], int] = {}
        policies = self.routing.policies
        lease_s = 2 * max(settings.webhook_timeout_seconds, settings.smtp_timeout_seconds) + 10
        self.ledger = Ledger(self.redis, self.keys, lease_ms=int(lease_s * 1000),
                             retention=settings.retention,
                             owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
        self.digester = Digester(self.redis, self.keys, templates=self.templates,
                                 interval_s=policies.digest_interval_s,
                                 link_base=settings.api_public_url)
        self.escalations = (Escalations(self.redis, self.keys, after_s=policies.escalate_after_s)
                            if policies.escalate_after_s else None)
        self.limiter = RateLimiter(self.redis, self.keys, per_recipient=policies.per_recipient,
                                   per_channel=dict(policies.per_channel))
        self.episodes = EpisodeLedger(self.redis, self.keys, quiet_s=settings.alert_episode_quiet,
                                      ttl_s=settings.retention.episode_ttl_s)
        self.settle = SettleQueue(self.redis, self.keys, settle_s=settings.alert_settle,
                                  episodes=self.episodes)
        self.summaries = Summaries(self.redis, self.keys, after_s=settings.alert_summary_after)
        self.console_list = ConsoleList(self.redis, self.keys, retention=settings.retention)
        self.planner = Planner(
            routing=self.routing,
            resolver=resolver or ProfileRecipientResolver(ProfileStore(self.redis, self.keys),
                                                          self.routing),
            enabled_channels=self.channels.keys(), templates=self.templates,
            episodes=self.episodes, digester=self.digester,
            escalations=self.escalations, ledger=self.ledger, metrics=self.metrics,
            links=AckLinks(self.redis, self.keys, secret=settings.ack_link_key,
                           public_url=settings.api_public_url,
                           ttl_s=settings.ack_link_ttl_seconds,
                           ack_ttl_s=settings.retention.alert_record_ttl_s),
            settle=self.settle, summaries=self.summaries, max_age_s=settings.alert_max_age,
            link_base=settings.api_public_url)
        self.lookup_subscription = partial(get_subscription_with_secret, self.redis, self.keys)
        self.http = WorkerHttpServer(host=settings.api_host, port=settings.notifier_metrics_port,
                                     registry=registry, ready=self._health)
        self.retry_tick_s = min(1.0, max(0.05, settings.delivery_backoff_base_seconds / 2))
        self.retry_batch = max(1, min(RETRY_BATCH * 10, int(
            settings.notifier_retry_max_per_second * self.retry_tick_s)))
        self.consuming = False

    async def admins(self, tenant: str) -> list[Recipient]:
        """Who hears about the tenant's webhooks: its staff with role ``manager`` and an
        e-mail address, else the routing file's ``default_recipient``."""
        staff = await ProfileStore(self.redis, self.keys).list_staff(tenant)
        managers = [Recipient(key=staff_key(tenant, m.staff_id), name=m.name or m.staff_id,
                              email=m.email, locale=m.locale, role="manager", timezone=m.timezone)
                    for m in staff if m.role == "manager" and m.email]
        return managers or [self.routing.store_manager(None)]

    async def _tell_paused(self, sub: dict[str, Any], reason: str) -> None:
        """E-mail the tenant's admins once that a webhook subscription was paused."""
        tenant = tenant_of(sub)
        s = self.settings
        resume_url = f"{s.api_public_url}/v1/webhooks/{sub['id']}/resume"
        for person in await self.admins(tenant):
            if not person.email:
                continue
            subject, text, html = self.templates.webhook_paused(
                sub, person, tenant=tenant, reason=reason,
                pause_after_s=s.webhook_pause_after_seconds, resume_url=resume_url)
            about = f"webhook-paused:{sub['id']}:{sub.get('failing_since', '')}"
            await self.deliverer.deliver_new(Message(
                delivery_id=delivery_id(about, "email", person.email), channel="email",
                event_id=about, customer_id="", to=person.email,
                event=json.dumps({"subscription_id": sub["id"], "tenant": tenant,
                                  "paused_at": sub.get("paused_at")}).encode(),
                recipient_name=person.name, subject=subject, text=text, html=html,
                tenant=tenant, kind="webhook_paused", created_ms=int(time.time() * 1000)))

    def _health(self) -> dict[str, Any]:
        return {"ready": self.consuming, "consumer": "started" if self.consuming else "starting",
                "channels": sorted(self.channels)}

    # lifecycle ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        clients: list[AIOKafkaProducer | AIOKafkaConsumer] = []
        key_task: asyncio.Task[bytes] | None = None
        try:
            port = await self.http.start()
            logger.info("notifier metrics on http://%s:%d/metrics; channels: %s; routing: %s",
                        s.api_host, port, ", ".join(sorted(self.channels)), self.routing.source)
            # customer tokens in the logs (services/common/pseudonym.py), before consuming
            key_task = asyncio.create_task(install_key(s, self.redis), name="pseudonym-key")
            await asyncio.wait({key_task}, timeout=5.0)
            try:
                await adopt_untagged_keys(self.redis, self.keys)
            except RedisError as exc:  # tried again at the next start
                logger.error("could not rename the notifier's keys to the hash-tagged layout "
                             "(%s); state under the old names is not used", exc)
            if self.escalations is not None:
                try:  # entries of older versions: pruned a week from now if never armed
                    await self.escalations.note_unnoted(now_ms=int(time.time() * 1000))
                except RedisError as exc:  # tried again at the next start
                    logger.error("could not note the escalation entries of an older version "
                                 "(%s); they are kept", exc)
            await ensure_topics(s, [s.topic_risk_changes, s.topic_notifications_dlq])
            producer = await _start_client(lambda: start_producer(s), "DLQ producer", stop)
            clients.append(producer)
            self.consumer = await _start_client(
                lambda: _started(make_consumer(s, s.topic_risk_changes, group_id=s.notifier_group)),
                "consumer", stop)
            clients.insert(0, self.consumer)
            # the topic's ends, read by a consumer of no group (services/notifier/applied.py)
            offsets = await _start_client(
                lambda: _started(make_consumer(s, group_id=None, request_timeout_ms=5000,
                                               fetch_max_wait_ms=100)),
                "offsets consumer", stop)
            clients.append(offsets)
            self.applied = AppliedMark(
                self.consumer, s.topic_risk_changes,
                lambda: asyncio.wait_for(end_offsets(offsets, s.topic_risk_changes), 5.0),
                min_interval_s=max(self.retry_tick_s, APPLIED_EVERY_S))
            self.dead_letters = DeadLetters(producer, topic=s.topic_notifications_dlq)
            self.deliverer = Deliverer(
                ledger=self.ledger, channels=self.channels, dead_letters=self.dead_letters,
                metrics=self.metrics, max_attempts=s.delivery_max_attempts,
                backoff_base_s=s.delivery_backoff_base_seconds,
                backoff_max_s=s.delivery_backoff_max_seconds,
                lookup_subscription=self.lookup_subscription, policies=self.routing.policies,
                limiter=self.limiter,
                breaker=CircuitBreaker(failures=s.notifier_breaker_failures,
                                       max_open_s=MAX_COOLING_S,
                                       probe_s=max(1.0, 2 * s.webhook_timeout_seconds)),
                health=WebhookHealth(self.redis, self.keys,
                                     pause_after_s=s.webhook_pause_after_seconds,
                                     tell=self._tell_paused),
                on_delivered=self._delivered, not_theirs=self._not_theirs,
                readdress=self._readdress)
            self.consuming = True
            logger.info("consuming %s as group %s", s.topic_risk_changes, s.notifier_group)
            halt = asyncio.Event()  # stop requested, or one loop ended (a crash): end both
            tasks = [asyncio.create_task(self._consume(halt), name="notifier-consume"),
                     asyncio.create_task(self._retry_loop(halt), name="notifier-retry")]
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            halt.set()
            stopper.cancel()
            finished, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in finished:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        except _Stopped:
            logger.info("stopped while starting")
        finally:
            if key_task is not None:
                key_task.cancel()
            self.consuming = False
            await self._close(clients)

    async def _close(self, clients: list[AIOKafkaProducer | AIOKafkaConsumer]) -> None:
        closing: list[tuple[str, Awaitable[Any]]] = [(type(c).__name__, c.stop()) for c in clients]
        closing += [(f"{n} channel", c.aclose()) for n, c in self.channels.items()]
        closing += [("http server", self.http.stop()), ("redis", self.redis.aclose())]
        for name, step in closing:
            try:
                await step
            except Exception:
                logger.exception("error while closing the %s", name)
        logger.info("notifier stopped")

    # consuming ------------------------------------------------------------------------
    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS,
                                                max_records=POLL_MAX_RECORDS)
            if not batch:
                continue
            try:
                subscriptions = await load_subscriptions_with_secrets(self.redis, self.keys)
                await _gather_strict([self._partition(records, subscriptions)
                                      for records in batch.values()])
            except Exception:
                logger.exception("could not settle a batch of %d record(s); it is processed "
                                 "again in %.0f s", sum(map(len, batch.values())),
                                 BATCH_FAILURE_PAUSE_S)
                self._rewind(batch)
                await _sleep_unless(stop, BATCH_FAILURE_PAUSE_S)
                continue
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:  # CommitFailedError after a rebalance, mostly
                # Partitions moved to another member: it gets these records again and the
                # ledger recognises the deliveries already made.
                logger.warning("offset commit failed (%s); records will be redelivered", exc)

    def _rewind(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        for tp, records in batch.items():
            try:
                self.consumer.seek(tp, records[0].offset)
            except (IllegalStateError, AssertionError) as exc:
                logger.warning("cannot rewind %s: %s", tp, exc)

    async def _partition(self, records: list[ConsumerRecord[Any, Any]],
                         subscriptions: list[dict[str, Any]]) -> None:
        decoded: list[RiskChangeEvent | InvalidRecord] = []
        for record in records:
            try:
                decoded.append(decode_risk_change(record.value))
            except InvalidRecord as exc:
                decoded.append(exc)
        # whose customer was erased after the change was published: one lookup for the batch
        flags = iter(await self.erased([
            (e.change.customer_id, e.change.tenant_id, _created_ms(r))
            for r, e in zip(records, decoded, strict=True) if isinstance(e, RiskChangeEvent)]))
        for record, event in zip(records, decoded, strict=True):  # in order, per customer
            await self._record(record, event, subscriptions,
                               erased=isinstance(event, RiskChangeEvent) and next(flags))

    async def _record(self, record: ConsumerRecord[Any, Any],
                      event: RiskChangeEvent | InvalidRecord,
                      subscriptions: list[dict[str, Any]], *, erased: bool) -> None:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        if isinstance(event, InvalidRecord):
            await self.dead_letters.invalid_record(record, reason=str(event))
            self.metrics.dead_letters.labels(channel="input").inc()
            logger.warning("unreadable record sent to %s: %s",
                           self.settings.topic_notifications_dlq, event, extra=where)
            return
        self.metrics.consumed.inc()
        if erased:  # counted as suppressed
            logger.info("risk change %s is about a customer erased after it was published: "
                        "ignored", event.id, extra=where | {"event_id": event.id,
                                                            "customer_id": event.change.customer_id,
                                                            "tenant": event.change.tenant_id})
            return
        try:
            messages = await self.planner.plan(event, subscriptions=subscriptions,
                                               created_ms=_created_ms(record))
        except (ValueError, KeyError, LookupError, jinja2.TemplateError) as exc:
            # A record (or a profile/template) this notifier cannot plan: never block the
            # partition on it. Redis and Kafka errors propagate: the batch is retried.
            logger.exception("cannot plan the notifications of %s; sent to the DLQ", event.id,
                             extra=where | {"event_id": event.id,  # the id becomes a token
                                            "customer_id": event.change.customer_id,
                                            "tenant": event.change.tenant_id})
            await self.dead_letters.invalid_record(
                record, reason=f"cannot plan notifications: {type(exc).__name__}: {exc}")
            self.metrics.dead_letters.labels(channel="input").inc()
            return
        except (TimeoutError, RedisError, KafkaError, OSError):
            raise  # infrastructure away: the batch is retried as it is
        except Exception as exc:  # noqa: BLE001  a bug (TypeError, AttributeError...): loud
            if await self._plan_bug(record, event, exc, where):
                raise
            return
        await _gather_strict([self.deliverer.deliver_new(m) for m in messages])

    async def _plan_bug(self, record: ConsumerRecord[Any, Any], event: RiskChangeEvent,
                        exc: Exception, where: dict[str, Any]) -> bool:
        """Planning failed with an error that is neither bad input nor infrastructure — a
        bug. Logged at ERROR with the traceback and counted
        (``churnwatch_notifier_unexpected_errors_total{step="plan"}``); True: raise, so the
        batch is retried (PLAN_ATTEMPTS times in all, a bug may depend on state that moves);
        then the one record goes to the DLQ (False) and the partition moves on."""
        spot = (record.topic, record.partition, record.offset)
        failures = self._plan_failures[spot] = self._plan_failures.get(spot, 0) + 1
        self.metrics.unexpected.labels(step="plan").inc()
        extra = where | {"event_id": event.id, "customer_id": event.change.customer_id,
                         "tenant": event.change.tenant_id}
        if failures < PLAN_ATTEMPTS:
            logger.error("planning the notifications of %s failed with an unexpected error "
                         "(attempt %d of %d): %s: %s", event.id, failures, PLAN_ATTEMPTS,
                         type(exc).__name__, exc, exc_info=True, extra=extra)
            return True
        del self._plan_failures[spot]
        logger.error("planning the notifications of %s failed %d times with an unexpected "
                     "error; sent to the DLQ: %s: %s", event.id, failures, type(exc).__name__,
                     exc, exc_info=True, extra=extra)
        await self.dead_letters.invalid_record(
            record, reason=f"planning failed {failures} times: {type(exc).__name__}: {exc}")
        self.metrics.dead_letters.labels(channel="input").inc()
        return False

    async def erased(self, items: Sequence[tuple[str, str, int]]) -> list[bool]:
        """For each (customer id, tenant, ms the change was published): was the customer
        erased after it (the scorer's erasure ledger, ``Keys.erased``)? A replay, a backlog
        or a held alert must not reach staff about them. One round trip for all; each erased
        one is counted as ``suppressed{reason="erased"}``."""
        if not items:
            return []
        if self._ledger_key is None:
            self._ledger_key = await pseudonym.load_key(self.settings, self.redis)
        digests = [pseudonym.pseudonym(self._ledger_key, tenant, customer)
                   for customer, tenant, _ in items]
        wanted: dict[str, list[str]] = {}
        for (_, tenant, _), digest in zip(items, digests, strict=True):
            wanted.setdefault(tenant, []).append(digest)
        found = await ledger_entries(self.redis, self.keys, wanted)
        flags = [(entry := found.get((tenant, digest))) is not None and created_ms < entry[2]
                 for (_, tenant, created_ms), digest in zip(items, digests, strict=True)]
        if any(flags):
            self.metrics.suppressed.labels(reason="erased").inc(sum(flags))
        return flags

    async def standing(self, items: Sequence[tuple[str, str, str]]) -> list[bool]:
        """For each (customer id, tenant, tier) of a digest item: is the customer's episode
        still open at that tier? One who came back or fell back since, or rose to a tier with
        an alert of its own, is left out of the digest (``suppressed{reason="moved_on"}``)."""
        episodes = await self.episodes.get_many([(c, t) for c, t, _ in items])
        flags = [e.open and e.tier == tier for e, (_, _, tier) in zip(episodes, items, strict=True)]
        if not all(flags):
            self.metrics.suppressed.labels(reason="moved_on").inc(len(flags) - sum(flags))
        return flags

    async def _delivered(self, message: Message) -> None:
        """An alert reached its recipient: its acknowledgement window starts now, and a staff
        member's console lists it to acknowledge (whatever channel it came by)."""
        if message.kind == "alert" and self.escalations is not None:
            await self.escalations.arm(message.event_id, message.recipient_key,
                                       now_ms=int(time.time() * 1000))
        try:
            await self.console_list.record_sent(message)
        except RedisError as exc:  # delivered all the same; its customer's page still lists it
            logger.warning("alert %s delivered by %s, not listed in the console (%s)",
                           message.event_id, message.channel, type(exc).__name__,
                           extra={"event_id": message.event_id})

    def _held_back(self, n: int) -> None:
        self.metrics.suppressed.labels(reason="dedupe").inc(n)

    async def _not_theirs(self, message: Message) -> str | None:
        """Why ``message`` is no longer its recipient's to receive (None: it is): a staff
        member who left the team (removed through the API or the console and not added back:
        ``Keys.former_staff``; any channel: an in-app entry would land in a list nobody reads),
        or a notice for the customer's owner (``Message.for_owner``) whose customer's alerts
        go to someone else now. One round trip when neither (:func:`_maybe_moved`)."""
        staff_id = staff_id_of(message.recipient_key)
        owned = message.for_owner and message.kind in ("alert", "won_back") \
            and bool(message.customer_id)
        if staff_id is None and not owned:
            return None
        pipe = self.redis.pipeline(transaction=False)
        if staff_id is not None:
            pipe.sismember(self.keys.former_staff(message.tenant), staff_id)
        if owned:
            pipe.get(self.keys.profile(message.customer_id, message.tenant))
        found = await pipe.execute()
        if staff_id is not None and found.pop(0):
            return RECIPIENT_LEFT
        if not owned or not _maybe_moved(found[0], staff_id):
            return None
        try:
            event = decode_risk_change(message.event)
        except InvalidRecord:
            return None
        return OWNER_CHANGED if await self.planner.owner_changed(event, message) else None

    async def taken(self, reader: Recipient, channel: str, tenant: str,
                    items: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        """Of a digest due for ``reader`` (its items: field, item), those no longer theirs:
        every item when the reader left the team, else those listed to them as the
        customer's owner whose customer's alerts go to someone else now (another owner, or
        none: the store's manager). Each is written again for whoever receives the customer's
        alerts now, joining that person's own digest of the same flush if there is one, and
        left out (:meth:`Planner.taken_from`). One round trip when every customer is still
        theirs. (Items buffered before they carried their risk change stay, and a leaver's
        digest of them is not sent: :meth:`_not_theirs`.)"""
        staff_id = staff_id_of(reader.key)
        usable = [(f, i) for f, i in items
                  if isinstance(i.get("event"), str) and i.get("customer_id")]
        owned = [(f, i) for f, i in usable if i.get("for_owner")]
        if staff_id is None and not owned:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        if staff_id is not None:
            pipe.sismember(self.keys.former_staff(tenant), staff_id)
        for _, item in owned:
            pipe.get(self.keys.profile(str(item["customer_id"]), tenant))
        profiles = await pipe.execute()
        left = staff_id is not None and bool(profiles.pop(0))
        if left:
            mine: list[tuple[str, dict[str, Any]]] = usable
        else:
            mine = [(f, i) for (f, i), raw in zip(owned, profiles, strict=True)
                    if _maybe_moved(raw, staff_id)]
        fields: list[str] = []
        changes: list[tuple[RiskChangeEvent, int]] = []
        for field, item in mine:
            try:
                changes.append((decode_risk_change(str(item["event"]).encode()),
                                int(item.get("created_ms", 0))))
            except (InvalidRecord, ValueError, TypeError):
                continue
            fields.append(field)
        if not changes:
            return set()
        flags = await self.planner.taken_from(reader, channel, tenant, changes,
                                              why=RECIPIENT_LEFT if left else OWNER_CHANGED)
        return {f for f, flag in zip(fields, flags, strict=True) if flag}

    async def _readdress(self, message: Message) -> list[Message]:
        """A notice held for someone who left, to whoever receives it now (the planner's);
        a digest's items, each to whoever took that customer, in a digest of their own."""
        if message.kind == "digest":
            changes = []
            for raw, created_ms in digest_changes(message.event):
                try:
                    changes.append((decode_risk_change(raw), created_ms))
                except InvalidRecord:
                    continue
            moved = await self.planner.readdressed_digest(changes, message)
            logger.info("digest for %s not sent (they left the team); %d of its %d item(s) "
                        "re-addressed", message.masked_target, moved, len(changes),
                        extra={"delivery_id": message.delivery_id, "tenant": message.tenant})
            return []
        if message.kind not in READDRESSED:
            return []
        try:
            event = decode_risk_change(message.event)
        except InvalidRecord:
            return []
        return await self.planner.readdressed(event, message)

    async def _escalate(self, event: RiskChangeEvent, created_ms: int) -> None:
        episode = await self.episodes.get(event.change.customer_id, event.change.tenant_id)
        if not episode.open or episode.tier != "high":
            logger.info("alert %s: the customer is no longer high (or came back); no escalation",
                        event.id, extra={"event_id": event.id})
            return
        messages = await self.planner.escalation_messages(event, created_ms)
        await _gather_strict([self.deliverer.deliver_new(m) for m in messages])

    # retries --------------------------------------------------------------------------
    async def _retry_loop(self, stop: asyncio.Event) -> None:
        limit = asyncio.Semaphore(self.settings.notifier_max_in_flight)

        async def one(delivery_id: str, payload: dict[str, Any] | None) -> None:
            async with limit:
                await self.deliverer.deliver_queued(delivery_id, payload)

        async def retries(now_ms: int) -> None:
            due = await self.ledger.due(now_ms=now_ms, limit=self.retry_batch)
            results = await asyncio.gather(*(one(i, p) for i, p in due), return_exceptions=True)
            for (did, _), result in zip(due, results, strict=True):
                if isinstance(result, BaseException):
                    logger.error("retry of %s failed: %r; it stays queued", did, result,
                                 extra={"delivery_id": did})
            self.metrics.retry_queue_depth.set(await self.ledger.depth())

        esc = self.escalations
        # The timed jobs judge customers by the episodes the applied risk changes keep: they
        # take what was due by the applied mark (services/notifier/applied.py), not by now;
        # retries of queued deliveries judge nobody and run by now.
        jobs: list[tuple[str, Callable[[int], Awaitable[Any]], bool]] = [
            ("digests", lambda now: self.digester.flush(
                now_ms=now, deliver=self.deliverer.deliver_new, erased=self.erased,
                standing=self.standing, taken=self.taken), True),
            ("settle", lambda now: self.settle.run_due(
                now_ms=now, deliver=self.deliverer.deliver_new, held_back=self._held_back,
                dropped=esc.forget if esc is not None else None, erased=self.erased), True),
            ("summaries", lambda now: self.summaries.flush(
                now_ms=now, plan=self.planner.summary_messages, deliver=self.deliverer.deliver_new,
                erased=self.erased), True),
            *([("escalations", lambda now: esc.run_due(now_ms=now, escalate=self._escalate),
                True)] if esc is not None else []),
            ("retries", retries, False),
        ]
        while not stop.is_set():
            now_ms = int(time.time() * 1000)
            try:
                mark_ms = await self.applied.refresh(now_ms)
            except Exception:
                logger.exception("could not tell how far the risk changes are applied; the "
                                 "timed jobs wait")
                mark_ms = self.applied.mark_ms
            self.metrics.decisions_behind.set(self.applied.behind_s(now_ms))
            for name, job, by_mark in jobs:
                try:  # each on its own: one failing job stops no other
                    await job(mark_ms if by_mark else now_ms)
                except Exception:
                    logger.exception("%s failed this tick; the other jobs go on, trying again",
                                     name)
            await _sleep_unless(stop, self.retry_tick_s)


async def run_notifier(settings: Settings, *, stop: asyncio.Event,
                       registry: CollectorRegistry | None = None,
                       resolver: RecipientResolver | None = None) -> None:
    """Run the notifier until ``stop`` is set (or a loop crashes, re-raised here).

    ``registry``: where the metrics are registered (a fresh one by default); ``resolver``:
    who receives email/SMS (default: :class:`ProfileRecipientResolver` - the customer's owner
    from the profile, else the store manager).
    Raises ConfigError for a bad routing file.
    """
    notifier = Notifier(settings, registry=registry or CollectorRegistry(), resolver=resolver)
    await notifier.run(stop)


def main(settings: Settings) -> int:
    """Entry point: run until SIGTERM/SIGINT. 0 = clean stop, 2 = bad configuration, 1 = crash."""
    setup_logging("notifier", settings.log_level)
    # httpx logs every request URL at INFO; webhook URLs may carry tokens in their path.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))

    tune_gc()

    async def _main() -> int:
        stop = asyncio.Event()
        stop_on_signals(asyncio.get_running_loop(), stop.set, (signal.SIGTERM, signal.SIGINT))
        try:
            await run_notifier(settings, stop=stop)
        except ConfigError as exc:
            logger.error("%s", exc)
            return 2
        except Exception:
            logger.exception("the notifier stopped on an error")
            return 1
        return 0

    return asyncio.run(_main())


def _maybe_moved(profile: bytes | str | None, staff_id: str | None) -> bool:
    """Whether a notice for a customer's owner, to ``staff_id`` (None: a routing file's
    recipient standing in for a customer without an owner), may be someone else's now, by
    the customer's stored ``profile``: it names another owner (or, for a routing file's
    recipient, any owner). Only then is the customer's whole context resolved."""
    owner = owner_of(profile)
    return owner != staff_id if staff_id is not None else owner is not None
