"""Whose customers are whose: each staff member's customers (those whose profile names them
``owner_staff_id``), found without reading every profile of the tenant, so that when someone
leaves or changes store a manager sees how many customers they had and hands them over at once.

A staff member's set (:meth:`~services.common.redisconn.Keys.owned`) is a *superset* of their
customers: a profile write adds the customer to the new owner's set before the profile is
written and takes them out of the old owner's after (then reads the profile back, so that two
writers racing cannot leave the owner without the customer). A crash in between leaves an extra
id, never a missing one, and :func:`owned` checks every profile before it is shown or acted on,
dropping what no longer holds. Erasing a customer takes them out of their owner's set.

Profiles written before the sets existed are read into them once per tenant (:func:`ensure_index`:
a SCAN of the profile keys, every node of a cluster; 1.6 s for 100,000 customers among 500,000
keys on this project's machine): by the API in the background when it starts
(:func:`index_tenants`), else the first time a tenant's owners are asked for. The same start
marks, once, a tenant whose profiles written before the mark existed name a store
(:func:`note_profile_stores`), for the scorer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.common.profiles import CustomerProfile, home_store_of, owner_of
from services.common.redisconn import (
    DEFAULT_TENANT,
    Keys,
    customer_token,
    get_many,
    parse_customer_token,
)

logger = logging.getLogger(__name__)

SCAN_COUNT = 1000
BATCH = 500
_GLOB = str.maketrans({c: "\\" + c for c in "\\*?[]"})


async def note_owners(redis: Redis, keys: Keys, tenant: str, customer_ids: list[str],
                      owner: str) -> None:
    """Before profiles naming ``owner`` are written: the customers join the owner's set."""
    pipe = redis.pipeline(transaction=False)
    pipe.sadd(keys.owned(owner, tenant), *customer_ids)
    pipe.sadd(keys.owners(tenant), owner)
    await pipe.execute()


async def forget_owners(redis: Redis, keys: Keys, tenant: str, customer_ids: list[str],
                        owner: str, written: str | None) -> None:
    """After profiles naming ``written`` instead of ``owner`` were written: out of ``owner``'s
    set, and into the set of whoever a profile names by now if another writer changed it
    meanwhile (``written`` is in theirs already)."""
    await redis.srem(keys.owned(owner, tenant), *customer_ids)  # type: ignore[misc]
    raws = await get_many(redis, [keys.profile(c, tenant) for c in customer_ids])
    late: dict[str, list[str]] = {}
    for cid, raw in zip(customer_ids, raws, strict=True):
        now = owner_of(raw)
        if now is not None and now != written:
            late.setdefault(now, []).append(cid)
    for now, cids in late.items():
        await note_owners(redis, keys, tenant, cids, now)


async def _profile_keys(redis: Redis, keys: Keys, tenant: str) -> AsyncIterator[list[str]]:
    """The keys of the tenant's profiles, :data:`BATCH` at a time (a SCAN, every node of a
    cluster)."""
    match = (_profile_base(keys) + customer_token("", tenant)).translate(_GLOB) + "*}:pf"
    found: list[str] = []
    async for key in redis.scan_iter(match=match, count=SCAN_COUNT):
        found.append(str(key))
        if len(found) == BATCH:
            yield found
            found = []
    if found:
        yield found


def _profile_base(keys: Keys) -> str:
    return f"{keys.prefix}:c:{{"  # a profile key: <base><tenant>/<customer>}:pf


async def ensure_index(redis: Redis, keys: Keys, tenant: str) -> None:
    """Read the tenant's profiles into the owner sets, once (idempotent; two processes doing it
    at once add the same members)."""
    if await redis.exists(keys.owners_built(tenant)):
        return
    async for found in _profile_keys(redis, keys, tenant):
        await _index(redis, keys, tenant, found, len(_profile_base(keys)))
    await redis.set(keys.owners_built(tenant), "1")


async def note_profile_stores(redis: Redis, keys: Keys, tenant: str) -> None:
    """Mark the tenant ``"1"`` in :meth:`~services.common.redisconn.Keys.profile_stores` when
    one of its profiles names a store, else ``"0"``, once: profiles written before the mark
    existed (every write since marks it; a write racing this look wins, as the ``"0"`` is
    only set where nothing is)."""
    mark = keys.profile_stores(tenant)
    if await redis.exists(mark):
        return
    async for found in _profile_keys(redis, keys, tenant):
        if any(map(home_store_of, await get_many(redis, found))):
            await redis.set(mark, "1")
            return
    await redis.set(mark, "0", nx=True)


async def index_tenants(redis: Redis, keys: Keys) -> None:
    """:func:`ensure_index`, :func:`remember_leavers` and :func:`note_profile_stores` for every
    tenant the scorer has seen and the default one (the API's start: an upgrade's first Team
    page or hand-over does not wait for it). A failure is logged and left to the first ask."""
    try:
        tenants = {str(t) for t in await redis.smembers(keys.tenants)} | {DEFAULT_TENANT}  # type: ignore[misc]
        for tenant in sorted(tenants):
            await ensure_index(redis, keys, tenant)
            await remember_leavers(redis, keys, tenant)
            await note_profile_stores(redis, keys, tenant)
    except RedisError as exc:
        logger.warning("owner index not built at start (built when first asked): %s", exc)


