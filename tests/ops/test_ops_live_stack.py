"""Operations checks against a running ``churnwatch up --no-demo`` (one stack for the module):
every metric the dashboards and alert rules use is really exported, ``promtool check metrics``
is clean, a real Prometheus scrapes the stack and evaluates the rules, readiness reflects the
dependencies, and the logs are JSON lines without personal data in clear."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import yaml

from services.common.embedded import free_port, stop_process
from tests.data import T0, complaint, regular
from tests.ops.opstools import (
    RULES,
    SYNTHETIC,
    dashboard_exprs,
    exported_types,
    promql_metric_names,
    require_tool,
    rule_exprs,
    sample_names,
)

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": "Bearer ops-admin-secret"}
INGEST = {"Authorization": "Bearer ops-ingest-secret"}
PII_EMAIL = "pat.doe@example.com"
PII_PHONE = "+4917012345678"
JOBS = ("churnwatch-api", "churnwatch-scorer", "churnwatch-notifier")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("ops-stack")
    home = base / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNWATCH_")}
    env.update(CHURNWATCH_HOME=str(home), CHURNWATCH_API_PORT="0",
               CHURNWATCH_SCORER_METRICS_PORT="0", CHURNWATCH_NOTIFIER_METRICS_PORT="0",
               CHURNWATCH_API_KEYS="ops-ingest-secret:ingest,ops-admin-secret:admin")
    out = open(base / "up.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "up", "--no-demo"],
                            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=base)
    try:
        deadline = time.monotonic() + 120
        while not (home / "stack.json").exists():
            assert proc.poll() is None, (base / "up.out").read_text()
            assert time.monotonic() < deadline, "stack.json not written within 120 s"
            time.sleep(0.2)
        info = json.loads((home / "stack.json").read_text())
        _exercise(info)
        info["home"] = home
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        out.close()


def _exercise(info: dict[str, Any]) -> None:
    """Traffic so that the labelled metrics have samples: accepted events of two stores, a
    rejected batch, risk reads, and erasures of customers whose ids are personal data."""
    api = info["api_url"]
    events = regular("ops-1", every_days=10, count=6) + regular("ops-2", every_days=7, count=4)
    for n, e in enumerate(events):
        e["store_id"] = "salon-downtown" if n % 2 else "salon-riverside"
    events.append(complaint("ops-1", T0, 1))
    events.append(regular(PII_EMAIL, every_days=5, count=1)[0])
    r = httpx.post(f"{api}/v1/events", json=events, headers=INGEST, timeout=30)
    assert r.status_code == 202, r.text
    bad = httpx.post(f"{api}/v1/events", json=[{"type": "visit"}], headers=INGEST, timeout=30)
    assert bad.status_code == 422
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.get(f"{api}/v1/customers/ops-1/risk", headers=ADMIN, timeout=10)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    for customer in (PII_EMAIL, PII_PHONE):
        r = httpx.delete(f"{api}/v1/customers/{quote(customer, safe='')}", headers=ADMIN, timeout=10)
        assert r.status_code == 204, r.text


def scrape(info: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for url in info["metrics_urls"]:
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200, url
        out[url] = r.text
    return out


def test_every_dashboard_and_alert_metric_is_exported(stack: dict[str, Any]) -> None:
    types: dict[str, str] = {}
    for text in scrape(stack).values():
        types.update(exported_types(text))
    exported = sample_names(types) | SYNTHETIC
    missing: dict[str, set[str]] = {}
    sources = {f"deploy/grafana/dashboards/{f}": exprs for f, exprs in dashboard_exprs().items()}
    sources["deploy/prometheus/rules.yml"] = list(rule_exprs().values())
    referenced: set[str] = set()
    for source, exprs in sources.items():
        assert exprs, f"{source} has no queries"
        for expr in exprs:
            names = promql_metric_names(expr)
            assert names, f"{source}: no metric in {expr!r}"
            referenced |= names
            for name in names - exported:
                missing.setdefault(name, set()).add(source)
    assert {"churnwatch_ingest_events_accepted_total", "process_resident_memory_bytes"} <= referenced
    assert not missing, "referenced but not exported by any service:\n" + "\n".join(
        f"  {name}  (used in {', '.join(sorted(where))})" for name, where in sorted(missing.items()))


def test_promtool_check_metrics_is_clean(stack: dict[str, Any]) -> None:
    promtool = require_tool("promtool")
    for url, text in scrape(stack).items():
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
            f"{url}:\n{r.stdout}{r.stderr}"


def test_every_service_exports_process_metrics(stack: dict[str, Any]) -> None:
    for url, text in scrape(stack).items():
        types = exported_types(text)
        assert types.get("process_resident_memory_bytes") == "gauge", url
        assert types.get("process_cpu_seconds_total") == "counter", url
        for name in types:
            assert name.startswith(("churnwatch_", "process_", "python_")), f"{url}: {name}"


def test_api_metrics_use_route_templates_and_bounded_labels(stack: dict[str, Any]) -> None:
    text = httpx.get(stack["metrics_urls"][0], timeout=10).text
    assert re.search(r'churnwatch_api_request_seconds_bucket\{le="[^"]+",route="/v1/events"\}', text)
    assert re.search(r'churnwatch_api_requests_total\{route="/v1/customers/\{customer_id[^"]*\}/risk",'
                     r'status="200"\}', text)
    assert "ops-1" not in text and PII_EMAIL not in text, "raw paths or ids leaked into labels"
    assert 'churnwatch_ingest_events_by_store_total{store="salon-downtown"}' in text
    assert 'churnwatch_ingest_events_rejected_total{reason="invalid"} 1.0' in text
    assert 'churnwatch_ingest_events_accepted_total{type="complaint"} 1.0' in text


def test_readiness_reflects_dependencies(stack: dict[str, Any]) -> None:
    api = stack["api_url"]
    r = httpx.get(f"{api}/ready", timeout=10)
    assert r.status_code == 200 and r.json()["redis"] == "ok"
    for url in stack["metrics_urls"][1:]:
        root = url.rsplit("/", 1)[0]
        assert httpx.get(f"{root}/live", timeout=10).status_code == 200
        ready = httpx.get(f"{root}/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready"] is True
        assert httpx.get(f"{root}/health", timeout=10).status_code == 200


def test_real_prometheus_scrapes_the_stack_and_evaluates_the_rules(
        stack: dict[str, Any], tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    port = free_port(0)
    jobs = dict(zip(JOBS, stack["metrics_urls"], strict=True))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": job, "metrics_path": urlsplit(url).path,
                            "static_configs": [{"targets": [urlsplit(url).netloc]}]}
                           for job, url in jobs.items()],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def query(q: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{base}/api/v1/query", params={"query": q}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]  # type: ignore[no-any-return]

    try:
        deadline = time.monotonic() + 60
        accepted: list[dict[str, Any]] = []
        up: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                up = query("up == 1")
                accepted = query('sum(churnwatch_ingest_events_accepted_total{job="churnwatch-api"})')
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if len(up) == len(JOBS) and accepted:
                break
            time.sleep(0.5)
        assert {s["metric"]["job"] for s in up} == set(JOBS), up
        assert accepted and float(accepted[0]["value"][1]) >= 10
        scored = query('sum(churnwatch_scorer_events_total{job="churnwatch-scorer"})')
        assert scored and float(scored[0]["value"][1]) >= 10
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        evaluated = [r for g in rules for r in g["rules"]]
        assert len(evaluated) == len(rule_exprs())
        assert all(r["health"] in ("ok", "unknown") for r in evaluated), evaluated
        firing = [r["name"] for r in evaluated if r["state"] == "firing"]
        assert not [n for n in firing if n in ("ChurnwatchScorerDown", "ChurnwatchServiceDown")]
    finally:
        stop_process(proc, 20)
        log.close()


def test_logs_are_json_lines_without_personal_data(stack: dict[str, Any]) -> None:
    logs = Path(stack["logs_dir"])
    for service in ("api", "scorer", "notifier"):
        lines = [ln for ln in (logs / f"{service}.log").read_text(errors="replace").splitlines()
                 if ln.startswith("{")]
        assert lines, f"{service}.log has no JSON lines"
        for line in lines:
            record = json.loads(line)
            assert {"timestamp", "level", "service", "msg"} <= set(record), line
            assert record["service"] == service
            assert record["timestamp"].endswith("Z")
    # The erasures above reach the scorer, which names the customer by their token only.
    deadline = time.monotonic() + 20
    tokened = False
    while not tokened and time.monotonic() < deadline:
        for line in (logs / "scorer.log").read_text(errors="replace").splitlines():
            if line.startswith("{") and "erased customer state" in line:
                tokened = json.loads(line).get("customer_id", "").startswith("cust_")
        time.sleep(0.5)
    assert tokened, "no scorer line names the erased customer by a token"
    for path in logs.glob("*.log"):
        text = path.read_text(errors="replace")
        assert PII_EMAIL not in text, f"{path.name} has an e-mail address in clear"
        assert PII_PHONE not in text, f"{path.name} has a phone number in clear"
