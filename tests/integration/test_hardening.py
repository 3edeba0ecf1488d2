"""Issue 19, "what an independent attack on the running stack found": each finding replayed
against real processes (a ``churnwatch api`` child, a redis-server of the test's own that the
test kills, the session broker), failing before its fix and passing after it."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.embedded import Server, start_redis
from services.common.kafka import ensure_topics
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.scoring.summary import Summary
from services.state.store import StateStore, read_states
from tests.conftest import LOG_DIR, make_test_settings
from tests.data import T0, iso, regular
from tests.integration.test_scorer import wait_processed
from tests.kafkatools import produce_events
from tests.procs import ServiceProcess
from tests.reliability import record

pytestmark = pytest.mark.integration

HERE = "tests/integration/test_hardening.py"
KEYS = ("hd-admin-0001:admin,hd-ingest-001:ingest,hd-read-00001:read,"
        "ta-ingest-001:ingest@tenantA,ta-read-00001:read@tenantA,"
        "ta-admin-0001:admin@tenantA,tb-read-00001:read@tenantB,"
        "ta-north-001:ingest+read@tenantA/north,ta-south-001:ingest+read@tenantA/south,"
        "hd-slow-0001:ingest")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def wait_until(fn, timeout: float = 20.0, what: str = "condition"):  # noqa: ANN001,ANN201
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A redis-server only this module uses (with AOF), so it can be killed and restarted."""
    data = tmp_path_factory.mktemp("hardening-redis")
    holder: dict[str, Any] = {"server": start_redis(log_path=LOG_DIR / "hardening-redis.log", appendonly=True,
                                    data_dir=data), "data": data}
    yield holder
    holder["server"].stop()


@pytest.fixture(scope="module")
def api(broker: Server, own_redis: dict, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[ServiceProcess, Settings]]:
    settings = make_test_settings(broker, own_redis["server"], tmp_path_factory.mktemp("hardening"),
                                  api_keys=KEYS, api_rate_limit_per_second=0)
    asyncio.run(ensure_topics(settings))
    with ServiceProcess("api", settings, LOG_DIR / f"hardening-api-{settings.redis_prefix}.log",
                        health_port_setting="api_port") as proc:
        yield proc, settings


# 1. a tenant-bound key posts events without tenant_id ---------------------------------------

def test_a_tenant_bound_key_posts_events_without_tenant_id(api) -> None:
    proc, _ = api
    event = {"event_id": "r1", "type": "visit", "customer_id": "alice",
             "occurred_at": "2026-06-01T10:00:00Z"}
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        r = client.post("/v1/events", json=event, headers=bearer("ta-ingest-001"))
        assert r.status_code == 202, r.text
        r = client.post("/v1/events", json={**event, "event_id": "r2", "tenant_id": "tenantA"},
                        headers=bearer("ta-ingest-001"))
        assert r.status_code == 202, r.text
        for other in ("tenantB", "default"):  # another tenant, named explicitly, is refused
            r = client.post("/v1/events", json={**event, "event_id": "r3", "tenant_id": other},
                            headers=bearer("ta-ingest-001"))
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "tenant_id", r.text


# 3. Redis down: 503 + Retry-After on every Redis-reading route, the connection kept -------

def _raw_requests(port: int, requests: list[bytes], timeout: float = 15.0) -> list[bytes]:
    """Send the requests one after another on ONE connection; the raw answers' status lines
    (an answer missing means the server closed the connection)."""
    answers: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        buf = b""
        for req in requests:
            s.sendall(req)
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return answers
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(rest) < length:
                chunk = s.recv(65536)
                if not chunk:
                    return answers
                rest += chunk
            answers.append(head)
            buf = rest[length:]
    return answers


