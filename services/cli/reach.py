"""Finding the running stack, and saying in one line when a broker or Redis is not there.

A command started on its own (``churnwatch scorer``, ``churnwatch model activate``, ...) used
to die with the traceback of whichever client noticed first. These checks run before the
command does its work and turn "nothing answers" into a one-line :class:`ChurnwatchError`
naming the address, where it came from and what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import sys
from typing import Any

from services.common.exceptions import ChurnwatchError, ConfigError
from services.common.logs import mask_url_credentials
from services.common.settings import Settings

BROKER_WAIT_S = 20.0
REDIS_WAIT_S = 5.0


def stack_info(settings: Settings) -> dict[str, Any] | None:
    """The running stack's ``stack.json`` under CHURNWATCH_HOME, or None when there is none."""
    try:
        info = json.loads(settings.stack_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {settings.stack_file}: {exc}") from None
    return info if isinstance(info, dict) else None


def with_stack(settings: Settings) -> tuple[Settings, str]:
    """Settings that talk to the running stack, and where its Redis address came from.

    CHURNWATCH_REDIS_URL (and CHURNWATCH_KAFKA_BOOTSTRAP) win when set; otherwise the
    addresses of the stack that ``churnwatch up`` wrote to ``$CHURNWATCH_HOME/stack.json``;
    otherwise the defaults.
    """
    info = stack_info(settings)
    overrides: dict[str, Any] = {}
    source = "CHURNWATCH_REDIS_URL" if "redis_url" in settings.model_fields_set else "the default"
    if info is not None:
        if "redis_url" not in settings.model_fields_set and info.get("redis_url"):
            overrides["redis_url"] = info["redis_url"]
            source = str(settings.stack_file)
        if "kafka_bootstrap" not in settings.model_fields_set and info.get("kafka_bootstrap"):
            overrides["kafka_bootstrap"] = info["kafka_bootstrap"]
    if not overrides:
        return settings, source
    current = {k: getattr(settings, k) for k in type(settings).model_fields}
    return type(settings)(**{**current, **overrides}), source


def _hint(settings: Settings) -> str:
    info = stack_info(settings)
    if info is None:
        return (f"start the stack with `make run` (no {settings.stack_file} here), or set "
                "CHURNWATCH_KAFKA_BOOTSTRAP and CHURNWATCH_REDIS_URL")
    if (info.get("kafka_bootstrap") == settings.kafka_bootstrap
            or info.get("redis_url") == settings.redis_url):
        return (f"is the `churnwatch up` that wrote {settings.stack_file} still running? "
                "(`make run` starts it again)")
    return ("a stack wrote " + str(settings.stack_file) + "; to join it: export "
            + " ".join(shlex.quote(f"{k}={v}") for k, v in (
                ("CHURNWATCH_KAFKA_BOOTSTRAP", info.get("kafka_bootstrap")),
                ("CHURNWATCH_REDIS_URL", info.get("redis_url")))))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


async def _broker_answers(settings: Settings, wait_s: float) -> str | None:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from services.common.kafka import security_options

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    said = False
    while True:
        client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=min(settings.kafka_request_timeout_ms, 5000),
                                **security_options(settings))  # type: ignore[arg-type]
        try:
            await client.bootstrap()
            return None
        # OSError: refused, unreachable, TLS, timeout; ValueError: a malformed address
        except (KafkaError, OSError, ValueError) as exc:
            error = _describe(exc)
        finally:
            await client.close()
        if loop.time() > deadline:
            return error
        if not said:
            print(f"waiting up to {wait_s:g} s for the Kafka broker at {settings.kafka_bootstrap}",
                  file=sys.stderr, flush=True)
            said = True
        await asyncio.sleep(0.5)


async def _redis_answers(settings: Settings, wait_s: float) -> str | None:
    from redis.exceptions import RedisError

    from services.common.redisconn import make_redis

    redis = make_redis(settings, socket_connect_timeout=min(wait_s, 2.0), socket_timeout=wait_s)
    try:
        await redis.ping()
        return None
    except (RedisError, OSError) as exc:
        return mask_url_credentials(_describe(exc))
    finally:
        await redis.aclose()


async def _unannounced_cluster(settings: Settings) -> bool:
    """The Redis answers but is a Redis Cluster node while CHURNWATCH_REDIS_CLUSTER is unset:
    a plain client would fail with MOVED on the keys of other nodes' slots."""
    from redis.exceptions import RedisError

    from services.common.redisconn import make_redis

    if settings.redis_cluster:
        return False
    redis = make_redis(settings)
    try:
        info = await redis.info("cluster")
        return str(info.get("cluster_enabled", "0")) == "1"
    except (RedisError, OSError):  # e.g. INFO not allowed to the ACL user: nothing to say
        return False
    finally:
        await redis.aclose()


def require(settings: Settings, *, kafka: bool = False, redis: bool = False,
            broker_wait_s: float = BROKER_WAIT_S, redis_source: str | None = None) -> None:
    """Raise a one-line ChurnwatchError unless the broker / Redis of ``settings`` answer."""

    async def check() -> None:
        # the clients log every refused connection; the one line below says it all
        quiet = [logging.getLogger(n) for n in ("aiokafka", "redis")]
        levels = [log.level for log in quiet]
        for log in quiet:
            log.setLevel(logging.CRITICAL)
        try:
            await checks()
        finally:
            for log, level in zip(quiet, levels, strict=True):
                log.setLevel(level)

    async def checks() -> None:
        if kafka:
            error = await _broker_answers(settings, broker_wait_s)
            if error is not None:
                raise ChurnwatchError(
                    f"cannot reach the Kafka broker at {settings.kafka_bootstrap} "
                    f"(CHURNWATCH_KAFKA_BOOTSTRAP; {error}): {_hint(settings)}")
        if redis:
            error = await _redis_answers(settings, REDIS_WAIT_S)
            if error is not None:
                where = redis_source or "CHURNWATCH_REDIS_URL"
                lead = ("no running stack found" if stack_info(settings) is None
                        else "the stack is not reachable")
                raise ChurnwatchError(
                    f"{lead}: Redis at {mask_url_credentials(settings.redis_url)} (from {where}) "
                    f"does not answer ({error}); {_hint(settings)}")
            if await _unannounced_cluster(settings):
                raise ConfigError(
                    f"Redis at {mask_url_credentials(settings.redis_url)} is a node of a Redis "
                    "Cluster: set CHURNWATCH_REDIS_CLUSTER=true")

    asyncio.run(check())
