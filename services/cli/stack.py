"""``churnwatch up``: every part of churnwatch in the foreground, supervised.

Starts the broker and Redis (embedded unless configured), creates the topics, starts the
local mail/SMS/webhook sinks (unless real SMTP/SMS are configured), the API, a scorer worker,
the notifier and optionally the demo feed, each a child process with its own log under
``$CHURNWATCH_HOME/logs``. Writes ``$CHURNWATCH_HOME/stack.json`` once all are ready, prints
risk changes as they happen, restarts a child that dies (loudly), and on SIGTERM/Ctrl-C stops
everything in reverse order. Children die with the supervisor even if it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx

from services.common.embedded import (
    Server,
    die_with_parent,
    free_port,
    start_broker,
    start_redis,
    stop_process,
)
from services.common.exceptions import ConfigError
from services.common.kafka import ensure_topics, make_consumer
from services.common.logs import mask_url_credentials
from services.common.settings import Settings

DEMO_LIVE_DAYS = 60  # services.demo.feed.run_feed: the live window the demo replays

READY_TIMEOUT = 120.0
MAX_RESTARTS = 5


def read_stack_file(settings: Settings) -> dict[str, Any]:
    try:
        return json.loads(settings.stack_file.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise ConfigError(f"{settings.stack_file} not found: is `churnwatch up` running "
                          "(with the same CHURNWATCH_HOME)?") from None


def _say(msg: str) -> None:
    print(f"{datetime.now():%H:%M:%S}  {msg}", flush=True)


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    critical: bool = True
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", *self.args], env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent, start_new_session=True,
        )

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.proc, timeout)
        if self.log is not None:
            self.log.close()
            self.log = None

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("      | " + line[:300] for line in lines)


class Stack:
    def __init__(self, settings: Settings, *, demo: bool):
        self.settings = settings
        self.demo = demo
        self.servers: list[Server] = []
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.stopping = asyncio.Event()

    # start-up ---------------------------------------------------------------------------
    def _explicit(self, name: str) -> bool:
        """Did the user set this (CHURNWATCH_<NAME>), rather than leave the default?"""
        return name in self.settings.model_fields_set

    def prepare(self) -> None:
        s = self.settings
        logs = s.logs_dir
        logs.mkdir(parents=True, exist_ok=True)
        s.outbox_dir.mkdir(parents=True, exist_ok=True)
        s.stack_file.unlink(missing_ok=True)
        overrides: dict[str, Any] = {}
        if not self._explicit("kafka_bootstrap"):
            broker = start_broker(log_path=logs / "broker.log")
            self.servers.append(broker)
            overrides["kafka_bootstrap"] = broker.address
            if not self._explicit("kafka_idempotence"):
                overrides["kafka_idempotence"] = False  # Tansu memory storage: no InitProducerId
            _say(f"broker (embedded Tansu) on {broker.address}")
        if not self._explicit("redis_url"):
            redis = start_redis(log_path=logs / "redis.log")
            self.servers.append(redis)
            overrides["redis_url"] = f"redis://{redis.address}/0"
            _say(f"redis (embedded) on {redis.address}")
        if self.demo and not self._explicit("clock"):
            overrides["clock"] = "event"  # the demo tells its story in compressed event time
        if self.demo:
            # The demo replays its last DEMO_LIVE_DAYS compressed into a minute: those changes
            # are live news for the newcomer watching; its older backfill is imported history
            # (one "currently at risk" summary). Alerts settle for seconds, not minutes.
            for name, value in (("alert_max_age", DEMO_LIVE_DAYS * 86_400.0),
                                ("alert_settle", 10.0), ("alert_summary_after", 10.0)):
                if not self._explicit(name):
                    overrides[name] = value
        api_port = free_port(s.api_port)
        scorer_port = free_port(s.scorer_metrics_port)
        notifier_port = free_port(s.notifier_metrics_port)
        overrides.update(api_port=api_port, scorer_metrics_port=scorer_port,
                         notifier_metrics_port=notifier_port, api_host="127.0.0.1")
        sinks = None
        if not s.smtp_host or not s.sms_gateway_url:
            sinks = {"smtp": free_port(0), "sms": free_port(0), "webhook": free_port(0)}
            if not s.smtp_host:
                overrides.update(smtp_host="127.0.0.1", smtp_port=sinks["smtp"],
                                 smtp_security="none")
            if not s.sms_gateway_url:
                overrides["sms_gateway_url"] = f"http://127.0.0.1:{sinks['sms']}/sms"
        current = {k: getattr(s, k) for k in type(s).model_fields}
        env_settings = Settings(**{**current, **overrides})
        self.settings = env_settings
        self.env = {**os.environ, **env_settings.to_env()}
        base = "http://127.0.0.1"
        if sinks:
            self.children.append(Child(
                "sinks", ["sinks", "--smtp-port", str(sinks["smtp"]), "--sms-port", str(sinks["sms"]),
                          "--webhook-port", str(sinks["webhook"]), "--out", str(s.outbox_dir)],
                self.env, logs / "sinks.log"))
        self.children += [
            Child("api", ["api"], self.env, logs / "api.log", f"{base}:{api_port}/health"),
            Child("scorer", ["scorer"], self.env, logs / "scorer.log", f"{base}:{scorer_port}/health"),
            Child("notifier", ["notifier"], self.env, logs / "notifier.log",
                  f"{base}:{notifier_port}/health"),
        ]
        self.info = {
            "api_url": f"{base}:{api_port}",
            "kafka_bootstrap": env_settings.kafka_bootstrap,
            # never the password of a CHURNWATCH_REDIS_URL (stack.json is not a secret store)
            "redis_url": mask_url_credentials(env_settings.redis_url),
            "topics": {"events": s.topic_events, "risk_changes": s.topic_risk_changes,
                       "events_dlq": s.topic_events_dlq,
                       "notifications_dlq": s.topic_notifications_dlq},
            "metrics_urls": [f"{base}:{api_port}/metrics", f"{base}:{scorer_port}/metrics",
                             f"{base}:{notifier_port}/metrics"],
            "clock": env_settings.clock,
            "auth": "enabled" if s.auth_enabled else "disabled",
            "logs_dir": str(logs.resolve()),
            "outbox_dir": str(s.outbox_dir.resolve()),
            "smtp": f"{env_settings.smtp_host}:{env_settings.smtp_port}",
            "sms_gateway_url": env_settings.sms_gateway_url,
            "webhook_sink_url": f"{base}:{sinks['webhook']}/webhook" if sinks else None,
            "pid": os.getpid(),
        }

    async def start(self) -> None:
        await ensure_topics(self.settings)
        for child in self.children:
            child.start()
            _say(f"started {child.name} (pid {child.proc.pid if child.proc else '?'}), "
                 f"log: {child.log_path}")
        await self._wait_ready()
        self.info["started_at"] = datetime.now().astimezone().isoformat()
        tmp = self.settings.stack_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.info, indent=2) + "\n")
        tmp.replace(self.settings.stack_file)
        if self.demo:
            key = next((k.secret.get_secret_value() for k in self.settings.keys
                        if k.allows("ingest")), None)
            args = ["demo", "--api-url", self.info["api_url"]]
            if key:
                args += ["--api-key", key]
            demo = Child("demo", args, self.env, self.settings.logs_dir / "demo.log", critical=False)
            self.children.append(demo)
            demo.start()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = [c for c in self.children if c.health_url]
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for child in list(pending):
                    if child.proc is not None and child.proc.poll() is not None:
                        raise RuntimeError(f"{child.name} exited with code {child.proc.returncode} "
                                           f"while starting:\n{child.tail()}")
                    try:
                        r = await client.get(child.health_url)  # type: ignore[arg-type]
                        if r.status_code == 200:
                            pending.remove(child)
                            _say(f"{child.name} is ready")
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    names = ", ".join(c.name for c in pending)
                    raise RuntimeError(f"not ready after {READY_TIMEOUT:.0f} s: {names}")
                if pending:
                    await asyncio.sleep(0.25)

    # running ----------------------------------------------------------------------------
    async def supervise(self) -> None:
        while not self.stopping.is_set():
            for child in self.children:
                if child.proc is None or child.proc.poll() is None:
                    continue
                code = child.proc.returncode
                if not child.critical:
                    level = "finished" if code == 0 else f"EXITED WITH CODE {code}"
                    _say(f"{child.name} {level}")
                    if code:
                        print(child.tail(), flush=True)
                    child.proc = None
                    continue
                _say(f"!!! {child.name} DIED with exit code {code}; last lines of {child.log_path}:")
                print(child.tail(), file=sys.stderr, flush=True)
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > MAX_RESTARTS:
                    _say(f"!!! {child.name} keeps dying; stopping the stack")
                    self.stopping.set()
                    return
                child.stop()
                child.start()
                _say(f"restarted {child.name} (pid {child.proc.pid if child.proc else '?'})")
            try:
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            except TimeoutError:
                pass

    async def watch_risk_changes(self) -> None:
        consumer = make_consumer(self.settings, self.settings.topic_risk_changes, group_id=None,
                                 auto_offset_reset="latest")
        try:
            await consumer.start()
        except Exception as exc:
            _say(f"(cannot follow risk changes: {exc})")
            return
        shown = 0
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=200)
                for records in batch.values():
                    for rec in records:
                        try:
                            data = json.loads(rec.value)["data"]
                        except (ValueError, KeyError, TypeError):
                            continue
                        shown += 1
                        if shown <= 400 or shown % 50 == 0:
                            arrow = {"high": "▲", "medium": "▲" if data["previous_tier"] == "low" else "▼",
                                     "low": "▼"}[data["tier"]]
                            reason = data["reasons"][0]["text"] if data.get("reasons") else ""
                            _say(f"{arrow} {data['customer_id']:<14} {data.get('store_id') or '':<16} "
                                 f"{data['previous_tier']:>6} → {data['tier']:<6} "
                                 f"score {data['score']:.2f}  {reason}")
        finally:
            await consumer.stop()

    async def report(self) -> None:
        headers = {}
        key = next((k.secret.get_secret_value() for k in self.settings.keys if k.allows("read")), None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        outbox = self.settings.outbox_dir
        async with httpx.AsyncClient(timeout=3.0, headers=headers) as client:
            while not self.stopping.is_set():
                try:
                    await asyncio.wait_for(self.stopping.wait(), 15.0)
                    return
                except TimeoutError:
                    pass
                try:
                    st = (await client.get(f"{self.info['api_url']}/v1/status")).json()
                    mails = len(list((outbox / "mail").glob("*.eml"))) if (outbox / "mail").exists() else 0
                    sms = _count_lines(outbox / "sms.ndjson")
                    _say(f"status: {st.get('events_accepted_total')} events accepted, "
                         f"{st.get('events_scored_total')} scored, lag {st.get('scorer_lag')}, "
                         f"{st.get('risk_changes_total')} risk changes; delivered "
                         f"{mails} e-mails, {sms} SMS (in {outbox})")
                except Exception as exc:  # keep reporting; the API may be restarting
                    _say(f"status unavailable: {exc}")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                _say(f"stopping {child.name}")
            child.stop()
        for server in reversed(self.servers):
            server.stop()
        self.settings.stack_file.unlink(missing_ok=True)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


async def _run(stack: Stack) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stack.stopping.set)
    try:
        await stack.start()
    except Exception as exc:
        _say(f"!!! churnwatch failed to start: {exc}")
        return 1
    info = stack.info
    print(
        "\n  churnwatch is up.\n"
        f"    API            {info['api_url']}   (docs: {info['api_url']}/docs)\n"
        f"    stack file     {stack.settings.stack_file.resolve()}\n"
        f"    logs           {info['logs_dir']}\n"
        f"    notifications  {info['outbox_dir']}  (mail/*.eml, sms.ndjson)\n"
        f"    clock          {info['clock']}   auth: {info['auth']}\n"
        f"    {'demo feed posting a salon chain; tier changes appear below' if stack.demo else 'no demo feed (post events to /v1/events)'}\n"
        "  Ctrl-C stops everything.\n", flush=True)
    tasks = [asyncio.create_task(t) for t in (stack.supervise(), stack.watch_risk_changes(),
                                               stack.report())]
    await stack.stopping.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def run_stack(settings: Settings, *, demo: bool) -> int:
    stack = Stack(settings, demo=demo)
    code = 1
    try:
        stack.prepare()
        code = asyncio.run(_run(stack))
    except KeyboardInterrupt:
        code = 0
    finally:
        _say("shutting down")
        stack.stop()
        _say("stopped")
    return code
