"""Erase a customer everywhere the API knows of, and keep an audit record of it."""

from __future__ import annotations

import hashlib
import time

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import DEFAULT_RETENTION
from services.state.store import erase_customer

AUDIT_MAX = DEFAULT_RETENTION.audit_max  # records kept per tenant (CHURNWATCH_AUDIT_MAX_RECORDS)


def subject_digest(tenant: str, customer_id: str) -> str:
    """Audit records name the customer by this digest, not by id: the record proves the
    erasure without keeping the identifier (hash a known id to look it up)."""
    return hashlib.sha256(f"{tenant}\x00{customer_id}".encode()).hexdigest()


async def erase(redis: Redis, keys: Keys, customer_id: str, *, tenant: str, partitions: int,
                by: str, request_id: str, audit_max: int = AUDIT_MAX) -> None:
    """Erase the customer everywhere (the one erasure the scorer's tombstone handling also
    runs: every per-customer key and every index entry), then write the audit record."""
    await erase_customer(redis, keys, customer_id, tenant=tenant, partitions=partitions)
    await redis.xadd(keys.audit(tenant), {"action": "erase_customer",
                                          "subject": subject_digest(tenant, customer_id),
                                          "by": by, "request_id": request_id,
                                          "at_ms": str(int(time.time() * 1000))},
                     maxlen=audit_max, approximate=True)
