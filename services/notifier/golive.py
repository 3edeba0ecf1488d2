"""Going live on imported history: one "currently at risk" summary per recipient instead of a
message per historical transition.

A risk change whose cause is older than ``CHURNWATCH_ALERT_MAX_AGE`` (or that the scorer
marked ``catching_up``) never alerts staff by itself (webhooks still get it). The planner
buffers it here instead, the newest change per customer winning (keys under
``Keys.summary_base``, one hash tag: the take script renames buffers to batches):

- ``sum:b:<tenant>`` - hash customer id -> JSON ``{"event": <raw CloudEvent>, "created_ms"}``;
- ``sum:due`` - zset tenant -> when to send, pushed ``CHURNWATCH_ALERT_SUMMARY_AFTER`` past
  every new stale change: the summary goes out once the import has gone quiet;
- ``sum:batch:<tenant>:<n>`` + set ``sum:batches`` - a buffer taken for sending, deleted only
  after its messages are delivered or durably queued; its name is the summary's alert id in the
  customers' episodes and gives the delivery ids, so a notifier killed half-way sends nothing
  twice.

At send time :meth:`services.notifier.planner.Planner.summary_messages` keeps only customers
who are high *now* (their latest change, and the episode record, say high), leaves out the
win-back holdout, and claims each ``recipient|channel`` pair in the customer's episode, so a
recipient told in the summary is not told again about that customer in the same episode.
Each customer is listed by where they stand at send time (:meth:`Summaries.standing`: the
scorer's stored risk, as a risk read gives it): lapsed or still to keep, the score now.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from services.alerting.inbound import InvalidRecord, RiskChangeEvent, decode_risk_change
from services.common.redisconn import Keys
from services.common.riskchange import RiskChange
from services.notifier.channels.base import Message
from services.notifier.digests import TAKE_DUE
from services.notifier.settle import Erased
from services.state.store import read_states

logger = logging.getLogger(__name__)

FLUSH_BATCH = 20


Plan = Callable[[str, list[tuple[RiskChangeEvent, int]]], Awaitable[list[Message]]]
Deliver = Callable[[Message], Awaitable[None]]


class Summaries:
    def __init__(self, redis: Redis, keys: Keys, *, after_s: float):
        self.redis = redis
        self.after_ms = int(after_s * 1000)
        self.keys = keys
        self.base = keys.summary_base
        self._take = redis.register_script(TAKE_DUE)

    async def add(self, event: RiskChangeEvent, *, created_ms: int, now_ms: int) -> None:
        """Buffer the customer's newest stale change (a replay rewrites the same value)."""
        tenant = event.change.tenant_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.base + "b:" + tenant, event.change.customer_id,
                      json.dumps({"event": event.raw.decode(), "created_ms": created_ms}))
            pipe.zadd(self.base + "due", {tenant: now_ms + self.after_ms})
            await pipe.execute()

    async def standing(self, changes: Sequence[RiskChange]) -> list[dict[str, Any] | None]:
        """Each customer's risk as the scorer stored it last (what ``GET …/risk`` answers: the
        snapshot and the store), in order; None where there is none or it cannot be read. A
        customer's newest change can be older than where they stand: silence carrying them
        past the churn horizon, or a return that leaves them high, changes no tier and so sends
        no change; a shuffled import can change their tier before their newest events (at
        another store) arrive. One round trip."""
        states = await read_states(self.redis, self.keys,
                                   [(c.tenant_id, c.customer_id) for c in changes],
                                   ["risk", "store"])
        out: list[dict[str, Any] | None] = []
        for state in states:
            try:
                risk = json.loads(state["risk"]) if "risk" in state else None
            except ValueError:
                risk = None
            if isinstance(risk, dict) and state.get("store"):
                risk["store_id"] = state["store"]  # kept beside the snapshot, as the API reads it
            out.append(risk if isinstance(risk, dict) else None)
        return out

    async def flush(self, *, now_ms: int, plan: Plan, deliver: Deliver,
                    erased: Erased | None = None) -> int:
        """Send every summary that is due (and any batch left by a crash); returns how many
        messages went out. A customer erased after their change was buffered (``erased``)
        is left out."""
        await self._take(keys=[self.base + "due", self.base + "batches"],
                         args=[now_ms, FLUSH_BATCH, self.base])
        members = await self.redis.smembers(self.base + "batches")  # type: ignore[misc]
        sent = 0
        for batch in sorted(str(b) for b in members)[:FLUSH_BATCH]:
            raw: dict[str, str] = await self.redis.hgetall(batch)  # type: ignore[misc, assignment]
            events: list[tuple[RiskChangeEvent, int]] = []
            for value in raw.values():
                try:
                    entry = json.loads(value)
                    events.append((decode_risk_change(entry["event"].encode()),
                                   int(entry.get("created_ms", 0))))
                except (InvalidRecord, ValueError, KeyError, TypeError) as exc:
                    logger.error("summary item in %s is unreadable (%s); left out", batch, exc)
            if erased is not None and events:  # one erasure lookup for the whole batch
                flags = await erased([(e.change.customer_id, e.change.tenant_id, created)
                                      for e, created in events])
                for (e, _), flag in zip(events, flags, strict=True):
                    if flag:
                        logger.info("summary %s: a customer erased since is left out", batch,
                                    extra={"event_id": e.id})
                events = [x for x, flag in zip(events, flags, strict=True) if not flag]
            name = batch[len(self.base + "batch:"):]
            for message in await plan(name, events):
                await deliver(message)
                sent += 1
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(batch)
                pipe.srem(self.base + "batches", batch)
                await pipe.execute()
        return sent
