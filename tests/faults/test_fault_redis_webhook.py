"""Faults in what the services lean on: Redis restarted mid-stream, and a webhook receiver down
for the first hours of the retry schedule.

Real parts only: ``churnwatch scorer`` / ``churnwatch notifier`` child processes, the session's
Kafka-protocol broker, a redis-server of the test's own (with AOF) and a real HTTP receiver on
loopback. Nothing churnwatch runs is restarted: each service must recover by itself. Every test
counts, from what it sent and what arrived, how much was lost and how much doubled, records both
for the README's reliability table, then asserts they are 0.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from services.alerting.webhooks import add_subscription
from services.common.embedded import Server, free_port, start_redis
from services.common.kafka import make_producer
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.notifier.channels.base import delivery_id
from services.notifier.signing import verify
from services.scoring.tiers import Thresholds
from services.state.store import StateStore
from tests.data import T0, by_time, complaint, regular, visit
from tests.integration.test_notifier import produce_changes, wait_until
from tests.integration.test_notifier_policies import change
from tests.integration.test_scorer import customer_state, held, processed, scorer, wait_processed
from tests.kafkatools import produce_events, read_all
from tests.peers import LoopbackHttp
from tests.procs import ServiceProcess
from tests.reliability import record

pytestmark = pytest.mark.integration

HERE = "tests/faults/test_fault_redis_webhook.py"
# No silence sweeps (they would race the event clock); the rule scorecard (the mechanics under
# test do not depend on the model). The model-refresh timer stays on: it reads Redis too.
QUIET = {"sweep_interval_seconds": 3600.0, "model": "scorecard"}


# 1. Redis restarted (AOF) mid-stream --------------------------------------------------------

CUSTOMERS = 20
CHUNK = 10              # events per produce call ...
EVERY_S = 0.1           # ... one call every 0.1 s: a steady 100 events/s
KILL_AT_CHUNK = 12      # SIGKILL redis-server after 120 events (~1.2 s into the stream)
DOWN_S = 3.0            # how long Redis stays away
FSYNC = "always"        # AOF policy of the test's redis-server (see the record)
T_END = T0 + timedelta(days=170)


def redis_story() -> list[dict[str, Any]]:
    """Regulars of different cadences; every customer's last event is at the same instant
    ``T_END`` (a visit, or an open high-severity complaint for every third customer), so the
    event clock scores each customer's final window at the same "now" however the stream
    was batched."""
    events: list[dict[str, Any]] = []
    for i in range(CUSTOMERS):
        cid = f"r{i:02d}"
        every = 2 + 2 * i
        events += regular(cid, every_days=every, count=min(40, 160 // every), store=f"s{i % 3}")
        if i % 4 == 1:
            events.append(complaint(cid, T0 + timedelta(days=60), "mid", severity="low"))
    finals = [complaint(f"r{i:02d}", T_END, "end", severity="high") if i % 3 == 2
              else visit(f"r{i:02d}", T_END, "end", store=f"s{i % 3}", amount=None)[0]
              for i in range(CUSTOMERS)]
    return by_time(events) + finals


def in_hysteresis_band(score: float, t: Thresholds) -> bool:
    """Scores whose tier depends on the previous tier (between an exit and an enter line)."""
    return t.medium_exit <= score < t.medium_enter or t.high_exit <= score < t.high_enter


async def stream(settings: Settings, events: list[dict[str, Any]], redis_server: list[Server],
                 data_dir: Path, log: Path, outage: dict[str, float]) -> None:
    """Produce ``events`` at a steady rate; SIGKILL redis-server after ``KILL_AT_CHUNK``
    chunks and start it again ``DOWN_S`` later on the same port with the same data dir,
    producing all the while."""
    producer = make_producer(settings)
    await producer.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    restart_at: float | None = None
    try:
        for n, i in enumerate(range(0, len(events), CHUNK)):
            if n == KILL_AT_CHUNK:
                server = redis_server[0]
                server.proc.kill()  # SIGKILL: no shutdown, no final AOF rewrite
                server.proc.wait(10)
                server.stop()
                outage["killed"] = loop.time()
                restart_at = loop.time() + DOWN_S
            if restart_at is not None and loop.time() >= restart_at:
                redis_server[0] = await asyncio.to_thread(_restart_redis, redis_server[0].port,
                                                          data_dir, log)
                outage["restarted"] = loop.time()
                restart_at = None
            futures = [await producer.send(settings.topic_events, json.dumps(e).encode(),
                                           key=e["customer_id"].encode())
                       for e in events[i:i + CHUNK]]
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, start + (n + 1) * EVERY_S - loop.time()))
        if restart_at is not None:  # the stream ended before the outage did
            await asyncio.sleep(max(0.0, restart_at - loop.time()))
            redis_server[0] = await asyncio.to_thread(_restart_redis, redis_server[0].port,
                                                      data_dir, log)
            outage["restarted"] = loop.time()
    finally:
        await producer.stop()


def _restart_redis(port: int, data_dir: Path, log: Path) -> Server:
    server = start_redis(port=port, log_path=log, appendonly=True, data_dir=data_dir,
                         appendfsync=FSYNC)
    assert server.port == port, f"port {port} was taken while Redis was down"
    return server


async def ready_status(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        r = await client.get(f"{url}/ready")
        return r.status_code, r.json()


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label values) in a /metrics page."""
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