async def remember_leavers(redis: Redis, keys: Keys, tenant: str) -> None:
    """Staff the team log says were removed and who are not on the team now join
    ``Keys.former_staff`` (those removed before that set existed; idempotent)."""
    removed = set()
    for raw in await redis.lrange(keys.team_log(tenant), 0, -1):  # type: ignore[misc]
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("what") == "staff" and \
                entry.get("action") == "removed" and isinstance(entry.get("id"), str):
            removed.add(entry["id"])
    if not removed:
        return
    ids = sorted(removed)
    records = await redis.hmget(keys.staff(tenant), ids)  # type: ignore[misc]
    gone = [staff_id for staff_id, record in zip(ids, records, strict=True) if record is None]
    if not gone:
        return
    await redis.sadd(keys.former_staff(tenant), *gone)  # type: ignore[misc]
    # someone added back meanwhile leaves the set again (a staff write takes them out after
    # writing their record: read after the SADD, no interleaving leaves them in it)
    again = await redis.hmget(keys.staff(tenant), gone)  # type: ignore[misc]
    back = [staff_id for staff_id, record in zip(gone, again, strict=True) if record is not None]
    if back:
        await redis.srem(keys.former_staff(tenant), *back)  # type: ignore[misc]


async def _index(redis: Redis, keys: Keys, tenant: str, found: list[str], start: int) -> None:
    """``found``: profile keys, their customer's token from ``start`` to ``}:pf``."""
    if not found:
        return
    ids = [parse_customer_token(k[start:-len("}:pf")])[1] for k in found]
    owners = [owner_of(raw) for raw in await get_many(redis, found)]
    await _each_owner(redis, keys, tenant, zip(ids, owners, strict=True), add=True)
    # a profile changed or erased while this batch was read: its entry is taken back (erasure
    # must not leave the id behind)
    again = [owner_of(raw) for raw in await get_many(redis, found)]
    await _each_owner(redis, keys, tenant, ((cid, before) for cid, before, now in zip(
        ids, owners, again, strict=True) if before != now), add=False)


async def _each_owner(redis: Redis, keys: Keys, tenant: str,
                      pairs: Iterable[tuple[str, str | None]], *, add: bool) -> None:
    """SADD (SREM) each customer to (from) their owner's set: one command per owner."""
    by_owner: dict[str, list[str]] = {}
    for cid, owner in pairs:
        if owner is not None:
            by_owner.setdefault(owner, []).append(cid)
    if not by_owner:
        return
    pipe = redis.pipeline(transaction=False)
    for owner, ids in by_owner.items():
        if add:
            pipe.sadd(keys.owned(owner, tenant), *ids)
        else:
            pipe.srem(keys.owned(owner, tenant), *ids)
    if add:
        pipe.sadd(keys.owners(tenant), *by_owner)
    await pipe.execute()


def home_store(profile: CustomerProfile | None, scored: str | bytes | None) -> str | None:
    """The store whose staff look after a customer (the notifier routes to it too): their
    profile's home store, else the store of their latest events (``scored``, the state's
    ``store``), else None."""
    if profile is not None and profile.store_id:
        return profile.store_id
    return (scored.decode() if isinstance(scored, bytes) else scored) or None


async def home_stores(redis: Redis, keys: Keys, tenant: str,
                      profiles: dict[str, CustomerProfile | None]) -> dict[str, str | None]:
    """:func:`home_store` of each customer (id -> their profile); the scored store is read,
    in one pipeline, only for those whose profile names none."""
    unknown = [cid for cid, p in profiles.items() if home_store(p, None) is None]
    scored: list[Any] = []
    if unknown:
        pipe = redis.pipeline(transaction=False)
        for cid in unknown:
            pipe.hget(keys.state(cid, tenant), "store")
        scored = await pipe.execute()
    found = dict(zip(unknown, scored, strict=True))
    return {cid: home_store(p, found.get(cid)) for cid, p in profiles.items()}


@dataclass(frozen=True)
class Owned:
    """One customer of a staff member: their profile, their home store (the profile's, else
    the store of their latest events; None when neither is known) and tier (None: not scored)."""

    customer_id: str
    profile: CustomerProfile
    store: str | None
    tier: str | None


async def owned(redis: Redis, keys: Keys, tenant: str, staff_id: str) -> list[Owned]:
    """The customers whose profile names ``staff_id`` their owner, by id (every profile checked;
    entries that no longer hold are dropped from the set)."""
    await ensure_index(redis, keys, tenant)
    ids = sorted(str(c) for c in await redis.smembers(keys.owned(staff_id, tenant)))  # type: ignore[misc]
    out: list[Owned] = []
    stale: list[str] = []
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        pipe = redis.pipeline(transaction=False)
        for cid in chunk:
            pipe.get(keys.profile(cid, tenant))
            pipe.hmget(keys.state(cid, tenant), ["store", "tier"])
        replies = await pipe.execute()
        for i, cid in enumerate(chunk):
            raw, (scored, tier) = replies[2 * i], replies[2 * i + 1]
            if owner_of(raw) != staff_id:
                stale.append(cid)
                continue
            try:
                profile = CustomerProfile.model_validate_json(raw)
            except ValidationError:
                stale.append(cid)
                continue
            out.append(Owned(cid, profile, home_store(profile, scored),
                             str(tier) if tier else None))
    if stale:
        await redis.srem(keys.owned(staff_id, tenant), *stale)  # type: ignore[misc]
    return out


async def owners(redis: Redis, keys: Keys, tenant: str) -> list[str]:
    """Every staff id that may own customers of the tenant (removed staff included), sorted."""
    await ensure_index(redis, keys, tenant)
    return sorted(str(s) for s in await redis.smembers(keys.owners(tenant)))  # type: ignore[misc]
