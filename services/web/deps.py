"""Dependencies of the HTTP routes: the shared resources, API-key scopes and rate limits.

The resources name the publisher and the status reader by what the routes need of them
(:class:`Publisher`, :class:`StatusSource`), so this library imports no service package:
``services/server/app.py`` builds them from ``services.ingest.publisher`` and
``services.api.status``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request, status
from pydantic import SecretStr
from redis.asyncio import Redis

from services.common.events import AnyEvent
from services.common.profiles import ProfileStore
from services.common.redisconn import Keys
from services.common.settings import ApiKey, Settings
from services.scoring.engine import Engine
from services.web.cache import TtlCache
from services.web.metrics import ApiMetrics
from services.web.ratelimit import RateLimiter


class Publisher(Protocol):
    """What the routes need of the event publisher (``services.ingest.publisher``)."""

    last_error: str | None

    @property
    def connected(self) -> bool: ...

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes | None]], *,
                      headers: list[tuple[str, bytes]] | None = None) -> None: ...

    async def publish_envelopes(self, topic: str, records: Sequence[tuple[bytes, bytes]], *,
                                headers: list[tuple[str, bytes]] | None = None) -> int: ...

    async def close(self) -> None: ...


class Intake(Protocol):
    """What a route needs to put events of its own on the events topic as POST /v1/events
    does (``services.ingest.routes.IngestState``: published, then counted accepted)."""

    async def accept(self, res: Resources, events: Sequence[AnyEvent],
                     records: Sequence[tuple[bytes, bytes]], *, store_bound: bool) -> None: ...


class StatusSource(Protocol):
    """What the status route needs of the pipeline counters (``services.api.status``)."""

    async def read(self, tenant: str | None = None) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclass
class Resources:
    settings: Settings
    redis: Redis
    keys: Keys
    publisher: Publisher
    engine: Engine
    status: StatusSource
    metrics: ApiMetrics
    intake: Intake
    profiles: ProfileStore | None = None
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))
    cache: TtlCache = field(default_factory=lambda: TtlCache(0))


def get_resources(request: Request) -> Resources:
    return request.app.state.resources  # type: ignore[no-any-return]


Res = Annotated[Resources, Depends(get_resources)]
_ANONYMOUS = ApiKey(name="anonymous", secret=SecretStr(""),
                    scopes=frozenset({"admin"}))


def require(scope: str):  # noqa: ANN201 - returns a dependency
    """A dependency that admits only keys with ``scope`` (admin implies every scope), within
    the key's rate limit."""

    def check(request: Request, res: Res) -> ApiKey:
        if not res.settings.auth_enabled:
            return _ANONYMOUS  # open development mode (docs/contract.md): no keys, no limits
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                "missing API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        key = res.settings.find_key(token.strip())
        if key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        wait = res.limiter.take(key.name)
        if wait > 0:
            after = RateLimiter.retry_after(wait)  # the message says what the header says
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                                f"rate limit of this API key exceeded; retry in {after} s",
                                headers={"Retry-After": after})
        if not key.allows(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"this API key lacks the '{scope}' scope")
        return key

    return check


def get_profiles(res: Res) -> ProfileStore:
    return res.profiles or ProfileStore(res.redis, res.keys)


IngestKey = Annotated[ApiKey, Depends(require("ingest"))]
ReadKey = Annotated[ApiKey, Depends(require("read"))]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
Profiles = Annotated[ProfileStore, Depends(get_profiles)]
