"""``churnwatch up`` and its embedded Redis (issue 19.2): a redis-server SIGKILLed under ``up`` is
reported and restarted on the same port and data directory, and nothing acknowledged is lost;
``up`` stopped and started again in the same ``$CHURNWATCH_HOME`` keeps every customer's state
and the counters, while the embedded broker's topics start empty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.data import T0, regular
from tests.e2e.test_up import descendants
from tests.reliability import record

pytestmark = pytest.mark.e2e

HERE = "tests/e2e/test_up_redis.py"
ADMIN = {"Authorization": "Bearer admin-secret-1"}
INGEST = {"Authorization": "Bearer ingest-secret-1"}
BEFORE, DURING, AFTER_RESTART = 30, 10, 5  # customers posted before, while Redis is dead, after
VISITS = 5  # each a visit and a transaction: 10 events per customer


def start_up(home: Path, out: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNWATCH_")}
    env.update(CHURNWATCH_HOME=str(home), CHURNWATCH_API_PORT="0",
               CHURNWATCH_SCORER_METRICS_PORT="0", CHURNWATCH_NOTIFIER_METRICS_PORT="0",
               CHURNWATCH_API_KEYS="ingest-secret-1:ingest,admin-secret-1:admin")
    with open(out, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "up", "--no-demo"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home.parent)
    stack_file = home / "stack.json"
    deadline = time.monotonic() + 120
    while not stack_file.exists():
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, "stack.json not written within 120 s"
        time.sleep(0.2)
    return proc, json.loads(stack_file.read_text())


def poll(fn, timeout: float, what: str):  # noqa: ANN001,ANN201
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = fn()
        except httpx.HTTPError:
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.2)


def post(api: str, customers: list[str]) -> int:
    events = [e for c in customers for e in regular(c, every_days=14, count=VISITS, start=T0)]
    r = httpx.post(f"{api}/v1/events", json=events, headers=INGEST, timeout=30)
    assert r.status_code == 202, r.text
    return len(events)


def status(api: str) -> dict[str, Any]:
    return httpx.get(f"{api}/v1/status", headers=ADMIN, timeout=10).json()  # type: ignore[no-any-return]


def known(api: str, customers: list[str]) -> list[str]:
    """The customers whose risk reads 200."""
    with httpx.Client(base_url=api, headers=ADMIN, timeout=10) as client:
        return [c for c in customers if client.get(f"/v1/customers/{c}/risk").status_code == 200]


def redis_pid(up_pid: int) -> int:
    for pid in descendants(up_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if b"redis-server" in cmd:  # redis rewrites its title: "...redis-server 127.0.0.1:P"
            return pid
    raise AssertionError("no redis-server under churnwatch up")


def test_redis_killed_under_up_is_reported_restarted_and_loses_nothing(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "up.out"
    started = time.monotonic()
    first = [f"keep-{i}" for i in range(BEFORE)]
    second = [f"dur-{i}" for i in range(DURING)]
    third = [f"new-{i}" for i in range(AFTER_RESTART)]
    proc, info = start_up(home, out)
    api = info["api_url"]
    try:
        sent = post(api, first)
        poll(lambda: status(api)["events_applied_total"] == sent, 60, "first events applied")
        old_pid = redis_pid(proc.pid)
        os.kill(old_pid, signal.SIGKILL)
        sent += post(api, second)  # the broker stores them; the API answers 202
        poll(lambda: "restarted redis" in out.read_text(), 30, "redis restarted")
        text = out.read_text()
        assert "redis DIED" in text, text
        assert redis_pid(proc.pid) != old_pid
        assert f"127.0.0.1:{info['redis_url'].rsplit(':', 1)[1].split('/')[0]}" in text
        poll(lambda: status(api)["events_applied_total"] == sent, 60,
             "every event applied after the restart")
        assert len(known(api, first + second)) == BEFORE + DURING
        # the API counts what it accepted while Redis was down once Redis is back (a retry in
        # the background): eventually, not at once
        poll(lambda: status(api)["events_accepted_total"] == sent, 60,
             "the accepted count caught up")
        after_kill = status(api)
        assert after_kill["events_accepted_total"] == sent, after_kill
        risk_before = {c: httpx.get(f"{api}/v1/customers/{c}/risk", headers=ADMIN).json()["score"]
                       for c in first[:5]}

        # `up` stopped and started again in the same home: Redis state kept, topics fresh.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        proc, info = start_up(home, out)
        api = info["api_url"]
        assert len(known(api, first + second)) == BEFORE + DURING, "state lost across a restart"
        for c, score in risk_before.items():
            assert httpx.get(f"{api}/v1/customers/{c}/risk", headers=ADMIN).json()["score"] == score
        again = status(api)
        assert again["events_accepted_total"] == sent, again
        assert again["scorer_lag"] == 0, again
        sent += post(api, third)  # the scorer reads the new, empty topic from its start
        poll(lambda: len(known(api, third)) == AFTER_RESTART, 60, "new events scored after restart")
        final = poll(lambda: (s := status(api))["scorer_lag"] == 0 and s, 30, "lag 0")
        assert final["events_accepted_total"] == sent, final
        assert final["events_applied_total"] == sent, final
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    applied = final["events_applied_total"]
    record(kind="fault", name="up-redis-sigkill",
           tried="SIGKILL of the redis-server child of `churnwatch up`, events posted while it "
           "is dead, then `up` stopped and started again in the same CHURNWATCH_HOME",
           load=f"{sent} events of {BEFORE + DURING + AFTER_RESTART} customers "
           f"({DURING * VISITS * 2} posted while Redis was dead)",
           checked="the death reported (DIED) and Redis restarted on its port and data dir; every "
           "acknowledged event applied once, every customer readable, counters kept, also across "
           "a restart of `up` (fresh broker topics, lag 0, new events scored)",
           sent=sent, lost=max(sent - applied, 0), doubled=max(applied - sent, 0),
           test=f"{HERE}::test_redis_killed_under_up_is_reported_restarted_and_loses_nothing",
           measured={"seconds": round(time.monotonic() - started, 2)})