async def test_redis_sigkilled_and_restarted_with_aof_mid_stream(
        settings_factory, tmp_path: Path) -> None:
    """SIGKILL redis-server while events stream in, bring it back 3 s later from its AOF on the
    same port: the scorer (never restarted) waits, retries and catches up; every event is
    applied exactly once, none is dead-lettered, and every customer's final score and tier
    equal an uninterrupted run's."""
    started = time.monotonic()
    events = redis_story()
    cids = sorted({e["customer_id"] for e in events})
    sent_ids: dict[str, set[str]] = {}
    for e in events:
        sent_ids.setdefault(e["customer_id"], set()).add(e["event_id"])
    assert sum(map(len, sent_ids.values())) == len(events)  # fixed ids, all distinct

    data_dir, log = tmp_path / "redis", tmp_path / "redis-server.log"
    servers = [start_redis(log_path=log, appendonly=True, data_dir=data_dir, appendfsync=FSYNC)]
    faulty = settings_factory(clock="event", redis_url=f"redis://{servers[0].address}/0",
                              **QUIET)
    reference = settings_factory(clock="event", **QUIET)  # the session's Redis, left alone
    ref_redis, redis = make_redis(reference), make_redis(faulty)
    outage: dict[str, float] = {}
    ref_proc = scorer(reference, tmp_path, "reference")
    proc = scorer(faulty, tmp_path, "scorer-redis-fault")
    producing: asyncio.Task[None] | None = None
    try:
        try:
            ref_proc.start(wait_ready=False)
            proc.start(wait_ready=False)
            await asyncio.gather(asyncio.to_thread(ref_proc.wait_ready),
                                 asyncio.to_thread(proc.wait_ready))
            await produce_events(reference, events)
            producing = asyncio.create_task(stream(faulty, events, servers, data_dir, log, outage))
            # While Redis is away the scorer says so: /ready turns 503 naming Redis.
            await wait_until(lambda: "killed" in outage, timeout=30, what="the kill")
            status, body = await wait_until(lambda: _not_ready(proc.url), timeout=10,
                                            what="the scorer reporting Redis unavailable")
            await producing
            await wait_processed(redis, faulty, len(events), timeout=60)
            caught_up = asyncio.get_running_loop().time()
            await wait_processed(ref_redis, reference, len(events), timeout=30)
            assert proc.proc is not None and proc.proc.poll() is None, \
                f"the scorer exited during the outage:\n{proc.tail()}"
            await wait_until(lambda: _ready(proc.url), timeout=10, what="the scorer ready again")
            async with httpx.AsyncClient(timeout=5.0) as http:
                metrics = (await http.get(f"{proc.url}/metrics")).text
        finally:
            if producing is not None and not producing.done():
                producing.cancel()
            proc.stop()
            ref_proc.stop()

        keys = Keys(faulty.redis_prefix)
        missing = 0
        for cid in cids:
            st = await customer_state(redis, faulty, cid)
            stored = held(st, [e for e in events if e["customer_id"] == cid])
            missing += len(sent_ids[cid] - stored)
        stats = await redis.hgetall(keys.stats)
        applied = int(stats.get("events_applied_total", 0))
        dead = await read_all(faulty, faulty.topic_events_dlq, idle_ms=500, timeout=10)
        # Every event was good: one dead-lettered was lost to the outage.
        lost = max(missing, len(events) - applied, len(dead))
        doubled = max(0, applied - len(events))

        thresholds = Thresholds.from_settings(faulty)
        compared = 0
        for cid in cids:
            got = (await customer_state(redis, faulty, cid))["st"]
            want = (await customer_state(ref_redis, reference, cid))["st"]
            assert got.get("score") == want.get("score"), cid  # the same final window, same now
            if not in_hysteresis_band(float(want["score"]), thresholds):
                assert got.get("tier") == want.get("tier"), cid
                compared += 1
        tiers = Counter([(await customer_state(ref_redis, reference, c))["st"]["tier"]
                         for c in cids])
        retries = metric_sum(metrics, "churnwatch_scorer_infra_retries_total")
        record(kind="fault", name="redis-restart-aof",
               tried=f"SIGKILL of redis-server mid-stream; restarted {DOWN_S:.0f} s later on the "
                     f"same port from its AOF (appendfsync {FSYNC}); no churnwatch process "
                     "restarted",
               load=f"{len(events)} events of {CUSTOMERS} customers at {CHUNK / EVERY_S:.0f} "
                    f"events/s, Redis killed after {KILL_AT_CHUNK * CHUNK}",
               checked="every event applied exactly once (windows and applied counter), none "
                       "dead-lettered, final scores and tiers equal an uninterrupted run's; "
                       "/ready 503 during the outage",
               sent=len(events), lost=lost, doubled=doubled,
               test=f"{HERE}::test_redis_sigkilled_and_restarted_with_aof_mid_stream",
               measured={"redis_down_s": round(outage["restarted"] - outage["killed"], 2),
                         "caught_up_after_restart_s": round(caught_up - outage["restarted"], 2),
                         "scorer_infra_retries": retries,
                         "events_duplicate_total": int(stats.get("events_duplicate_total", 0)),
                         "tiers_compared": compared, "final_tiers": dict(tiers),
                         "test_seconds": round(time.monotonic() - started, 1)})
        assert (lost, doubled) == (0, 0), (missing, applied, stats, [d.value for d in dead][:5])
        assert dead == []
        assert retries > 0, "the scorer should have counted its Redis retries"
        assert status == 503 and "unavailable" in str(body.get("redis")), body
        assert await processed(redis, faulty) == len(events)
        assert compared >= CUSTOMERS // 2, "too few customers outside the hysteresis bands"
    finally:
        await ref_redis.aclose()
        await redis.aclose()
        servers[0].stop()


