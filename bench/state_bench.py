"""What customer state costs as customers accumulate history, and on a Redis Cluster.

Part of ``make bench`` (``bench/results/state-<stamp>.json``):

- **history scaling**: the scorer process (Kafka in, Redis state) scores ``BENCH_STATE_EVENTS``
  events of fresh customers and as many events of customers who already have 150 events
  spread over a year in their summaries — same number of customers, same spread (each round
  brings every customer two events), timed by the scorer's own time applying them. The
  ratio long/fresh says whether cost grows with history (target ≥ 0.9).
- **Redis Cluster**: the fresh-customer events again, on a real 3-primary cluster started
  here, by a second scorer; the ratio cluster/standalone (target ≥ 0.7).

The three phases run in interleaved rounds (see :func:`run_phases`), so that the load of a
shared machine, which drifts over minutes, does not decide the ratios; each scorer first
scores a round of other customers of each kind it is timed on, untimed (its first batches set
things up once, the memory its batches need included).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.machine import summary_kind
from bench.output import RESULTS, scorer_batch_seconds
from services.common.embedded import (
    ServiceProcess,
    free_port,
    start_broker,
    start_redis,
    start_redis_cluster,
)
from services.common.kafka import ensure_topics, make_producer
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings, load_settings
from services.scoring.features import DAY_MS, Activity
from services.scoring.summary import summarize

EVENTS = int(os.environ.get("BENCH_STATE_EVENTS", "20000"))
PER_CUSTOMER = 10  # new events per customer in each phase
HISTORY = 150  # past events of a "long" customer


def settings_for(broker: str, redis_url: str, home: Path, *, cluster: bool) -> Settings:
    run = uuid.uuid4().hex[:8]
    return load_settings(
        home=home, kafka_bootstrap=broker, redis_url=redis_url, redis_cluster=cluster,
        redis_prefix=f"s{run}", topic_events=f"state-{run}.events",
        topic_risk_changes=f"state-{run}.risk", topic_events_dlq=f"state-{run}.dlq",
        topic_notifications_dlq=f"state-{run}.ndlq", scorer_group=f"state-{run}-scorer",
        kafka_idempotence=False, scorer_metrics_port=free_port(), clock="wall",
        sweep_interval_seconds=3600.0, model_refresh_seconds=0.2)


def phase_clock(now: datetime) -> tuple[datetime, timedelta]:
    """When the phases' events end, and their spacing: the events of a phase are spaced
    ``PER_CUSTOMER * 60 + 50`` units back from the end (rounds an hour of units apart,
    customers a unit apart), all before ``now`` and on ``now``'s UTC day — the day the
    scorer, on the wall clock, reads their features at, as a live stream's. A unit is a minute
    (the end an hour ago) from ~12:00 UTC; earlier both shrink to fit the hours since
    midnight. Events on the day before now (as this bench put them before ~12:00 UTC until
    it shrank them) make every step read the features at a later day than the customer's
    newest, which costs a long customer more than a fresh one: the same code read a history
    ratio ~0.08 lower before noon (UTC) than after. A bench running across midnight still
    reads its last rounds a day later (rare; run it again)."""
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = now - min(timedelta(hours=1), (now - start_of_day) / 4)
    unit = min(timedelta(minutes=1), (end - start_of_day) / (PER_CUSTOMER * 60 + 51))
    return end, unit


def phase_events(prefix: str, customers: int, end: datetime, rounds: range = range(PER_CUSTOMER),
                 unit: timedelta = timedelta(minutes=1)) -> list[dict[str, Any]]:
    """Recent events of each customer (the ``rounds``-th of their ``PER_CUSTOMER``), round
    robin: every batch of 1,000 records touches ~1,000 distinct customers. Spacing: see
    :func:`phase_clock`."""
    out = []
    for k in rounds:
        for c in range(customers):
            cid = f"{prefix}-{c}"
            at = end - ((PER_CUSTOMER - k) * 60 + c % 50) * unit
            e: dict[str, Any] = {"event_id": f"{cid}-n{k}", "customer_id": cid,
                                 "occurred_at": at.isoformat(), "store_id": "store-1",
                                 "type": "transaction" if k % 2 else "visit"}
            if k % 2:
                e["amount"] = 30.0 + c % 40
            out.append(e)
    return out


async def seed_history(settings: Settings, prefix: str, customers: int, end: datetime) -> None:
    """Customers who already have ``HISTORY`` events over the past year, written as the scorer
    writes them (their summary), without spending the bench's time scoring them."""
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    end_ms = int(end.timestamp() * 1000) - 2 * DAY_MS
    try:
        pipe = redis.pipeline(transaction=False)
        for c in range(customers):
            cid = f"{prefix}-{c}"
            acts = [Activity(kind="transaction" if i % 2 else "visit",
                             ts=end_ms - (HISTORY - i) * 360 * DAY_MS // HISTORY,
                             event_id=f"{cid}-h{i}", amount=40.0 if i % 2 else None,
                             store_id="store-1") for i in range(HISTORY)]
            s = summarize(acts)
            pipe.set(keys.summary(cid), s.encode())
            pipe.hset(keys.state(cid), mapping={"first_ts": str(s.first_ts),
                                                "last_ts": str(s.last_ts), "store": "store-1",
                                                "v": "1"})
            if c % 500 == 499:
                await pipe.execute()
                pipe = redis.pipeline(transaction=False)
        await pipe.execute()
    finally:
        await redis.aclose()


