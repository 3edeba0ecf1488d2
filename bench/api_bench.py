"""Query API latency: ``python -m bench.api_bench`` (not part of the test suite).

Starts its own embedded broker and Redis and a real ``churnwatch api`` process (uvicorn), then:

1. **At-risk list over 1 million customers.** Writes BENCH_CUSTOMERS (default 1,000,000)
   entries into the tenant's high-tier index with pipelined ZADDs, as the scorer ranks them
   (priority = score x (1 + spend_365)), and the scorer's state hash (risk snapshot of a real
   assessment) for the BENCH_STATE_CUSTOMERS (default 100,000) highest-ranked ones — a page
   only reads the state of its own 100 customers, so the index is what grows with the tenant.
   Measures ``GET /v1/customers/at-risk?limit=100``: the first page, and pages that start at
   random cursors within the customers that have state; and the staff console's at-risk page
   (``GET /console/at-risk``, 50 customers rendered as HTML) the same way.
2. **Single risk read under ingest load.** One client reads ``GET /v1/customers/{id}/risk``
   of random customers, one request at a time: idle; while one thread POSTs batches of 500
   events to the same API process at BENCH_INGEST_RATE (default 2,000 events/s); and while
   two threads POST as fast as the API accepts them (saturating it).

Latencies are measured by the client, over loopback HTTP/1.1 with keep-alive. Writes
``bench/results/api-<timestamp>.json`` and prints the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.output import RESULTS
from bench.pipeline import summary
from services.common.embedded import (
    ServiceProcess,
    free_port,
    start_broker,
    start_redis,
)
from services.common.kafka import ensure_topics
from services.common.redisconn import Keys, customer_token, make_redis
from services.common.settings import Settings, load_settings
from services.records.cursor import encode
from services.scoring.engine import Engine, Subject
from services.scoring.features import DAY_MS, Activity
from services.scoring.model import load_model
from services.scoring.tiers import Thresholds
from services.state.store import risk_snapshot

CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "1000000"))
WITH_STATE = int(os.environ.get("BENCH_STATE_CUSTOMERS", "100000"))
PAGES = int(os.environ.get("BENCH_PAGES", "1000"))
READS = int(os.environ.get("BENCH_READS", "3000"))
INGEST_RATE = float(os.environ.get("BENCH_INGEST_RATE", "2000"))


def snapshot(settings: Settings) -> tuple[str, float]:
    """A realistic risk snapshot (a real assessment of a drifting regular) and its score."""
    engine = Engine(load_model(settings.model), Thresholds.from_settings(settings))
    now = int(time.time() * 1000)
    acts = [Activity(kind="transaction", ts=now - int(d * DAY_MS), event_id=f"e{d}", amount=45.0,
                     store_id="north") for d in (200, 172, 144, 116, 88)]
    a = engine.assess([Subject("x", acts, acts[0].ts)], now, with_history=False)[0]
    return risk_snapshot(a.to_json() | {"tier": "high"}), a.score


async def populate(settings: Settings) -> list[str]:
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    risk, score = snapshot(settings)
    index = keys.tier_index("high")
    rng = random.Random(7)
    ids = [f"c{i:07d}" for i in range(CUSTOMERS)]
    prios = {cid: round(score * (1 + rng.uniform(0, 5000)), 6) for cid in ids}
    ranked = sorted(ids, key=lambda c: prios[c], reverse=True)
    now = int(time.time() * 1000)
    started = time.monotonic()
    for i in range(0, CUSTOMERS, 10_000):
        pipe = redis.pipeline(transaction=False)
        pipe.zadd(index, {customer_token(c): prios[c] for c in ids[i:i + 10_000]})
        await pipe.execute()
    for i in range(0, WITH_STATE, 2_000):
        pipe = redis.pipeline(transaction=False)
        for cid in ranked[i:i + 2_000]:
            pipe.hset(keys.state(cid), mapping={
                "first_ts": now - 200 * DAY_MS, "last_ts": now - 88 * DAY_MS, "store": "north",
                "tier": "high", "score": score, "tier_since": now})
            pipe.set(keys.risk(cid), risk)  # as the scorer writes it (services/state/store.py)
        await pipe.execute()
    print(f"populated {await redis.zcard(index):,} index entries, {WITH_STATE:,} states in "
          f"{time.monotonic() - started:.1f} s; used_memory "
          f"{(await redis.info('memory'))['used_memory_human']}")
    await redis.aclose()
    return ranked[:WITH_STATE]


def bench_at_risk(url: str, ranked: list[str]) -> dict[str, Any]:
    rng = random.Random(11)
    first: list[float] = []
    deep: list[float] = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(50):  # warm-up
            client.get("/v1/customers/at-risk", params={"limit": 100})
        for i in range(PAGES):
            params: dict[str, Any] = {"tier": "high", "limit": 100}
            if i % 2:
                cid = ranked[rng.randrange(0, len(ranked) - 200)]
                params["cursor"] = encode(_PRIO[cid], customer_token(cid))
                t0 = time.perf_counter()
                r = client.get("/v1/customers/at-risk", params=params)
                deep.append((time.perf_counter() - t0) * 1000)
            else:
                t0 = time.perf_counter()
                r = client.get("/v1/customers/at-risk", params=params)
                first.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and len(r.json()["items"]) == 100, r.text[:300]
    return {"first_page": summary(first), "random_cursor_pages": summary(deep),
            "all": summary(first + deep)}


_PRIO: dict[str, str] = {}


def bench_console_at_risk(url: str, ranked: list[str]) -> dict[str, Any]:
    """The staff console's at-risk page (HTML, 50 customers, names and reasons) for an admin
    signed in (development mode: no keys), first page and random cursors."""
    rng = random.Random(12)
    first: list[float] = []
    deep: list[float] = []
    with httpx.Client(base_url=url, timeout=10) as client:
        client.get("/console/sign-in")
        r = client.post("/console/sign-in/key", data={"csrf": client.cookies.get("cw_csrf", "")})
        assert r.status_code == 303 and "cw_session" in client.cookies, r.text[:300]
        for _ in range(30):  # warm-up
            client.get("/console/at-risk")
        for i in range(PAGES // 2):
            params: dict[str, Any] = {"tier": "high"}
            if i % 2:
                cid = ranked[rng.randrange(0, len(ranked) - 200)]
                params["cursor"] = encode(_PRIO[cid], customer_token(cid))
            t0 = time.perf_counter()
            r = client.get("/console/at-risk", params=params)
            (deep if i % 2 else first).append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and r.text.count('class="customer ') == 50, r.text[:300]
    return {"first_page": summary(first), "random_cursor_pages": summary(deep),
            "all": summary(first + deep)}


def ingest_load(url: str, stop: threading.Event, counter: list[int], rate: float) -> None:
    """POST batches of 500 events; ``rate`` events/s per thread (0: as fast as accepted)."""
    base = datetime.now(UTC) - timedelta(days=30)
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            if rate and counter[0] >= rate * (time.monotonic() - started):
                time.sleep(0.01)
                continue
            batch = [{"event_id": uuid.uuid4().hex, "type": "transaction",
                      "customer_id": f"load-{random.randrange(50_000)}",
                      "occurred_at": (base + timedelta(seconds=random.randrange(2_000_000)))
                      .isoformat(), "amount": 20.0, "store_id": "north"} for _ in range(500)]
            r = client.post("/v1/events", json=batch)
            if r.status_code == 202:
                counter[0] += 500


def bench_risk_reads(url: str, ranked: list[str], *, threads: int, rate: float
                     ) -> dict[str, Any]:
    stop = threading.Event()
    counters = [[0] for _ in range(threads)]
    workers = [threading.Thread(target=ingest_load, args=(url, stop, c, rate)) for c in counters]
    for t in workers:
        t.start()
    time.sleep(2.0 if threads else 0.0)
    rng = random.Random(13)
    ms: list[float] = []
    before = sum(c[0] for c in counters)
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(READS):
            cid = ranked[rng.randrange(len(ranked))]
            t0 = time.perf_counter()
            r = client.get(f"/v1/customers/{cid}/risk")
            ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text[:300]
    elapsed = time.monotonic() - started
    ingested = sum(c[0] for c in counters) - before
    stop.set()
    for t in workers:
        t.join()
    return {"risk_read": summary(ms), "ingest_events_per_s_during": round(ingested / elapsed)}


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="cw-api-bench-"))
    broker, redis_server = start_broker(log_path=home / "broker.log"), start_redis(
        log_path=home / "redis.log")
    api: ServiceProcess | None = None
    try:
        run = uuid.uuid4().hex[:8]
        port = free_port()
        settings = load_settings(home=home, kafka_bootstrap=broker.address,
                                 redis_url=f"redis://{redis_server.address}/0",
                                 redis_prefix=f"b{run}", topic_events=f"b{run}.events",
                                 topic_risk_changes=f"b{run}.rc", kafka_idempotence=False,
                                 api_port=port, api_rate_limit_per_second=0)
        asyncio.run(ensure_topics(settings))
        ranked = asyncio.run(populate(settings))
        _load_priorities(settings, ranked)
        api = ServiceProcess("api", settings, home / "api.log", port=port).start()
        url = api.url
        result = {"customers_in_index": CUSTOMERS, "customers_with_state": WITH_STATE,
                  "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
                  "at_risk_limit_100": bench_at_risk(url, ranked),
                  "console_at_risk_page": bench_console_at_risk(url, ranked),
                  "risk_read_idle": bench_risk_reads(url, ranked, threads=0, rate=0),
                  "risk_read_ingest_2000_per_s": bench_risk_reads(url, ranked, threads=1,
                                                                  rate=INGEST_RATE),
                  "risk_read_ingest_saturating": bench_risk_reads(url, ranked, threads=2,
                                                                  rate=0)}
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"api-{os.environ.get('BENCH_STAMP') or datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        print(f"written to {out}")
        return 0
    finally:
        if api is not None:
            api.stop()
        broker.stop()
        redis_server.stop()


def _load_priorities(settings: Settings, ranked: list[str]) -> None:
    async def read() -> None:
        redis = make_redis(settings)
        index = Keys(settings.redis_prefix).tier_index("high")
        for i in range(0, len(ranked), 5000):
            pipe = redis.pipeline(transaction=False)
            for cid in ranked[i:i + 5000]:
                pipe.zscore(index, customer_token(cid))
            for cid, s in zip(ranked[i:i + 5000], await pipe.execute(), strict=True):
                _PRIO[cid] = repr(float(s))
        await redis.aclose()

    asyncio.run(read())


if __name__ == "__main__":
    sys.exit(main())