async def test_pooled_connections_to_a_restarted_redis_answer_their_next_command(
        settings_factory, tmp_path: Path) -> None:
    """After redis-server is SIGKILLed and started again on its port, every connection the
    client had pooled is dead. The next command on each must still be answered: the pool sees
    the server closed it and reconnects. (redis-py's default maintenance-notification mode
    turned that check off: each pooled connection failed once, and the API answered 503 to that
    many reads of a Redis that was up again.)"""
    data_dir = tmp_path / "redis"
    # every write on disk before its reply: what the test checks is the pool, not how much
    # of the last second a SIGKILLed redis-server with the default (everysec) keeps
    server = start_redis(appendonly=True, data_dir=data_dir, appendfsync=FSYNC)
    client = make_redis(settings_factory(redis_url=f"redis://{server.address}/0"))
    try:
        many = 40  # concurrent commands: the pool holds this many connections afterwards
        await asyncio.gather(*(client.set(f"k{i}", i) for i in range(many)))
        server.proc.kill()  # SIGKILL: the server closes every connection
        # (waited for in a thread: the event loop runs on, as a service's would, and reads
        # each connection's end)
        await asyncio.to_thread(server.proc.wait)
        server = await asyncio.to_thread(start_redis, port=server.port, appendonly=True,
                                         data_dir=data_dir, appendfsync=FSYNC)
        got = await asyncio.gather(*(client.get(f"k{i}") for i in range(many)),
                                   return_exceptions=True)
        assert got == [str(i) for i in range(many)], [type(g).__name__ for g in got]
    finally:
        await client.aclose()
        server.stop()


