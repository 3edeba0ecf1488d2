"""What an API key may see and change: its tenant, and (for store-bound keys) its stores.

The one owner of the store-scope rule. Every route that reads, writes, erases or exports a thing
of a store asks here; :meth:`ApiKey.allows_store` is the predicate, these say what a refusal
answers: a thing of another store does not exist for a store-bound key (404), a write naming
another store is forbidden (403).
"""

from __future__ import annotations

import json
from typing import TypeVar

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import ApiKey
from services.records.errors import Forbidden, Invalid, NotFound

T = TypeVar("T")


def store_for_list(key: ApiKey, store: str | None) -> str | None:
    """The store a list query reads: the one asked for, or the key's only store."""
    if key.stores is None:
        return store
    if store is None:
        if len(key.stores) == 1:
            return next(iter(key.stores))
        raise Invalid("this API key is bound to stores "
                      f"{', '.join(sorted(key.stores))}; pass ?store= naming one of them")
    if store not in key.stores:
        raise Forbidden(f"this API key may not read store {store!r}")
    return store


def check_store_read(key: ApiKey, found: T | None, store: str | None, missing: str) -> T:
    """``found``, if there is one and the key may see its ``store``; else :class:`NotFound`
    (``missing``, 404): for a store-bound key, another store's customer, profile, staff member
    or alert does not exist (nor one of no store)."""
    if found is None or not key.allows_store(store):
        raise NotFound(missing)
    return found


def check_store_write(key: ApiKey, store: str | None) -> None:
    """Raise :class:`Forbidden` (403) if a store-bound key writes data of another store (or of
    no store)."""
    if key.stores is not None and not key.allows_store(store):
        raise Forbidden("this API key may only write data of stores "
                        f"{', '.join(sorted(key.stores))}; set store_id to one of them")


def check_customer_admin(key: ApiKey, store: str | None, verb: str) -> None:
    """Raise :class:`Forbidden` (403) if a store-bound key would ``verb`` (erase, export) a
    customer of another store. A customer of no known store is anyone's to erase: there is
    nothing of another store to protect."""
    if store is not None and not key.allows_store(store):
        raise Forbidden(f"this API key may not {verb} customers of other stores")


async def customer_store(redis: Redis, keys: Keys, customer_id: str, tenant: str,
                         *also: str) -> tuple[bool, str | None]:
    """Whether the customer is known (scored, has a profile, or any of the customer's keys
    ``also`` exists) and their store: the scorer's state's, else the one their profile names."""
    pipe = redis.pipeline(transaction=False)
    pipe.exists(keys.state(customer_id, tenant), keys.profile(customer_id, tenant), *also)
    pipe.hget(keys.state(customer_id, tenant), "store")
    pipe.get(keys.profile(customer_id, tenant))
    known, store, profile = await pipe.execute()
    if store is None and profile:
        store = json.loads(profile).get("store_id")
    return bool(known), store
