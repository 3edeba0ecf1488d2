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
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import IO, Any

import httpx
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError

from services.common.actions import reasons_why
from services.common.embedded import (
    Server,
    die_with_parent,
    free_port,
    listening_socket,
    port_is_free,
    start_broker,
    start_redis,
    stop_process,
)
from services.common.exceptions import ChurnwatchError, ConfigError
from services.common.kafka import ensure_topics, make_consumer
from services.common.logs import mask_url_credentials
from services.common.pseudonym import UNKEYED, load_key, pseudonym
from services.common.redisconn import make_redis
from services.common.riskchange import RiskChange, before_alerts, holds_tier
from services.common.runtime import STOP_SIGNALS, stop_on_signals
from services.common.settings import ApiKey, Settings
from services.demo.people import DEMO_STORE, manager_email, manager_id

DEMO_LIVE_DAYS = 60  # services.demo.feed.run_feed: the live window the demo replays

READY_TIMEOUT = 120.0
MAX_RESTARTS = 5
PORT_MOVES = 3  # times `up` moves a starting child whose port another process took


def read_stack_file(settings: Settings) -> dict[str, Any]:
    try:
        return json.loads(settings.stack_file.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise ConfigError(f"{settings.stack_file} not found: is `churnwatch up` running "
                          "(with the same CHURNWATCH_HOME)?") from None


def _say(msg: str) -> None:
    print(f"{datetime.now():%H:%M:%S}  {msg}", flush=True)


def change_line(data: dict[str, Any], name: str) -> str:
    """One tier change as ``churnwatch up`` prints it: arrow, customer, store, tiers, score and
    why — the reason an SMS or an at-risk card gives (:func:`reasons_why`). When a business rule raised
    the tier (or hysteresis held it), the score alone reads low for it: ``by rule`` /
    ``held`` says so, and the reason shown is the customer's, not "Raised to medium by a
    business rule"."""
    tier, before = data["tier"], data["previous_tier"]
    arrow = {"high": "▲", "medium": "▲" if before == "low" else "▼", "low": "▼"}[tier]
    reasons = [r for r in data.get("reasons") or [] if isinstance(r, dict)]
    action = data.get("suggested_action")
    told = reasons_why(reasons, str(action.get("code") or "") if isinstance(action, dict) else "", 1)
    why = str((told or reasons or [{}])[0].get("text", ""))
    lead = reasons[0] if reasons and holds_tier(reasons[0]) else None
    note = "" if lead is None else " by rule" if lead.get("code") == "tier_raised_by_rule" \
        else " held"
    return (f"{arrow} {name:<14} {data.get('store_id') or '':<16} {before:>6} → {tier:<6} "
            f"score {float(data['score']):.2f}{note}  {why}")


def catching_up(data: dict[str, Any], now_s: float, max_age_s: float) -> bool:
    """The change (a risk change's ``data``) is history the stack catches up on: staff are not
    alerted about it one by one (:func:`~services.common.riskchange.before_alerts`, the
    notifier's own test; one go-live summary instead). ``churnwatch up`` counts such changes
    rather than printing each: the demo's first seconds were dozens of one-visit customers
    going to medium and back within the second as their own history arrived. A change that
    does not parse is printed, not counted."""
    try:
        change = RiskChange.model_validate(data)
    except ValidationError:
        return False
    return before_alerts(change, int(now_s * 1000), max_age_s)


def history_line(count: int, max_age_s: float) -> str:
    """What ``churnwatch up`` prints for the tier changes :func:`catching_up` left out."""
    days = max_age_s / 86_400
    age = f"{days:g} days" if days >= 1 else f"{max_age_s / 3600:g} hours"
    return (f"  … {count:,} tier change{'s' if count != 1 else ''} caused more than {age} ago "
            "not shown so far (history being caught up on: staff get one summary of who is at "
            "risk now, not an alert per past change)")


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    critical: bool = True
    # the variable of env naming the port it listens on, where `up` chose that port itself
    # (free_port): another process may take it before the child binds it
    port_env: str | None = None
    # file descriptors it inherits (the API: the listening socket `up` bound for it)
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    log_start: int = 0  # where this start's lines begin in log_path
    restarts: list[float] = field(default_factory=list)
    port_moves: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.log_start = self.log.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", *self.args], env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent, start_new_session=True, pass_fds=self.pass_fds,
        )

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.proc, timeout)
        if self.log is not None:
            self.log.close()
            self.log = None

    def lost_its_port(self) -> bool:
        """Did this start fail because its port was taken (after `up` found it free)?"""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return "address already in use" in text.lower()

    def move_port(self) -> tuple[int, int]:
        """Stop the child and give it another free port: (old, new)."""
        assert self.port_env is not None
        old = int(self.env[self.port_env])
        new = free_port(0)
        self.stop()
        self.env = {**self.env, self.port_env: str(new)}
        if self.health_url:
            self.health_url = self.health_url.replace(f":{old}/", f":{new}/")
        self.port_moves += 1
        return old, new

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("      | " + line[:300] for line in lines)


