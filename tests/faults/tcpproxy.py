"""A loopback TCP proxy for fault tests: forwards to a server and can cut the network.

``cut()`` resets every live connection and, until ``restore()``, either resets each new one
right after accepting it (``mode="refuse"``: clients see "connection reset" at once) or holds it
open without forwarding a byte (``mode="blackhole"``: clients wait for their own timeouts, as
behind a dropped route); ``restore()`` resets the held ones too and forwards again. The proxy
keeps its listening port throughout, so nothing else can take it.

Kafka clients connect to the *advertised* address from metadata, so a broker behind this proxy
must advertise the proxy's port (``start_broker(advertised_port=proxy.port)``).

Plain threads (two per connection), so it works beside any event loop in the test.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Literal

Mode = Literal["refuse", "blackhole"]
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


def _abort(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self._closed = threading.Event()

    def start(self) -> None:
        for src, dst in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True,
                             name="tcpproxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            _abort(self.client)
            _abort(self.upstream)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


class TcpProxy:
    """``127.0.0.1:<port>`` -> ``127.0.0.1:<target_port>``; use as a context manager or
    ``start()`` / ``stop()``."""

    def __init__(self, target_port: int, port: int = 0, host: str = "127.0.0.1",
                 connect_timeout: float = 5.0):
        self.host = host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._held: list[socket.socket] = []
        self._mode: Mode | None = None  # None: forwarding
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.accepted = 0  # connections forwarded
        self.refused = 0  # connections reset or held while cut
        self.cuts = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    @property
    def live(self) -> int:
        """Connections being forwarded now."""
        with self._lock:
            self._links = [link for link in self._links if not link.closed]
            return len(self._links)

    def start(self) -> TcpProxy:
        self._thread = threading.Thread(target=self._serve, daemon=True, name="tcpproxy-accept")
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                mode = self._mode
                if mode == "blackhole":
                    self._held.append(client)
                if mode is not None:
                    self.refused += 1
            if mode == "refuse":
                _abort(client)
            if mode is not None:
                continue
            try:
                upstream = socket.create_connection((self.host, self.target_port),
                                                    timeout=self.connect_timeout)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                if self._mode is not None:  # cut while we were connecting
                    link.close()
                    continue
                self._links.append(link)
                self.accepted += 1
            link.start()

    def cut(self, mode: Mode = "refuse") -> None:
        """Reset every live connection; new ones are reset (``refuse``) or held mute
        (``blackhole``) until :meth:`restore`."""
        with self._lock:
            self._mode = mode
            self.cuts += 1
            links, self._links = self._links, []
        for link in links:
            link.close()

    def restore(self) -> None:
        """Forward again; connections held by a blackhole are reset (clients reconnect)."""
        with self._lock:
            self._mode = None
            held, self._held = self._held, []
        for sock in held:
            _abort(sock)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            links, self._links = self._links, []
            held, self._held = self._held, []
        for link in links:
            link.close()
        for sock in held:
            _abort(sock)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
