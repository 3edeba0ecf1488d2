"""Dependencies of the HTTP routes: the shared resources, API-key scopes and rate limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from pydantic import SecretStr
from redis.asyncio import Redis

from services.common.profiles import ProfileStore
from services.common.redisconn import Keys
from services.common.settings import ApiKey, Settings
from services.ingest.metrics import ApiMetrics
from services.ingest.publisher import EventPublisher
from services.ingest.queries.cache import TtlCache
from services.ingest.ratelimit import RateLimiter
from services.ingest.status import StatusReader
from services.scoring.engine import Engine


@dataclass
class Resources:
    settings: Settings
    redis: Redis
    keys: Keys
    publisher: EventPublisher
    engine: Engine
    status: StatusReader
    metrics: ApiMetrics
    profiles: ProfileStore | None = None
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))
    cache: TtlCache = field(default_factory=lambda: TtlCache(0))
    # accepted events Redis could not count yet, per tenant (routes/events.py)
    uncounted_accepted: dict[str, int] = field(default_factory=dict)
    count_retry: asyncio.Task[None] | None = None  # adds them once Redis is back


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
