"""Escalation: a high-risk alert nobody acknowledged within ``escalation.after`` *of its
delivery* goes to the store manager.

``Keys.escalation_data`` is a hash alert id -> JSON ``{"event": <raw CloudEvent>, "created_ms": ...,
"armers": [recipient keys]}``, written (:meth:`Escalations.prepare`) before the risk change is
committed. Only when one of those recipients' alert is actually delivered (after the settle
window, quiet hours, rate limits, retries) does :meth:`Escalations.arm` put the alert id into
the zset ``Keys.escalation_queue`` due ``after`` seconds later: the acknowledgement window starts when the
owner could first see the alert. When an entry falls due it is dropped if
:func:`services.alerting.acks.is_acknowledged`, else the manager's messages are delivered
(delivery ids derived from the alert id, so a notifier killed half-way sends nothing twice),
the entry removed and ``Keys.escalation_done(<alert id>)`` kept for 30 days so that a replayed record
never prepares it again: one escalation per alert.

A hand-over moves a person's unacknowledged alerts to the customer's new owner
(:meth:`services.alerting.inbox.Inbox.move`); :func:`handed_on` then marks each of them still
due in ``Keys.escalation_handed``. When such an entry falls due, the new owner's window is
still running from the hand-over (``after`` from it: the entry is put back, due then), and an
alert handed to the store's manager (to nobody, or to the manager by name) is dropped: the
manager holds it, escalating it would page them about their own alert. The keys share one
hash tag (the MULTI that finishes an entry touches them together).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from redis.asyncio import Redis

from services.alerting.acks import is_acknowledged
from services.alerting.inbound import InvalidRecord, RiskChangeEvent, decode_risk_change
from services.common.redisconn import Keys

logger = logging.getLogger(__name__)

ESCALATION_BATCH = 50
DONE_TTL_S = 30 * 86_400

Escalate = Callable[[RiskChangeEvent, int], Awaitable[None]]

# KEYS: the queue, the hand-over marks. ARGV: pairs of alert id, mark. Marks the alerts still
# due (one escalated or dropped meanwhile is not marked: nothing is left behind).
_MARK = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
"""
_MARK_CHUNK = 500
# KEYS: the queue, the hand-over marks. ARGV: alert id, the mark read, the new due time. Puts
# the entry back unless another hand-over marked it since.
_POSTPONE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


async def handed_on(redis: Redis, keys: Keys, alerts: Mapping[str, bool], *, now_ms: int) -> int:
    """``alerts`` (alert id -> whether it went to the customer's store manager) were handed to
    someone else at ``now_ms``: the escalations still due among them wait for the new owner's
    own window, or are dropped when the manager holds them. Returns how many were due."""
    items = list(alerts.items())
    marked = 0
    for start in range(0, len(items), _MARK_CHUNK):
        argv: list[str] = []
        for alert_id, manager in items[start:start + _MARK_CHUNK]:
            argv += [alert_id, json.dumps({"at_ms": now_ms, "manager": manager})]
        marked += int(await redis.eval(  # type: ignore[misc]
            _MARK, 2, keys.escalation_queue, keys.escalation_handed, *argv))
    return marked


