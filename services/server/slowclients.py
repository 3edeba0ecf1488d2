"""Read deadlines for the API's HTTP connections: slow clients are answered 408 and dropped.

uvicorn has no header or body read timeout (its keep-alive timer is cancelled by the first
byte of a request, so a client trickling a byte now and then holds a connection for ever;
see uvicorn issue #157, still open), and ASGI middleware runs only once the headers are
complete. So the deadlines live in the protocol: :func:`guarded_protocol` subclasses uvicorn's
httptools protocol with

- a **header deadline** (``CHURNWATCH_API_HEADER_TIMEOUT_SECONDS``) from the moment a
  connection opens (or, on a kept-alive connection, the next request's first byte arrives)
  until the request's headers are complete (an idle kept-alive connection is uvicorn's
  keep-alive timeout's business);
- a **body deadline** (``CHURNWATCH_API_BODY_TIMEOUT_SECONDS``) from the headers until the
  whole body has arrived;
- a **cap on slow connections per client address**
  (``CHURNWATCH_API_MAX_SLOW_CONNECTIONS_PER_CLIENT``): a connection counts as slow while it has
  been receiving a request for more than a second; a client with that many slow connections
  gets its next connection answered 429 and closed at once.

An expired deadline answers ``408 Request Timeout`` (``Connection: close``) when no answer has
started yet, and closes the connection either way; the application sees a disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)
SLOW_AFTER_S = 1.0  # a request still being received after this long makes its connection "slow"


def _answer(transport: asyncio.Transport, status: bytes, text: str) -> None:
    body = text.encode()
    transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n"
                    b"connection: close\r\n\r\n" + body)


def guarded_protocol(*, header_timeout: float, body_timeout: float,
                     max_slow_per_client: int) -> type[HttpToolsProtocol]:
    """An httptools protocol class with the deadlines above (0 turns a limit off)."""
    receiving: dict[str, set[Any]] = {}  # client address -> its connections receiving a request

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _receiving_since: float | None = None
        _address: str = ""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._address = self.client[0] if self.client else ""
            if max_slow_per_client and self._address:
                now = time.monotonic()
                slow = sum(1 for c in receiving.get(self._address, ())
                           if c._receiving_since is not None
                           and now - c._receiving_since > SLOW_AFTER_S)
                if slow >= max_slow_per_client:
                    logger.warning("refused a connection: %d slow connections from one client "
                                   "(CHURNWATCH_API_MAX_SLOW_CONNECTIONS_PER_CLIENT)", slow)
                    _answer(transport, b"429 Too Many Requests",
                            f"{slow} unfinished requests from your address; finish or close them")
                    transport.close()
                    return
            self._start_receiving(header_timeout, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_receiving()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._stop_receiving()
            self._start_receiving(body_timeout, "body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._stop_receiving()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._receiving_since is None:  # the next request on a kept-alive connection
                self._start_receiving(header_timeout, "headers")

        def _start_receiving(self, timeout: float, what: str) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._receiving_since = time.monotonic()
            receiving.setdefault(self._address, set()).add(self)
            if timeout > 0:
                self._deadline = self.loop.call_later(timeout, self._expired, what, timeout)

        def _stop_receiving(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._receiving_since = None
            mine = receiving.get(self._address)
            if mine is not None:
                mine.discard(self)
                if not mine:
                    del receiving[self._address]

        def _expired(self, what: str, timeout: float) -> None:
            self._deadline = None
            self._stop_receiving()
            if self.transport.is_closing():
                return
            logger.warning("closed a connection: request %s not received within %.0f s", what,
                           timeout)
            if self.cycle is None or not self.cycle.response_started:
                _answer(self.transport, b"408 Request Timeout",
                        f"request {what} not received within {timeout:.0f} s")
            self.transport.close()

    return GuardedProtocol


__all__ = ["guarded_protocol"]