def _get(path: str, key: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n").encode()


def test_redis_down_answers_503_with_retry_after_and_keeps_the_connection(api, own_redis) -> None:
    proc, _ = api
    routes = ["/v1/customers/alice/risk", "/v1/customers/alice/timeline",
              "/v1/customers/at-risk", "/v1/status", "/v1/customers/alice/profile",
              "/v1/analytics/tiers"]
    server: Server = own_redis["server"]
    port = server.port
    started = time.monotonic()
    counted = httpx.get(f"{proc.url}/v1/status", headers=bearer("hd-admin-0001")).json()
    server.proc.kill()
    server.proc.wait(10)
    try:
        assert proc.port is not None
        heads = _raw_requests(proc.port, [_get(p, "hd-admin-0001") for p in routes]
                              + [_get("/health", "x")])
        problems = []
        if len(heads) != len(routes) + 1:
            problems.append(f"the connection was closed after {len(heads)} answers")
        for path, head in zip(routes, heads, strict=False):
            status_line = head.split(b"\r\n")[0]
            if b" 503 " not in status_line or b"\r\nretry-after: " not in head.lower():
                problems.append(f"{path}: {status_line!r} (want 503 with Retry-After)")
        # A person in the console gets a page in their language saying to try again (it was
        # the API's JSON), with the 503 and Retry-After; the API's routes stay JSON.
        signed_in = {"cw_session": "s" * 43}  # a session cookie: its session is in Redis
        for method, path, lang, said in (
                ("GET", "/console/at-risk", "zh-CN,zh;q=0.9", "控制台暂时无法使用"),
                ("GET", "/console/customers/alice", "en-GB,en;q=0.8",
                 "The console is briefly unavailable"),
                ("POST", "/console/customers/alice/actions", "en", "Please try again"),
                # a one-click acknowledge link from a mail: words, not the API's JSON
                ("GET", "/a/AbCdEfGhIjKlMnOpQrStUv", "zh-CN", "暂时无法使用"),
                ("POST", "/a/AbCdEfGhIjKlMnOpQrStUv", "en", "Open the link again")):
            r = httpx.request(method, f"{proc.url}{path}", headers={"accept-language": lang},
                              cookies=signed_in, data={"action": "called"} if method == "POST"
                              else None, timeout=30)
            if (r.status_code, r.headers.get("retry-after")) != (503, "2") or \
                    not r.headers["content-type"].startswith("text/html") or said not in r.text \
                    or '"detail"' in r.text or "Redis" in r.text:
                problems.append(f"console {method} {path}: {r.status_code} "
                                f"{r.headers.get('retry-after')} {r.text[:300]!r}")
            again = '<a href="/console/at-risk" id="back">← 重试</a>'
            if path == "/console/at-risk" and again not in r.text:  # to try the page again
                problems.append(f"console {path}: no link to try again: {r.text[:600]!r}")
        r = httpx.get(f"{proc.url}/v1/customers/alice/risk", headers=bearer("hd-admin-0001"),
                      timeout=30)
        if r.status_code != 503 or "Redis" not in r.json()["detail"]:
            problems.append(f"API while Redis is down: {r.status_code} {r.text[:200]}")
        # Ingest still takes events: they are stored in the broker, the count waits for Redis.
        r = httpx.post(f"{proc.url}/v1/events", headers=bearer("hd-ingest-001"), timeout=30,
                       json={"event_id": "down-1", "type": "visit", "customer_id": "bob",
                             "occurred_at": "2026-06-01T10:00:00Z"})
        if r.status_code != 202:
            problems.append(f"ingest while Redis is down: {r.status_code} {r.text[:200]}")
    finally:
        own_redis["server"] = start_redis(port=port, log_path=LOG_DIR / "hardening-redis.log",
                                          appendonly=True, data_dir=own_redis["data"])
    # Redis back: the same process answers again, and the count of the batch accepted while
    # Redis was away reaches it (a background retry), as does the next batch's.
    wait_until(lambda: httpx.get(f"{proc.url}/ready", timeout=5).status_code == 200,
               what="/ready 200 after Redis returned")
    r = httpx.post(f"{proc.url}/v1/events", headers=bearer("hd-ingest-001"), timeout=30,
                   json={"event_id": "up-1", "type": "visit", "customer_id": "bob",
                         "occurred_at": "2026-06-01T11:00:00Z"})
    assert r.status_code == 202

    def total() -> int:
        return int(httpx.get(f"{proc.url}/v1/status",
                             headers=bearer("hd-admin-0001")).json()["events_accepted_total"])

    want = counted["events_accepted_total"] + 2
    deadline = time.monotonic() + 15
    while total() < want and time.monotonic() < deadline:
        time.sleep(0.1)
    after = total()
    lost = after != want
    record(kind="fault", name="api-redis-down",
           tried="SIGKILL of the API's redis-server; every Redis-reading route called on one "
           "keep-alive connection, an event posted, then Redis restarted on its port and data dir",
           load=f"{len(routes)} routes on one connection, 2 events",
           checked="503 with Retry-After on every route (no 500), the connection still answers "
           "the next request, ingest keeps taking events and their count reaches Redis once it "
           "is back",
           sent=len(routes) + 2, lost=len(problems) + int(lost), doubled=0,
           test=f"{HERE}::test_redis_down_answers_503_with_retry_after_and_keeps_the_connection",
           measured={"seconds": round(time.monotonic() - started, 2)})
    assert not problems, "\n".join(problems)
    assert not lost, (want, after)


def test_429_says_what_retry_after_says(broker: Server, own_redis: dict, tmp_path: Path) -> None:
    settings = make_test_settings(broker, own_redis["server"], tmp_path, api_keys=KEYS,
                                  api_rate_limit_per_second=0.2, api_rate_limit_burst=1)
    with ServiceProcess("api", settings, LOG_DIR / f"hardening-429-{settings.redis_prefix}.log",
                        health_port_setting="api_port") as proc, \
            httpx.Client(base_url=proc.url, headers=bearer("hd-read-00001"), timeout=10) as client:
        answers = [client.get("/v1/customers/nobody/risk") for _ in range(3)]
        limited = [r for r in answers if r.status_code == 429]
        assert limited, [r.status_code for r in answers]
        for r in limited:
            assert f"retry in {r.headers['retry-after']} s" in r.json()["detail"], r.text


# 4. the event clock is per tenant, and one customer's outlier moves nobody else ----------

async def test_event_clock_is_per_tenant_and_one_outlier_moves_nobody(settings_factory,
                                                                     tmp_path: Path) -> None:
    settings = settings_factory(clock="event", sweep_interval_seconds=0.2, model="scorecard")
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    history = [{**e, "tenant_id": "tenantA"} for e in regular("regular", every_days=7, count=15)]
    today = datetime.now(UTC).replace(microsecond=0)

    async def tier() -> str:
        raw = (await read_states(redis, keys, [("tenantA", "regular")], ["risk"]))[0].get("risk")
        return str(json.loads(raw or "{}").get("tier"))

    def dated(cid: str, tenant: str, at: datetime) -> dict:
        return {"event_id": f"{cid}-late", "type": "visit", "customer_id": cid,
                "tenant_id": tenant, "occurred_at": iso(at)}

    with ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                        health_port_setting="scorer_metrics_port"):
        await produce_events(settings, history)
        sent = len(history)
        await wait_processed(redis, settings, sent)
        assert await tier() == "low"
        # Another tenant's customers, active today, and one customer of tenantA dated today
        # (an outlier in a replay of January): tenantA's clock must not move.
        noise = [dated("b-1", "tenantB", today), dated("b-2", "tenantB", today),
                 dated("outlier", "tenantA", today)]
        await produce_events(settings, noise)
        sent += len(noise)
        await wait_processed(redis, settings, sent)
        deadline = time.monotonic() + 3.0  # 15 sweeps of 0.2 s: any of them would re-score
        while time.monotonic() < deadline:
            assert await tier() == "low", "another tenant's (or one outlier's) event moved the clock"
            await asyncio.sleep(0.2)
        clocks = await StateStore.from_settings(redis, settings).read_clocks(["tenantA", "tenantB"])
        regular_last = int(T0.timestamp() * 1000) + 14 * 7 * 86_400_000 + 40 * 60_000
        assert clocks["tenantA"] == regular_last, clocks
        assert clocks["tenantB"] == int(today.timestamp() * 1000), clocks
        outlier = json.loads((await read_states(redis, keys, [("tenantA", "outlier")]))[0]["risk"])
        assert outlier["as_of"].startswith(iso(today)[:16]), outlier  # scored at its own time
        # A second tenantA customer corroborates the new time: now tenantA's clock moves, and
        # the silent regular is re-scored high by the sweep.
        await produce_events(settings, [dated("second", "tenantA", today)])
        sent += 1
        await wait_processed(redis, settings, sent)
        deadline = time.monotonic() + 15
        while await tier() != "high":
            assert time.monotonic() < deadline, "the corroborated clock did not re-score"
            await asyncio.sleep(0.2)
    await redis.aclose()