async def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic_events, json.dumps(e).encode(),
                                       key=e["customer_id"].encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def scored_seconds(settings: Settings, events: list[dict[str, Any]], done_before: int,
                         scorer: ServiceProcess) -> tuple[int, float]:
    """Produce ``events`` up front, wait until the scorer committed them all, and return
    (events, the scorer's own time applying them: ``churnwatch_scorer_batch_duration_seconds``).
    Not from its first to its last commit: the scorer takes what arrived while it applied its
    last batch, so a round's first commit may already hold most of it (a small round is one
    batch) and would leave little to time. The batch time leaves out fetching, the same for
    every phase."""
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    metrics = [f"{scorer.url}/metrics"]
    applying = await scorer_batch_seconds(metrics, wait_seconds=120)  # it may be starting
    await produce(settings, events)
    target = done_before + len(events)
    try:
        while True:
            done = sum(int(v) for v in (await redis.hgetall(keys.offsets(settings.topic_events))).values())
            if done >= target:
                break
            if scorer.proc is None or scorer.proc.poll() is not None:
                raise RuntimeError(f"scorer exited; see {scorer.log_path}")
            await asyncio.sleep(0.02)
        return len(events), max(await scorer_batch_seconds(metrics) - applying, 1e-9)
    finally:
        await redis.aclose()


def start_scorer(settings: Settings, log: Path) -> ServiceProcess:
    """A scorer on a metrics port chosen as it starts (and again on another if a process
    took it meanwhile: ``wait_ready``)."""
    return ServiceProcess("scorer", settings, log,
                          health_port_setting="scorer_metrics_port").start(wait_ready=False)


ROUNDS = 5  # each phase's events come in this many rounds, interleaved with the others'


async def run_phases(standalone: Settings, cluster: Settings, workdir: Path) -> dict[str, float]:
    """Fresh and long-history customers on the standalone Redis and fresh ones on the cluster,
    one scorer each, in interleaved rounds (fresh, long, cluster, fresh, long, cluster...): a
    shared machine's load drifts over minutes, and interleaving spreads that drift over every
    phase instead of favouring whichever ran while it was quiet. Rates: events over seconds,
    summed over a phase's rounds."""
    for s in (standalone, cluster):
        await ensure_topics(s)
    end, unit = phase_clock(datetime.now(UTC))
    customers = max(EVENTS // PER_CUSTOMER, 100)
    await seed_history(standalone, "long", customers, end)
    await seed_history(standalone, "warmlong", customers, end)
    scorers = {"standalone": start_scorer(standalone, workdir / "standalone-scorer.log"),
               "cluster": start_scorer(cluster, workdir / "cluster-scorer.log")}
    phases = (("fresh", "standalone", standalone, "fresh"), ("long", "standalone", standalone, "long"),
              ("cluster", "cluster", cluster, "fresh"))
    done = {"standalone": 0, "cluster": 0}
    timed = {name: [0, 0.0] for name, *_ in phases}
    first = {name: 0.0 for name, *_ in phases}  # the first round's rate (a new day for "long")
    per = PER_CUSTOMER // ROUNDS
    try:
        # Untimed: each scorer's first batches pay for what it sets up once (connections,
        # the model's first predictions, caches, the memory its batches need); timed, they
        # fell on the first phase of the first round, fresh customers, and swung the history
        # ratio by up to 0.05. The standalone scorer warms up on both kinds of customer it is
        # timed on: a batch of customers with history decodes and writes larger summaries, and
        # the memory that takes was otherwise first touched in the long customers' first
        # timed round (measured in-process: ~1.9 page faults and 12-24 µs of system time per
        # event there, ~0 in later rounds), a cost the process pays once in its life.
        warmups = (("standalone", standalone, "warm"), ("standalone", standalone, "warmlong"),
                   ("cluster", cluster, "warm"))
        await asyncio.gather(*(asyncio.to_thread(p.wait_ready) for p in scorers.values()))
        for where, s, prefix in warmups:
            events = phase_events(prefix, customers, end, range(per), unit)
            await scored_seconds(s, events, done[where], scorers[where])
            done[where] += len(events)
        for r in range(ROUNDS):
            for name, where, s, prefix in phases:
                events = phase_events(prefix, customers, end, range(r * per, (r + 1) * per), unit)
                n, secs = await scored_seconds(s, events, done[where], scorers[where])
                done[where] += len(events)
                timed[name][0] += n
                timed[name][1] += secs
                if r == 0:
                    first[name] = n / secs
        rescore = await rescore_rate(standalone, workdir)
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop, 30) for p in scorers.values()))
    return {**{name: n / secs for name, (n, secs) in timed.items()},
            **{f"{name}_first_round": rate for name, rate in first.items()},
            "rescore": rescore[0], "rescore_customers": rescore[1]}


