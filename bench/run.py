"""``make bench``: scorer throughput and latency against the bare clients, in one run.

Starts its own embedded broker and Redis, writes N synthetic salon events with a bare
aiokafka producer, then measures on the same broker and machine:

- bare aiokafka consumer events/s (the ceiling of the client),
- a trivial Faust agent that only counts (the ceiling of the framework), with Faust's own
  delivery (the reference of every ratio) and on the scorer's transport (records handed
  over in batches: the ceiling of the scorer's own path),
- the churnwatch scorer (``churnwatch scorer``), events/s from first to last processed,
- event->queryable latency at a moderate steady load (from the scorer's histogram),
- Redis memory per customer, and bytes per customer at 10/100/1,000/5,000 events,
- notifier deliveries/s to a local webhook receiver (``bench/notifier_bench.py``).

Then ``bench/training_bench.py``: ``churnwatch train`` on 1,000,000 generated events (target
under 5 minutes on 2 cores). ``make bench`` then runs ``bench/api_bench.py`` (at-risk list over 1M customers, risk reads
under ingest load).

Writes ``bench/results/scorer-<stamp>.json`` and prints a table; ``make bench`` then merges
it with the other parts into ``bench/results/<stamp>.json`` (``bench/report.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.output import RESULTS, scorer_batch_seconds
from services.common.embedded import ServiceProcess, free_port, start_broker, start_redis
from services.common.kafka import ensure_topics, make_consumer, make_producer
from services.common.redisconn import Keys, customer_token, make_redis
from services.common.settings import Settings, load_settings
from services.synth import generate

N_EVENTS = int(os.environ.get("BENCH_EVENTS", "60000"))
STEADY_RATE = int(os.environ.get("BENCH_RATE", "500"))
STEADY_SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
NOTIFIER_DELIVERIES = int(os.environ.get("BENCH_NOTIFIER_DELIVERIES", "2000"))


def _events(n: int) -> list[dict[str, Any]]:
    end = datetime.now(UTC) - timedelta(hours=1)
    customers = max(n // 25, 100)
    events, _ = generate(preset="salon", customers=customers, start=end - timedelta(days=360),
                         end=end, seed=11)
    return events[:n]


async def produce(settings: Settings, events: list[dict[str, Any]]) -> float:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    t0 = time.monotonic()
    futures = [await producer.send(settings.topic_events, json.dumps(e).encode(),
                                   key=e["customer_id"].encode()) for e in events]
    await asyncio.gather(*futures)
    elapsed = time.monotonic() - t0
    await producer.stop()
    return len(events) / elapsed


async def produce_envelopes(settings: Settings, events: list[dict[str, Any]]) -> float:
    """The same events as envelopes (services/common/envelope.py), as the API publishes them."""
    from services.common.envelope import encode_envelopes

    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    t0 = time.monotonic()
    futures = [await producer.send(settings.topic_events, env.value, key=env.key,
                                   partition=env.partition, headers=env.headers)
               for env in encode_envelopes(events, settings.topic_partitions)]
    await asyncio.gather(*futures)
    elapsed = time.monotonic() - t0
    await producer.stop()
    return len(events) / elapsed


async def events_done(redis: Any, settings: Settings) -> int:
    """Events the scorer has committed (single or in envelopes): ``events_scored_total``."""
    keys = Keys(settings.redis_prefix)
    return int(await redis.hget(keys.scored(settings.topic_events), "events") or 0)


async def bare_consume(settings: Settings, n: int) -> float | None:
    """Records per second the bare client fetches, from the end of its first fetch to the end
    of its last, counting what came after the first (the first fetch's records arrived before
    the clock started; counting them overstated the rate by up to a tenth). None when one
    fetch brought them all (``make bench QUICK=1``): nothing to time."""
    consumer = make_consumer(settings, settings.topic_events, group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
                             max_poll_records=settings.scorer_batch_max)
    await consumer.start()
    got, first, t0 = 0, 0, 0.0
    try:
        while got < n:
            batch = await consumer.getmany(timeout_ms=500)
            count = sum(len(v) for v in batch.values())
            if count and not t0:
                t0, first = time.monotonic(), count
            got += count
        return (got - first) / (time.monotonic() - t0) if got > first else None
    finally:
        await consumer.stop()


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, None where either was not timed."""
    return a / b if a is not None and b else None


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings.to_env(), **extra}