def _mark(raw: bytes | str | None) -> tuple[int, bool] | None:
    """A hand-over mark as (when, to the manager); None when there is none or it is damaged."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
        return int(doc["at_ms"]), bool(doc["manager"])
    except (ValueError, TypeError, KeyError):
        return None


async def pending_escalation(redis: Redis, keys: Keys, alert_id: str) -> RiskChangeEvent | None:
    """The risk change of an escalation still due, or None (also when unreadable). Reading it
    needs no escalation delay: the API uses this to find an alert to acknowledge."""
    raw = await redis.hget(keys.escalation_data, alert_id)  # type: ignore[misc]
    try:
        return decode_risk_change(json.loads(raw)["event"].encode()) if raw else None
    except (InvalidRecord, ValueError, KeyError, TypeError):
        return None


class Escalations:
    def __init__(self, redis: Redis, keys: Keys, *, after_s: float):
        self.redis = redis
        self.keys = keys
        self.after_s = after_s
        self.queue = keys.escalation_queue
        self.data = keys.escalation_data
        self.handed = keys.escalation_handed

    def _done(self, alert_id: str) -> str:
        return self.keys.escalation_done(alert_id)

    async def prepare(self, event: RiskChangeEvent, *, created_ms: int,
                      armers: list[str]) -> None:
        """Remember the alert; it is armed by the delivery of one of ``armers``' messages.
        Idempotent: a replayed record keeps the first entry, and one already escalated (or
        dropped as acknowledged) is not prepared again."""
        if await self.redis.exists(self._done(event.id)):
            return
        await self.redis.hsetnx(self.data, event.id, json.dumps(  # type: ignore[misc]
            {"event": event.raw.decode(), "created_ms": created_ms, "armers": armers}))

    async def arm(self, alert_id: str, recipient_key: str, *, now_ms: int) -> bool:
        """The alert was delivered to ``recipient_key``: escalate ``after`` seconds from now
        unless acknowledged. Idempotent (the first delivery sets the due time)."""
        raw = await self.redis.hget(self.data, alert_id)  # type: ignore[misc]
        if not raw:
            return False
        try:
            armers = json.loads(raw).get("armers")
        except (ValueError, AttributeError):
            return False
        if armers is not None and recipient_key not in armers:
            return False
        return bool(await self.redis.zadd(self.queue, {alert_id: now_ms + int(self.after_s * 1000)},
                                          nx=True))

    async def forget(self, alert_id: str) -> None:
        """The alert was never delivered (reverted inside the settle window): drop it."""
        await self.redis.hdel(self.data, alert_id)  # type: ignore[misc]

    async def schedule(self, event: RiskChangeEvent, *, created_ms: int, now_ms: int) -> None:
        """Prepare and arm at once, as if the alert had been delivered at ``now_ms``."""
        await self.prepare(event, created_ms=created_ms, armers=[""])
        await self.arm(event.id, "", now_ms=now_ms)

    async def pending(self, alert_id: str) -> RiskChangeEvent | None:
        """The risk change of an escalation still due, or None (also when unreadable)."""
        return await pending_escalation(self.redis, self.keys, alert_id)

    async def run_due(self, *, now_ms: int, escalate: Escalate) -> int:
        ids = [str(i) for i in await self.redis.zrangebyscore(
            self.queue, "-inf", now_ms, start=0, num=ESCALATION_BATCH)]
        done = 0
        for alert_id in ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(self.data, alert_id)
                pipe.hget(self.handed, alert_id)
                raw, handed = await pipe.execute()
            try:
                entry = json.loads(raw) if raw else None
                event = decode_risk_change(entry["event"].encode()) if entry else None
            except (InvalidRecord, ValueError, TypeError, KeyError, AttributeError) as exc:
                # one damaged entry must not stop the others (nor the tick after it)
                logger.error("escalation %s is unreadable (%s: %s); dropped", alert_id,
                             type(exc).__name__, exc, extra={"event_id": alert_id})
                entry = event = None
            mark = _mark(handed)
            if event is not None and mark is not None and not mark[1] \
                    and mark[0] + int(self.after_s * 1000) > now_ms:
                # handed to a colleague: their window runs from the hand-over
                due = mark[0] + int(self.after_s * 1000)
                if not await self.redis.eval(  # type: ignore[misc]
                        _POSTPONE, 2, self.queue, self.handed, alert_id, handed, due):
                    continue  # handed over once more meanwhile: the next tick reads that
                logger.info("alert %s was handed over; it escalates %.0f s after that",
                            alert_id, self.after_s, extra={"event_id": alert_id})
                continue
            if event is not None and mark is not None and mark[1]:
                logger.info("alert %s was handed to the store's manager; no escalation",
                            alert_id, extra={"event_id": alert_id})
            elif event is not None and not await is_acknowledged(  # in the alert's own tenant
                    self.redis, self.keys, alert_id, event.change.tenant_id):
                assert entry is not None
                await escalate(event, int(entry.get("created_ms", 0)))
                done += 1
            elif event is not None:
                logger.info("alert %s was acknowledged; no escalation", alert_id,
                            extra={"event_id": alert_id})
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self._done(alert_id), "1", ex=DONE_TTL_S)
                pipe.zrem(self.queue, alert_id)
                pipe.hdel(self.data, alert_id)
                pipe.hdel(self.handed, alert_id)
                await pipe.execute()
        return done