def status_keys(keys: Sequence[ApiKey]) -> list[ApiKey]:
    """The keys the status line reads ``/v1/status`` with: a deployment-wide one (an admin key
    of the default tenant, bound to no store) if there is one; else a read key per tenant
    (one bound to no store where the tenant has one), whose counters the line adds up. With
    only tenant-bound keys the line read the first key's tenant and said nothing of it: a
    stack fed by two tenants showed one tenant's events as everything accepted."""
    wide = next((k for k in keys if k.deployment_wide), None)
    if wide is not None:
        return [wide]
    per_tenant: dict[str, ApiKey] = {}
    for k in keys:
        if k.allows("read") and (k.tenant not in per_tenant
                                 or (per_tenant[k.tenant].stores is not None and k.stores is None)):
            per_tenant[k.tenant] = k
    return [per_tenant[t] for t in sorted(per_tenant)]


def status_line(statuses: Sequence[tuple[ApiKey | None, dict[str, Any]]], mails: int, sms: int,
                outbox: Path) -> str:
    """The stack's status line from ``/v1/status`` as read with each of :func:`status_keys`
    (None: no authentication): counters added up over tenants, the topic's lag once, and
    whose counters they are when not the whole deployment's."""
    def total(name: str) -> int:
        return sum(int(st.get(name) or 0) for _, st in statuses)

    lag = max((int(st.get("scorer_lag") or 0) for _, st in statuses), default=0)
    bound = [k for k, _ in statuses if k is not None and not k.deployment_wide]
    whose = ""
    if bound:
        names = ", ".join(f"{k.tenant}{'' if k.stores is None else ' (some stores)'}" for k in bound)
        whose = f" (tenant{'s' if len(bound) > 1 else ''} {names})"
    return (f"status{whose}: {total('events_accepted_total')} events accepted, "
            f"{total('events_scored_total')} scored, lag {lag}, "
            f"{total('risk_changes_total')} risk changes; delivered "
            f"{mails} e-mail{'' if mails == 1 else 's'}, {sms} SMS (in {outbox})")


def _home_secret(path: Path) -> str:
    """A random secret kept in the stack's home (mode 0600), made on the first ``up``: the
    acknowledge links in mails already sent keep working after a restart (the alerts, the
    outbox and the state are kept there too)."""
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if len(kept) >= 32:
        return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return secret


def _scorer_names(n: int) -> list[str]:
    """The scorer children's names (and log files): ``scorer``, then ``scorer-2`` ..."""
    return ["scorer", *(f"scorer-{i}" for i in range(2, n + 1))]