async def test_a_commit_retried_after_a_lost_reply_counts_once(settings: Settings,
                                                                redis: Redis) -> None:
    """What the scorer does when Redis ran a batch's commit but the reply never came (killed
    right after, or a timeout): it sends the same commit again. The second one is a no-op:
    a partition commit counts only when it moves an offset forward, a sweep's (no offsets)
    only once per token."""
    store = StateStore.from_settings(redis, settings)
    keys = store.keys
    stats = {"events_applied_total": 7, "risk_changes_total": 2}
    for _ in range(2):  # the try whose reply was lost, then the retry
        await store.commit(topic=settings.topic_events, offsets={0: 10}, stats=stats)
    await store.commit(topic=settings.topic_events, offsets={0: 12}, stats=stats)
    for _ in range(2):
        await store.commit(topic=settings.topic_events, offsets={},
                           stats={"risk_changes_total": 1}, token="sweep-1")
    assert await redis.hgetall(keys.stats) == {"events_applied_total": "14",
                                               "risk_changes_total": "5"}
    assert await redis.hget(keys.offsets(settings.topic_events), "0") == "12"


async def _not_ready(url: str) -> tuple[int, dict[str, Any]] | None:
    try:
        status, body = await ready_status(url)
    except httpx.HTTPError:
        return None
    return (status, body) if status == 503 else None


async def _ready(url: str) -> bool:
    try:
        return (await ready_status(url))[0] == 200
    except httpx.HTTPError:
        return False


# 2. A webhook receiver down for the first hours of the retry schedule --------------------------
#
# Time is compressed by scaling the retry schedule only (base 2 s -> 2 ms, cap 1 h -> 3.6 s; the
# same 19 attempts). With "equal jitter" the 18 waits before the 19th attempt add up to at least
# half of 2+4+...+2048+7x3600 s, i.e. 4.07 h (at most 8.1 h): a receiver down for 3 h can never
# exhaust a delivery, whatever the jitter (and the test keeps a margin for its own timing). What is not a retry delay runs at its shipped value:
# the retry loop's tick and rate (notifier_retry_max_per_second), and the circuit breaker, whose
# half-open probe window is 2 x webhook_timeout_seconds = 20 s; deliveries that meet the breaker
# while a probe is out wait that window, which is most of the ~16-21 s the backlog takes to
# arrive once the receiver is back (in production, 20 s after hours of outage).

SCALE = 1000            # the retry schedule runs 1000x faster: 1 s of test = 1000 s of schedule
BASE_S, MAX_S, ATTEMPTS = 2.0, 3600.0, 19   # the production schedule (settings' defaults)
DOWN_HOURS = 3.0        # the receiver is down for the schedule's first three hours
CHANGES_PER_CUSTOMER, HOOK_CUSTOMERS = 5, 10
SECRET = "fault-webhook-secret-0123456789"
PATH = ("low", "medium", "high", "medium", "low", "medium")  # 5 tier changes per customer


