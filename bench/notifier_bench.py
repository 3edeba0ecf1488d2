"""Notifier throughput: signed webhook deliveries per second to a local receiver.

``await run(settings, n=2000)`` takes settings that point at a running broker and Redis (the
ones ``bench/run.py`` starts), uses fresh topic / group / key-prefix names, starts an aiohttp
webhook receiver on 127.0.0.1, subscribes it, publishes ``n`` risk changes (distinct
customers) and runs the notifier in-process until every one was delivered. Returns::

    {"notifier_deliveries": n, "notifier_deliveries_per_s": ..., "notifier_seconds": ...,
     "notifier_first_delivery_s": ..., "notifier_duplicates": 0}

``notifier_deliveries_per_s`` counts from the first delivery to the last (consumer start-up
excluded). Standalone: ``python -m bench.notifier_bench [N]`` starts its own broker and Redis.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.alerting.webhooks import add_subscription
from services.common.embedded import free_port, start_broker, start_redis
from services.common.kafka import ensure_topics, make_producer
from services.common.redisconn import Keys, make_redis
from services.common.riskchange import (
    Cause,
    Reason,
    RiskChange,
    SuggestedAction,
    encode_cloudevent,
    to_cloudevent,
)
from services.common.settings import Settings, load_settings
from services.notifier.worker import run_notifier

SECRET = "bench-webhook-secret-0123456789"


def _change(n: int) -> bytes:
    rc = RiskChange(
        customer_id=f"bench-{n}", store_id="s1", previous_tier="low", tier="high", score=0.8,
        previous_score=0.2,
        reasons=[Reason(code="overdue", text="overdue", text_zh="逾期", weight=1.0)],
        suggested_action=SuggestedAction(code="personal_call", text="Call", text_zh="致电"),
        value_tier="high", lifecycle_stage="active", model_version="bench",
        as_of=datetime.now(UTC), cause=Cause(kind="silence", event_id=f"e-{n}"),
        features={"days_since_last_activity": 60.0})
    return encode_cloudevent(to_cloudevent(rc))


async def run(settings: Settings, *, n: int = 2000, timeout_s: float = 300.0) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={
        "redis_prefix": f"nb{tag}", "topic_risk_changes": f"nb{tag}.risk-changes",
        "topic_notifications_dlq": f"nb{tag}.notifications.dlq", "notifier_group": f"nb{tag}",
        "notifier_metrics_port": 0, "webhook_allow_private": True, "smtp_host": None,
        "sms_gateway_url": None, "routing_file": None})
    await ensure_topics(s, [s.topic_risk_changes, s.topic_notifications_dlq])

    seen: dict[str, int] = {}
    times: list[float] = []
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        did = request.headers.get("Churnwatch-Delivery", "")
        seen[did] = seen.get(did, 0) + 1
        times.append(time.monotonic())
        if len(seen) >= n:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    redis = make_redis(s)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await add_subscription(redis, Keys(s.redis_prefix), url=f"http://127.0.0.1:{port}/hook",
                               secret=SECRET)
        producer = make_producer(s, linger_ms=20)
        await producer.start()
        try:
            futures = [await producer.send(s.topic_risk_changes, _change(i),
                                           key=f"bench-{i}".encode()) for i in range(n)]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        started = time.monotonic()
        task = asyncio.create_task(run_notifier(s, stop=stop, registry=CollectorRegistry()))
        await asyncio.wait_for(done.wait(), timeout=timeout_s)
        elapsed = times[-1] - times[0] if len(times) > 1 else 0.0
        return {
            "notifier_deliveries": len(seen),
            "notifier_deliveries_per_s": round((len(times) - 1) / elapsed, 1) if elapsed else None,
            "notifier_seconds": round(elapsed, 3),
            "notifier_first_delivery_s": round(times[0] - started, 3),
            "notifier_duplicates": sum(c - 1 for c in seen.values()),
        }
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, timeout=60)
        await redis.aclose()
        await runner.cleanup()


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 2000
    broker, redis_server = start_broker(), start_redis()
    try:
        settings = load_settings(kafka_bootstrap=broker.address, kafka_idempotence=False,
                                 redis_url=f"redis://{redis_server.address}/0",
                                 topic_partitions=4)
        print(asyncio.run(run(settings, n=n)))
    finally:
        broker.stop()
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
