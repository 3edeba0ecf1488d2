"""``churnwatch train`` (the real CLI) writes an artifact that the scorer and the API serve."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.scoring import summary
from services.scoring.model import load_model
from services.state.store import read_states
from services.synth import generate, write_ndjson
from tests.data import regular
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration


async def wait_scored(settings: Settings, customer_id: str, timeout: float = 30.0) -> None:
    """Until the scorer has stored a risk for the customer."""
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    try:
        for _ in range(int(timeout * 10)):
            if (await read_states(redis, keys, [("default", customer_id)], ["risk"]))[0]:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no risk stored for {customer_id!r} after {timeout} s")
    finally:
        await redis.aclose()


def test_trained_model_is_served_by_scorer_and_api(settings_factory, tmp_path: Path) -> None:
    end = datetime(2026, 6, 30, tzinfo=UTC)
    events, _ = generate(preset="salon", customers=250, start=end - timedelta(days=540), end=end, seed=5)
    history = tmp_path / "history.ndjson"
    write_ndjson(events, history)
    with open(history, "a") as f:
        f.write("this line is not json\n")
    out = tmp_path / "model.joblib"
    run = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "train", "--events", str(history),
         "--until", "2026-06-30T00:00:00Z", "--horizon-days", "60", "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ROC AUC" in run.stdout and "1 invalid line" in run.stdout
    version = load_model(out).version

    bad = subprocess.run([sys.executable, "-m", "services.cli.main", "train", "--events", str(history),
                          "--until", "yesterday", "--horizon-days", "60", "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "RFC 3339" in bad.stderr

    settings = settings_factory(model=out)
    api = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    scorer = ServiceProcess("scorer", settings, tmp_path / "scorer.log", health_port_setting="scorer_metrics_port")
    with api, scorer:
        now = datetime.now(UTC)
        batch = regular("m-1", every_days=14, count=10, start=now - timedelta(days=200))
        assert httpx.post(f"{api.url}/v1/events", json=batch).status_code == 202

        asyncio.run(wait_scored(settings, "m-1"))
        risk = httpx.get(f"{api.url}/v1/customers/m-1/risk").json()
        assert risk["model_version"] == version
        past = httpx.get(f"{api.url}/v1/customers/m-1/risk",
                         params={"as_of": (now - timedelta(days=100)).isoformat()}).json()
        assert past["model_version"] == version and past["point_in_time"] is True
        assert httpx.get(f"{api.url}/v1/status").json()["model_version"] == version
        assert f'version="{version}"' in httpx.get(f"{scorer.url}/metrics").text


def _cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "services.cli.main", *args],
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True,
                          timeout=60)


def test_train_counts_the_closed_days_of_the_stores_it_is_given(tmp_path: Path) -> None:
    """``churnwatch train --stores``: a school's summers, entered as its stores' closures,
    count as the scorer counts them (unit: tests/unit/test_closures.py); a file that cannot
    be read says what to fix before anything is trained."""
    end = datetime(2026, 10, 15, tzinfo=UTC)
    events, _ = generate(preset="school", customers=300, start=end - timedelta(days=540),
                         end=end, seed=3)
    history = tmp_path / "school.ndjson"
    write_ndjson(events, history)
    schools = sorted({e["store_id"] for e in events if e.get("store_id")})
    summers = [{"first": f"{y}-07-01", "last": f"{y}-08-31", "note": "summer break"}
               for y in (2025, 2026)]
    stores = tmp_path / "stores.json"
    stores.write_text(json.dumps([{"store_id": s, "timezone": "Europe/Berlin", "closures": summers}
                                  for s in schools]), encoding="utf-8")
    out = tmp_path / "school.joblib"
    cmd = [sys.executable, "-m", "services.cli.main", "train", "--events", str(history),
           "--until", "2026-10-15T00:00:00Z", "--horizon-days", "60", "--out", str(out)]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"store_id": "x", "closures": [{"first": "2026-08-31",
                                                                  "last": "2026-07-01"}]}]))
    bad = subprocess.run([*cmd, "--stores", str(broken)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "store 1: closures.0" in bad.stderr, bad.stderr
    assert not out.exists()
    run = subprocess.run([*cmd, "--stores", str(stores)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"Stores       {len(schools)} from {stores}: closed days of {len(schools)}" in run.stdout
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["data"]["stores"]["with_closures"] == len(schools) >= 1
    load_model(out)


def test_model_activate_switches_running_services_and_back(settings_factory, tmp_path: Path) -> None:
    """`churnwatch model activate PATH` reaches a running scorer and API without a restart;
    `--default` goes back; an incompatible artifact is refused with the reason."""
    import joblib

    from services.training import train

    end = datetime(2026, 6, 30, tzinfo=UTC)
    events, _ = generate(preset="restaurant", customers=150, start=end - timedelta(days=500),
                         end=end, seed=8)
    history = tmp_path / "history.ndjson"
    write_ndjson(events, history)
    new_path = tmp_path / "new.joblib"
    new_version = train(events_path=history, until=end, horizon_days=45, out=new_path).model_version
    default_version = load_model(None).version
    assert new_version != default_version

    settings = settings_factory(model_refresh_seconds=0.5)
    api = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    scorer = ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                            health_port_setting="scorer_metrics_port")
    now = datetime.now(UTC)

    def post_and_read(cid: str) -> dict:
        batch = regular(cid, every_days=14, count=6, start=now - timedelta(days=90))
        assert httpx.post(f"{api.url}/v1/events", json=batch).status_code == 202

        asyncio.run(wait_scored(settings, cid))
        return httpx.get(f"{api.url}/v1/customers/{cid}/risk").json()

    def metrics() -> str:
        return httpx.get(f"{scorer.url}/metrics").text

    with api, scorer:
        assert post_and_read("before")["model_version"] == default_version
        assert f'churnwatch_scorer_model_info{{version="{default_version}"}} 1.0' in metrics()
        # the scorer process runs the summary this checkout runs (compiled where it was built)
        compiled = 1.0 if summary.NATIVE else 0.0
        assert f"churnwatch_scorer_customer_state_compiled {compiled}" in metrics()

        bad = tmp_path / "bad.joblib"
        blob = dict(joblib.load(new_path))
        blob["feature_schema"] = 1
        joblib.dump(blob, bad)
        refused = _cli(settings, "model", "activate", str(bad))
        assert refused.returncode != 0 and "feature schema 1" in refused.stderr

        done = _cli(settings, "model", "activate", str(new_path))
        assert done.returncode == 0, done.stderr
        assert new_version in done.stdout
        assert new_version in _cli(settings, "model", "show").stdout
        # no new event of "before": the scorer re-scores stored customers with the new model
        deadline = time.monotonic() + 20
        while httpx.get(f"{api.url}/v1/customers/before/risk").json()["model_version"] \
                != new_version:
            assert time.monotonic() < deadline, "the stored score still carries the old model"
            time.sleep(0.2)
        assert 'churnwatch_scorer_model_rescored_customers_total 1.0' in metrics()
        assert post_and_read("after")["model_version"] == new_version
        text = metrics()
        assert f'churnwatch_scorer_model_info{{version="{new_version}"}} 1.0' in text
        assert f'version="{default_version}"' not in text
        # /v1/status follows the activation by itself (no as_of read needed first)
        assert httpx.get(f"{api.url}/v1/status").json()["model_version"] == new_version
        past = httpx.get(f"{api.url}/v1/customers/before/risk",
                         params={"as_of": (now - timedelta(days=20)).isoformat()}).json()
        assert past["model_version"] == new_version and past["point_in_time"] is True

        back = _cli(settings, "model", "activate", "--default")
        assert back.returncode == 0, back.stderr
        time.sleep(2.0)
        assert post_and_read("back")["model_version"] == default_version
        assert f'churnwatch_scorer_model_info{{version="{default_version}"}} 1.0' in metrics()
        past = httpx.get(f"{api.url}/v1/customers/before/risk",
                         params={"as_of": (now - timedelta(days=20)).isoformat()}).json()
        assert past["model_version"] == default_version