# 5. event_id is unique per tenant, not per customer ----------------------------------------

def test_conflicting_duplicate_ids_in_one_batch_are_refused(api) -> None:
    proc, _ = api
    one = {"event_id": "same-id", "type": "transaction", "customer_id": "x-1",
           "occurred_at": "2026-06-01T10:00:00Z", "amount": 10.0}
    with httpx.Client(base_url=proc.url, headers=bearer("hd-ingest-001"), timeout=30) as client:
        r = client.post("/v1/events", json=[one, {**one, "customer_id": "y-1", "amount": 99.0}])
        assert r.status_code == 422, r.text
        error = r.json()["errors"][0]
        assert error["index"] == 1 and error["field"] == "event_id" and "event 0" in error["message"]
        r = client.post("/v1/events", json=[one, {**one, "amount": 11.0}])  # same customer too
        assert r.status_code == 422, r.text
        assert client.post("/v1/events", json=[one, dict(one)]).status_code == 202  # a resend
        # another tenant may use the same id for its own event
        assert client.post("/v1/events", json={**one, "customer_id": "z-1"},
                           headers=bearer("ta-ingest-001")).status_code == 202


async def test_an_event_id_reused_for_another_customer_is_a_duplicate(settings_factory,
                                                                     tmp_path: Path) -> None:
    settings = settings_factory(model="scorecard", sweep_interval_seconds=3600.0)
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)

    def tx(event_id: str, cid: str, amount: float, tenant: str | None = None) -> dict:
        e = {"event_id": event_id, "type": "transaction", "customer_id": cid,
             "occurred_at": iso(T0), "amount": amount}
        return {**e, "tenant_id": tenant} if tenant else e

    async def ids(cid: str, tenant: str = "default") -> set[str]:
        blob = (await read_states(redis, keys, [(tenant, cid)], ["sm"]))[0].get("sm")
        summary = Summary.decode(blob) if blob else Summary.empty()
        return {i for i in ("dup-1", "x-2", "y-2") if summary.knows(i)}

    with ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                        health_port_setting="scorer_metrics_port"):
        first = [tx("dup-1", "x", 10.0), tx("dup-1", "y", 99.0), tx("x-2", "x", 5.0),
                 tx("y-2", "y", 5.0)]
        await produce_events(settings, first)
        await wait_processed(redis, settings, len(first))
        later = [tx("dup-1", "z", 50.0), tx("dup-1", "x", 10.0),  # reuse, and x's resend
                 tx("dup-1", "w", 7.0, tenant="other")]           # another tenant: its own id
        await produce_events(settings, later)
        await wait_processed(redis, settings, len(first) + len(later))
        x, y = await ids("x"), await ids("y")
        assert ("dup-1" in x) != ("dup-1" in y), (x, y)  # exactly one customer holds the id
        assert not await redis.exists(keys.state("z")), "z got another customer's event"
        assert await ids("w", "other") == {"dup-1"}
        stats = await redis.hgetall(keys.stats)
        assert int(stats["events_applied_total"]) == 4, stats   # dup-1 once, x-2, y-2, w's
        assert int(stats["events_duplicate_total"]) == 3, stats  # y or x, z, x's resend
        mine = await redis.hgetall(keys.tenant_stats("default"))   # per tenant (/v1/status)
        other = await redis.hgetall(keys.tenant_stats("other"))
        assert (int(mine["events_applied_total"]), int(mine["events_duplicate_total"])) == (3, 3)
        assert int(other["events_applied_total"]) == 1 and "events_duplicate_total" not in other
    await redis.aclose()


