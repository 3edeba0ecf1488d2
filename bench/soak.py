"""Soak: the whole stack under a steady load for a bounded time — ``make soak`` (not in CI).

Starts its own embedded broker and Redis, real ``churnwatch api``, ``churnwatch scorer`` and
``churnwatch notifier`` processes and a webhook receiver on 127.0.0.1 (subscribed), then for
SOAK_MINUTES (default 30) minutes:

- POSTs SOAK_RATE (default 300) events/s, in 5 batches a second, for a pool of SOAK_CUSTOMERS
  (1,000) customers with SOAK_MAX_EVENTS (32) events kept per customer: every window is full
  within the first minutes, so Redis reaches the steady state a real tenant reaches once every
  customer's window is full (with the default cap of 1,000 it only takes longer);
- once a second a *probe*: one purchase 100 days back of a new customer (high risk: one risk
  change, one webhook). Its latency is POST sent -> webhook received; once delivered, the probe
  customer is erased (``DELETE /v1/customers/{id}``), so probes do not grow Redis either.

Every SOAK_SAMPLE_S (10) seconds it samples the RSS of every process (api, scorer, notifier,
broker, redis-server), Redis ``used_memory`` and key count, the consumer lag of the scorer
(events topic end offsets - the offsets the scorer committed to Redis) and of the notifier
group (risk topic end offsets - the group's committed offsets), the p99 of the probes'
event->webhook latency and the scorer's event->queryable p99 (its histogram, bucket bound).

**Verdict (the stated rule).** Over the second half of the run (the first half is warm-up):

- *flat memory*: the rise of the least-squares line through the RSS of api, scorer and
  notifier, and through Redis ``used_memory``, over the second half is below SOAK_MB_PER_10MIN
  (default 10) MB per 10 minutes of that half, and never below SOAK_MB_FLOOR (4) MB: a
  Python process's RSS moves in allocator steps of 1-2 MB that happen once (a bigger batch),
  which a run of a few minutes cannot tell from a leak; the floor only matters for runs
  shorter than 8 minutes (30 minutes: 15 MB allowed over the last 15). The broker's RSS
  is sampled and plotted but not judged: the embedded Tansu keeps every record in memory
  (production Kafka keeps them on disk, with retention);
- *no growing lag*: for both groups, the lag's slope is below rate x 2 s of events per 10
  minutes and the last sample's lag below rate x 10 s;
- every process is still running at the end, and after the load stops every posted event is
  applied exactly once and every probe's webhook was delivered exactly once.

PASS or FAIL is printed; ``bench/results/soak-<stamp>.json`` and ``soak-<stamp>.png`` (and
``soak-latest.png``) hold every sample; ``docs/reliability/soak.json`` the verdict (exit 1 on
FAIL).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiohttp import web
from aiokafka import TopicPartition

from bench.machine import describe, one_line
from bench.output import QUICK_NOTE, RECORD, RESULTS
from bench.pipeline import _iso, bench_settings, pct, start_service
from bench.run import _histogram, _quantile
from services.alerting.webhooks import add_subscription
from services.common.embedded import free_port, start_broker, start_redis
from services.common.kafka import end_offsets, ensure_topics, make_consumer
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
RATE = int(os.environ.get("SOAK_RATE", "300"))
CUSTOMERS = int(os.environ.get("SOAK_CUSTOMERS", "1000"))
MAX_EVENTS = int(os.environ.get("SOAK_MAX_EVENTS", "32"))
SAMPLE_S = float(os.environ.get("SOAK_SAMPLE_S", "10"))
MB_PER_10MIN = float(os.environ.get("SOAK_MB_PER_10MIN", "10"))
MB_FLOOR = float(os.environ.get("SOAK_MB_FLOOR", "4"))
PROBE_EVERY_S = 1.0
TICK_S = 0.2
SUMMARY = Path(__file__).resolve().parents[1] / "docs" / "reliability" / "soak.json"
SECRET = "soak-webhook-secret-0123456789"


def slope_per_10min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per 10 minutes."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    if not var:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var * 600


def rss_mb(proc: psutil.Process) -> float | None:
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return round(total / 2**20, 2)
    except psutil.Error:
        return None


class Soak:
    def __init__(self, settings: Settings, home: Path):
        self.s = settings
        self.home = home
        self.keys = Keys(settings.redis_prefix)
        self.posted = 0
        self.post_failures: list[str] = []
        self.probes: dict[str, float] = {}  # probe customer -> POST sent (monotonic)
        self.delivered: dict[str, list[float]] = {}  # probe customer -> webhook arrivals
        self.deliveries: dict[str, int] = {}  # Churnwatch-Delivery id -> times received
        self.window_latency: list[float] = []
        self.all_latency: list[float] = []
        self.erase_queue: asyncio.Queue[str] = asyncio.Queue()
        self.erased = 0

    # webhook receiver ---------------------------------------------------------------------
    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        did = request.headers.get("Churnwatch-Delivery", "")
        self.deliveries[did] = self.deliveries.get(did, 0) + 1
        try:
            cid = json.loads(body)["subject"]
        except (ValueError, KeyError):
            return web.Response(status=400)
        if cid in self.probes:
            first = cid not in self.delivered
            self.delivered.setdefault(cid, []).append(now)
            if first:
                ms = (now - self.probes[cid]) * 1000
                self.window_latency.append(ms)
                self.all_latency.append(ms)
                self.erase_queue.put_nowait(cid)
        return web.Response(status=204)

    # load ---------------------------------------------------------------------------------
    async def load(self, http: httpx.AsyncClient, until: float) -> None:
        per_tick = max(int(RATE * TICK_S), 1)
        started = time.monotonic()
        tick = 0
        tasks: set[asyncio.Task[None]] = set()
        probe_at = _iso(datetime.now(UTC) - timedelta(days=100))
        while time.monotonic() < until:
            now = _iso(datetime.now(UTC))
            batch = []
            for j in range(per_tick):
                k = tick * per_tick + j
                e: dict[str, Any] = {"event_id": f"s{k}", "customer_id": f"c{k % CUSTOMERS}",
                                     "occurred_at": now, "store_id": f"store-{k % 5}",
                                     "type": "visit" if k % 2 else "transaction"}
                if not k % 2:
                    e["amount"] = 25.0 + k % 50
                batch.append(e)
            tasks.add(asyncio.create_task(self._post(http, batch)))
            if tick % int(PROBE_EVERY_S / TICK_S) == 0:
                cid = f"probe-{tick}"
                self.probes[cid] = time.monotonic()
                tasks.add(asyncio.create_task(self._post(http, [{
                    "event_id": f"{cid}-0", "type": "transaction", "customer_id": cid,
                    "occurred_at": probe_at, "amount": 40.0, "store_id": "store-0"}])))
            tasks = {t for t in tasks if not t.done()}
            tick += 1
            await asyncio.sleep(max(started + tick * TICK_S - time.monotonic(), 0))
        await asyncio.gather(*tasks)

    async def _post(self, http: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
        try:
            r = await http.post("/v1/events", json=batch)
        except httpx.HTTPError as exc:
            self.post_failures.append(f"{type(exc).__name__}: {exc}")
            return
        if r.status_code == 202:
            self.posted += len(batch)
        else:
            self.post_failures.append(f"{r.status_code}: {r.text[:200]}")

    async def eraser(self, http: httpx.AsyncClient) -> None:
        while True:
            cid = await self.erase_queue.get()
            r = await http.delete(f"/v1/customers/{cid}")
            if r.status_code == 204:
                self.erased += 1

    # lag ----------------------------------------------------------------------------------
    async def lags(self, consumer: Any, group: Any, redis: Any) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        try:
            ends = await end_offsets(consumer, self.s.topic_events)
            done = await redis.hgetall(self.keys.offsets(self.s.topic_events))
            out["scorer"] = sum(max(e - int(done.get(str(p), 0)), 0) for p, e in ends.items())
        except Exception as exc:  # noqa: BLE001 - a missed sample, not a failed soak
            print(f"  scorer lag unavailable: {exc}", file=sys.stderr)
            out["scorer"] = None
        try:
            ends = await end_offsets(consumer, self.s.topic_risk_changes)
            # OffsetFetch through a member-less consumer of the notifier's group (it never
            # subscribes, so it never joins the group nor takes partitions from the notifier)
            lag = 0
            for p, e in ends.items():
                committed = await group.committed(TopicPartition(self.s.topic_risk_changes, p))
                lag += max(e - (committed or 0), 0)
            out["notifier"] = lag
        except Exception as exc:  # noqa: BLE001
            print(f"  notifier lag unavailable: {exc}", file=sys.stderr)
            out["notifier"] = None
        return out


def verdict(samples: list[dict[str, Any]], alive: dict[str, bool], final: dict[str, Any]
            ) -> tuple[bool, dict[str, Any]]:
    t_end = samples[-1]["t_s"]
    second = [s for s in samples if s["t_s"] >= t_end / 2]
    half_s = second[-1]["t_s"] - second[0]["t_s"]
    allowed = round(max(MB_PER_10MIN * half_s / 600, MB_FLOOR), 2)
    checks: dict[str, Any] = {}
    ok = True
    series = {f"rss_{name}": [(s["t_s"], s["rss_mb"][name]) for s in second
                              if s["rss_mb"].get(name) is not None]
              for name in ("api", "scorer", "notifier")}
    series["redis_used_memory"] = [(s["t_s"], s["redis_used_memory_mb"]) for s in second]
    for name, pts in series.items():
        slope = slope_per_10min(pts)
        rise = round(slope * half_s / 600, 2)
        good = rise < allowed
        checks[name] = {"mb_per_10min": round(slope, 2), "rise_mb": rise, "allowed_mb": allowed,
                        "ok": good}
        ok &= good
    checks["broker_rss_mb_per_10min_not_judged"] = round(slope_per_10min(
        [(s["t_s"], s["rss_mb"]["broker"]) for s in second if s["rss_mb"].get("broker")]), 2)
    for group in ("scorer", "notifier"):
        pts = [(s["t_s"], float(s["lag"][group])) for s in second if s["lag"].get(group) is not None]
        slope = round(slope_per_10min(pts), 1)
        last = int(pts[-1][1]) if pts else None
        good = bool(pts) and slope < RATE * 2 and last is not None and last < RATE * 10
        checks[f"lag_{group}"] = {"slope_per_10min": slope, "slope_limit": RATE * 2,
                                  "last": last, "last_limit": RATE * 10, "ok": good}
        ok &= good
    checks["processes_alive"] = {"value": alive, "ok": all(alive.values())}
    ok &= all(alive.values())
    checks["exactly_once"] = {**final, "ok": not final["lost"] and not final["doubled"]}
    ok &= not final["lost"] and not final["doubled"]
    return ok, checks


def chart(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=100, sharex=True)
    ax = axes[0][0]
    for name in ("api", "scorer", "notifier", "broker", "redis"):
        ax.plot(t, [s["rss_mb"].get(name) for s in samples], label=name)
    ax.set_ylabel("RSS (MB)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(t, [s["redis_used_memory_mb"] for s in samples], color="tab:red", label="used_memory (MB)")
    ax.set_ylabel("Redis used_memory (MB)")
    ax2 = ax.twinx()
    ax2.plot(t, [s["redis_keys"] for s in samples], color="tab:gray", ls="--", label="keys")
    ax2.set_ylabel("keys")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax = axes[1][0]
    for group in ("scorer", "notifier"):
        ax.plot(t, [s["lag"].get(group) for s in samples], label=f"{group} lag")
    ax.set_ylabel("consumer lag (records)")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(t, [s["probe_p99_ms"] for s in samples], label="POST → webhook p99 (probes)")
    ax.plot(t, [s["queryable_p99_ms"] for s in samples], label="event → queryable p99 (scorer histogram)")
    ax.set_ylabel("ms")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=8)
    for row in axes:
        for a in row:
            a.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def run(stamp: str) -> int:
    home = Path(tempfile.mkdtemp(prefix="cw-soak-"))
    broker = start_broker(log_path=home / "broker.log")
    redis_server = start_redis(log_path=home / "redis.log")
    settings = bench_settings(broker.address, redis_server.address, "sk", home,
                              max_events_per_customer=MAX_EVENTS, webhook_allow_private=True)
    await ensure_topics(settings)
    soak = Soak(settings, home)
    redis = make_redis(settings)
    app = web.Application()
    app.router.add_post("/hook", soak.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    await add_subscription(redis, soak.keys, url=f"http://127.0.0.1:{hook_port}/hook", secret=SECRET)
    services = {
        "api": start_service("api", settings, home / "api.log"),
        "scorer": start_service("scorer", settings, home / "scorer.log"),
        "notifier": start_service("notifier", settings, home / "notifier.log"),
    }
    procs = {name: psutil.Process(svc.proc.pid) for name, svc in services.items() if svc.proc}
    procs["broker"] = psutil.Process(broker.proc.pid)
    procs["redis"] = psutil.Process(redis_server.proc.pid)
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    group = make_consumer(settings, group_id=settings.notifier_group)
    samples: list[dict[str, Any]] = []
    alive: dict[str, bool] = {}
    final: dict[str, Any] = {}
    try:
        for svc in services.values():
            await asyncio.to_thread(svc.wait_ready)
        await consumer.start()
        await group.start()
        metrics_url = f"{services['scorer'].url}/metrics"
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=services["api"].url, timeout=30, limits=limits) as http:
            started = time.monotonic()
            until = started + MINUTES * 60
            print(f"soak: {MINUTES:g} min at {RATE} events/s, {CUSTOMERS:,} customers, "
                  f"sample every {SAMPLE_S:g} s; logs in {home}")
            load = asyncio.create_task(soak.load(http, until))
            eraser = asyncio.create_task(soak.eraser(http))
            before = _histogram((await http.get(metrics_url)).text)
            next_sample = started + SAMPLE_S
            while time.monotonic() < until:
                await asyncio.sleep(max(next_sample - time.monotonic(), 0))
                next_sample += SAMPLE_S
                info = await redis.info("memory")
                after = _histogram((await http.get(metrics_url)).text)
                delta = {le: after[le] - before.get(le, 0) for le in after}
                before = after
                q = _quantile(delta, 0.99)
                window, soak.window_latency = soak.window_latency, []
                sample = {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mb": {name: rss_mb(p) for name, p in procs.items()},
                    "redis_used_memory_mb": round(info["used_memory"] / 2**20, 2),
                    "redis_keys": await redis.dbsize(),
                    "lag": await soak.lags(consumer, group, redis),
                    "posted": soak.posted, "probes_delivered": len(soak.delivered),
                    "probe_p99_ms": round(pct(window, 0.99) or 0, 1) if window else None,
                    "queryable_p99_ms": None if q is None or q == float("inf") else q * 1000,
                }
                samples.append(sample)
                print(f"  {sample['t_s']:>6.0f} s  rss " + " ".join(
                    f"{k} {v:.0f}" for k, v in sample["rss_mb"].items() if v is not None)
                    + f" MB  redis {sample['redis_used_memory_mb']:.1f} MB/{sample['redis_keys']} keys"
                    f"  lag {sample['lag']}  probe p99 {sample['probe_p99_ms']} ms", flush=True)
            await load
            elapsed = time.monotonic() - started
            # drain: every posted event applied, every probe delivered (bounded wait)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                done = int(await redis.hget(soak.keys.stats, "events_applied_total") or 0)
                if done >= soak.posted and len(soak.delivered) >= len(soak.probes):
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)  # anything doubled would show by now
            eraser.cancel()
            await asyncio.gather(eraser, return_exceptions=True)
            alive = {name: svc.proc is not None and svc.proc.poll() is None
                     for name, svc in services.items()}
            applied = int(await redis.hget(soak.keys.stats, "events_applied_total") or 0)
            twice = sum(len(v) - 1 for v in soak.delivered.values() if len(v) > 1)
            dup_ids = sum(n - 1 for n in soak.deliveries.values() if n > 1)
            final = {"events_posted": soak.posted, "events_applied": applied,
                     "probes": len(soak.probes), "probes_delivered": len(soak.delivered),
                     "webhooks_received": sum(soak.deliveries.values()),
                     "lost": max(soak.posted - applied, 0) + len(soak.probes) - len(soak.delivered),
                     "doubled": max(applied - soak.posted, 0) + max(twice, dup_ids),
                     "post_failures": len(soak.post_failures), "probes_erased": soak.erased,
                     "rate_achieved": round(soak.posted / elapsed, 1)}
    finally:
        await consumer.stop()
        await group.stop()
        for svc in services.values():
            svc.stop()
        await redis.aclose()
        await runner.cleanup()
        redis_server.stop()
        broker.stop()
    if not samples:
        print("soak: no samples (run longer than SOAK_SAMPLE_S)", file=sys.stderr)
        return 1
    ok, checks = verdict(samples, alive, final)
    if soak.post_failures:
        checks["post_failures"] = {"value": soak.post_failures[:5], "ok": False}
        ok = False
    machine = describe()
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"soak-{stamp}.png"
    chart(samples, png, f"churnwatch soak {stamp}: {MINUTES:g} min at {RATE} events/s — "
          f"{'PASS' if ok else 'FAIL'} — {machine['cores']} cores")
    (RESULTS / "soak-latest.png").write_bytes(png.read_bytes())
    if RECORD:
        SUMMARY.parent.mkdir(parents=True, exist_ok=True)
        (SUMMARY.parent / "soak.png").write_bytes(png.read_bytes())  # the chart the README links to
    rule = (f"over the second half: the least-squares rise of RSS of api, scorer and notifier and "
            f"of Redis used_memory < {MB_PER_10MIN:g} MB per 10 min (at least {MB_FLOOR:g} MB); scorer and notifier lag slope < {RATE * 2:,} "
            f"records/10 min and last lag < {RATE * 10:,}; all processes alive; every event "
            "applied once, every probe's webhook delivered once")
    report = {"stamp": stamp, "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": machine, "minutes": MINUTES, "rate": RATE, "customers": CUSTOMERS,
              "max_events_per_customer": MAX_EVENTS, "sample_s": SAMPLE_S, "rule": rule,
              "verdict": "PASS" if ok else "FAIL", "checks": checks, "final": final,
              "probe_latency": {"n": len(soak.all_latency), "p50_ms": pct(soak.all_latency, 0.5),
                                "p99_ms": pct(soak.all_latency, 0.99)},
              "samples": samples, "chart": png.name, "logs": str(home)}
    out = RESULTS / f"soak-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    c = checks
    line = (f"second-half rise of RSS api {c['rss_api']['rise_mb']:+.1f}, scorer "
            f"{c['rss_scorer']['rise_mb']:+.1f}, notifier {c['rss_notifier']['rise_mb']:+.1f}, "
            f"Redis used_memory {c['redis_used_memory']['rise_mb']:+.1f} MB (allowed "
            f"{c['rss_api']['allowed_mb']:g}); last lag scorer {c['lag_scorer']['last']}, notifier "
            f"{c['lag_notifier']['last']}; {final['events_posted']:,} events, "
            f"lost {final['lost']}, doubled {final['doubled']}")
    if RECORD:
        SUMMARY.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY.write_text(json.dumps({
            "when": report["when"], "machine": one_line(machine), "minutes": MINUTES, "rate": RATE,
            "verdict": report["verdict"], "summary": line, "rule": rule,
            "events": final["events_posted"], "lost": final["lost"], "doubled": final["doubled"],
            "report": f"bench/results/{out.name}"}, indent=2, ensure_ascii=False) + "\n")
    print(f"\nsoak {report['verdict']}: {line}")
    for name, check in checks.items():
        if isinstance(check, dict) and not check.get("ok", True):
            print(f"  failed: {name}: {check}")
    print(f"report: {out}, chart: {png}, " + (f"summary: {SUMMARY}" if RECORD else QUICK_NOTE))
    return 0 if ok else 1


def main() -> int:
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    return asyncio.run(run(stamp))


if __name__ == "__main__":
    sys.exit(main())
