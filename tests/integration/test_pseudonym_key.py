"""The pseudonym key every service shares (services/common/pseudonym.py), on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib

from pydantic import SecretStr
from redis.asyncio import Redis

from services.common import logs
from services.common.embedded import free_port
from services.common.pseudonym import UNKEYED, install_key, load_key, redis_key
from services.common.redisconn import make_redis
from services.common.settings import Settings


async def test_services_share_one_key_created_once_in_redis(settings: Settings,
                                                            redis: Redis) -> None:
    first = await load_key(settings, redis)
    other = make_redis(settings)  # another service, its own client
    try:
        assert await load_key(settings, other) == first  # SET NX: the first one wins
    finally:
        await other.aclose()
    assert len(first) == 64 and await redis.get(redis_key(settings.redis_prefix)) == first.decode()
    configured = settings.model_copy(update={"pseudonym_key": SecretStr("Kp" * 20)})
    assert await load_key(configured, redis) == b"Kp" * 20  # the setting wins over Redis
    try:
        assert await install_key(settings, redis) == first
        assert logs.customer_ref("+8613800138000") != UNKEYED
    finally:
        logs.set_pseudonym_key(None)


async def test_without_redis_lines_stay_unkeyed_until_it_answers(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    client = make_redis(down, socket_connect_timeout=0.2)
    task = asyncio.create_task(install_key(down, client, retry_every=0.05))
    try:
        await asyncio.sleep(0.3)
        assert not task.done() and logs.customer_ref("pos-member-1") == UNKEYED
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
