"""The whole pipeline through real processes: ``python -m bench.pipeline`` (part of ``make bench``).

Starts its own embedded broker and Redis, then real ``churnwatch api`` and ``churnwatch scorer``
processes, and measures on the same broker, in the same run:

1. **HTTP ingest** — BENCH_INGEST_EVENTS (default 100,000) events POSTed to ``/v1/events`` in
   batches of BENCH_BATCH (500) by BENCH_CLIENTS (4) concurrent clients (bodies encoded before
   the clock starts), no scorer running; next to a **bare aiokafka producer** (acks=all, the
   publisher's settings) sending the same records in the same batches with the same
   concurrency, awaiting each batch's acknowledgements. events/s = events / (first send ->
   last acknowledgement).
2. **End to end** — with the scorer running, BENCH_E2E_EVENTS (default 40,000) synthetic salon
   events (realistic histories) POSTed as fast as the API takes them; events/s = events /
   (first POST -> the last one applied and scored in Redis, ``events_applied_total``).
3. **Latency at a steady rate** — BENCH_LAT_RATE (500) events/s for BENCH_LAT_SECONDS (60) s,
   one POST of rate/10 events every 100 ms. Each POST carries one *probe*: the first event of
   a new customer whose single purchase lies 100 days back (the default model puts them in
   the high tier, so scoring them publishes exactly one risk change). Per probe:

   - event->queryable: POST returned (202) -> ``GET /v1/customers/{id}/risk`` answers 200
     (polled every 10 ms; the risk is only there once the scorer committed it);
   - event->risk-change: POST sent -> the probe's risk-change record read from the risk topic
     by a consumer that tails it (fetch wait 20 ms).

   Samples carry their time in the run; the PNG ``bench/results/latency-<stamp>.png`` (and
   ``latency-latest.png``) plots them.
4. **Nothing lost, nothing doubled** — every event of every 202 (phases 2 and 3) must be stored
   exactly once in its customer's window, ``events_applied_total`` must equal their number,
   and every probe must have exactly one distinct risk change on the topic. Counted, written to
   the report, and the run fails (exit 1) otherwise.

Writes ``bench/results/pipeline-<stamp>.json`` (BENCH_STAMP names the run when ``make bench``
sets it); ``bench/report.py`` merges it with the other parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import TopicPartition

from bench.output import RESULTS
from services.common.embedded import ServiceProcess, free_port, start_broker, start_redis
from services.common.kafka import ensure_topics, make_consumer, make_producer
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings, load_settings
from services.scoring.summary import Summary
from services.state.store import read_states
from services.synth import generate

INGEST_EVENTS = int(os.environ.get("BENCH_INGEST_EVENTS", "100000"))
E2E_EVENTS = int(os.environ.get("BENCH_E2E_EVENTS", "40000"))
BATCH = int(os.environ.get("BENCH_BATCH", "500"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
LAT_RATE = int(os.environ.get("BENCH_LAT_RATE", "500"))
LAT_SECONDS = int(os.environ.get("BENCH_LAT_SECONDS", "60"))
TICK_S = 0.1
POLL_S = 0.01


def stamp() -> str:
    return os.environ.get("BENCH_STAMP") or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(ms: list[float]) -> dict[str, Any]:
    return {"n": len(ms), "p50_ms": _r(pct(ms, 0.5)), "p99_ms": _r(pct(ms, 0.99)),
            "max_ms": _r(max(ms) if ms else None)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# processes ----------------------------------------------------------------------------------
PORT_SETTING = {"api": "api_port", "scorer": "scorer_metrics_port",
                "notifier": "notifier_metrics_port"}


def start_service(command: str, settings: Settings, log: Path) -> ServiceProcess:
    """``churnwatch <command>`` started as a child with the bench's settings, on a port chosen
    as it starts (its ``url``; ``wait_ready`` starts it again on another if a process took
    that one meanwhile: a soak may run beside the bench)."""
    return ServiceProcess(command, settings, log,
                          health_port_setting=PORT_SETTING[command]).start(wait_ready=False)


def bench_settings(broker: str, redis: str, name: str, home: Path, **extra: Any) -> Settings:
    run = f"{name}{uuid.uuid4().hex[:6]}"
    return load_settings(
        home=home, kafka_bootstrap=broker, redis_url=f"redis://{redis}/0", redis_prefix=run,
        topic_events=f"{run}.events", topic_risk_changes=f"{run}.risk",
        topic_events_dlq=f"{run}.dlq", topic_notifications_dlq=f"{run}.ndlq",
        scorer_group=f"{run}-scorer", notifier_group=f"{run}-notifier", kafka_idempotence=False,
        api_port=free_port(), scorer_metrics_port=free_port(), notifier_metrics_port=free_port(),
        api_rate_limit_per_second=0, clock="wall", **extra)


# 1. HTTP ingest vs the bare producer ---------------------------------------------------------
def ingest_events(n: int, tag: str) -> list[list[dict[str, Any]]]:
    now = datetime.now(UTC) - timedelta(minutes=5)
    events = []
    for i in range(n):
        e: dict[str, Any] = {"event_id": f"{tag}-{i}", "customer_id": f"{tag}-c{i % 20000}",
                             "occurred_at": _iso(now - timedelta(minutes=(i * 7) % 400_000)),
                             "store_id": f"store-{i % 7}"}
        if i % 3:
            e.update(type="transaction", amount=round(10 + (i % 90) * 1.5, 2))
        else:
            e["type"] = "visit"
        events.append(e)
    return [events[i:i + BATCH] for i in range(0, n, BATCH)]


async def bare_producer(settings: Settings, topic: str, batches: list[list[dict[str, Any]]]
                        ) -> float:
    records = [[(e["customer_id"].encode(), json.dumps(e).encode()) for e in b] for b in batches]
    producer = make_producer(settings)  # acks=all, linger 5 ms, like the API's publisher
    await producer.start()
    queue = list(reversed(records))
    try:
        async def client() -> None:
            while queue:
                batch = queue.pop()
                futures = [await producer.send(topic, v, key=k) for k, v in batch]
                await asyncio.gather(*futures)

        t0 = time.monotonic()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return sum(map(len, records)) / (time.monotonic() - t0)
    finally:
        await producer.stop()


async def post_all(url: str, bodies: list[bytes], counts: list[int], clients: int
                   ) -> tuple[float, float, int]:
    """POST every body with ``clients`` concurrent clients; returns (first send, last 202,
    events accepted). A non-202 answer fails the bench: it must not happen without faults."""
    queue = list(reversed(list(zip(bodies, counts, strict=True))))
    accepted = 0
    first = 0.0
    last = 0.0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        async def client() -> None:
            nonlocal accepted, first, last
            while queue:
                body, n = queue.pop()
                if not first:
                    first = time.monotonic()
                r = await http.post("/v1/events", content=body,
                                    headers={"content-type": "application/json"})
                if r.status_code != 202 or r.json()["accepted"] != n:
                    raise RuntimeError(f"POST /v1/events answered {r.status_code}: {r.text[:300]}")
                accepted += n
                last = time.monotonic()

        await asyncio.gather(*(client() for _ in range(clients)))
    return first, last, accepted


async def ingest_phase(broker: str, redis: str, home: Path) -> dict[str, Any]:
    settings = bench_settings(broker, redis, "bi", home)
    bare_topic = f"{settings.redis_prefix}.bare"
    await ensure_topics(settings, [settings.topic_events, bare_topic])
    batches = ingest_events(INGEST_EVENTS, settings.redis_prefix)
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in batches]
    bare = await bare_producer(settings, bare_topic, batches)
    api = start_service("api", settings, home / "api-ingest.log")
    try:
        await asyncio.to_thread(api.wait_ready)
        # warm-up: a small batch (connections, the producer's metadata), not counted
        warm = ingest_events(BATCH, f"{settings.redis_prefix}w")[0]
        await post_all(api.url, [json.dumps(warm).encode()], [len(warm)], 1)
        first, last, accepted = await post_all(api.url, bodies, [len(b) for b in batches], CLIENTS)
    finally:
        api.stop()
    http = accepted / (last - first)
    print(f"  ingest: bare producer {bare:,.0f}/s, HTTP {http:,.0f}/s ({accepted:,} events)")
    return {"events": accepted, "batch": BATCH, "clients": CLIENTS,
            "bare_producer_events_per_s": round(bare), "http_events_per_s": round(http),
            "http_vs_bare_producer": round(http / bare, 3)}


# 2. end to end -------------------------------------------------------------------------------
def synth_events(n: int) -> list[dict[str, Any]]:
    end = datetime.now(UTC) - timedelta(hours=1)
    events, _ = generate(preset="salon", customers=max(n // 9, 100),
                         start=end - timedelta(days=350), end=end, seed=23)
    if len(events) < n:
        raise RuntimeError(f"the synthetic generator gave {len(events)} events, not {n}")
    return events[:n]


async def applied(redis: Any, keys: Keys) -> int:
    return int(await redis.hget(keys.stats, "events_applied_total") or 0)


# a poll deadline that fails saying how far the scorer got (an asyncio.timeout() could not)
async def wait_applied(redis: Any, keys: Keys, n: int, scorer: ServiceProcess,
                       timeout: float) -> float:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await applied(redis, keys) >= n:
            return time.monotonic()
        if scorer.proc is None or scorer.proc.poll() is not None:
            raise RuntimeError(f"the scorer exited; see {scorer.log_path}")
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the scorer applied {await applied(redis, keys)} of {n} events in "
                       f"{timeout:.0f} s")


# 3. latency ----------------------------------------------------------------------------------
class RiskTail:
    """Tails the risk topic from its end; notes when each customer's change was read."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.seen: dict[str, list[tuple[float, str]]] = {}
        self.arrived = asyncio.Event()  # set when a batch of changes was noted
        self._task: asyncio.Task[None] | None = None
        self._consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=20)

    async def start(self) -> None:
        c = self._consumer
        await c.start()
        topic = self.settings.topic_risk_changes
        parts = c.partitions_for_topic(topic)
        for _ in range(50):
            if parts:
                break
            await c._client.force_metadata_update()  # noqa: SLF001 - only way to refresh
            parts = c.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        c.assign(tps)
        await c.seek_to_end(*tps)
        for tp in tps:
            await c.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    ce = json.loads(r.value)
                    self.seen.setdefault(ce["subject"], []).append((now, ce["id"]))
            if batch:
                self.arrived.set()

    async def wait_seen(self, customers: list[str], within_s: float) -> None:
        """Until a change of every one of ``customers`` was read, or ``within_s`` passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while any(c not in self.seen for c in customers):
                    self.arrived.clear()
                    await self.arrived.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def latency_phase(settings: Settings, url: str, tail: RiskTail, tag: str
                        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    per_tick = max(int(LAT_RATE * TICK_S), 2)
    probe_at = _iso(datetime.now(UTC) - timedelta(days=100))
    posted: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []  # {customer, t_send, t_ack, t_query}
    failures: list[str] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        async def send(batch: list[dict[str, Any]], probe: dict[str, Any]) -> None:
            probe["t_send"] = time.monotonic()
            r = await http.post("/v1/events", json=batch)
            if r.status_code != 202:
                failures.append(f"{r.status_code}: {r.text[:200]}")
                return
            probe["t_ack"] = time.monotonic()
            posted.extend(batch)
            deadline = probe["t_ack"] + 30
            path = f"/v1/customers/{probe['customer']}/risk"
            while time.monotonic() < deadline:
                g = await http.get(path)
                if g.status_code == 200:
                    probe["t_query"] = time.monotonic()
                    return
                await asyncio.sleep(POLL_S)

        tasks: list[asyncio.Task[None]] = []
        tick = 0
        while time.monotonic() - started < LAT_SECONDS:
            now = datetime.now(UTC)
            cid = f"{tag}-probe-{tick}"
            batch = [{"event_id": f"{cid}-0", "type": "transaction", "customer_id": cid,
                      "occurred_at": probe_at, "amount": 42.0, "store_id": "store-1"}]
            for j in range(per_tick - 1):
                k = tick * per_tick + j
                batch.append({"event_id": f"{tag}-s{k}", "type": "visit" if k % 2 else "transaction",
                              "customer_id": f"{tag}-l{k % 5000}", "occurred_at": _iso(now),
                              "store_id": f"store-{k % 7}", **({} if k % 2 else {"amount": 30.0})})
            probe: dict[str, Any] = {"customer": cid}
            probes.append(probe)
            tasks.append(asyncio.create_task(send(batch, probe)))
            tick += 1
            await asyncio.sleep(max(started + tick * TICK_S - time.monotonic(), 0))
        await asyncio.gather(*tasks)
    seconds = time.monotonic() - started
    # the risk changes of the last probes may still be on their way
    await tail.wait_seen([p["customer"] for p in probes], 30.0)
    samples: list[dict[str, Any]] = []
    queryable: list[float] = []
    to_topic: list[float] = []
    for p in probes:
        t = round(p["t_send"] - started, 3)
        if "t_query" in p:
            ms = (p["t_query"] - p["t_ack"]) * 1000
            queryable.append(ms)
            samples.append({"t_s": t, "kind": "event_to_queryable", "ms": round(ms, 1)})
        if p["customer"] in tail.seen:
            ms = (tail.seen[p["customer"]][0][0] - p["t_send"]) * 1000
            to_topic.append(ms)
            samples.append({"t_s": t, "kind": "event_to_risk_change", "ms": round(ms, 1)})
    if failures:
        raise RuntimeError(f"{len(failures)} POSTs failed during the latency run: {failures[:3]}")
    result = {"target_events_per_s": LAT_RATE, "seconds": round(seconds, 1),
              "events": len(posted), "events_per_s": round(len(posted) / seconds),
              "probes": len(probes), "post_every_ms": int(TICK_S * 1000),
              "events_per_post": per_tick,
              "event_to_queryable": summary(queryable),
              "event_to_risk_change": summary(to_topic),
              "_probes": probes, "_posted": posted}
    return result, samples


# 4. nothing lost, nothing doubled -------------------------------------------------------------
async def count_exactly_once(redis: Any, keys: Keys, events: list[dict[str, Any]],
                             probes: list[str], tail: RiskTail) -> dict[str, int]:
    # Every event's id within the summary's id memory (30+ days behind the customer's newest
    # event) must be remembered; older ones a summary cannot list, so the applied count
    # judges them: events applied = distinct events posted, no more, no less.
    cids = sorted({e["customer_id"] for e in events})
    known: dict[str, Summary] = {}
    for i in range(0, len(cids), 5000):
        states = await read_states(redis, keys, [("default", c) for c in cids[i:i + 5000]], ["sm"])
        for cid, state in zip(cids[i:i + 5000], states, strict=True):
            blob = state.get("sm")
            known[cid] = Summary.decode(blob) if blob else Summary.empty()
    missing = 0
    for e in {e["event_id"]: e for e in events}.values():
        s = known[e["customer_id"]]
        at = int(datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")).timestamp() * 1000)
        recent = s.last_ts is not None and at >= s.last_ts - 30 * 86_400_000
        missing += int((recent or s.last_ts is None) and not s.knows(e["event_id"]))
    distinct = len({e["event_id"] for e in events})
    total = await applied(redis, keys)
    missing = max(missing, distinct - total)
    changes = [len({cid for _, cid in tail.seen.get(p, [])}) for p in probes]
    return {"events": distinct, "stored": distinct - missing, "applied_total": total,
            "lost": missing + sum(1 for c in changes if c == 0),
            "doubled": max(total - (distinct - missing), 0) + sum(c - 1 for c in changes if c > 1),
            "probes_without_risk_change": sum(1 for c in changes if c == 0),
            "probes_with_several_risk_changes": sum(1 for c in changes if c > 1)}


async def e2e_setup(broker: str, redis_addr: str, name: str, home: Path) -> tuple[
        Settings, Keys, list[dict[str, Any]], list[list[dict[str, Any]]], list[bytes]]:
    """Settings and topics of one end-to-end phase, its events, their batches and bodies."""
    settings = bench_settings(broker, redis_addr, name, home)
    await ensure_topics(settings)
    events = synth_events(E2E_EVENTS)
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in batches]
    return settings, Keys(settings.redis_prefix), events, batches, bodies


async def e2e_and_latency(broker: str, redis_addr: str, home: Path
                          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    settings, keys, events, batches, bodies = await e2e_setup(broker, redis_addr, "be", home)
    redis = make_redis(settings)
    api = start_service("api", settings, home / "api.log")
    scorer = start_service("scorer", settings, home / "scorer.log")
    tail = RiskTail(settings)
    try:
        await asyncio.to_thread(api.wait_ready)
        await asyncio.to_thread(scorer.wait_ready)
        await tail.start()
        # the scorer's group join takes a few seconds: wait until a warm-up event is scored
        warm = [{"event_id": f"{settings.redis_prefix}-warm", "type": "visit",
                 "customer_id": f"{settings.redis_prefix}-warm", "occurred_at": _iso(datetime.now(UTC))}]
        await post_all(api.url, [json.dumps(warm).encode()], [1], 1)
        await wait_applied(redis, keys, 1, scorer, 90)
        first, last, accepted = await post_all(api.url, bodies, [len(b) for b in batches], CLIENTS)
        done = await wait_applied(redis, keys, 1 + accepted, scorer, 300)
        e2e = {"events": accepted, "batch": BATCH, "clients": CLIENTS,
               "events_per_s": round(accepted / (done - first)),
               "post_seconds": round(last - first, 2), "scored_seconds": round(done - first, 2),
               "http_events_per_s_with_scorer": round(accepted / (last - first))}
        print(f"  end to end: {e2e['events_per_s']:,}/s POST -> scored ({accepted:,} events)")
        latency, samples = await latency_phase(settings, api.url, tail, settings.redis_prefix)
        probes = [p["customer"] for p in latency.pop("_probes")]
        posted = warm + events[:accepted] + latency.pop("_posted")
        await wait_applied(redis, keys, len(posted), scorer, 120)
        await asyncio.sleep(1.0)  # a doubled apply would show in the counter by now
        checks = await count_exactly_once(redis, keys, posted, probes, tail)
        print(f"  latency at {latency['events_per_s']}/s: event->queryable p50/p99 "
              f"{latency['event_to_queryable']['p50_ms']}/{latency['event_to_queryable']['p99_ms']} ms, "
              f"event->risk-change p50/p99 {latency['event_to_risk_change']['p50_ms']}/"
              f"{latency['event_to_risk_change']['p99_ms']} ms")
        print(f"  exactly once: {checks}")
    finally:
        await tail.stop()
        scorer.stop()
        api.stop()
        await redis.aclose()
    return {"end_to_end": e2e, "latency": latency, "exactly_once": checks}, samples


async def e2e_scaled(broker: str, redis_addr: str, home: Path, processes: int
                     ) -> dict[str, Any]:
    """POST → scored again with ``processes`` scorer workers in one group (one per core, as
    ``CHURNWATCH_SCORER_PROCESSES`` starts them): throughput only, the same event mix."""
    settings, keys, _, batches, bodies = await e2e_setup(broker, redis_addr, "bs", home)
    redis = make_redis(settings)
    api = start_service("api", settings, home / "api-scaled.log")
    scorers = [start_service("scorer", settings, home / f"scorer-scaled-{i + 1}.log")
               for i in range(processes)]
    try:
        await asyncio.to_thread(api.wait_ready)
        for scorer in scorers:
            await asyncio.to_thread(scorer.wait_ready)
        # every worker has joined once each holds partitions; a warm-up event is scored
        warm = [{"event_id": f"{settings.redis_prefix}-warm", "type": "visit",
                 "customer_id": f"{settings.redis_prefix}-warm", "occurred_at": _iso(datetime.now(UTC))}]
        await post_all(api.url, [json.dumps(warm).encode()], [1], 1)
        await wait_applied(redis, keys, 1, scorers[0], 90)
        first, last, accepted = await post_all(api.url, bodies, [len(b) for b in batches], CLIENTS)
        done = await wait_applied(redis, keys, 1 + accepted, scorers[0], 300)
        out = {"events": accepted, "processes": processes,
               "events_per_s": round(accepted / (done - first))}
        print(f"  end to end, {processes} scorer processes: {out['events_per_s']:,}/s POST -> scored")
        return out
    finally:
        for scorer in scorers:
            scorer.stop()
        api.stop()
        await redis.aclose()


def chart(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for kind, color, label in (("event_to_queryable", "tab:blue", "POST 202 → GET risk 200"),
                               ("event_to_risk_change", "tab:orange", "POST sent → risk change on topic")):
        pts = [(s["t_s"], s["ms"]) for s in samples if s["kind"] == kind]
        if pts:
            ms = [p[1] for p in pts]
            p99 = pct(ms, 0.99)
            ax.plot([p[0] for p in pts], ms, ".", ms=3, color=color, alpha=0.6,
                    label=f"{label} (p50 {pct(ms, 0.5):.0f} ms, p99 {p99:.0f} ms)")
    ax.set_xlabel("time in the run (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def main_async() -> int:
    run_stamp = stamp()
    home = Path(tempfile.mkdtemp(prefix="cw-pipeline-bench-"))
    broker = start_broker(log_path=home / "broker.log")
    redis = start_redis(log_path=home / "redis.log")
    try:
        ingest = await ingest_phase(broker.address, redis.address, home)
        rest, samples = await e2e_and_latency(broker.address, redis.address, home)
        cores = os.cpu_count() or 1
        if cores > 1:  # the scale-out on this machine: one scorer process per core
            rest["end_to_end_scaled"] = await e2e_scaled(broker.address, redis.address, home,
                                                         cores)
    finally:
        redis.stop()
        broker.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    lat = rest["latency"]
    png = RESULTS / f"latency-{run_stamp}.png"
    chart(samples, png, f"churnwatch latency at {lat['events_per_s']} events/s "
          f"({lat['probes']} probes, {os.cpu_count()} cores) — {run_stamp}")
    (RESULTS / "latency-latest.png").write_bytes(png.read_bytes())
    report = {"stamp": run_stamp, "ingest": ingest, **rest, "latency_chart": png.name,
              "latency_samples": samples, "logs": str(home)}
    out = RESULTS / f"pipeline-{run_stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"  written to {out} and {png}")
    checks = rest["exactly_once"]
    if checks["lost"] or checks["doubled"]:
        print(f"FAIL: {checks['lost']} lost, {checks['doubled']} doubled", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    return asyncio.run(main_async())


if __name__ == "__main__":
    sys.exit(main())
