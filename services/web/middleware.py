"""ASGI pieces around every route: request ids, body size limits, the generic 500."""

from __future__ import annotations

import json
import logging
import re
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.records.errors import QueryError

logger = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HEADER = "x-request-id"
REDIS_RETRY_AFTER_S = 2  # Retry-After of a 503 while Redis is unreachable


ErrorPage = Callable[[Request, int, str], Awaitable[Response | None]]


class RequestContext:
    """Gives every request an id (the caller's X-Request-ID if sane), echoes it in the answer,
    and refuses bodies over ``limit`` bytes with 413 on every route but the exempt ones (which
    enforce their own, larger limit while streaming). ``page``: as in
    :func:`install_error_handlers`, a refusal as a page for a person's address (the console)."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt: frozenset[str],
                 page: ErrorPage | None = None):
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.page = page

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      detail: str, rid: str) -> None:
        shown = await self.page(Request(scope), status, rid) if self.page else None
        if shown is None:
            await _refuse(status, detail, rid, send)
            return
        shown.headers[HEADER] = rid
        await shown(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER.encode(), b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        raw_path = scope.get("raw_path") or b""
        try:  # the server decodes bad bytes to U+FFFD, which would make two ids one
            unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            await self._refuse(scope, receive, send, 400, "the path is not valid UTF-8 once "
                               "percent-decoded; encode ids as UTF-8 before percent-encoding "
                               "them", rid)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER.encode(), rid.encode())]
            await send(message)

        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") or scope["path"] in self.exempt:
            await self.app(scope, receive, send_with_id)
            return
        encoding = dict(scope.get("headers") or []).get(b"content-encoding", b"").strip().lower()
        if encoding not in (b"", b"identity"):  # never read a compressed body as JSON
            await self._refuse(scope, receive, send_with_id, 415, "Content-Encoding is not "
                               "accepted on this route; send the body uncompressed", rid)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send_with_id, 413,
                                   f"request body is over {self.limit} bytes", rid)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)


async def _refuse(status: int, detail: str, rid: str, send: Send) -> None:
    body = json.dumps({"detail": detail, "request_id": rid}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def install_error_handlers(app: FastAPI, *, page: ErrorPage | None = None) -> None:
    """The app's error answers: Redis unavailable is a 503 with Retry-After, a
    :class:`~services.records.errors.QueryError` its own status, a validation error a 422 that
    does not echo the input, and anything unexpected a generic 500 with the request id (the
    log has the type and place, the answer never does). ``page``: for a request a person
    makes in a browser (the staff console), the error as a page (status, request id), or None
    for the JSON answer; it answers HTTP errors (404, 405...), validation errors (422), Redis
    unavailable (503, the page keeping the Retry-After) and the generic 500."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        shown = await page(request, exc.status_code, request_id(request)) if page else None
        if shown is not None:
            return shown
        return await http_exception_handler(request, exc)  # FastAPI's own JSON answer

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_unavailable(request: Request, exc: Exception) -> Response:
        # A handled exception (not the generic 500 handler, which Starlette re-raises to the
        # server, which then drops the keep-alive connection): 503, and the connection stays.
        logger.warning("Redis unavailable on %s %s: %s", request.method,
                       getattr(request.scope.get("route"), "path", "unmatched"), type(exc).__name__)
        shown = await page(request, 503, request_id(request)) if page else None
        if shown is not None:  # a person's address (a console page): a page, not JSON
            shown.headers["Retry-After"] = str(REDIS_RETRY_AFTER_S)
            return shown
        return JSONResponse(status_code=503, headers={"Retry-After": str(REDIS_RETRY_AFTER_S)},
                            content={"detail": "the state store (Redis) is unavailable; nothing "
                                     "was changed, retry later"})

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        shown = await page(request, 422, request_id(request)) if page else None
        if shown is not None:  # a person's address (a console page): no JSON for them
            return shown
        # FastAPI's default answer echoes each rejected value ("input"): a webhook secret that
        # is too short, a token in the wrong field. Where and why is enough to fix it.
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        rid = request_id(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        # Type and place only: messages and tracebacks may carry secrets (URLs, tokens).
        logger.error("unhandled %s at %s on %s %s", type(exc).__name__, where, request.method,
                     route, extra={"request_id": rid})
        shown = await page(request, 500, rid) if page else None
        if shown is not None:
            shown.headers[HEADER] = rid
            return shown
        content: dict[str, Any] = {"detail": "internal error; quote the request id when "
                                   "reporting it", "request_id": rid}
        return JSONResponse(status_code=500, content=content, headers={HEADER: rid})
