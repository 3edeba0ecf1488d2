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

An alert only the store's manager received (a customer without an owner) is prepared too,
with no one to arm it (``armers`` empty): when the customer is given an owner and the alert
moves to them (:func:`handed_on` with ``parked``), it is queued as handed over, so that the
manager is paged when the new owner has not acknowledged it within their own window.

Every prepared entry is noted in ``Keys.escalation_prepared``; one still not armed a week
(:data:`UNARMED_TTL_S`) later is dropped (:meth:`Escalations.prune`, once a minute): its alert
was never delivered to an armer (held back as a duplicate, a delivery given up), or went to
the manager alone and never moved. Nothing else would ever read it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from redis.asyncio import Redis

from services.alerting.acks import is_acknowledged
from services.alerting.inbound import InvalidRecord, RiskChangeEvent, decode_risk_change
from services.common.redisconn import Keys

logger = logging.getLogger(__name__)

ESCALATION_BATCH = 50
DONE_TTL_S = 30 * 86_400
UNARMED_TTL_S = 7 * 86_400  # a prepared entry no delivery armed in a week is dropped
PRUNE_BATCH = 500
PRUNE_EVERY_MS = 60_000  # a week's horizon needs no look every tick

Escalate = Callable[[RiskChangeEvent, int], Awaitable[None]]

