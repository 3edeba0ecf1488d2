"""The settle window (``CHURNWATCH_ALERT_SETTLE``): a staff alert waits a while, in processing
time, before it goes out, like a Prometheus rule's ``for:``.

Out-of-order arrivals (a shuffled history, a late POS batch) can raise a customer and drop
them again within seconds; the alert planned for the rise is held here and, when due, sent only
if the customer's latest tier (as the notifier consumed it, in their episode record) still is
at least the alerted tier. Then each ``recipient|channel`` pair is claimed in the episode
(:func:`services.notifier.policy.claim`): a recipient hears at most once per channel per
episode.

Keys (one hash tag, see ``Keys.settle_queue``): a zset alert id -> due (ms) and a hash
alert id -> JSON
``{"customer", "tenant", "tier", "messages": [payloads]}``. Both are written before the risk
change is committed and removed only after the messages are delivered or durably queued: a
notifier killed in between flushes the entry again, and the delivery ledger (same delivery
ids) sends nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.notifier.channels.base import Message
from services.notifier.noise import EpisodeLedger

logger = logging.getLogger(__name__)

SETTLE_BATCH = 50

Deliver = Callable[[Message], Awaitable[None]]
# For each (customer id, tenant, ms the change was published): was the customer erased since?
# One answer per item, in order (services.notifier.worker.Notifier.erased: one round trip).
Erased = Callable[[Sequence[tuple[str, str, int]]], Awaitable[list[bool]]]


def pair(message: Message) -> str:
    return f"{message.recipient_key}|{message.channel}"


class SettleQueue:
    def __init__(self, redis: Redis, keys: Keys, *, settle_s: float, episodes: EpisodeLedger):
        self.redis = redis
        self.settle_ms = int(settle_s * 1000)
        self.episodes = episodes
        self.queue = keys.settle_queue
        self.data = keys.settle_data

    async def hold(self, alert_id: str, *, customer_id: str, tenant: str, tier: str,
                   messages: list[Message], now_ms: int) -> None:
        """Idempotent: a replayed record keeps the first entry and due time."""
        entry = {"customer": customer_id, "tenant": tenant, "tier": tier,
                 "messages": [m.to_payload(attempts=0) for m in messages]}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.data, alert_id, json.dumps(entry, ensure_ascii=False))
            pipe.zadd(self.queue, {alert_id: now_ms + self.settle_ms}, nx=True)
            await pipe.execute()

    async def release(self, alert_id: str, *, customer_id: str, tenant: str, tier: str,
                      messages: list[Message], deliver: Deliver) -> tuple[int, int]:
        """Claim and deliver what may still be sent; (sent, held back)."""
        allowed = set(await self.episodes.claim(customer_id, tenant, alert_id,
                                                [pair(m) for m in messages], tier))
        sent = [m for m in messages if pair(m) in allowed]
        for m in sent:
            await deliver(m)
        return len(sent), len(messages) - len(sent)

    async def run_due(self, *, now_ms: int, deliver: Deliver,
                      held_back: Callable[[int], None] | None = None,
                      dropped: Callable[[str], Awaitable[None]] | None = None,
                      erased: Erased | None = None) -> int:
        """Release every due entry; returns how many messages went out. An entry about a
        customer erased while it waited (``erased``) is dropped unsent."""
        ids = [str(i) for i in await self.redis.zrangebyscore(
            self.queue, "-inf", now_ms, start=0, num=SETTLE_BATCH)]
        due: list[tuple[str, dict[str, Any] | None, list[Message]]] = []
        for alert_id, raw in zip(ids, await self.redis.hmget(self.data, ids) if ids else [],  # type: ignore[misc]
                                 strict=True):
            try:
                entry = json.loads(raw) if raw else None
                messages = [Message.from_payload(p) for p in entry["messages"]] if entry else []
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("settle entry %s is unreadable (%s); dropped", alert_id, exc)
                entry, messages = None, []
            due.append((alert_id, entry, messages))
        gone = iter(await erased([(e["customer"], e["tenant"], min(m.created_ms for m in ms))
                                  for _, e, ms in due if e is not None and ms])
                    if erased is not None else [])
        done = 0
        for alert_id, entry, messages in due:
            if entry is not None and messages and next(gone, False):
                logger.info("alert %s: the customer was erased while it waited; not sent",
                            alert_id, extra={"event_id": alert_id})
                entry, messages = None, []
                if dropped is not None:
                    await dropped(alert_id)
            if entry is not None and messages:
                sent, back = await self.release(
                    alert_id, customer_id=entry["customer"], tenant=entry["tenant"],
                    tier=entry["tier"], messages=messages, deliver=deliver)
                done += sent
                if not sent and dropped is not None:
                    await dropped(alert_id)
                if back:
                    if held_back is not None:
                        held_back(back)
                    logger.info("alert %s: %d staff message(s) not sent (reverted within the "
                                "settle window, or already told in this episode)", alert_id,
                                back, extra={"event_id": alert_id})
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.queue, alert_id)
                pipe.hdel(self.data, alert_id)
                await pipe.execute()
        return done
