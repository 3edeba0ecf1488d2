"""Faults on the way in: the API SIGKILLed while batches are in flight, and the broker
unreachable for a while (the network to it cut, not the broker restarted: Tansu keeps its
topics in memory).

Real processes throughout: ``churnwatch api`` and ``churnwatch scorer`` children, a real
Kafka-protocol broker and redis-server, HTTP clients on loopback. Each test counts, from what
it sent and what Redis holds, how many acknowledged events were not scored (lost) and how many
were applied more than once (doubled), records both for the README's reliability table, then
asserts they are 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from redis.asyncio import Redis

from services.alerting.webhooks import add_subscription
from services.common.embedded import Server, free_port, start_broker
from services.common.kafka import ensure_topics
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from tests.data import T0, iso
from tests.faults.tcpproxy import Mode, TcpProxy
from tests.integration.test_scorer import customer_state, held
from tests.kafkatools import read_all
from tests.peers import LoopbackHttp
from tests.procs import ServiceProcess
from tests.reliability import record

pytestmark = pytest.mark.integration

SECRET = "fault-ingest-secret-1"
KEYS = f"{SECRET}:ingest+read"
AUTH = {"Authorization": f"Bearer {SECRET}"}
CUSTOMERS = 12
# No silence sweeps, the rule scorecard, the event clock: what is stored depends only on the
# events. No rate limit: the clients post as fast as the API answers.
QUIET: dict[str, Any] = {"sweep_interval_seconds": 3600.0, "model": "scorecard", "clock": "event",
                         "api_rate_limit_per_second": 0, "api_keys": KEYS}


# helpers ----------------------------------------------------------------------------------
def make_batches(prefix: str, count: int, size: int) -> list[list[dict[str, Any]]]:
    """``count`` batches of ``size`` events with fixed, distinct ids over CUSTOMERS customers
    (visits and transactions, one hour apart)."""
    out = []
    for b in range(count):
        batch = []
        for i in range(size):
            n = b * size + i
            event: dict[str, Any] = {"event_id": f"{prefix}-b{b:03d}-e{i:03d}",
                                     "customer_id": f"{prefix}-c{n % CUSTOMERS:02d}",
                                     "occurred_at": iso(T0 + timedelta(hours=n)),
                                     "store_id": "fault-store"}
            if n % 2:
                event.update(type="transaction", amount=20.0 + n % 7, currency="EUR")
            else:
                event["type"] = "visit"
            batch.append(event)
        out.append(batch)
    return out


@dataclass
class Attempt:
    batch: int
    started: float
    elapsed: float
    status: int | None  # None: no answer (connection refused, reset or closed)
    detail: str = ""
    retry_after: str | None = None


async def post(client: httpx.AsyncClient, index: int, batch: list[dict[str, Any]]) -> Attempt:
    started = time.monotonic()
    try:
        r = await client.post("/v1/events", json=batch)
    except httpx.TransportError as exc:
        return Attempt(index, started, time.monotonic() - started, None, type(exc).__name__)
    detail = r.text
    if r.status_code == 202:
        assert r.json() == {"accepted": len(batch)}, r.text
    return Attempt(index, started, time.monotonic() - started, r.status_code, detail,
                   r.headers.get("retry-after"))


async def start_all(*procs: ServiceProcess) -> None:
    for p in procs:
        p.start(wait_ready=False)
    for p in procs:
        await asyncio.to_thread(p.wait_ready)


async def wait_scored(client: httpx.AsyncClient, distinct: int, timeout: float = 60.0
                      ) -> dict[str, Any]:
    """Until the scorer applied ``distinct`` events and has no lag on the events topic (so the
    duplicates a resend put on the topic were processed too), as GET /v1/status tells."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            r = await client.get("/v1/status")
            status = r.json() if r.status_code == 200 else {"http": r.status_code}
        except httpx.TransportError as exc:
            status = {"error": repr(exc)}
        if status.get("events_applied_total", 0) >= distinct and status.get("scorer_lag") == 0:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"scorer did not catch up within {timeout} s: {status}")


