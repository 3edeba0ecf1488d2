"""``churnwatch up`` as a newcomer runs it: its own embedded broker and Redis, stack.json,
the contract's endpoints, and a clean stop on SIGTERM with no orphan processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest

from tests.data import complaint, regular

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], dict, Path]]:
    demo = getattr(request, "param", False)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNWATCH_")}
    env.update(CHURNWATCH_HOME=str(home), CHURNWATCH_API_PORT="0",
               CHURNWATCH_SCORER_METRICS_PORT="0", CHURNWATCH_NOTIFIER_METRICS_PORT="0",
               CHURNWATCH_API_KEYS="ingest-secret-1:ingest,admin-secret-1:admin")
    if not demo:  # scale-out as a deployment does it: two scorer processes, one group
        env["CHURNWATCH_SCORER_PROCESSES"] = "2"
    out = open(tmp_path / "up.out", "wb")  # noqa: SIM115
    args = [sys.executable, "-m", "services.cli.main", "up"] + ([] if demo else ["--no-demo"])
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    stack_file = home / "stack.json"
    deadline = time.monotonic() + 120
    while not stack_file.exists():
        assert proc.poll() is None, (tmp_path / "up.out").read_text()
        assert time.monotonic() < deadline, "stack.json not written within 120 s"
        time.sleep(0.2)
    info = json.loads(stack_file.read_text())
    try:
        yield proc, info, home
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()


def test_up_serves_the_contract_and_stops_cleanly(stack) -> None:
    proc, info, home = stack
    assert set(info) >= {"api_url", "kafka_bootstrap", "redis_url", "topics", "metrics_urls"}
    assert set(info["topics"]) >= {"events", "risk_changes"}
    assert len(info["metrics_urls"]) == 4  # api, two scorers, notifier
    for url in info["metrics_urls"]:
        r = httpx.get(url, timeout=5)
        assert r.status_code == 200 and "# TYPE" in r.text
    # the two scorers share the events partitions between them, each partition held once
    # (the first may hold all four until the second's join rebalances the group)
    deadline = time.monotonic() + 30
    while True:
        shares = [httpx.get(url.replace("/metrics", "/ready"), timeout=5).json()
                  ["assigned_partitions"] for url in info["metrics_urls"][1:3]]
        if all(shares) and sorted(shares[0] + shares[1]) == list(range(4)):
            break
        assert time.monotonic() < deadline, shares
        time.sleep(0.2)
    api = info["api_url"]
    headers = {"Authorization": "Bearer admin-secret-1"}
    assert httpx.get(f"{api}/health").status_code == 200
    events = regular("newcomer-1", every_days=10, count=6)
    events.append(complaint("newcomer-1", __import__("tests.data").data.T0, 9))
    assert httpx.post(f"{api}/v1/events", json=events, headers={"Authorization": "Bearer wrong-key-0"}).status_code == 401
    r = httpx.post(f"{api}/v1/events", json=events, headers={"Authorization": "Bearer ingest-secret-1"})
    assert r.status_code == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{api}/v1/customers/newcomer-1/risk", headers=headers)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200 and r.json()["tier"] in ("low", "medium", "high")
    status = httpx.get(f"{api}/v1/status", headers=headers).json()
    assert status["events_accepted_total"] == len(events)
    assert httpx.delete(f"{api}/v1/customers/newcomer-1", headers=headers).status_code == 204
    assert httpx.get(f"{api}/v1/customers/newcomer-1/risk", headers=headers).status_code == 404
    for name in ("api", "scorer", "scorer-2", "notifier", "broker", "redis"):
        assert (home / "logs" / f"{name}.log").exists()

    family = descendants(proc.pid)
    assert len(family) >= 7  # broker, redis, sinks, api, two scorers, notifier
    proc.send_signal(signal.SIGTERM)
    # Ctrl-C under `make run`: the group gets SIGTERM, then make forwards another to `up`,
    # which by then is shutting down; it must finish the shutdown, not die half-way
    out = home.parent / "up.out"
    deadline = time.monotonic() + 30
    while "shutting down" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, out.read_text()[-2000:]
    assert "stopped" in out.read_text().splitlines()[-1]
    time.sleep(0.5)
    assert not [p for p in family if alive(p)], "orphan processes left behind"
    assert not (home / "stack.json").exists()


@pytest.mark.parametrize("stack", [True], indirect=True)
def test_demo_shows_tier_changes_and_notifications_within_a_minute(stack) -> None:
    proc, info, home = stack
    headers = {"Authorization": "Bearer admin-secret-1"}
    deadline = time.monotonic() + 75
    status: dict = {}
    mails: list[Path] = []
    while time.monotonic() < deadline:
        status = httpx.get(f"{info['api_url']}/v1/status", headers=headers).json()
        # staff alerts (the console's sign-in mail to the demo manager may come first)
        mails = [p for p in (home / "outbox" / "mail").glob("*.eml")
                 if "/a/" in p.read_text(errors="replace")]
        if status["risk_changes_total"] >= 5 and mails and (home / "outbox" / "sms.ndjson").exists():
            break
        time.sleep(1)
    assert status["events_scored_total"] > 100, status
    assert status["risk_changes_total"] >= 5, status
    assert mails, "no e-mail delivered to the local sink"
    # high risk is texted too (the default routes), to the demo staff's mobiles
    sms = home / "outbox" / "sms.ndjson"
    assert sms.exists(), "no SMS delivered to the local sink"
    texts = [json.loads(line) for line in sms.read_text().splitlines() if line.strip()]
    assert texts and all(t["to"].startswith("+1") for t in texts), texts[:2]
    # the one-click acknowledge link points at the API's real address and works without a key
    links = sorted({m.group(1) for p in mails for m in re.finditer(
        r"(http://\S+/a/[A-Za-z0-9_-]{22})", p.read_text(errors="replace"))})
    assert links and all(u.startswith(info["api_url"] + "/a/") for u in links), links[:3]
    assert httpx.get(links[0]).status_code == 200
    done = httpx.post(links[0])
    assert done.status_code == 200 and "cknowledged" in done.text
    assert httpx.post(links[0]).status_code == 410  # single use
    # a salon chain, scored with the salon rules; the banner's commands use the real address
    banner = (home.parent / "up.out").read_text()
    assert "rules: salon" in banner, banner[-2000:]
    assert f"Bearer <a read key>' {info['api_url']}/v1/status" in banner, banner[-2000:]
    # the staff console: its address, and the demo manager's sign-in link from the outbox
    assert f"staff console  {info['api_url']}/console" in banner, banner[-2000:]
    deadline = time.monotonic() + 30
    while "sign-in for the demo's store manager" not in banner and time.monotonic() < deadline:
        time.sleep(0.5)
        banner = (home.parent / "up.out").read_text()
    link = re.search(r"(http://\S+/console/sign-in/link\?token=\S+)", banner)
    assert link and link.group(1).startswith(info["api_url"]), banner[-2000:]
    assert "Finish signing in" in httpx.get(link.group(1)).text
    # staff alerts name the customer and link to them in the console
    bodies = []
    for path in mails:
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        plain = mail.get_body(("plain",))  # type: ignore[attr-defined]
        bodies.append(plain.get_content() if plain is not None else "")
    assert any(f"{info['api_url']}/console/customers/" in b for b in bodies), bodies[:1]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
