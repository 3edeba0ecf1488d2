"""The one place that knows how to talk to Redis, and how churnwatch names its keys.

Every key of one customer shares the hash tag ``{<customer>}`` so that a Redis Cluster keeps
them in one slot and a Lua script may touch them together.
"""

from __future__ import annotations

from redis.asyncio import Redis

from services.common.settings import Settings


def make_redis(settings: Settings, **overrides: object) -> Redis:
    options: dict[str, object] = {
        "decode_responses": True,
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
        "max_connections": 64,
    }
    options.update(overrides)
    return Redis.from_url(settings.redis_url, **options)  # type: ignore[arg-type]


def _tag(customer_id: str) -> str:
    # Percent-encode the characters that would break the hash tag; injective.
    return customer_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class Keys:
    """Key names under one prefix (``CHURNWATCH_REDIS_PREFIX``; tests use a fresh one each)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    # per customer -------------------------------------------------------------------
    def customer(self, customer_id: str) -> tuple[str, str, str]:
        """(event index zset, event data hash, state hash) of one customer."""
        base = f"{self.prefix}:c:{{{_tag(customer_id)}}}"
        return f"{base}:ev", f"{base}:ed", f"{base}:st"

    # global -------------------------------------------------------------------------
    def due(self, partition: int) -> str:
        """Silence index of one events-topic partition: customer -> next re-score time (ms)."""
        return f"{self.prefix}:due:{partition}"

    @property
    def clock(self) -> str:
        return f"{self.prefix}:clock"

    def offsets(self, topic: str) -> str:
        return f"{self.prefix}:offsets:{topic}"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def webhooks(self) -> str:
        return f"{self.prefix}:webhooks"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}:dlv:{delivery_id}"

    @property
    def retry_queue(self) -> str:
        return f"{self.prefix}:retry"

    @property
    def retry_payloads(self) -> str:
        return f"{self.prefix}:retry:data"

    def delivery_log(self, customer_id: str) -> str:
        return f"{self.prefix}:c:{{{_tag(customer_id)}}}:dl"