@dataclass
class Tally:
    sent: int  # distinct events sent
    acked: int  # distinct events in batches that got a 202
    lost: int  # acknowledged events missing from their customer's window
    doubled: int  # applications beyond one per distinct stored event
    unexpected: int  # stored events nobody sent (must be 0)
    applied_total: int
    duplicate_total: int
    mismatched: dict[str, tuple[int, int]]  # customer -> (sent, stored), if differing


async def tally(redis: Redis, settings: Settings, batches: list[list[dict[str, Any]]],
                acked: set[int]) -> Tally:
    keys = Keys(settings.redis_prefix)
    sent: dict[str, set[str]] = {}
    sent_events: dict[str, dict[str, dict[str, Any]]] = {}
    acked_ids: set[str] = set()
    for i, batch in enumerate(batches):
        for e in batch:
            sent.setdefault(e["customer_id"], set()).add(e["event_id"])
            sent_events.setdefault(e["customer_id"], {})[e["event_id"]] = e
            if i in acked:
                acked_ids.add(e["event_id"])
    stored: set[str] = set()
    unexpected = 0
    mismatched = {}
    for cid, ids in sorted(sent.items()):
        kept = held(await customer_state(redis, settings, cid), sent_events[cid].values())
        stored |= kept
        if len(kept) != len(ids):
            mismatched[cid] = (len(ids), len(kept))
    stats = await redis.hgetall(keys.stats)
    applied = int(stats.get("events_applied_total", 0))
    return Tally(sent=sum(len(v) for v in sent.values()), acked=len(acked_ids),
                 lost=len(acked_ids - stored), doubled=max(applied - len(stored), 0),
                 unexpected=unexpected, applied_total=applied,
                 duplicate_total=int(stats.get("events_duplicate_total", 0)),
                 mismatched=mismatched)


# 1. SIGKILL of the API while batches are in flight ------------------------------------------
CLIENTS = 8
PER_CLIENT = 6
BATCH = 50
KILL_AFTER_ACKS = 16  # of 48 batches
RESEND_ACKED = 3