# 7. slow clients are timed out, and one client cannot hold many slow connections ----------

def _wait_answer(s: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Read until the server closes the connection; the bytes and the seconds it took."""
    started = time.monotonic()
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got, time.monotonic() - started


def test_slow_clients_get_408_and_a_cap_per_client(broker: Server, redis_server: Server,
                                                   tmp_path: Path) -> None:
    settings = make_test_settings(broker, redis_server, tmp_path, api_keys=KEYS,
                                  api_header_timeout_seconds=2, api_body_timeout_seconds=2,
                                  api_max_slow_connections_per_client=2)
    started = time.monotonic()
    problems: list[str] = []
    with ServiceProcess("api", settings, LOG_DIR / f"hardening-slow-{settings.redis_prefix}.log",
                        health_port_setting="api_port") as proc:
        assert proc.port is not None
        addr = ("127.0.0.1", proc.port)
        # Incomplete headers, one byte now and then: 408 once the header deadline passes.
        with socket.create_connection(addr) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            got, took = _wait_answer(s, 10)
            if not got.startswith(b"HTTP/1.1 408") or not 1.5 < took < 6:
                problems.append(f"incomplete headers: {got[:60]!r} after {took:.1f} s")
        # Complete headers, a body that never completes: 408 once the body deadline passes.
        with socket.create_connection(addr) as s:
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer hd-ingest-001\r\nContent-Length: 100\r\n\r\n[{")
            got, took = _wait_answer(s, 10)
            if not got.startswith(b"HTTP/1.1 408") or not 1.5 < took < 6:
                problems.append(f"partial body: {got[:60]!r} after {took:.1f} s")
        # Two slow connections from one address: the next one is refused at once.
        slow = [socket.create_connection(addr) for _ in range(2)]
        for s in slow:
            s.sendall(b"GET /health HTTP/1.1\r\n")
        refused = b""
        deadline = time.monotonic() + 1.9  # before the slow ones' header deadline passes
        while time.monotonic() < deadline and not refused.startswith(b"HTTP/1.1 429"):
            with socket.create_connection(addr) as probe:
                refused, _ = _wait_answer(probe, 0.2)
        if not refused.startswith(b"HTTP/1.1 429"):
            problems.append(f"third slow connection not refused: {refused[:60]!r}")
        for s in slow:
            s.close()
        # A well-behaved keep-alive client is not bothered.
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for _ in range(3):
                if client.get("/health").status_code != 200:
                    problems.append("a normal request failed after the slow ones")
    record(kind="fault", name="api-slow-clients",
           tried="raw sockets against a real API: headers sent in part and never finished, a "
           "body shorter than its Content-Length, slow connections from one address beyond "
           "the cap, then a normal keep-alive client",
           load="header and body deadlines of 2 s, 2 slow connections per client",
           checked="408 and the connection closed once each deadline passes; the connection "
           "over the cap answered 429 at once; normal requests unaffected",
           sent=4, lost=len(problems), doubled=0,
           test=f"{HERE}::test_slow_clients_get_408_and_a_cap_per_client",
           measured={"seconds": round(time.monotonic() - started, 2)})
    assert not problems, "\n".join(problems)


# 11. small ones: blank ids, bad bytes in path ids, Content-Encoding ---------------------

def test_blank_ids_bad_path_bytes_and_content_encoding(api) -> None:
    proc, _ = api
    event = {"event_id": "enc-1", "type": "visit", "customer_id": "enc-c",
             "occurred_at": "2026-06-01T10:00:00Z"}
    with httpx.Client(base_url=proc.url, headers=bearer("hd-admin-0001"), timeout=30) as client:
        r = client.post("/v1/events", json={**event, "customer_id": "   "})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "customer_id", r.text
        r = client.get("/v1/customers/%20%20/risk")
        assert r.status_code == 422 and "customer_id" in r.text, r.text
        # Two different invalid byte sequences would both decode to U+FFFD: one customer.
        for path in ("/v1/customers/a%FF/risk", "/v1/customers/a%FE/risk"):
            r = client.get(path)
            assert r.status_code == 400 and "UTF-8" in r.json()["detail"], (path, r.text)
        body = json.dumps(event).encode()
        r = client.post("/v1/events", content=gzip.compress(body),
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 202 and r.json() == {"accepted": 1}, r.text
        r = client.post("/v1/events", content=body,
                        headers={"Content-Type": "application/json", "Content-Encoding": "br"})
        assert r.status_code == 415 and "Content-Encoding" in r.json()["detail"], r.text
        r = client.post("/v1/events", content=b"not gzip at all",
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 400 and "gzip" in r.json()["detail"], r.text
        bomb = gzip.compress(b"[" + b" " * (17 * 1024 * 1024) + b"]")  # over the 16 MiB limit
        r = client.post("/v1/events", content=bomb,
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 413, r.text
        r = client.put("/v1/customers/enc-c/profile", content=gzip.compress(b"{}"),
                       headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 415, r.text


# 8. /v1/status: a tenant's keys see their tenant's counters --------------------------------

def test_status_is_scoped_to_the_keys_tenant(api) -> None:
    proc, _ = api
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        def status(key: str) -> dict:
            r = client.get("/v1/status", headers=bearer(key))
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        before = {k: status(k) for k in ("hd-admin-0001", "tb-read-00001", "ta-read-00001",
                                         "ta-north-001", "hd-read-00001")}
        events = [{"event_id": f"st-{i}", "type": "visit", "customer_id": f"st-c{i}",
                   "occurred_at": "2026-06-01T10:00:00Z"} for i in range(3)]
        assert client.post("/v1/events", json=events,
                           headers=bearer("ta-ingest-001")).status_code == 202
        after = {k: status(k) for k in before}

    def delta(k: str) -> int:
        return int(after[k]["events_accepted_total"] - before[k]["events_accepted_total"])

    assert delta("hd-admin-0001") == 3                        # deployment-wide: admin, default
    assert delta("ta-read-00001") == 3 and delta("ta-north-001") == 3  # tenantA's own
    assert delta("tb-read-00001") == 0 and delta("hd-read-00001") == 0  # others see nothing
    for k in ("tb-read-00001", "ta-read-00001", "ta-north-001", "hd-read-00001"):
        assert "partitions" not in after[k] and after[k]["tenant"] in ("tenantA", "tenantB",
                                                                       "default"), after[k]
        assert {"events_accepted_total", "events_scored_total", "scorer_lag"} <= after[k].keys()
    assert "partitions" in after["hd-admin-0001"]


# 6. a store-bound key cannot pull another store's customer into its view ------------------

async def test_a_store_bound_key_cannot_pull_another_stores_customer(api, tmp_path: Path) -> None:
    proc, settings = api
    redis = make_redis(settings)

    def visit(event_id: str, cid: str, store: str, day: int) -> dict:
        return {"event_id": event_id, "type": "visit", "customer_id": cid, "store_id": store,
                "occurred_at": f"2026-06-{day:02d}T10:00:00Z"}

    async def applied(n: int) -> None:
        deadline = time.monotonic() + 30
        while int(await redis.hget(Keys(settings.redis_prefix).tenant_stats("tenantA"),
                                   "events_applied_total") or 0) < n:
            assert time.monotonic() < deadline, "events not applied"
            await asyncio.sleep(0.1)

    with ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                        health_port_setting="scorer_metrics_port"):
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
            # Earlier tests of this module leave tenantA events on the shared topic with no
            # scorer running: this scorer works through them first, and they must not count
            # as this test's events.
            deadline = time.monotonic() + 30
            while (await client.get("/v1/status", headers=bearer("hd-admin-0001"))
                   ).json().get("scorer_lag") != 0:
                assert time.monotonic() < deadline, "the scorer never caught up"
                await asyncio.sleep(0.1)
            base = int(await redis.hget(Keys(settings.redis_prefix).tenant_stats("tenantA"),
                                        "events_applied_total") or 0)
            south = [visit(f"sh-{d}", "shared", "south", d) for d in (1, 8, 15)]
            assert (await client.post("/v1/events", json=south,
                                      headers=bearer("ta-south-001"))).status_code == 202
            await applied(base + 3)
            # north served the customer once: accepted and counted, but the customer stays
            # south's
            r = await client.post("/v1/events", json=[visit("sh-n", "shared", "north", 20),
                                                      visit("own-1", "north-own", "north", 20)],
                                  headers=bearer("ta-north-001"))
            assert r.status_code == 202, r.text
            await applied(base + 5)
            for path in ("/v1/customers/shared/risk", "/v1/customers/shared/timeline",
                         "/v1/customers/shared/risk?as_of=2026-06-21T00:00:00Z"):
                assert (await client.get(path, headers=bearer("ta-north-001"))).status_code \
                    == 404, path
            risk = await client.get("/v1/customers/shared/risk", headers=bearer("ta-south-001"))
            assert risk.status_code == 200 and risk.json()["store_id"] == "south", risk.text
            assert risk.json()["last_event_at"].startswith("2026-06-20"), risk.json()  # counted
            # a customer north saw first is north's
            assert (await client.get("/v1/customers/north-own/risk",
                                     headers=bearer("ta-north-001"))).status_code == 200
            # a tenant-wide key still moves a customer to another store
            assert (await client.post("/v1/events", json=[visit("sh-m", "shared", "north", 22)],
                                      headers=bearer("ta-admin-0001"))).status_code == 202
            await applied(base + 6)
            assert (await client.get("/v1/customers/shared/risk",
                                     headers=bearer("ta-north-001"))).status_code == 200
    await redis.aclose()


async def test_silence_entries_of_other_tenants_move_out_of_the_legacy_index(
        settings_factory, tmp_path: Path) -> None:
    """Before per-tenant clocks every tenant's silence entries were in ``due:<partition>``
    (now the default tenant's key): the sweep re-scores them and moves them to their own."""
    settings = settings_factory(sweep_interval_seconds=0.2, model="scorecard")
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    event = {"event_id": "mig-1", "type": "visit", "customer_id": "m1", "tenant_id": "mig",
             "occurred_at": iso(T0)}

    async def where() -> tuple[list[int], list[int]]:
        legacy = [p for p in range(2) if await redis.zscore(keys.due(p), "mig/m1") is not None]
        own = [p for p in range(2) if await redis.zscore(keys.due(p, "mig"), "mig/m1") is not None]
        return legacy, own

    with ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                        health_port_setting="scorer_metrics_port"):
        await produce_events(settings, [event])
        await wait_processed(redis, settings, 1)
        legacy, own = await where()
        assert legacy == [] and len(own) == 1
        p = own[0]
        await redis.zrem(keys.due(p, "mig"), "mig/m1")
        await redis.zadd(keys.due(p), {"mig/m1": 0})  # as an older version left it
        deadline = time.monotonic() + 20
        while await where() != ([], [p]):
            assert time.monotonic() < deadline, await where()
            await asyncio.sleep(0.1)
    await redis.aclose()
