"""Pseudonymous customer tokens for logs (issue 17, item 3; docs/privacy.md).

Many POS systems use the customer's phone number as the member id, so the id itself is
personal data. Logs never name a customer by id: they carry ``cust_<16 hex>``, the first 64
bits of HMAC-SHA256 over ``<tenant> NUL <customer id>`` with a secret key. The key is secret
(a phone-number id has few enough possible values that an unkeyed hash could be reversed by
trying them all) and the same in every service, so one customer has one token in every log.

Where the key comes from (:func:`load_key`):

- ``CHURNWATCH_PSEUDONYM_KEY`` when set (a secret setting: never logged; production refuses a
  placeholder or one shorter than 32 characters);
- otherwise one random key churnwatch creates once in Redis (``<prefix>:pseudonym-key``,
  ``SET NX``: the first service to start wins, every other one reads it). Whoever can read
  Redis can read the key, but Redis holds the customer ids in clear anyway. Losing the key
  (a flushed Redis) changes every token: older log lines can no longer be looked up.

An operator turns a token back into a customer with ``GET /v1/admin/pseudonyms/{token}``
(services/api/routes/pseudonyms.py), and a customer into a token with
``GET /v1/admin/pseudonyms?customer_id=``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from services.common.settings import Settings

logger = logging.getLogger(__name__)

PREFIX = "cust_"
HEX_DIGITS = 16  # 64 bits: collisions among a tenant's customers are negligible
TOKEN_RE = re.compile(r"^cust_[0-9a-f]{16}$")
# What a log line carries for a customer when the process has no key yet (it never shows the
# id instead).
UNKEYED = PREFIX + "unkeyed"


def pseudonym(key: bytes, tenant: str, customer_id: str) -> str:
    """The customer's log token: ``cust_`` + 16 hex digits of HMAC-SHA256(key, tenant NUL id)."""
    mac = hmac.new(key, f"{tenant}\x00{customer_id}".encode(), hashlib.sha256)
    return PREFIX + mac.hexdigest()[:HEX_DIGITS]


def redis_key(prefix: str) -> str:
    """Where the shared key lives when CHURNWATCH_PSEUDONYM_KEY is unset."""
    return f"{prefix}:pseudonym-key"


async def load_key(settings: Settings, redis: Redis) -> bytes:
    """The pseudonym key: the setting, else the one shared key in Redis (created on first use)."""
    if settings.pseudonym_key is not None:
        return settings.pseudonym_key.get_secret_value().encode()
    name = redis_key(settings.redis_prefix)
    await redis.set(name, secrets.token_hex(32), nx=True)
    value = await redis.get(name)
    if value is None:  # erased between the two commands (a FLUSHALL): try once more
        await redis.set(name, secrets.token_hex(32), nx=True)
        value = await redis.get(name)
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).encode()


async def install_key(settings: Settings, redis: Redis, *, retry_every: float = 1.0) -> bytes:
    """Load the key and hand it to the log formatter (:func:`services.common.logs.set_pseudonym_key`),
    retrying while Redis is unreachable. Until then log lines show ``cust_unkeyed``."""
    from redis.exceptions import RedisError

    from services.common.logs import set_pseudonym_key

    failures = 0
    while True:
        try:
            key = await load_key(settings, redis)
        except (RedisError, OSError) as exc:  # Redis not up yet: logs stay tokenless meanwhile
            if failures % 30 == 0:  # the first failure, then every 30th: no flood
                logger.warning("cannot read the pseudonym key from Redis (%s); customers are "
                               "logged as %s until it can", type(exc).__name__, UNKEYED)
            failures += 1
            await asyncio.sleep(retry_every)
            continue
        set_pseudonym_key(key)
        return key
