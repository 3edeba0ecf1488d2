"""``churnwatch up`` chooses free ports for its children; another process can bind one before
the child does (parallel runs on a busy machine). The child then moves to another port instead
of the stack failing to start."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from services.cli.stack import Stack
from services.common.settings import load_settings

pytestmark = pytest.mark.e2e


def test_a_port_taken_before_the_child_binds_it_moves_the_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("CHURNWATCH_")]:
        monkeypatch.delenv(name)
    settings = load_settings(home=tmp_path / "home", api_port=0, scorer_metrics_port=0,
                             notifier_metrics_port=0)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    stack = Stack(settings, demo=False)
    try:
        stack.prepare()
        notifier = next(c for c in stack.children if c.name == "notifier")
        assert notifier.port_env is not None
        chosen = int(notifier.env[notifier.port_env])
        # what another process did between `up` finding the port free and the notifier binding
        notifier.env = {**notifier.env, notifier.port_env: str(taken)}
        assert notifier.health_url is not None
        notifier.health_url = notifier.health_url.replace(f":{chosen}/", f":{taken}/")
        stack.info["metrics_urls"] = [u.replace(f":{chosen}/", f":{taken}/")
                                      for u in stack.info["metrics_urls"]]
        asyncio.run(stack.start())
        moved = int(notifier.env[notifier.port_env])
        assert moved != taken and notifier.port_moves == 1
        assert "address already in use" in notifier.log_path.read_text().lower()
        info = json.loads(settings.stack_file.read_text())
        assert f"http://127.0.0.1:{moved}/metrics" in info["metrics_urls"]
        assert all(f":{taken}/" not in u for u in info["metrics_urls"])
        assert httpx.get(f"http://127.0.0.1:{moved}/health", timeout=5).status_code == 200
    finally:
        stack.stop()
        holder.close()


def test_the_api_s_port_is_held_from_the_moment_up_chooses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``up`` binds the API's port itself and hands the listening socket to the API, so no
    other process can take it in between (CI once saw ``make run`` fail with "address already
    in use" beside a soak and a bench). The port asked for is taken here: ``up`` holds
    another, which nobody else can bind, the API serves on it, and again after a restart."""
    for name in [k for k in os.environ if k.startswith("CHURNWATCH_")]:
        monkeypatch.delenv(name)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    settings = load_settings(home=tmp_path / "home", api_port=taken, scorer_metrics_port=0,
                             notifier_metrics_port=0)
    stack = Stack(settings, demo=False)

    def healthy(url: str) -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        stack.prepare()
        url = stack.info["api_url"]
        port = int(url.rsplit(":", 1)[1])
        assert port != taken
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.close()
        asyncio.run(stack.start())
        assert healthy(url)
        assert json.loads(settings.stack_file.read_text())["api_url"] == url
        api = next(c for c in stack.children if c.name == "api")
        api.stop()
        api.start()  # as the supervisor restarts a child that died
        deadline = time.monotonic() + 30
        while not healthy(url):
            assert api.proc is not None and api.proc.poll() is None, api.tail()
            assert time.monotonic() < deadline, api.tail()
            time.sleep(0.1)
        assert "address already in use" not in api.log_path.read_text().lower()
    finally:
        stack.stop()
        holder.close()


def test_acknowledge_links_survive_a_restart_of_the_stack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CHURNWATCH_ACK_LINK_SECRET, ``up`` makes one secret for its children's
    acknowledge links and keeps it in its home (owner-only): a second ``up`` in the same home
    (the alerts and the outbox are kept there) signs and checks links with the same one, so
    the links in mails already sent still work. (It once made a new one on every start.)"""
    for name in [k for k in os.environ if k.startswith("CHURNWATCH_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"

    def children_secret() -> str:
        # broker and Redis named (unreachable): prepare() starts neither, only settles settings
        settings = load_settings(home=home, api_port=0, scorer_metrics_port=0,
                                 notifier_metrics_port=0, kafka_bootstrap="127.0.0.1:1",
                                 redis_url="redis://127.0.0.1:1/0")
        stack = Stack(settings, demo=False)
        try:
            stack.prepare()
            return stack.env["CHURNWATCH_ACK_LINK_SECRET"]
        finally:
            stack.stop()

    first = children_secret()
    assert len(first) >= 32 and children_secret() == first
    assert (home / "ack-link.secret").stat().st_mode & 0o777 == 0o600