async def rescore_rate(settings: Settings, workdir: Path) -> tuple[float, int]:
    """Customers re-scored per second by the running scorer after `churnwatch model
    activate` (the record a CLI writes) switches it to another model: from the pass starting
    to every partition's pass being done; and how many customers that is — every customer
    in the silence indexes, which the pass walks (the warm-up phases' customers too: counting
    only the timed phases' halved the rate this reported)."""
    from services.scoring.model import activation_record, load_model, read_artifact, save_artifact

    served = load_model(settings.model)
    path = workdir / "other.joblib"
    save_artifact(path, estimator=served.estimator, feature_names=served.feature_names,  # type: ignore[attr-defined]
                  name="bench-switch", card=dict(served.card))  # type: ignore[attr-defined]
    other = read_artifact(path)
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    try:
        parts = range(settings.topic_partitions)
        tenants = {"default", *(str(t) for t in await redis.smembers(keys.tenants))}  # type: ignore[misc]
        pipe = redis.pipeline(transaction=False)
        for t in sorted(tenants):
            for p in parts:
                pipe.zcard(keys.due(p, t))
        customers = sum(int(n) for n in await pipe.execute())
        await redis.set(keys.active_model, activation_record(path, other))
        t0: float | None = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            pipe = redis.pipeline(transaction=False)
            for p in parts:
                pipe.hgetall(keys.rescore(p))
            recs = await pipe.execute()
            mine = [r for r in recs if r.get("version") == other.version]
            if mine and t0 is None:
                t0 = time.monotonic()
            if len(mine) == len(recs) and all(r.get("pass") == "done" for r in mine):
                took = max(time.monotonic() - (t0 or time.monotonic()), 1e-3)
                return customers / took, customers
            await asyncio.sleep(0.01)
        raise RuntimeError("the scorer did not re-score every customer within 300 s")
    finally:
        await redis.aclose()


async def main_async() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="churnwatch-state-bench-"))
    broker = start_broker(log_path=workdir / "broker.log")
    redis = start_redis(log_path=workdir / "redis.log")
    cluster = start_redis_cluster(log_dir=workdir)
    try:
        rates = await run_phases(
            settings_for(broker.address, f"redis://{redis.address}/0", workdir, cluster=False),
            settings_for(broker.address, f"redis://{cluster.address}", workdir, cluster=True),
            workdir)
    finally:
        cluster.stop()
        redis.stop()
        broker.stop()
    standalone = {"fresh_events_per_s": rates["fresh"], "long_history_events_per_s": rates["long"]}
    on_cluster = {"fresh_events_per_s": rates["cluster"]}
    rescore = rates["rescore"]
    report = {
        "when": datetime.now(UTC).isoformat(), "events_per_phase": EVENTS,
        "customers_per_phase": max(EVENTS // PER_CUSTOMER, 100), "history_events": HISTORY,
        "fresh_events_per_s": standalone["fresh_events_per_s"],
        "long_history_events_per_s": standalone["long_history_events_per_s"],
        "history_ratio": standalone["long_history_events_per_s"] / standalone["fresh_events_per_s"],
        # the first round alone: a new day for every long customer (its blocks move), a fresh
        # customer's creation; the later rounds are same-day steps for both
        "history_ratio_first_round": rates["long_first_round"] / rates["fresh_first_round"],
        "summary": summary_kind(),
        "cluster_events_per_s": on_cluster["fresh_events_per_s"],
        "cluster_ratio": on_cluster["fresh_events_per_s"] / standalone["fresh_events_per_s"],
        "rescore_customers_per_s": rescore, "rescore_customers": int(rates["rescore_customers"]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = os.environ.get("BENCH_STAMP") or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    path = RESULTS / f"state-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nchurnwatch state bench — {EVENTS:,} events per phase, "
          f"{report['customers_per_phase']:,} customers, customer summary {report['summary']}")
    print(f"  scorer, fresh customers          {report['fresh_events_per_s']:>10,.0f} events/s")
    print(f"  scorer, {HISTORY} past events each   {report['long_history_events_per_s']:>10,.0f} "
          f"events/s   = {report['history_ratio']:.2f}× fresh "
          f"(first round, a new day: {report['history_ratio_first_round']:.2f}×)")
    print(f"  scorer on a 3-primary cluster    {report['cluster_events_per_s']:>10,.0f} events/s"
          f"   = {report['cluster_ratio']:.2f}× standalone")
    print(f"  re-scoring after a model switch  {rescore:>10,.0f} customers/s "
          f"({report['rescore_customers']:,} customers)")
    print(f"  report: {path}")
    return 0


def main() -> int:
    return asyncio.run(main_async())


if __name__ == "__main__":
    sys.exit(main())
