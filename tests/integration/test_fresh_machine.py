"""Commands started on a machine where nothing exists yet: no CHURNWATCH_HOME, no stack.

Each either creates what it needs or says in one line what is missing and how to fix it —
never a traceback (issue 21).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_sync

from services.common.embedded import free_port
from services.common.redisconn import Keys
from services.common.settings import Settings
from services.scoring.model import DEFAULT_MODEL_PATH, read_artifact
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _env_without(settings: Settings, *names: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNWATCH_")}
    env.update({k: v for k, v in settings.to_env().items() if k not in names})
    return env


def _one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0, run.stdout
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("churnwatch"), run.stderr
    return lines[-1]


def test_scorer_creates_a_home_that_does_not_exist_yet(settings_factory, tmp_path: Path) -> None:
    home = tmp_path / "not" / "there" / "yet"
    settings = settings_factory().model_copy(update={"home": home})
    with ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                        health_port_setting="scorer_metrics_port"):
        assert (home / "scorer-data").is_dir()


def test_scorer_says_in_one_line_that_redis_is_not_there(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    line = _one_line_error(_cli({**os.environ, **settings.to_env()}, "scorer"))
    assert "Redis" in line and "make run" in line, line


def test_model_activate_finds_the_running_stack_from_stack_json(settings_factory,
                                                                 tmp_path: Path) -> None:
    """`make run` writes stack.json; `churnwatch model activate` with no CHURNWATCH_REDIS_URL
    reaches that stack's Redis (the embedded one is on a random port)."""
    settings = settings_factory().model_copy(update={"home": tmp_path / "home"})
    settings.home.mkdir()
    settings.stack_file.write_text(json.dumps({
        "api_url": "http://127.0.0.1:1", "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url}))
    env = _env_without(settings, "CHURNWATCH_REDIS_URL", "CHURNWATCH_KAFKA_BOOTSTRAP")
    key = Keys(settings.redis_prefix).active_model
    client = redis_sync.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        done = _cli(env, "model", "activate", str(DEFAULT_MODEL_PATH))
        assert done.returncode == 0, done.stderr
        record = json.loads(client.get(key) or "{}")
        assert record["version"] == read_artifact(DEFAULT_MODEL_PATH).version
        shown = _cli(env, "model", "show")
        assert shown.returncode == 0 and record["version"] in shown.stdout, shown.stderr
        back = _cli(env, "model", "activate", "--default")
        assert back.returncode == 0, back.stderr
        assert client.get(key) is None
        url = _cli(env, "stack", "api_url")
        assert url.returncode == 0 and url.stdout.strip() == "http://127.0.0.1:1", url.stderr
    finally:
        client.close()


def test_model_activate_without_a_reachable_stack_says_so_in_one_line(settings_factory,
                                                                      tmp_path: Path) -> None:
    settings = settings_factory().model_copy(update={"home": tmp_path / "home"})
    env = _env_without(settings, "CHURNWATCH_REDIS_URL", "CHURNWATCH_KAFKA_BOOTSTRAP")
    env["CHURNWATCH_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    line = _one_line_error(_cli(env, "model", "activate", "--default"))
    assert "no running stack found" in line and "make run" in line, line

    # a stack that was killed leaves its stack.json behind: the error names it
    del env["CHURNWATCH_REDIS_URL"]
    settings.home.mkdir()
    settings.stack_file.write_text(json.dumps({
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",
        "redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    line = _one_line_error(_cli(env, "model", "show"))
    assert str(settings.stack_file) in line and "still running" in line, line
    line = _one_line_error(_cli(env, "stack", "no_such_key"))
    assert "api_url" not in line and "kafka_bootstrap" in line, line