# KEYS: the queue, the hand-over marks, the entries. ARGV: now (ms), "parked" or "", then
# pairs of alert id, mark. Marks the alerts still due (one escalated or dropped meanwhile is
# not marked: nothing is left behind); with "parked", an alert prepared for no one to arm
# (the manager alone received it) is queued now and marked, so that it falls due after the
# new owner's window.
_MARK = """
local n = 0
for i = 3, #ARGV, 2 do
  local queued = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not queued and ARGV[2] == 'parked' then
    local raw = redis.call('HGET', KEYS[3], ARGV[i])
    if raw then
      local ok, doc = pcall(cjson.decode, raw)
      if ok and type(doc) == 'table' and type(doc['armers']) == 'table'
          and #doc['armers'] == 0 then
        redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
        queued = true
      end
    end
  end
  if queued then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
"""
# KEYS: the prepared notes, the queue, the entries. ARGV: the cut-off (ms), limit. Drops the
# entries prepared before the cut-off that no delivery armed; an armed one loses its note
# only (the queue finishes it).
_PRUNE = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local dropped = 0
for _, id in ipairs(old) do
  if not redis.call('ZSCORE', KEYS[2], id) then
    dropped = dropped + redis.call('HDEL', KEYS[3], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return dropped
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


async def handed_on(redis: Redis, keys: Keys, alerts: Mapping[str, bool], *, now_ms: int,
                    parked: bool = False) -> int:
    """``alerts`` (alert id -> whether it went to the customer's store manager) were handed to
    someone else at ``now_ms``: the escalations still due among them wait for the new owner's
    own window, or are dropped when the manager holds them. ``parked``: they come from the
    store's manager's list (a customer without an owner given one), and an alert prepared for
    no one to arm (the manager alone received it) gets an escalation for the new owner's
    window too. Returns how many were marked."""
    items = list(alerts.items())
    marked = 0
    for start in range(0, len(items), _MARK_CHUNK):
        argv: list[str] = [str(now_ms), "parked" if parked else ""]
        for alert_id, manager in items[start:start + _MARK_CHUNK]:
            argv += [alert_id, json.dumps({"at_ms": now_ms, "manager": manager})]
        marked += int(await redis.eval(  # type: ignore[misc]
            _MARK, 3, keys.escalation_queue, keys.escalation_handed, keys.escalation_data,
            *argv))
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
        self._pruned_ms = -PRUNE_EVERY_MS  # when run_due last pruned

    def _done(self, alert_id: str) -> str:
        return self.keys.escalation_done(alert_id)

    async def prepare(self, event: RiskChangeEvent, *, created_ms: int,
                      armers: list[str]) -> None:
        """Remember the alert; it is armed by the delivery of one of ``armers``' messages.
        Idempotent: a replayed record keeps the first entry, and one already escalated (or
        dropped as acknowledged) is not prepared again."""
        if await self.redis.exists(self._done(event.id)):
            return
        async with self.redis.pipeline(transaction=False) as pipe:  # one slot (hash tag)
            pipe.hsetnx(self.data, event.id, json.dumps(
                {"event": event.raw.decode(), "created_ms": created_ms, "armers": armers}))
            pipe.zadd(self.keys.escalation_prepared, {event.id: int(time.time() * 1000)},
                      nx=True)
            await pipe.execute()

    async def arm(self, alert_id: str, recipient_key: str, *, now_ms: int,
                  readdressed: bool = False) -> bool:
        """The alert was delivered to ``recipient_key``: escalate ``after`` seconds from now
        unless acknowledged. Idempotent (the first delivery sets the due time).
        ``readdressed``: it was held for ``recipient_key`` and goes to the customer's new
        owner instead; armed also when prepared for no one to arm (the manager alone)."""
        raw = await self.redis.hget(self.data, alert_id)  # type: ignore[misc]
        if not raw:
            return False
        try:
            armers = json.loads(raw).get("armers")
        except (ValueError, AttributeError):
            return False
        if armers is not None and recipient_key not in armers \
                and not (readdressed and armers == []):
            return False
        return bool(await self.redis.zadd(self.queue, {alert_id: now_ms + int(self.after_s * 1000)},
                                          nx=True))

    async def forget(self, alert_id: str) -> None:
        """The alert was never delivered (reverted inside the settle window): drop it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self.data, alert_id)
            pipe.zrem(self.keys.escalation_prepared, alert_id)
            await pipe.execute()

    async def prune(self, *, now_ms: int) -> int:
        """Drop the entries prepared more than :data:`UNARMED_TTL_S` ago that no delivery
        armed (nothing would read them again); returns how many."""
        cutoff = now_ms - UNARMED_TTL_S * 1000
        dropped = int(await self.redis.eval(  # type: ignore[misc]
            _PRUNE, 3, self.keys.escalation_prepared, self.queue, self.data, cutoff,
            PRUNE_BATCH))
        if dropped:
            logger.info("dropped %d escalation entries prepared a week ago and never armed",
                        dropped)
        return dropped

    async def note_unnoted(self, *, now_ms: int) -> int:
        """Entries prepared before :meth:`prepare` noted them (older versions) are noted as
        of ``now_ms``, so that :meth:`prune` finds them too; returns how many. Run once at
        start."""
        ids = [field async for field, _ in self.redis.hscan_iter(self.data, count=500)]
        noted = 0
        for start in range(0, len(ids), PRUNE_BATCH):
            noted += int(await self.redis.zadd(  # type: ignore[arg-type]
                self.keys.escalation_prepared,
                dict.fromkeys(ids[start:start + PRUNE_BATCH], now_ms), nx=True) or 0)
        return noted

    async def schedule(self, event: RiskChangeEvent, *, created_ms: int, now_ms: int) -> None:
        """Prepare and arm at once, as if the alert had been delivered at ``now_ms``."""
        await self.prepare(event, created_ms=created_ms, armers=[""])
        await self.arm(event.id, "", now_ms=now_ms)

    async def pending(self, alert_id: str) -> RiskChangeEvent | None:
        """The risk change of an escalation still due, or None (also when unreadable)."""
        return await pending_escalation(self.redis, self.keys, alert_id)

    async def run_due(self, *, now_ms: int, escalate: Escalate) -> int:
        if now_ms - self._pruned_ms >= PRUNE_EVERY_MS:  # once a minute, not every tick
            self._pruned_ms = now_ms
            await self.prune(now_ms=now_ms)
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
                pipe.zrem(self.keys.escalation_prepared, alert_id)
                await pipe.execute()
        return done