class Receiver(LoopbackHttp):
    """A webhook endpoint on a fixed port: records every request it accepts (delivery id,
    change id, signature valid)."""

    path = "/hook"

    def __init__(self, port: int):
        super().__init__(port)
        self.accepted: list[tuple[str, str, bool]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        signed = verify(SECRET, request.headers.get("Churnwatch-Signature", ""), body)
        self.accepted.append((request.headers.get("Churnwatch-Delivery", ""),
                              json.loads(body)["id"], signed))
        return web.Response(status=200)


async def test_webhook_receiver_down_for_the_first_hours_of_retries(
        settings_factory, redis: Redis, tmp_path: Path) -> None:
    """The receiver refuses connections (nothing listens) for the scaled equivalent of the
    retry schedule's first 2 hours, then comes up: every risk change reaches it exactly once,
    none is dead-lettered."""
    started = time.monotonic()
    hook = Receiver(free_port())  # nothing listens there yet: connection refused
    settings = settings_factory(
        delivery_backoff_base_seconds=BASE_S / SCALE, delivery_backoff_max_seconds=MAX_S / SCALE,
        delivery_max_attempts=ATTEMPTS, webhook_allow_private=True)
    keys = Keys(settings.redis_prefix)
    sub = await add_subscription(redis, keys, url=hook.url, secret=SECRET)
    changes = [change(f"w{c:02d}", PATH[k], PATH[k + 1], n=k)
               for k in range(CHANGES_PER_CUSTOMER) for c in range(HOOK_CUSTOMERS)]
    expected = {delivery_id(eid, "webhook", sub["id"]): eid for eid, _ in changes}
    assert len(expected) == len(changes)
    proc = ServiceProcess("notifier", settings, tmp_path / "notifier.log",
                          health_port_setting="notifier_metrics_port")
    most_attempts = 0
    try:
        proc.start(wait_ready=False)
        await asyncio.to_thread(proc.wait_ready)
        down_from = time.monotonic()
        down_until = down_from + DOWN_HOURS * 3600 / SCALE
        # The changes arrive over the first ~2 s (~30 min of schedule), in each customer's order.
        for i in range(0, len(changes), 5):
            await produce_changes(settings, *[(json.loads(raw)["subject"], raw)
                                              for _, raw in changes[i:i + 5]])
            await asyncio.sleep(0.2)
        await wait_until(lambda: _all_waiting(redis, keys, expected), timeout=20,
                         what="every delivery queued for a retry")
        while time.monotonic() < down_until:  # down: watch how far the attempts got
            most_attempts = max(most_attempts, await _max_attempts(redis, keys))
            await asyncio.sleep(0.2)
        up_at = time.monotonic()
        await hook.up()
        await wait_until(lambda: {d for d, _, _ in hook.accepted} >= set(expected), timeout=40,
                         what=f"every change delivered after the receiver came back:\n{proc.tail()}")
        all_in = time.monotonic()
        await wait_until(lambda: _all_delivered(redis, keys, expected), timeout=10,
                         what="every delivery marked delivered, the retry queue empty")
        await asyncio.sleep(1.0)  # a duplicate would show up now
        assert proc.proc is not None and proc.proc.poll() is None, proc.tail()
    finally:
        proc.stop()
        await hook.down()

    dead = await read_all(settings, settings.topic_notifications_dlq, idle_ms=500, timeout=10)
    per_delivery = Counter(d for d, _, _ in hook.accepted)
    per_change = Counter(eid for _, eid, _ in hook.accepted)
    lost = len(set(expected) - set(per_delivery))
    doubled = (sum(n - 1 for n in per_delivery.values() if n > 1)
               + len(set(per_delivery) - set(expected)))
    record(kind="fault", name="webhook-down-hours",
           tried=f"a webhook receiver refusing connections for the first {DOWN_HOURS:.0f} hours "
                 f"of the retry schedule (2 s base, 1 h cap, {ATTEMPTS} attempts, >= 4.07 h to "
                 f"the dead-letter topic), run {SCALE}x faster; circuit breaker and retry rate "
                 "limit as shipped",
           load=f"{len(changes)} risk changes of {HOOK_CUSTOMERS} customers to one subscription",
           checked="each delivery id and change id accepted exactly once, signature valid; "
                   "nothing in the notifications dead-letter topic; retry queue empty",
           sent=len(changes), lost=lost + len(dead), doubled=doubled,
           test=f"{HERE}::test_webhook_receiver_down_for_the_first_hours_of_retries",
           measured={"time_scale": SCALE, "down_s": round(up_at - down_from, 2),
                     "most_attempts_while_down": most_attempts,
                     "all_delivered_after_up_s": round(all_in - up_at, 2),
                     "test_seconds": round(time.monotonic() - started, 1)})
    assert (lost, doubled) == (0, 0)
    assert dead == []
    assert per_change == Counter(expected.values())  # every change id once
    assert all(signed for _, _, signed in hook.accepted)
    assert 1 <= most_attempts < ATTEMPTS


async def _all_waiting(redis: Redis, keys: Keys, expected: dict[str, str]) -> bool:
    states = await redis.mget([keys.delivery(d) for d in expected])
    return all(s == "queued" for s in states)


async def _all_delivered(redis: Redis, keys: Keys, expected: dict[str, str]) -> bool:
    states = await redis.mget([keys.delivery(d) for d in expected])
    return all(s == "delivered" for s in states) and await redis.zcard(keys.retry_queue) == 0


async def _max_attempts(redis: Redis, keys: Keys) -> int:
    payloads = await redis.hvals(keys.retry_payloads)
    return max((int(json.loads(p).get("attempts", 0)) for p in payloads), default=0)