async def test_api_sigkill_mid_batch_loses_and_doubles_nothing(settings_factory, tmp_path: Path
                                                               ) -> None:
    """8 clients post 48 batches of 50; the API is SIGKILLed once 16 were acknowledged, with
    requests in flight. A new API takes the resends of every unanswered batch and of 3
    acknowledged ones: every event is scored exactly once."""
    t_start = time.monotonic()
    settings = settings_factory(**QUIET)
    batches = make_batches("k", CLIENTS * PER_CLIENT, BATCH)
    scorer = ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                            health_port_setting="scorer_metrics_port")
    api = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    api2 = ServiceProcess("api", settings, tmp_path / "api2.log", health_port_setting="api_port")
    redis = make_redis(settings)
    first: dict[int, Attempt] = {}
    killed = asyncio.Event()
    enough = asyncio.Event()
    kill_at = 0.0
    try:
        await start_all(api, scorer)
        async with httpx.AsyncClient(base_url=api.url, headers=AUTH, timeout=30.0) as client:

            async def run_client(c: int) -> None:
                for j in range(PER_CLIENT):
                    b = c + j * CLIENTS
                    first[b] = a = await post(client, b, batches[b])
                    assert a.status in (202, None), f"batch {b}: {a.status} {a.detail}"
                    if sum(x.status == 202 for x in first.values()) >= KILL_AFTER_ACKS:
                        enough.set()

            async def killer() -> None:
                nonlocal kill_at
                await enough.wait()
                kill_at = time.monotonic()
                await asyncio.to_thread(api.kill)
                killed.set()

            await asyncio.gather(killer(), *(run_client(c) for c in range(CLIENTS)))
        assert killed.is_set() and api.proc is not None and api.proc.returncode == -9

        acked = {b for b, a in first.items() if a.status == 202}
        acked_before_kill = len(acked)
        unanswered = sorted(b for b, a in first.items() if a.status is None)
        # In flight at the kill: sent before it, never answered.
        in_flight = [b for b in unanswered if first[b].started < kill_at]
        assert len(first) == len(batches) and unanswered and in_flight, \
            f"the kill should leave requests unanswered: {len(acked)} acked, {unanswered}"

        t_restart = time.monotonic()
        await start_all(api2)
        restart_seconds = time.monotonic() - t_restart
        resend = unanswered + sorted(acked)[:RESEND_ACKED]
        again: dict[int, Attempt] = {}
        async with httpx.AsyncClient(base_url=api2.url, headers=AUTH, timeout=30.0) as client:
            gate = asyncio.Semaphore(CLIENTS)

            async def resend_one(b: int) -> None:
                async with gate:
                    again[b] = await post(client, b, batches[b])

            await asyncio.gather(*(resend_one(b) for b in resend))
            refused = {b: (a.status, a.detail) for b, a in again.items() if a.status != 202}
            assert not refused, f"resends refused by the restarted API: {refused}"
            acked |= set(again)
            status = await wait_scored(client, len(batches) * BATCH)

        counted = await tally(redis, settings, batches, acked)
        record(kind="fault", name="api-sigkill-mid-batch",
               tried=f"SIGKILL of the API while {CLIENTS} clients post batches (after "
                     f"{KILL_AFTER_ACKS} were acknowledged); a new API takes the resends of "
                     f"every unanswered batch and of {RESEND_ACKED} acknowledged ones",
               load=f"{counted.sent:,} events in {len(batches)} batches of {BATCH}, "
                    f"{CUSTOMERS} customers, 1 scorer process",
               checked="every event of a 202 is in its customer's window exactly once; "
                       "events applied = distinct events sent (resends are no-ops)",
               sent=counted.sent, lost=counted.lost, doubled=counted.doubled,
               test="tests/faults/test_fault_api_broker.py::"
                    "test_api_sigkill_mid_batch_loses_and_doubles_nothing",
               measured={"acked_first_time": acked_before_kill,
                         "unanswered": len(unanswered), "in_flight_at_kill": len(in_flight),
                         "resent_batches": len(resend),
                         "duplicates_discarded_by_scorer": counted.duplicate_total,
                         "api_restart_seconds": round(restart_seconds, 2),
                         "test_seconds": round(time.monotonic() - t_start, 1)})
        assert counted.lost == 0 and counted.doubled == 0, counted
        assert counted.acked == counted.sent == len(batches) * BATCH
        assert counted.unexpected == 0 and not counted.mismatched, counted
        assert counted.applied_total == counted.sent
        assert status["events_accepted_total"] >= counted.sent
    finally:
        for p in (api2, api, scorer):
            p.stop()
        await redis.aclose()


# 2. The broker unreachable for a while ----------------------------------------------------
REQUEST_TIMEOUT_MS = 1500
REFUSE_BOUND_S = REQUEST_TIMEOUT_MS / 1000 + 2.0 + 3.0  # the publisher's own wait + slack
# Two outages: connections held mute (requests time out), then reset at once (refused).
OUTAGES: tuple[tuple[Mode, float], ...] = (("blackhole", 6.0), ("refuse", 4.0))
BEFORE, DURING, AFTER, SIZE = 8, 4, 4, 40


class Receiver(LoopbackHttp):
    """A webhook receiver that is always up: what the notifier delivers, by change id."""

    path = "/hook"

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.ids.append(json.loads(await request.read())["id"])
        return web.Response(status=200)


def with_complaints(batches: list[list[dict[str, Any]]], indices: list[int]) -> None:
    """The last event of each batch in ``indices`` becomes a high-severity open complaint
    (same id, customer and time): its customer's tier rises, so risk changes are made before
    and right after each cut and the notifier has something to deliver."""
    for b in indices:
        last = batches[b][-1]
        batches[b][-1] = {**{k: last[k] for k in ("event_id", "customer_id", "occurred_at",
                                                  "store_id")},
                          "type": "complaint", "severity": "high", "status": "open"}


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[Server, TcpProxy]]:
    """A broker of this test's own behind a TCP proxy: it advertises the proxy's port, so
    every client connection (bootstrap and the ones metadata names) goes through the proxy."""
    listen = free_port()
    proxy = TcpProxy(target_port=listen).start()
    broker = start_broker(port=listen, advertised_port=proxy.port,
                          log_path=tmp_path / "broker-proxied.log")
    proxy.target_port = broker.port
    try:
        yield broker, proxy
    finally:
        proxy.stop()
        broker.stop()


