"""Escalation: a high-risk alert nobody acknowledged within ``escalation.after`` goes to the
store manager.

``ntf:esc`` is a zset alert id -> due time (ms) and ``ntf:esc:data`` a hash alert id -> JSON
``{"event": <raw CloudEvent>, "created_ms": ...}``; both written before the risk change is
committed. When an entry falls due it is dropped if :func:`services.notifier.acks.is_acknowledged`,
else the manager's messages are delivered (delivery ids derived from the alert id, so a
notifier killed half-way sends nothing twice) and the entry removed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.notifier.acks import is_acknowledged
from services.notifier.inbound import InvalidRecord, RiskChangeEvent, decode_risk_change

logger = logging.getLogger(__name__)

ESCALATION_BATCH = 50

Escalate = Callable[[RiskChangeEvent, int], Awaitable[None]]


class Escalations:
    def __init__(self, redis: Redis, keys: Keys, *, after_s: float):
        self.redis = redis
        self.keys = keys
        self.after_s = after_s
        self.queue = keys.notifier_key("esc")
        self.data = keys.notifier_key("esc:data")

    async def schedule(self, event: RiskChangeEvent, *, created_ms: int, now_ms: int) -> None:
        """Idempotent: a replayed record keeps the first due time."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.data, event.id, json.dumps({"event": event.raw.decode(),
                                                         "created_ms": created_ms}))
            pipe.zadd(self.queue, {event.id: now_ms + int(self.after_s * 1000)}, nx=True)
            await pipe.execute()

    async def pending(self, alert_id: str) -> RiskChangeEvent | None:
        """The risk change of an escalation still due, or None (also when unreadable)."""
        raw = await self.redis.hget(self.data, alert_id)
        try:
            return decode_risk_change(json.loads(raw)["event"].encode()) if raw else None
        except (InvalidRecord, ValueError, KeyError, TypeError):
            return None

    async def run_due(self, *, now_ms: int, escalate: Escalate) -> int:
        ids = [str(i) for i in await self.redis.zrangebyscore(
            self.queue, "-inf", now_ms, start=0, num=ESCALATION_BATCH)]
        done = 0
        for alert_id in ids:
            raw = await self.redis.hget(self.data, alert_id)
            entry = json.loads(raw) if raw else None
            try:
                event = decode_risk_change(entry["event"].encode()) if entry else None
            except InvalidRecord as exc:
                logger.error("escalation %s has an unreadable event (%s); dropped", alert_id, exc)
                event = None
            # acknowledged within the alert's own tenant (see services.notifier.acks)
            if event is not None and not await is_acknowledged(
                    self.redis, self.keys, alert_id, event.change.tenant_id):
                assert entry is not None
                await escalate(event, int(entry.get("created_ms", 0)))
                done += 1
            elif event is not None:
                logger.info("alert %s was acknowledged; no escalation", alert_id,
                            extra={"event_id": alert_id})
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.queue, alert_id)
                pipe.hdel(self.data, alert_id)
                await pipe.execute()
        return done