def trivial_faust(settings: Settings, n: int, workdir: Path, delivery: str = "stock"
                  ) -> float | None:
    """``delivery``: ``stock`` - Faust's own, a task set per message (the ceiling of the
    framework as shipped, the reference of the ratios); ``handover`` - the scorer's transport,
    records taken by the consumer and counted a batch at a time (services/scorer/transport.py),
    on a group of its own: the ceiling of the scorer's own path."""
    out = workdir / f"trivial-{delivery}.out"
    proc = subprocess.Popen([sys.executable, "-m", "bench.trivial_faust"],
                            env=child_env(settings, BENCH_TARGET=str(n), BENCH_OUT=str(out),
                                          BENCH_TRIVIAL_DELIVERY=delivery),
                            stdout=open(workdir / f"trivial-{delivery}.log", "wb"),
                            stderr=subprocess.STDOUT)
    proc.wait(600)
    count, seconds = out.read_text().split()  # after its first batch (bench/trivial_faust.py)
    return int(count) / float(seconds) if int(count) else None


async def scorer_run(settings: Settings, n: int, workdir: Path, *, steady: bool = True,
                     name: str = "scorer", processes: int = 1,
                     then_produce: Callable[[], Awaitable[Any]] | None = None
                     ) -> dict[str, Any]:
    """``processes``: scorer workers in the one group, as ``CHURNWATCH_SCORER_PROCESSES``
    starts them (each its own metrics port). The rate counts from the moment every worker
    holds its partitions to the last event committed. ``then_produce``: the topic is filled
    only once every worker holds its share of the partitions — a group still joining while
    the events are already there would count the rebalance (seconds) against a run that
    lasts seconds."""
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    log_path = workdir / f"{name}.log"
    # each on a port chosen as it starts (and again if another process took it meanwhile)
    workers = [ServiceProcess("scorer", settings, log_path if i == 0 else
                              workdir / f"{name}-{i + 1}.log",
                              health_port_setting="scorer_metrics_port")
               for i in range(processes)]
    for w in workers:
        w.start(wait_ready=False)
    await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in workers))
    try:
        # The clock starts once every worker holds its partitions (start-up and the group's
        # join are not the scorer's throughput), not at the first commit: a part is up to
        # 20,000 events, and a run of two parts timed from the first would time one.
        await _group_settled(workers, settings.topic_partitions)
        t0, start_count = time.monotonic(), await events_done(redis, settings)
        if then_produce is not None:
            await then_produce()
        while await events_done(redis, settings) < n:
            _check_alive(workers)
            await asyncio.sleep(0.05)
        if start_count < n:
            rate = (n - start_count) / max(time.monotonic() - t0, 1e-9)
        else:  # all committed before the group was seen settled: the polls' own time
            # the workers' time applying batches, for a run whose every event was committed before
            # the first look: it leaves out fetching between batches, so it is a ceiling
            rate = n / max(await scorer_batch_seconds([f"{w.url}/metrics" for w in workers]), 1e-9)
        if not steady:
            return {"scorer_events_per_s": rate}
        info = await redis.info("memory")
        customers = len({str(k).split("}")[0] for k in await redis.keys(f"{keys.prefix}:c:*")})
        memory_per_customer = info["used_memory"] / max(customers, 1)

        # Steady moderate load: event -> queryable latency from the scorer's own histogram.
        metrics_url = f"{workers[0].url}/metrics"
        before = _histogram(await _get_text(metrics_url))
        producer = make_producer(settings)
        await producer.start()
        now = datetime.now(UTC)
        sent = 0
        t_start = time.monotonic()
        while time.monotonic() - t_start < STEADY_SECONDS:
            tick = time.monotonic()
            for _ in range(STEADY_RATE // 20):
                cid = f"steady-{sent % 5000}"
                e = {"event_id": f"steady-{sent}", "type": "visit", "customer_id": cid,
                     "occurred_at": (now - timedelta(seconds=sent)).isoformat()}
                await producer.send(settings.topic_events, json.dumps(e).encode(), key=cid.encode())
                sent += 1
            await asyncio.sleep(max(0.05 - (time.monotonic() - tick), 0))
        await producer.flush()
        await producer.stop()
        await asyncio.sleep(2)
        after = _histogram(await _get_text(metrics_url))
        delta = {le: after[le] - before.get(le, 0) for le in after}
        return {"scorer_events_per_s": rate, "redis_bytes_per_customer": memory_per_customer,
                "customers": customers, "steady_rate": sent / STEADY_SECONDS,
                "latency_p50_s": _quantile(delta, 0.5), "latency_p99_s": _quantile(delta, 0.99)}
    finally:
        await asyncio.gather(*(asyncio.to_thread(w.stop, 30) for w in workers))
        await redis.aclose()


def _own(settings: Settings, run: str, tag: str) -> Settings:
    """``settings`` with topics, keys, a consumer group and a metrics port of their own: one
    more scorer phase of the run, on the same broker and Redis."""
    return settings.model_copy(update={
        "topic_events": f"bench-{run}.{tag}-events", "topic_risk_changes": f"bench-{run}.{tag}-risk",
        "topic_events_dlq": f"bench-{run}.{tag}-dlq", "redis_prefix": f"b{run}{tag}",
        "scorer_group": f"bench-{run}-{tag}-scorer", "scorer_metrics_port": free_port()})


def _check_alive(workers: list[ServiceProcess]) -> None:
    for w in workers:
        if w.proc is not None and w.proc.poll() is not None:
            raise RuntimeError(f"scorer exited; see {w.log_path}:\n{w.tail()}")


async def _group_settled(workers: list[ServiceProcess], partitions: int) -> None:
    """Until every worker's ``/ready`` lists partitions and together they hold each once."""
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as client:
        while True:
            shares: list[list[int]] = []
            for w in workers:
                try:
                    r = await client.get(f"{w.url}/ready", timeout=5)
                    shares.append(list(r.json().get("assigned_partitions") or []))
                except (httpx.HTTPError, ValueError):
                    shares.append([])
            if all(shares) and sorted(p for s in shares for p in s) == list(range(partitions)):
                return
            _check_alive(workers)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scorers' group did not settle: {shares}")
            await asyncio.sleep(0.05)


async def _get_text(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(url)).text


async def memory_per_customer(settings: Settings) -> dict[str, int]:
    """Redis bytes of one customer (``MEMORY USAGE … SAMPLES 0`` of every key erasure would
    delete, plus their index entries) after 10, 100 and 1,000 events spread over a year and
    5,000 over five years (history length alone), applied by the real processor in batches
    of 500; ``timeline of N``: the part that is their timeline."""
    from prometheus_client import CollectorRegistry

    from services.common.kafka import start_producer
    from services.scorer.processor import Processor, Record
    from services.scoring.engine import Engine
    from services.scoring.model import load_model
    from services.state.store import StateStore

    redis = make_redis(settings)
    producer = await start_producer(settings)
    proc = Processor(settings=settings, store=StateStore.from_settings(redis, settings),
                     producer=producer, registry=CollectorRegistry(),
                     engine=Engine.from_settings(load_model(settings.model), settings))
    keys = Keys(settings.redis_prefix)
    end = datetime.now(UTC) - timedelta(hours=1)
    out: dict[str, int] = {}
    offset = 10**9  # offsets of their own, far beyond the bench's records on partition 0
    try:
        for n in (10, 100, 1000, 5000):
            cid = f"mem-{n}"
            step = timedelta(days=360 * (5 if n == 5000 else 1)) / n
            records = []
            for i in range(n):
                raw = {"event_id": f"{cid}-{i}", "type": "transaction" if i % 2 else "visit",
                       "customer_id": cid, "occurred_at": (end - step * (n - i)).isoformat(),
                       "store_id": "store-1", **({"amount": 42.5} if i % 2 else {})}
                offset += 1
                records.append(Record(settings.topic_events, 0, offset, cid.encode(),
                                      json.dumps(raw).encode()))
            for i in range(0, n, 500):
                await proc.process(records[i:i + 500])
            own = sum([int(await redis.memory_usage(k, samples=0) or 0)
                       for k in keys.customer_all(cid)])
            # An index entry costs about its member plus a score and the skiplist node.
            token = customer_token(cid)
            entries = sum([1 for tier in ("low", "medium", "high")
                           for k in (keys.tier_index(tier), keys.tier_index(tier, store="store-1"))
                           if await redis.zscore(k, token) is not None])
            entries += int(await redis.zscore(keys.due(0), token) is not None)
            out[str(n)] = own + entries * (len(token) + 40)
            # of which the timeline (one entry per tier change, capped): it grows with how
            # often the tier moved, not with the history's length
            out[f"timeline of {n}"] = int(await redis.memory_usage(keys.timeline(cid),
                                                                  samples=0) or 0)
    finally:
        await producer.stop()
        await redis.aclose()
    return out


def _histogram(text: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("churnwatch_scorer_event_to_queryable_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _quantile(cumulative: dict[float, float], q: float) -> float | None:
    total = cumulative.get(float("inf"), 0)
    if not total:
        return None
    for le in sorted(cumulative):
        if cumulative[le] >= q * total:
            return le
    return None


async def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="churnwatch-bench-"))
    broker = start_broker(log_path=workdir / "broker.log")
    redis = start_redis(log_path=workdir / "redis.log")
    try:
        run = uuid.uuid4().hex[:8]

        settings = load_settings(
            home=workdir, kafka_bootstrap=broker.address, redis_url=f"redis://{redis.address}/0",
            redis_prefix=f"b{run}", topic_events=f"bench-{run}.events",
            topic_risk_changes=f"bench-{run}.risk", topic_events_dlq=f"bench-{run}.dlq",
            topic_notifications_dlq=f"bench-{run}.ndlq", scorer_group=f"bench-{run}-scorer",
            kafka_idempotence=False, scorer_metrics_port=free_port(), clock="wall")
        await ensure_topics(settings)
        events = _events(N_EVENTS)
        n = len(events)
        produce_rate = await produce(settings, events)
        bare = await bare_consume(settings, n)
        trivial = await asyncio.to_thread(trivial_faust, settings, n, workdir)
        trivial_handover = await asyncio.to_thread(trivial_faust, settings, n, workdir,
                                                   "handover")
        scorer = await scorer_run(settings, n, workdir)
        # The same events as envelopes, on topics, keys and a consumer group of their own.
        enveloped = _own(settings, run, "env")
        await ensure_topics(enveloped)
        await produce_envelopes(enveloped, events)
        envelope_rate = (await scorer_run(enveloped, n, workdir, steady=False,
                                          name="scorer-envelopes"))["scorer_events_per_s"]
        # The floor of that: every event another customer, so that no part of a poll holds
        # two events of one customer (parts help a backlog only where customers repeat).
        distinct = _own(settings, run, "dst")
        await ensure_topics(distinct)
        await produce_envelopes(distinct, [{**e, "customer_id": f"{e['customer_id']}-{i}"}
                                           for i, e in enumerate(events)])
        distinct_rate = (await scorer_run(distinct, n, workdir, steady=False,
                                          name="scorer-distinct"))["scorer_events_per_s"]
        # Scale-out on this machine: one scorer process per core in the same group, the same
        # envelopes again (a topic, group, state and counters of their own).
        cores = os.cpu_count() or 1
        scaled_rate = None
        if cores > 1:
            scaled = _own(settings, run, "procs")  # filled once the workers hold their partitions
            await ensure_topics(scaled)
            scaled_rate = (await scorer_run(
                scaled, n, workdir, steady=False, name="scorers", processes=cores,
                then_produce=lambda: produce_envelopes(scaled, events)))["scorer_events_per_s"]
        memory = await memory_per_customer(settings)
        from bench.notifier_bench import run as notifier_bench

        notifier = await notifier_bench(settings, n=NOTIFIER_DELIVERIES)
    finally:
        redis.stop()
        broker.stop()
    report = {
        "when": datetime.now(UTC).isoformat(), "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "events": n, "partitions": settings.topic_partitions, "batch_max": settings.scorer_batch_max,
        "bare_producer_events_per_s": produce_rate, "bare_consumer_events_per_s": bare,
        "trivial_faust_events_per_s": trivial, "trivial_faust_handover_events_per_s": trivial_handover,
        **scorer,
        "redis_bytes_per_customer_by_events": memory, **notifier,
        "max_events_per_customer": settings.max_events_per_customer,
        "scorer_vs_trivial_faust": _ratio(scorer["scorer_events_per_s"], trivial),
        "scorer_vs_bare_consumer": _ratio(scorer["scorer_events_per_s"], bare),
        "scorer_envelopes_events_per_s": envelope_rate,
        "scorer_envelopes_vs_trivial_faust": _ratio(envelope_rate, trivial),
        "scorer_envelopes_distinct_events_per_s": distinct_rate,
        "scorer_envelopes_distinct_vs_trivial_faust": _ratio(distinct_rate, trivial),
        "scorer_processes": cores if scaled_rate is not None else 1,
        "scorer_envelopes_processes_events_per_s": scaled_rate,
        "scorer_envelopes_processes_vs_trivial_faust": _ratio(scaled_rate, trivial),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    # ``make bench`` names the run (BENCH_STAMP); bench/report.py merges the parts of a run
    path = RESULTS / f"scorer-{os.environ.get('BENCH_STAMP') or f'{datetime.now(UTC):%Y%m%dT%H%M%SZ}'}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    ms = lambda v: "n/a" if v is None else f"≤ {v * 1000:.0f} ms"  # noqa: E731
    print(f"\nchurnwatch bench — {n:,} events, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"  bare aiokafka producer       {produce_rate:>10,.0f} events/s")
    rate = lambda v: "       n/a" if v is None else f"{v:>10,.0f}"  # noqa: E731
    times = lambda v: "n/a" if v is None else f"{v:.1f}×"  # noqa: E731
    print(f"  bare aiokafka consumer       {rate(bare)} events/s   (ceiling: client)")
    print(f"  trivial Faust agent          {rate(trivial)} events/s   (ceiling: framework)")
    print(f"  trivial, scorer's hand-over  {rate(trivial_handover)} events/s   "
          f"(the scorer's transport: {times(_ratio(trivial_handover, trivial))} Faust's own delivery)")
    print(f"  churnwatch scorer            {rate(scorer['scorer_events_per_s'])} events/s   "
          f"= {times(report['scorer_vs_trivial_faust'])} trivial Faust, "
          + ("n/a" if bare is None else f"{report['scorer_vs_bare_consumer']:.0%} of")
          + " bare consumer")
    print(f"  churnwatch scorer, envelopes {rate(envelope_rate)} events/s   "
          f"= {times(report['scorer_envelopes_vs_trivial_faust'])} trivial Faust (per message)")
    print(f"  scorer, envelopes, all distinct {rate(distinct_rate)} events/s   "
          f"= {times(_ratio(distinct_rate, trivial))} trivial Faust (every event another customer)")
    if scaled_rate is not None:
        print(f"  scorer, envelopes, {cores} procs {rate(scaled_rate)} events/s   "
              f"= {times(_ratio(scaled_rate, trivial))} trivial Faust (one process per core, one group)")
    print(f"  event→queryable at {scorer['steady_rate']:.0f}/s   p50 {ms(scorer['latency_p50_s'])}, "
          f"p99 {ms(scorer['latency_p99_s'])} (histogram bucket bounds)")
    print(f"  Redis memory per customer    {scorer['redis_bytes_per_customer']:>10,.0f} bytes "
          f"({scorer['customers']:,} customers)")
    print("  bytes per customer by events " + ", ".join(
        f"{k}: {v:,}" for k, v in memory.items()) + "  (over a year; 5,000 over five years)")
    print(f"  notifier → local webhook     {notifier['notifier_deliveries_per_s']:>10,.0f} deliveries/s "
          f"({notifier['notifier_deliveries']:,} deliveries, {notifier['notifier_duplicates']} duplicates)")
    print(f"  report: {path}")
    return 0


if __name__ == "__main__":
    rc = asyncio.run(main())
    # ``churnwatch train`` on a million events (``bench/training_bench.py``): its own process,
    # its own part of the run (``training-<stamp>.json``), merged by bench/report.py.
    if rc == 0:
        rc = subprocess.run([sys.executable, "-m", "bench.training_bench"], check=False).returncode
    sys.exit(rc)