async def post_until_accepted(client: httpx.AsyncClient, index: int, batch: list[dict[str, Any]],
                              timeout: float = 30.0) -> int:
    """POST until 202 (each refusal must be a 503); returns the number of attempts."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        a = await post(client, index, batch)
        attempts += 1
        if a.status == 202:
            return attempts
        assert a.status == 503, f"batch {index} after the outage: {a.status} {a.detail}"
        assert time.monotonic() < deadline, \
            f"batch {index} still refused {timeout:.0f} s after the network came back: {a.detail}"
        await asyncio.sleep(0.3)


async def test_broker_unreachable_503_then_recovers_without_restart(
        settings_factory, proxied_broker: tuple[Server, TcpProxy], tmp_path: Path) -> None:
    """Batches get 202; the network to the broker is cut twice (live connections reset, new
    ones held mute, then refused): POST answers 503 in bounded time, saying so, and /ready
    tells; after the network is back, with no process restarted, the refused batches and new
    ones get 202 and the scorer and the notifier resume by themselves: every acknowledged
    event scored exactly once, every risk change delivered to the webhook exactly once."""
    t_start = time.monotonic()
    _, proxy = proxied_broker
    settings = settings_factory(create_topics=False, kafka_bootstrap=proxy.address,
                                kafka_request_timeout_ms=REQUEST_TIMEOUT_MS,
                                webhook_allow_private=True, scorer_shutdown_grace_seconds=3.0,
                                **QUIET)
    await ensure_topics(settings)  # through the proxy
    per_outage = DURING + AFTER
    batches = make_batches("u", BEFORE + len(OUTAGES) * per_outage, SIZE)
    with_complaints(batches, [BEFORE - 1, *(BEFORE + n * per_outage + i
                                            for n in range(len(OUTAGES)) for i in (0, DURING))])
    scorer = ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                            health_port_setting="scorer_metrics_port")
    api = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    notifier = ServiceProcess("notifier", settings, tmp_path / "notifier.log",
                              health_port_setting="notifier_metrics_port")
    receiver = Receiver()
    redis = make_redis(settings)
    acked: set[int] = set()
    measured: dict[str, Any] = {}
    try:
        await receiver.up()
        await add_subscription(redis, Keys(settings.redis_prefix), url=receiver.url,
                               secret="fault-broker-webhook-secret")
        await start_all(api, scorer, notifier)
        procs = (api, scorer, notifier)
        pids = tuple(p.proc and p.proc.pid for p in procs)
        async with httpx.AsyncClient(base_url=api.url, headers=AUTH, timeout=30.0) as client:
            for b in range(BEFORE):
                a = await post(client, b, batches[b])
                assert a.status == 202, f"batch {b} before the cut: {a.status} {a.detail}"
                acked.add(b)
                if b == BEFORE // 2 - 1:  # the scorer is consuming: steady state
                    await wait_scored(client, BEFORE // 2 * SIZE)
            # Cut right away: the last batches are still being scored and committed.

            for n, (mode, seconds) in enumerate(OUTAGES):
                first = BEFORE + n * per_outage
                during = range(first, first + DURING)
                after = range(first + DURING, first + per_outage)
                cut_at = time.monotonic()
                proxy.cut(mode)
                applied = int(await redis.hget(Keys(settings.redis_prefix).stats,
                                               "events_applied_total") or 0)
                unapplied_at_cut = len(acked) * SIZE - applied
                refused = await asyncio.gather(*(post(client, b, batches[b]) for b in during))
                ready = await client.get("/ready", timeout=10.0)
                health = await client.get("/health", timeout=10.0)
                for a in refused:
                    assert a.status == 503, f"batch {a.batch}, {mode}: {a.status} {a.detail}"
                    assert a.elapsed < REFUSE_BOUND_S, f"503 after {a.elapsed:.1f} s ({mode})"
                    assert "broker is unavailable" in a.detail and "retry" in a.detail, a.detail
                    assert a.retry_after is not None
                assert health.status_code == 200
                # Redis answers, so the API stays ready (it serves reads) but names the problem.
                assert ready.status_code == 200, ready.text
                assert ready.json()["broker"].startswith("unavailable"), ready.text
                await asyncio.sleep(max(0.0, seconds - (time.monotonic() - cut_at)))
                proxy.restore()
                restored_at = time.monotonic()

                # No restart: resend the refused batches, then new ones, each until 202.
                attempts = 0
                for b in [*during, *after]:
                    attempts += await post_until_accepted(client, b, batches[b])
                    acked.add(b)
                    if b == during[0]:
                        first_202 = time.monotonic() - restored_at
                ready_after = (await client.get("/ready")).json()
                assert ready_after["broker"] == "connected", ready_after
                measured[mode] = {
                    "cut_seconds": seconds,
                    "acked_not_yet_applied_at_cut": unapplied_at_cut,
                    "refusal_seconds": [round(a.elapsed, 2) for a in refused],
                    "ready_during_cut": ready.json()["broker"],
                    "first_202_after_restore_seconds": round(first_202, 2),
                    "post_attempts_after_restore": attempts}
                # The next cut comes at once, again with batches just acknowledged.
            status = await wait_scored(client, len(batches) * SIZE)
            measured["all_scored_after_last_restore_seconds"] = round(
                time.monotonic() - restored_at, 2)
        changes = {json.loads(r.value)["id"] for r in
                   await read_all(settings, settings.topic_risk_changes, idle_ms=800)}
        await receiver.until(lambda: changes <= set(receiver.ids), 30)
        measured["all_delivered_after_last_restore_seconds"] = round(
            time.monotonic() - restored_at, 2)
        await asyncio.sleep(1.0)  # a duplicate delivery would arrive by now
        delivered = Counter(receiver.ids)
        assert tuple(p.proc and p.proc.pid for p in procs) == pids
        for p in procs:
            assert p.proc is not None and p.proc.poll() is None, f"the {p.command} died"
        assert changes, "the complaints should have moved tiers"

        counted = await tally(redis, settings, batches, acked)
        undelivered = len(changes - set(delivered))
        delivered_twice = sum(n - 1 for n in delivered.values()) + len(set(delivered) - changes)
        modes = " then ".join(f"{s:.0f} s {m}" for m, s in OUTAGES)
        record(kind="fault", name="broker-unreachable",
               tried=f"the network to the broker cut twice ({modes}: live connections reset, "
                     "new ones held mute, then refused) and restored under API, scorer and "
                     "notifier; no process restarted",
               load=f"{counted.sent:,} events in {len(batches)} batches of {SIZE}: {BEFORE} "
                    f"before, then per outage {DURING} during it (503, resent after) and "
                    f"{AFTER} after; complaints that move tiers; one webhook subscription",
               checked=f"503 with a retry message within {REFUSE_BOUND_S:.1f} s during a cut, "
                       "never 202 or 500, /ready names the broker; afterwards 202 again, every "
                       "acknowledged event scored exactly once and every risk change delivered "
                       "to the webhook exactly once, by the same processes",
               sent=counted.sent, lost=counted.lost + undelivered,
               doubled=counted.doubled + delivered_twice,
               test="tests/faults/test_fault_api_broker.py::"
                    "test_broker_unreachable_503_then_recovers_without_restart",
               measured={**measured,
                         "duplicates_discarded_by_scorer": counted.duplicate_total,
                         "risk_changes": len(changes),
                         "proxy_connections_reset_or_held": proxy.refused,
                         "test_seconds": round(time.monotonic() - t_start, 1)})
        assert counted.lost == 0 and counted.doubled == 0, counted
        assert (undelivered, delivered_twice) == (0, 0), (changes, delivered)
        assert counted.acked == counted.sent == len(batches) * SIZE
        assert counted.unexpected == 0 and not counted.mismatched, counted
        assert counted.applied_total == counted.sent
        assert status["events_accepted_total"] == counted.sent

        # Stopped while the broker is away (a stack stopping around it): Faust would retry
        # leaving the group forever; the scorer exits once its grace is over.
        proxy.cut("refuse")
        assert scorer.proc is not None
        stopping = time.monotonic()
        scorer.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(scorer.proc.wait, 20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the scorer still runs 20 s after SIGTERM, broker away") from None
        assert time.monotonic() - stopping < 15
    finally:
        proxy.restore()
        for p in (api, scorer, notifier):
            p.stop()
        await receiver.down()
        await redis.aclose()
