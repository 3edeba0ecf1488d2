"""A customer's profile replaced, as ``PUT /v1/customers/{id}/profile`` and the console's
owner form both do: the whole profile written, and the timeline told which fields changed
(their names, never the values: the timeline is read more widely than the profile)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from services.common.profiles import CustomerProfile, ProfileStore
from services.common.redisconn import Keys
from services.common.settings import DEFAULT_RETENTION, Retention
from services.common.timefmt import iso_ms
from services.records import timeline


async def replace_profile(redis: Redis, keys: Keys, profiles: ProfileStore, customer_id: str,
                          tenant: str, old: CustomerProfile | None, new: CustomerProfile, *,
                          by: str, retention: Retention = DEFAULT_RETENTION) -> list[str]:
    """Write ``new`` over ``old`` (the profile read before, None without one); returns the
    fields that changed, which a ``profile_change`` timeline entry names with who changed them."""
    await profiles.put_profile(customer_id, new, tenant)
    before = (old or CustomerProfile.model_validate({})).model_dump()
    changed = sorted(k for k, v in new.model_dump().items() if before.get(k) != v)
    if changed:
        await timeline.append(redis, keys, customer_id, tenant, {
            "kind": "profile_change", "at": iso_ms(int(time.time() * 1000)),
            "fields": changed, "by": by}, retention=retention)
    return changed
