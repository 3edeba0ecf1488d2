"""Pipeline status: counts from Redis, scorer lag = broker end offsets - offsets processed
(records: an envelope is one record of up to 500 events)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from services.common.kafka import end_offsets, make_consumer
from services.common.redisconn import Keys
from services.common.settings import Settings

logger = logging.getLogger(__name__)
_STATS = ("events_accepted_total", "events_applied_total", "events_duplicate_total",
          "events_dead_lettered_total", "risk_changes_total")


class StatusReader:
    def __init__(self, settings: Settings, redis: Redis, keys: Keys):
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _offsets_consumer(self) -> AIOKafkaConsumer:
        async with self._lock:
            if self._consumer is None:
                consumer = make_consumer(self.settings, group_id=None, request_timeout_ms=5000,
                                         fetch_max_wait_ms=100)
                try:
                    await asyncio.wait_for(consumer.start(), 5.0)
                except BaseException:
                    await consumer.stop()
                    raise
                self._consumer = consumer
        return self._consumer

    async def read(self, tenant: str | None = None) -> dict[str, Any]:
        """The deployment's counters (``tenant`` None), or one tenant's: its own accepted,
        applied, duplicate and risk-change counts, ``events_scored_total`` = its applied +
        duplicates, and the scorer's lag (a figure of the shared pipeline, without the
        per-partition detail)."""
        stats = await self.redis.hgetall(self.keys.stats if tenant is None
                                         else self.keys.tenant_stats(tenant))
        processed = {int(p): int(o) for p, o in
                     (await self.redis.hgetall(self.keys.offsets(self.settings.topic_events))).items()}
        out: dict[str, Any] = {name: int(stats.get(name, 0)) for name in _STATS}
        if tenant is None:
            # events (single or in envelopes) processed on this topic; not the tombstones of
            # erasures (not events: accepted, then scored, would otherwise not compare)
            out["events_scored_total"] = int(
                await self.redis.hget(self.keys.scored(self.settings.topic_events),  # type: ignore[misc]
                                      "events") or 0)
        else:
            out["tenant"] = tenant
            out["events_scored_total"] = out["events_applied_total"] + out["events_duplicate_total"]
            del out["events_dead_lettered_total"]  # a record that is not an event has no tenant
        try:
            consumer = await self._offsets_consumer()
            ends = await asyncio.wait_for(end_offsets(consumer, self.settings.topic_events), 5.0)
            partitions = {p: {"end_offset": e, "processed_offset": processed.get(p, 0),
                              "lag": max(e - processed.get(p, 0), 0)} for p, e in ends.items()}
            out["scorer_lag"] = sum(v["lag"] for v in partitions.values())
            if tenant is None:
                out["partitions"] = partitions
            out["broker"] = "ok"
        except (KafkaError, OSError, TimeoutError) as exc:
            logger.warning("cannot read end offsets: %s", exc)
            out["scorer_lag"] = None
            out["broker"] = "unavailable"
        out["topics"] = {"events": self.settings.topic_events,
                         "risk_changes": self.settings.topic_risk_changes}
        return out

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
