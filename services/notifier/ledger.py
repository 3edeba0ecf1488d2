"""Delivery state in Redis: who is sending what, what was delivered, what waits for a retry.

Per delivery id, the key ``Keys.delivery(id)`` holds one of

- ``sending:<owner>`` - a notifier is attempting it right now (expires after a lease, so a
  crashed worker's claim is taken over);
- ``queued`` - waiting in the retry queue (zset ``Keys.retry_queue`` scored by due time in ms,
  payload in hash ``Keys.retry_payloads``);
- ``delivered`` / ``failed`` - final; kept for :data:`FINAL_STATE_TTL_S` so redelivered or
  republished records are recognised as duplicates.

Every transition is atomic (a Lua claim, MULTI for the rest).

The delivery log of a customer (``Keys.delivery_log(customer_id, tenant)``, read by the API)
is a Redis list, newest first, capped at :data:`DELIVERY_LOG_MAX` entries; each entry is a
JSON object::

    {"delivery_id": "9f2c...",        # stable across retries (webhooks: Churnwatch-Delivery)
     "event_id": "4b1e...",           # the risk-change CloudEvent id (= the alert id)
     "channel": "email",              # email | sms | webhook
     "kind": "alert",                 # alert | won_back | escalation | digest | webhook
     "target": "m***@example.com",    # masked address / number, or scheme://host/… of a URL
     "status": "delivered",           # LOG_STATUSES: delivered | retrying | delayed |
                                      # digested | not_sent | failed
     "at": "2026-11-23T10:00:00.000Z",
     "attempts": 1,
     "reason": "..."}                 # optional: why retrying / delayed / not sent / failed

An entry is appended on every outcome, so one delivery may show several (e.g. retrying, then
delivered). A digest's outcomes are appended to the log of each customer it lists (with that
customer's item's ``event_id``): ``digested`` when the item was put in it, then ``delivered``
(or delayed, failed, not_sent) when the digest went out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import DEFAULT_RETENTION, Retention
from services.common.timefmt import utc_now

CLAIMED = "claimed"
QUEUED = "queued"
DELIVERED = "delivered"
FAILED = "failed"
SENDING_PREFIX = "sending:"
FINAL_STATE_TTL_S = DEFAULT_RETENTION.delivery_state_ttl_s  # CHURNWATCH_DELIVERY_STATE_DAYS
DELIVERY_LOG_MAX = DEFAULT_RETENTION.delivery_log_max  # CHURNWATCH_DELIVERY_LOG_MAX_ENTRIES
# every status the delivery log's entries carry (the console words each one, in each language)
LOG_STATUSES = ("delivered", "retrying", "delayed", "digested", "not_sent", "failed")
# why a message held for a staff member was not sent to them (``not_sent``'s reason)
RECIPIENT_LEFT = "the recipient left the team"
OWNER_CHANGED = "the customer has another owner now"

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or (ARGV[3] == '1' and cur == 'queued') then
  redis.call('SET', KEYS[1], 'sending:' .. ARGV[1], 'PX', ARGV[2])
  return 'claimed'
end
return cur
"""


def now_iso() -> str:
    return utc_now("milliseconds")


class Ledger:
    def __init__(self, redis: Redis, keys: Keys, *, owner: str, lease_ms: int,
                 retention: Retention = DEFAULT_RETENTION):
        self.redis = redis
        self.keys = keys
        self.retention = retention
        self.owner = owner
        self.lease_ms = lease_ms
        self._claim = redis.register_script(_CLAIM)

    async def claim(self, delivery_id: str, *, from_queue: bool) -> str:
        """``claimed`` when this worker may send now, else the current state.

        A new delivery (``from_queue=False``) may be claimed only when no state exists; the
        retry processor may also claim a ``queued`` one.
        """
        result = await self._claim(keys=[self.keys.delivery(delivery_id)],
                                   args=[self.owner, self.lease_ms, "1" if from_queue else "0"])
        return str(result)

    async def mark_delivered(self, delivery_id: str) -> None:
        await self._finish(delivery_id, DELIVERED)

    async def mark_failed(self, delivery_id: str) -> None:
        await self._finish(delivery_id, FAILED)

    async def _finish(self, delivery_id: str, state: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.delivery(delivery_id), state,
                     ex=self.retention.delivery_state_ttl_s)
            pipe.zrem(self.keys.retry_queue, delivery_id)
            pipe.hdel(self.keys.retry_payloads, delivery_id)
            await pipe.execute()

    async def schedule_retry(self, delivery_id: str, payload: Mapping[str, Any], *, due_ms: int) -> None:
        """Durably queue a retry (payload, due time and ``queued`` state in one transaction)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.retry_payloads, delivery_id, json.dumps(payload))
            pipe.zadd(self.keys.retry_queue, {delivery_id: due_ms})
            pipe.set(self.keys.delivery(delivery_id), QUEUED)
            await pipe.execute()

    async def park(self, delivery_id: str, payload: Mapping[str, Any], *, due_ms: int) -> None:
        """Queue a check of a delivery another worker is sending; its state is left alone.

        If that worker finishes, the check finds a final state and drops the entry; if it
        crashed, its claim expires and the retry processor sends the delivery.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.keys.retry_payloads, delivery_id, json.dumps(payload))
            pipe.zadd(self.keys.retry_queue, {delivery_id: due_ms}, nx=True)
            await pipe.execute()

    async def postpone(self, delivery_id: str, *, due_ms: int) -> None:
        await self.redis.zadd(self.keys.retry_queue, {delivery_id: due_ms}, xx=True)

    async def drop(self, delivery_id: str) -> None:
        """Forget a queue entry (its delivery reached a final state elsewhere)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.retry_queue, delivery_id)
            pipe.hdel(self.keys.retry_payloads, delivery_id)
            await pipe.execute()

    async def due(self, *, now_ms: int, limit: int) -> list[tuple[str, dict[str, Any] | None]]:
        """Up to ``limit`` queued deliveries due by ``now_ms``, with their payloads."""
        found = await self.redis.zrangebyscore(self.keys.retry_queue, "-inf", now_ms,
                                               start=0, num=limit)
        ids = [str(i) for i in found]
        if not ids:
            return []
        raw = await self.redis.hmget(self.keys.retry_payloads, ids)
        return [(i, json.loads(p) if p else None) for i, p in zip(ids, raw, strict=True)]

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.keys.retry_queue))

    async def state(self, delivery_id: str) -> str | None:
        value = await self.redis.get(self.keys.delivery(delivery_id))
        return None if value is None else str(value)

    async def log_outcome(self, customer_id: str, entry: Mapping[str, Any], *,
                          tenant: str = "default") -> None:
        """Append to the customer's delivery log (newest first, capped; format above)."""
        await self.log_outcomes([(customer_id, entry)], tenant=tenant)

    async def log_outcomes(self, entries: Sequence[tuple[str, Mapping[str, Any]]], *,
                           tenant: str = "default") -> None:
        """:meth:`log_outcome` for several customers (a digest's), in one round trip."""
        if not entries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for customer_id, entry in entries:
                key = self.keys.delivery_log(customer_id, tenant)
                pipe.lpush(key, json.dumps(entry, ensure_ascii=False))
                pipe.ltrim(key, 0, self.retention.delivery_log_max - 1)
                # expires with the customer's other keys (it had no expiry before)
                pipe.expire(key, self.retention.customer_ttl_s)
            await pipe.execute()