class Stack:
    def __init__(self, settings: Settings, *, demo: bool):
        self.settings = settings
        self.demo = demo
        self.servers: list[Server] = []
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.stopping = asyncio.Event()
        self.redis_restarts: list[float] = []
        self.failed = False  # stopped because a part kept dying: exit 1
        # the API's port, bound here and handed to it (and to it again after a restart)
        self.api_socket: socket.socket | None = None

    # start-up ---------------------------------------------------------------------------
    def _explicit(self, name: str) -> bool:
        """Did the user set this (CHURNWATCH_<NAME>), rather than leave the default?"""
        return name in self.settings.model_fields_set

    def prepare(self) -> None:
        s = self.settings
        if s.redis_cluster and not self._explicit("redis_url"):
            raise ConfigError("CHURNWATCH_REDIS_CLUSTER=true needs CHURNWATCH_REDIS_URL=redis://"
                              "host:port naming a node of your cluster: the embedded Redis of "
                              "`up` is a single node")
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
            redis = self._start_redis()
            self.servers.append(redis)
            overrides["redis_url"] = f"redis://{redis.address}/0"
            _say(f"redis (embedded) on {redis.address}, data in {self.redis_dir}")
            if not self._explicit("kafka_bootstrap"):
                # The embedded broker starts with empty topics, while Redis kept the offsets the
                # scorer had processed on the previous broker's topics: they would hide the new
                # topics' lag (and the scorer's progress) until the new offsets passed them.
                self._forget_processed_offsets(redis, s)
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
        # bound here, not only found free: a port found free can be taken by any process
        # before the API binds it (seen in CI: `make run` beside a soak and a bench, its
        # start failing with "address already in use")
        self.api_socket = listening_socket(s.api_port)
        api_port = int(self.api_socket.getsockname()[1])
        scorer_port = free_port(s.scorer_metrics_port)
        # more scorer processes: one metrics/health port each (the first is the setting's)
        scorer_ports = [scorer_port]
        while len(scorer_ports) < s.scorer_processes:
            if (port := free_port(0)) not in (api_port, *scorer_ports):
                scorer_ports.append(port)
        if s.scorer_processes > s.topic_partitions:
            _say(f"warning: {s.scorer_processes} scorer processes for {s.topic_partitions} events "
                 f"partitions: {s.scorer_processes - s.topic_partitions} will have nothing to do "
                 "(raise CHURNWATCH_TOPIC_PARTITIONS)")
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
        if s.ack_link_secret is None:  # every child signs/checks acknowledge links alike
            overrides["ack_link_secret"] = _home_secret(s.home / "ack-link.secret")
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
            Child("api", ["api"],
                  {**self.env, "CHURNWATCH_API_SOCKET_FD": str(self.api_socket.fileno())},
                  logs / "api.log", f"{base}:{api_port}/health",
                  pass_fds=(self.api_socket.fileno(),)),
            *(Child(name, ["scorer"], {**self.env, "CHURNWATCH_SCORER_METRICS_PORT": str(port)},
                    logs / f"{name}.log", f"{base}:{port}/health",
                    port_env="CHURNWATCH_SCORER_METRICS_PORT")
              for name, port in zip(_scorer_names(len(scorer_ports)), scorer_ports, strict=True)),
            Child("notifier", ["notifier"], dict(self.env), logs / "notifier.log",
                  f"{base}:{notifier_port}/health", port_env="CHURNWATCH_NOTIFIER_METRICS_PORT"),
        ]
        self.info = {
            "api_url": f"{base}:{api_port}",
            "kafka_bootstrap": env_settings.kafka_bootstrap,
            # never the password of a CHURNWATCH_REDIS_URL (stack.json is not a secret store)
            "redis_url": mask_url_credentials(env_settings.redis_url),
            "topics": {"events": s.topic_events, "risk_changes": s.topic_risk_changes,
                       "events_dlq": s.topic_events_dlq,
                       "notifications_dlq": s.topic_notifications_dlq},
            "metrics_urls": [f"{base}:{api_port}/metrics",
                             *(f"{base}:{port}/metrics" for port in scorer_ports),
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

    @property
    def redis_dir(self) -> Path:
        return self.settings.home / "redis"

    def _start_redis(self, port: int = 0) -> Server:
        """The embedded Redis persists to an append-only file in ``$CHURNWATCH_HOME/redis``
        (fsync every second), so a Redis that dies, or ``up`` stopped and started again,
        keeps every customer's state and the counters."""
        return start_redis(port=port, log_path=self.settings.logs_dir / "redis.log",
                           appendonly=True, data_dir=self.redis_dir, appendfsync="everysec")

    @staticmethod
    def _forget_processed_offsets(redis: Server, s: Settings) -> None:
        import redis as redis_sync

        from services.common.redisconn import Keys

        client = redis_sync.Redis(host="127.0.0.1", port=redis.port, socket_timeout=5.0)
        deadline = time.monotonic() + 30
        while True:  # a large AOF takes a moment to load ("LOADING")
            try:
                keys = Keys(s.redis_prefix)
                client.delete(keys.offsets(s.topic_events), keys.scored(s.topic_events))
                break
            except redis_sync.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            finally:
                client.close()

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
            # the feed also writes the chain's stores, staff and profiles: an admin key of the
            # default tenant when there is one, else any key that may ingest
            ranked = sorted((k for k in self.settings.keys if k.allows("ingest")),
                            key=lambda k: not (k.allows("admin") and k.tenant == "default"
                                               and k.stores is None))
            key = ranked[0].secret.get_secret_value() if ranked else None
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
                        if child.port_env and child.port_moves < PORT_MOVES and \
                                child.lost_its_port():
                            # another process bound the port between `up` finding it free
                            # and the child binding it (parallel test runs, busy machines)
                            old, new = child.move_port()
                            self.info["metrics_urls"] = [
                                u.replace(f":{old}/", f":{new}/") for u in self.info["metrics_urls"]]
                            _say(f"{child.name}: port {old} was taken meanwhile; "
                                 f"starting it on {new}")
                            child.start()
                            continue
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
    async def _check_servers(self) -> None:
        """The embedded broker and Redis are supervised too: a death is reported like any
        child's; Redis is restarted on the same port and data directory (its AOF brings the
        state back, the services reconnect by themselves). The embedded broker keeps its
        topics in memory, so restarting it would silently lose every event not yet scored:
        its death stops the stack instead, loudly."""
        for i, server in enumerate(self.servers):
            code = server.proc.poll()
            if code is None:
                continue
            log = self.settings.logs_dir / f"{server.name}.log"
            _say(f"!!! {server.name} DIED with exit code {code}; last lines of {log}:")
            print(Child(server.name, [], {}, log).tail(), file=sys.stderr, flush=True)
            server.stop()
            if server.name != "redis":
                _say(f"!!! the embedded {server.name} kept its topics in memory and cannot be "
                     "restarted without losing them; stopping the stack (start it again)")
                self.failed = True
                self.stopping.set()
                return
            now = time.monotonic()
            self.redis_restarts = [t for t in self.redis_restarts if now - t < 60] + [now]
            if len(self.redis_restarts) > MAX_RESTARTS:
                _say("!!! redis keeps dying; stopping the stack")
                self.failed = True
                self.stopping.set()
                return
            deadline = now + 30
            while True:  # the same port: every service's CHURNWATCH_REDIS_URL names it
                try:
                    if not port_is_free(server.port):
                        raise OSError(f"port {server.port} still taken")
                    restarted = await asyncio.to_thread(self._start_redis, server.port)
                    break
                except (OSError, RuntimeError, TimeoutError) as exc:
                    if time.monotonic() > deadline:
                        _say(f"!!! cannot restart redis on port {server.port}: {exc}; stopping")
                        self.failed = True
                        self.stopping.set()
                        return
                    await asyncio.sleep(0.5)
            self.servers[i] = restarted
            _say(f"restarted redis (pid {restarted.proc.pid}) on {restarted.address}, "
                 f"data from {self.redis_dir}")

    async def supervise(self) -> None:
        while not self.stopping.is_set():
            await self._check_servers()
            if self.stopping.is_set():
                return
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
                    self.failed = True
                    self.stopping.set()
                    return
                child.stop()
                child.start()
                _say(f"restarted {child.name} (pid {child.proc.pid if child.proc else '?'})")
            try:
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            except TimeoutError:
                pass

    async def announce_console(self) -> None:
        """Demo only: once the feed has written the chain's people, ask the console for the
        demo store manager's sign-in link — through the real e-mail flow, so it lands in the
        local outbox — and print it."""
        email = manager_email(DEMO_STORE)
        api = self.info["api_url"]
        admin = next((k.secret.get_secret_value() for k in self.settings.keys
                      if k.allows("admin") and k.tenant == "default"), None)
        if self.settings.auth_enabled and admin is None:
            return  # the demo could not write staff either
        headers = {"Authorization": f"Bearer {admin}"} if admin else {}
        mail_dir = self.settings.outbox_dir / "mail"
        async with httpx.AsyncClient(base_url=api, timeout=5.0) as client:
            for _ in range(240):  # the feed writes the people before its first event
                if self.stopping.is_set():
                    return
                try:
                    found = await client.get(f"/v1/staff/{manager_id(DEMO_STORE)}",
                                             headers=headers)
                    if found.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
            else:
                return
            before = set(mail_dir.glob("*.eml")) if mail_dir.is_dir() else set()
            try:
                page = await client.get("/console/sign-in")
                await client.post("/console/sign-in/email",
                                  data={"email": email, "csrf": page.cookies.get("cw_csrf", "")})
            except httpx.HTTPError:
                return
        for _ in range(80):
            for path in sorted(set(mail_dir.glob("*.eml")) - before):
                mail = message_from_bytes(path.read_bytes(), policy=policy.default)
                body = mail.get_body(("plain",))  # type: ignore[attr-defined]
                text = f"{mail['To']}\n{body.get_content() if body is not None else ''}"
                link = re.search(r"(http://\S+/console/sign-in/link\?token=[A-Za-z0-9_=-]+)", text)
                if email in text and link:
                    _say(f"console sign-in for the demo's store manager ({email}): "
                         f"{link.group(1)}   (works once; more: {api}/console)")
                    return
            await asyncio.sleep(0.25)

    async def watch_risk_changes(self) -> None:
        consumer = make_consumer(self.settings, self.settings.topic_risk_changes, group_id=None,
                                 auto_offset_reset="latest")
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            _say(f"(cannot follow risk changes: {exc})")
            return
        shown = 0
        past, told, told_at = 0, 0, 0.0  # history's changes, counted, not printed one by one
        max_age = self.settings.alert_max_age
        who = await self._customer_label()
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=200)
                if past > told and (not batch or time.monotonic() - told_at >= 5.0):
                    _say(history_line(past, max_age))
                    told, told_at = past, time.monotonic()
                for records in batch.values():
                    for rec in records:
                        try:
                            data = json.loads(rec.value)["data"]
                        except (ValueError, KeyError, TypeError):
                            continue
                        if catching_up(data, time.time(), max_age):
                            past += 1
                            continue
                        shown += 1
                        if shown <= 400 or shown % 50 == 0:
                            try:
                                _say(change_line(data, who(data)))
                            except (KeyError, TypeError, ValueError):
                                continue
        finally:
            await consumer.stop()

    async def _customer_label(self) -> Callable[[dict[str, Any]], str]:
        """How the tier-change lines name a customer: by id for the demo's made-up customers,
        otherwise by their log token (services/common/pseudonym.py): this output is a log too."""
        if self.demo:
            return lambda data: str(data.get("customer_id"))
        key: bytes | None = None
        redis = make_redis(self.settings)
        try:
            key = await load_key(self.settings, redis)
        except (RedisError, OSError) as exc:  # Redis unreachable: no ids, no tokens
            _say(f"(cannot read the pseudonym key: {type(exc).__name__}; customers shown as "
                 f"{UNKEYED})")
        finally:
            await redis.aclose()

        def label(data: dict[str, Any]) -> str:
            if key is None:
                return UNKEYED
            return pseudonym(key, str(data.get("tenant_id") or "default"),
                             str(data.get("customer_id")))

        return label

    async def report(self) -> None:
        keys: list[ApiKey | None] = (list(status_keys(self.settings.keys))
                                     if self.settings.keys else [None])
        outbox = self.settings.outbox_dir
        last: str | None = None
        failing = False
        async with httpx.AsyncClient(timeout=3.0) as client:
            while not self.stopping.is_set():
                try:
                    await asyncio.wait_for(self.stopping.wait(), 15.0)
                    return
                except TimeoutError:
                    pass
                try:
                    statuses: list[tuple[ApiKey | None, dict[str, Any]]] = []
                    for key in keys:
                        headers = ({} if key is None else
                                   {"Authorization": f"Bearer {key.secret.get_secret_value()}"})
                        st = (await client.get(f"{self.info['api_url']}/v1/status",
                                               headers=headers)).json()
                        if not isinstance(st, dict):
                            raise ValueError(f"/v1/status answered {st!r:.60}")
                        statuses.append((key, st))
                    mails = len(list((outbox / "mail").glob("*.eml"))) if (outbox / "mail").exists() else 0
                    sms = _count_lines(outbox / "sms.ndjson")
                    failing = False
                    line = status_line(statuses, mails, sms, outbox)
                    if line == last:  # quiet while nothing happens
                        continue
                    last = line
                    _say(line)
                # keep reporting; the API may be restarting (or answer an error page)
                except (httpx.HTTPError, ValueError, OSError) as exc:
                    if not failing:  # once per outage, not every 15 s
                        _say(f"status unavailable: {exc}")
                    failing = True

    def stop(self) -> None:
        self.settings.stack_file.unlink(missing_ok=True)  # first: nobody should find a dying stack
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                _say(f"stopping {child.name}")
            child.stop()
        for server in reversed(self.servers):
            server.stop()
        if self.api_socket is not None:
            self.api_socket.close()


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


async def _run(stack: Stack) -> int:
    stop_on_signals(asyncio.get_running_loop(), stack.stopping.set)
    try:
        await stack.start()
    # the ways a start fails on purpose (a child exits, not ready in time, no broker);
    # anything else is a bug and keeps its traceback (run_stack stops the stack either way)
    except (RuntimeError, ChurnwatchError, KafkaError, OSError, httpx.HTTPError) as exc:
        _say(f"!!! churnwatch failed to start: {exc}")
        return 1
    info = stack.info
    s = stack.settings
    rules = (str(s.rules) if s.rules else s.business_type) + "".join(
        f", {tenant}: {kind}" for tenant, kind in s.business_types.items())
    api = info["api_url"]
    sample = "demo-ana-regular" if stack.demo else "<customer_id>"
    auth = "" if not s.auth_enabled else " -H 'Authorization: Bearer <a read key>'"
    print(
        "\n  churnwatch is up.\n"
        f"    API            {api}   (docs: {api}/docs)\n"
        f"    stack file     {s.stack_file.resolve()}\n"
        f"    logs           {info['logs_dir']}\n"
        f"    notifications  {info['outbox_dir']}  (mail/*.eml, sms.ndjson; development "
        "sinks only: never in production)\n"
        f"    staff console  {api}/console\n"
        f"    clock          {info['clock']}   auth: {info['auth']}   rules: {rules}\n"
        f"    {'demo feed posting a salon chain; tier changes appear below' if stack.demo else 'no demo feed (post events to /v1/events)'}\n"
        "  Try it from another terminal:\n"
        f"    curl -s{auth} {api}/v1/status\n"
        f"    curl -s{auth} {api}/v1/customers/{sample}/risk\n"
        f"    API=$({_self_command(s)} stack api_url)   # the same address, for the README's commands\n"
        "  Ctrl-C stops everything.\n", flush=True)
    jobs = [stack.supervise(), stack.watch_risk_changes(), stack.report()]
    if stack.demo:
        jobs.append(stack.announce_console())
    tasks = [asyncio.create_task(t) for t in jobs]
    await stack.stopping.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return 1 if stack.failed else 0


def _self_command(s: Settings) -> str:
    """How to run this churnwatch again from this directory (it is not on PATH after
    ``make install``), with the CHURNWATCH_HOME it needs to find this stack."""
    exe = sys.argv[0] if Path(sys.argv[0]).name == "churnwatch" else ".venv/bin/churnwatch"
    home = f"CHURNWATCH_HOME={shlex.quote(str(s.home))} " \
        if s.home != type(s).model_fields["home"].default else ""
    return home + shlex.quote(exe)


def run_stack(settings: Settings, *, demo: bool) -> int:
    stack = Stack(settings, demo=demo)
    code = 1
    try:
        stack.prepare()
        code = asyncio.run(_run(stack))
    except KeyboardInterrupt:
        code = 0
    finally:
        # shutting down is already what every further signal asks for (a SIGTERM here
        # must not kill us and leave stack.json and orphans behind)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _say("shutting down")
        stack.stop()
        _say("stopped")
    return code
