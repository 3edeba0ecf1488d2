"""Delivering one message: claim it, send it, record the outcome.

At most once per delivery id while Redis remembers it: a delivery is sent only by the worker
that claimed it (see :mod:`services.notifier.ledger`); a retryable failure is queued durably
before the record is committed; a permanent failure, or the last attempt, goes to the
notifications DLQ. Exceptions from Redis or Kafka propagate so that the caller does not
commit a record whose deliveries were not settled.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from services.alerting.webhooks import WebhookHealth, is_paused
from services.common.exceptions import DeliveryError
from services.notifier.backoff import retry_delay
from services.notifier.breaker import CircuitBreaker
from services.notifier.channels.base import Channel, Message
from services.notifier.deadletters import DeadLetters
from services.notifier.digests import digest_customers
from services.notifier.ledger import (
    CLAIMED,
    DELIVERED,
    FAILED,
    OWNER_CHANGED,
    QUEUED,
    RECIPIENT_LEFT,
    Ledger,
    now_iso,
)
from services.notifier.metrics import NotifierMetrics
from services.notifier.noise import RateLimiter
from services.notifier.policy import quiet_until, zone
from services.notifier.routing import Policies

logger = logging.getLogger(__name__)

MAX_COOLING_S = 60.0

SubscriptionLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Deliverer:
    def __init__(self, *, ledger: Ledger, channels: Mapping[str, Channel],
                 dead_letters: DeadLetters, metrics: NotifierMetrics,
                 lookup_subscription: SubscriptionLookup, max_attempts: int,
                 backoff_base_s: float, backoff_max_s: float, policies: Policies | None = None,
                 limiter: RateLimiter | None = None, breaker: CircuitBreaker | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 health: WebhookHealth | None = None,
                 on_delivered: Callable[[Message], Awaitable[None]] | None = None,
                 not_theirs: Callable[[Message], Awaitable[str | None]] | None = None,
                 readdress: Callable[[Message], Awaitable[list[Message]]] | None = None):
        self.ledger = ledger
        self.channels = channels
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.lookup_subscription = lookup_subscription
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.policies = policies or Policies()
        self.limiter = limiter
        self.breaker = breaker or CircuitBreaker(max_open_s=MAX_COOLING_S)
        self.wall_clock = wall_clock
        self.health = health  # pauses webhook subscriptions that keep failing
        self.on_delivered = on_delivered  # e.g. arm the escalation of a delivered alert
        # why the message's recipient is no longer the one to tell (None: they are):
        # RECIPIENT_LEFT, OWNER_CHANGED
        self.not_theirs = not_theirs
        self.readdress = readdress  # the same notice to whoever receives it now

    # entry points ---------------------------------------------------------------------
    async def deliver_new(self, message: Message) -> None:
        """First delivery of a message planned from a consumed record."""
        state = await self.ledger.claim(message.delivery_id, from_queue=False)
        if state == CLAIMED:
            if not await self._defer_if_cooling(message) and not await self._held(message):
                await self._attempt(message)
            return
        self.metrics.deliveries.labels(channel=message.channel, outcome="skipped_duplicate").inc()
        if state in (DELIVERED, FAILED, QUEUED):
            logger.info("%s delivery to %s already %s; skipped", message.channel,
                        message.masked_target, state, extra=_extra(message))
            return
        # Another worker is sending it right now: check again once its claim has expired.
        await self.ledger.park(message.delivery_id, message.to_payload(attempts=0),
                               due_ms=_now_ms() + self.ledger.lease_ms)
        logger.info("%s delivery to %s is being sent by another worker; parked for a check",
                    message.channel, message.masked_target, extra=_extra(message))

    async def deliver_queued(self, delivery_id: str, payload: dict[str, Any] | None) -> None:
        """A due entry of the retry queue."""
        state = await self.ledger.claim(delivery_id, from_queue=True)
        if state in (DELIVERED, FAILED):
            await self.ledger.drop(delivery_id)
            return
        if state != CLAIMED:  # someone is sending it: look again after their claim expires
            await self.ledger.postpone(delivery_id, due_ms=_now_ms() + self.ledger.lease_ms)
            return
        if payload is None:
            logger.error("retry entry %s has no payload; dropped", delivery_id,
                         extra={"delivery_id": delivery_id})
            await self.ledger.mark_failed(delivery_id)
            return
        message = Message.from_payload(payload)
        if message.channel == "webhook":
            sub = await self.lookup_subscription(message.subscription_id)
            if sub is None:
                await self._give_up(message, f"webhook subscription {message.subscription_id} "
                                             "was deleted before the delivery succeeded",
                                    track=False)
                return
            if is_paused(sub):
                await self._give_up(message, f"webhook subscription {message.subscription_id} "
                                             f"is paused (failing since {sub.get('failing_since')})",
                                    track=False)
                return
            message = message.with_attempt(message.attempt, secret=sub.get("secret", ""),
                                           to=sub["url"])
        blocked = self.breaker.blocked_for(_target_key(message))
        if blocked > 0:  # the endpoint is down: wait for its probe, untried
            await self.ledger.schedule_retry(
                message.delivery_id, message.to_payload(attempts=message.attempt - 1),
                due_ms=_now_ms() + int((blocked + random.uniform(0, 1)) * 1000))
            return
        if await self._held(message):
            return
        await self._attempt(message)

    # quiet hours and rate limits ----------------------------------------------------------
    async def _held(self, message: Message) -> bool:
        """Delay (never drop) a staff message inside quiet hours or over a rate limit: it is
        queued for when it may go, keeping its attempt count."""
        if message.channel == "webhook":
            return False
        now = self.wall_clock()
        delay: float | None = None
        reason = ""
        quiet = self.policies.quiet_hours
        if quiet is not None and message.timezone and message.channel in quiet.channels:
            until = quiet_until(datetime.fromtimestamp(now, UTC), zone(message.timezone), quiet)
            if until is not None:
                delay, reason = until.timestamp() - now, "quiet_hours_delayed"
        if delay is None and self.limiter is not None and self.limiter.enabled:
            wait = await self.limiter.take(channel=message.channel,
                                           recipient=message.recipient_key, now_s=now)
            if wait is not None:
                delay, reason = wait, "rate_limited"
        if delay is None:
            return False
        delay = max(delay, 0.0) + random.uniform(0, min(5.0, max(delay, 0.0) * 0.1))
        await self.ledger.schedule_retry(message.delivery_id,
                                         message.to_payload(attempts=message.attempt - 1),
                                         due_ms=int((now + delay) * 1000))
        self.metrics.suppressed.labels(reason=reason).inc()
        await self._log(message, "delayed", reason=reason)
        logger.info("%s message to %s delayed %.0f s (%s)", message.channel,
                    message.masked_target, delay, reason, extra=_extra(message))
        return True

    # a target that just failed ----------------------------------------------------------
    async def _defer_if_cooling(self, message: Message) -> bool:
        """Queue ``message`` without trying it while its target recovers from a failure.

        Keeps one receiver that is down (each attempt waiting for a timeout) from holding up
        every record of the partition; the retry queue tries it once the pause is over.
        """
        remaining = self.breaker.blocked_for(_target_key(message))
        if remaining <= 0:
            return False
        await self.ledger.schedule_retry(message.delivery_id, message.to_payload(attempts=0),
                                         due_ms=_now_ms() + int(remaining * 1000))
        self.metrics.deliveries.labels(channel=message.channel, outcome="retry").inc()
        self.metrics.retries.labels(channel=message.channel).inc()
        logger.info("%s target %s failed recently; delivery queued for %.1f s", message.channel,
                    message.masked_target, remaining, extra=_extra(message))
        return True

    # one attempt ----------------------------------------------------------------------
    async def _attempt(self, message: Message) -> None:
        if self.not_theirs is not None and (why := await self.not_theirs(message)) is not None:
            await self._not_theirs(message, why)
            return
        channel = self.channels.get(message.channel)
        if channel is None:
            await self._give_up(message, f"the {message.channel} channel is not configured")
            return
        started = time.monotonic()
        error: DeliveryError | None = None
        try:
            await channel.send(message)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a bug or an unexpected library error: retry, keep going
            logger.exception("unexpected error sending %s delivery", message.channel,
                             extra=_extra(message))
            error = DeliveryError(f"unexpected {type(exc).__name__}: {exc}")
        took = time.monotonic() - started

        if error is None:
            self.breaker.success(_target_key(message))
            latency = (self.wall_clock() - message.created_ms / 1000 if message.created_ms > 0
                       else took)
            self.metrics.delivery_seconds.labels(channel=message.channel).observe(max(latency, 0.0))
            await self.ledger.mark_delivered(message.delivery_id)
            self.metrics.deliveries.labels(channel=message.channel, outcome="delivered").inc()
            if self.on_delivered is not None:
                await self.on_delivered(message)
            await self._log(message, "delivered")
            logger.info("delivered %s to %s (attempt %d)", message.channel,
                        message.masked_target, message.attempt, extra=_extra(message))
            await self._track(message, None)
        elif error.permanent:
            await self._give_up(message, str(error))
        elif message.attempt >= self.max_attempts:
            await self._give_up(message, f"gave up after {message.attempt} attempts: {error}")
        else:
            delay = retry_delay(message.attempt, base_s=self.backoff_base_s,
                                max_s=self.backoff_max_s, retry_after_s=error.retry_after)
            self.breaker.failure(_target_key(message), delay_s=delay)
            await self.ledger.schedule_retry(message.delivery_id,
                                             message.to_payload(attempts=message.attempt),
                                             due_ms=_now_ms() + int(delay * 1000))
            self.metrics.deliveries.labels(channel=message.channel, outcome="retry").inc()
            self.metrics.retries.labels(channel=message.channel).inc()
            await self._log(message, "retrying", reason=str(error))
            logger.warning("%s delivery to %s failed (attempt %d of %d): %s; retry in %.1f s",
                           message.channel, message.masked_target, message.attempt,
                           self.max_attempts, error, delay, extra=_extra(message))
            await self._track(message, str(error))

    async def _not_theirs(self, message: Message, why: str) -> None:
        """The person a message was held for (settle window, quiet hours, a rate limit, a
        retry, the morning digest) is no longer the one to tell (``why``): a staff member who
        left the team, or the customer's owner (or stand-in) when the customer has another
        owner since. Nothing more reaches them.
        The notice goes to whoever receives it now (first: a crash in between sends it
        again under the same delivery id, so once), and the message ends here."""
        moved = await self.readdress(message) if self.readdress is not None else []
        for other in moved:
            await self.deliver_new(other)
        await self.ledger.mark_failed(message.delivery_id)  # final: not retried
        self.metrics.suppressed.labels(reason=_NOT_THEIRS[why]).inc()
        await self._log(message, "not_sent", reason=why)
        logger.info("%s %s to %s not sent: %s%s", message.kind or "message",
                    message.channel, message.masked_target, why,
                    f"; sent to {', '.join(m.masked_target for m in moved)}" if moved else "",
                    extra=_extra(message))

    async def _give_up(self, message: Message, reason: str, *, track: bool = True) -> None:
        await self.dead_letters.failed_delivery(message, reason=reason, attempts=message.attempt)
        await self.ledger.mark_failed(message.delivery_id)
        self.metrics.deliveries.labels(channel=message.channel, outcome="failed").inc()
        self.metrics.dead_letters.labels(channel=message.channel).inc()
        await self._log(message, "failed", reason=reason)
        logger.error("%s delivery to %s failed for good: %s", message.channel,
                     message.masked_target, reason, extra=_extra(message))
        if track:
            await self._track(message, reason)

    async def _track(self, message: Message, failure: str | None) -> None:
        """A webhook subscription's health (pause after failing for long), recorded after the
        delivery's outcome is settled in the ledger, so that a crash here loses nothing."""
        if self.health is None or message.channel != "webhook" or not message.subscription_id:
            return
        if failure is None:
            await self.health.succeeded(message.subscription_id)
        else:
            await self.health.failed(message.subscription_id, failure)

    async def _log(self, message: Message, status: str, *, reason: str | None = None) -> None:
        entry: dict[str, Any] = {
            "delivery_id": message.delivery_id, "event_id": message.event_id,
            "channel": message.channel, "target": message.masked_target, "status": status,
            "at": now_iso(), "attempts": message.attempt, "kind": message.kind or "webhook",
        }
        if reason:
            entry["reason"] = reason
        if message.customer_id:
            await self.ledger.log_outcome(message.customer_id, entry, tenant=message.tenant)
        elif message.kind == "digest":  # in the log of each customer it lists
            await self.ledger.log_outcomes(
                [(cid, entry | {"event_id": eid}) for cid, eid in digest_customers(message.event)],
                tenant=message.tenant)


_NOT_THEIRS = {RECIPIENT_LEFT: "recipient_left", OWNER_CHANGED: "owner_changed"}  # metric label


def _target_key(message: Message) -> str:
    """What fails together: one webhook subscription, or the SMTP server / SMS gateway."""
    return f"webhook:{message.subscription_id}" if message.channel == "webhook" else message.channel


def _extra(message: Message) -> dict[str, str]:
    return {"delivery_id": message.delivery_id, "event_id": message.event_id,
            "customer_id": message.customer_id, "tenant": message.tenant,
            "channel": message.channel}
