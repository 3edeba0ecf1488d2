"""``churnwatch train`` (the real CLI) writes an artifact that the scorer and the API serve."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.common.redisconn import Keys, make_redis
from services.scorer.model import load_model
from services.synth import generate, write_ndjson
from tests.data import regular
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration


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

        async def wait_scored() -> None:
            redis = make_redis(settings)
            key = Keys(settings.redis_prefix).customer("m-1")[2]
            try:
                for _ in range(300):
                    if await redis.hget(key, "risk"):
                        return
                    await asyncio.sleep(0.1)
            finally:
                await redis.aclose()

        asyncio.run(wait_scored())
        risk = httpx.get(f"{api.url}/v1/customers/m-1/risk").json()
        assert risk["model_version"] == version
        past = httpx.get(f"{api.url}/v1/customers/m-1/risk",
                         params={"as_of": (now - timedelta(days=100)).isoformat()}).json()
        assert past["model_version"] == version and past["point_in_time"] is True
        assert httpx.get(f"{api.url}/v1/status").json()["model_version"] == version
        assert f'version="{version}"' in httpx.get(f"{scorer.url}/metrics").text
