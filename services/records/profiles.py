"""Who customers are to the business, changed: a customer's profile replaced, a staff member
or a store saved or removed, a person's customers handed over. ``PUT
/v1/customers/{id}/profile``, ``PUT|DELETE /v1/staff/{id}``, ``POST /v1/staff/{id}/handover``,
``PUT /v1/stores/{id}`` and the console's forms (Team, a customer's owner) all write through
here, so each change is told the same way whoever made it: a customer's in their timeline, a
staff member's or store's in the tenant's team log. Both name the fields that changed and who
changed them, never the values (they are read more widely than the records)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from services.alerting.escalation import handed_on
from services.alerting.inbox import MANAGERS_OWN, Inbox
from services.common.profiles import CustomerProfile, ProfileStore, StaffMember, Store, owner_of
from services.common.redisconn import Keys, get_many
from services.common.settings import DEFAULT_RETENTION, ApiKey, Retention
from services.common.timefmt import iso_ms
from services.records import owners, timeline

logger = logging.getLogger(__name__)

TEAM_LOG_MAX = 200  # the newest changes of a tenant's staff and stores kept


def changed_fields(before: BaseModel | None, after: BaseModel) -> list[str]:
    """The fields whose values differ (all that are set, when there was nothing before)."""
    old = before.model_dump() if before is not None else {}
    return sorted(k for k, v in after.model_dump().items()
                  if (k in old and old[k] != v) or (k not in old and v is not None))


async def replace_profile(redis: Redis, keys: Keys, profiles: ProfileStore, customer_id: str,
                          tenant: str, old: CustomerProfile | None, new: CustomerProfile, *,
                          by: str, retention: Retention = DEFAULT_RETENTION
                          ) -> tuple[CustomerProfile, list[str]]:
    """Write ``new`` over ``old`` (the profile read before, None without one), the owner kept
    when ``new`` names someone who left (:func:`owner_kept`); returns the profile written and
    the fields that changed, which a ``profile_change`` timeline entry names with who changed
    them. The owners' sets follow (:mod:`services.records.owners`: the new owner's first)."""
    new = await owner_kept(redis, keys, tenant, customer_id, old, new)
    before = old.owner_staff_id if old else None
    await _before_write(redis, keys, tenant, customer_id, before, new)
    await profiles.put_profile(customer_id, new, tenant)
    return new, await _written(redis, keys, tenant, customer_id, old, before, new, by,
                               retention)


async def owner_kept(redis: Redis, keys: Keys, tenant: str, customer_id: str,
                     old: CustomerProfile | None, new: CustomerProfile) -> CustomerProfile:
    """``new``, or ``new`` with ``old``'s owner when ``new`` names as the owner someone who
    left the team (removed, not added back: ``Keys.former_staff``) and ``old``'s owner is on
    the team: a POS whose records still name a leaver does not take back, sync after sync,
    the customers a manager handed over to a colleague (their alerts would go to the store's
    manager again). A customer the leaver still owns, or one without an owner, takes what is
    written."""
    named, current = new.owner_staff_id, old.owner_staff_id if old is not None else None
    if named is None or current is None or named == current:
        return new
    pipe = redis.pipeline(transaction=False)
    pipe.sismember(keys.former_staff(tenant), named)
    pipe.hexists(keys.staff(tenant), current)
    left, on_team = await pipe.execute()
    if not (left and on_team):
        return new
    logger.info("a profile write named a staff member who left as the owner; kept the owner",
                extra={"customer_id": customer_id, "tenant": tenant})
    return new.model_copy(update={"owner_staff_id": current})


async def _before_write(redis: Redis, keys: Keys, tenant: str, customer_id: str,
                        before: str | None, new: CustomerProfile) -> None:
    """A profile naming another owner than ``before`` is about to be written: the customer
    joins the new owner's set first (the sets are supersets, :mod:`services.records.owners`)."""
    if new.owner_staff_id is not None and new.owner_staff_id != before:
        await owners.note_owners(redis, keys, tenant, [customer_id], new.owner_staff_id)


async def _written(redis: Redis, keys: Keys, tenant: str, customer_id: str,
                   old: CustomerProfile | None, before: str | None, new: CustomerProfile,
                   by: str, retention: Retention) -> list[str]:
    """After ``new`` was written over ``old`` (owned by ``before``): out of the old owner's
    set, the open alerts about the customer to whoever receives them now
    (:func:`alerts_follow`: also from the store's manager to a first owner), and
    the timeline told which fields changed; returns them."""
    if before != new.owner_staff_id:  # (an owner given to a customer who had none too)
        if before is not None:
            await owners.forget_owners(redis, keys, tenant, [customer_id], before,
                                       new.owner_staff_id)
        store = (await owners.home_stores(redis, keys, tenant, {customer_id: new}))[customer_id]
        await alerts_follow(redis, keys, tenant, {
            customer_id: (before, new.owner_staff_id, store)}, retention=retention)
    # against an empty profile's defaults when there was none: a new profile's consent left
    # at its default is not a change
    changed = changed_fields(old or CustomerProfile.model_validate({}), new)
    if changed:
        await timeline.append(redis, keys, customer_id, tenant, {
            "kind": "profile_change", "at": iso_ms(int(time.time() * 1000)),
            "fields": changed, "by": by}, retention=retention)
    return changed


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: ``patch``'s members replace ``target``'s, objects merged
    member by member, a null removes the member."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = merge_patch(out.get(name), value)
    return out


class ProfileBusy(Exception):
    """A profile changed under every attempt to patch it."""


async def patch_profile(redis: Redis, keys: Keys, tenant: str, customer_id: str,
                        patch: dict[str, Any], *, by: str,
                        allow: Callable[[CustomerProfile | None, CustomerProfile], None]
                        | None = None,
                        retention: Retention = DEFAULT_RETENTION
                        ) -> tuple[CustomerProfile, list[str]]:
    """Apply a JSON merge patch to the customer's profile (none yet: to an empty one), on the
    profile as it stands: a compare-and-set, read again and retried when another writer
    changed it meanwhile (:class:`ProfileBusy` after ``_CAS_TRIES``). The result is validated
    as a whole (``ValidationError``); ``allow(old, new)`` may refuse it by raising. The owner
    kept, owners' sets and the timeline as :func:`replace_profile`. Returns the profile and the
    fields that changed."""
    key = keys.profile(customer_id, tenant)
    for _ in range(_CAS_TRIES):
        raw = await redis.get(key)
        old = CustomerProfile.model_validate_json(raw) if raw else None
        new = CustomerProfile.model_validate(merge_patch(
            old.model_dump(mode="json", exclude_none=True) if old is not None else {}, patch))
        if allow is not None:
            allow(old, new)
        new = await owner_kept(redis, keys, tenant, customer_id, old, new)
        before = owner_of(raw)
        await _before_write(redis, keys, tenant, customer_id, before, new)
        if new.store_id is not None:  # as ProfileStore.put_profile marks it
            await redis.set(keys.profile_stores(tenant), "1")
        if await redis.eval(_CAS, 1, key, raw or "", new.model_dump_json(exclude_none=True)):  # type: ignore[misc]
            return new, await _written(redis, keys, tenant, customer_id, old, before, new, by,
                                       retention)
    raise ProfileBusy(f"the profile of {customer_id!r} changed under {_CAS_TRIES} attempts to "
                      "patch it")


async def _log(redis: Redis, keys: Keys, tenant: str, what: Literal["staff", "store"],
               record_id: str, action: str, fields: list[str], by: str,
               stores: set[str | None], name: str | None, **more: object) -> None:
    """``stores``: the stores the change is about (a staff member's before and after), so
    that a store's manager is shown their store's changes only; ``name``: the record's, so
    that "removed Ben Brown" still reads so once Ben's record is gone."""
    entry = {"at_ms": int(time.time() * 1000), "what": what, "id": record_id,
             "action": action, "fields": fields, "by": by,
             "stores": sorted(s for s in stores if s is not None), "name": name, **more}
    pipe = redis.pipeline(transaction=False)
    pipe.lpush(keys.team_log(tenant), json.dumps(entry, ensure_ascii=False))
    pipe.ltrim(keys.team_log(tenant), 0, TEAM_LOG_MAX - 1)
    await pipe.execute()


async def save_staff(redis: Redis, keys: Keys, profiles: ProfileStore, tenant: str,
                     old: StaffMember | None, new: StaffMember, *, by: str) -> None:
    """Write a staff member (``old``: as read before, None for a new one) and log the change."""
    await profiles.put_staff(new, tenant)
    fields = changed_fields(old, new)
    if old is None or fields:
        await _log(redis, keys, tenant, "staff", new.staff_id,
                   "added" if old is None else "changed", fields, by,
                   {new.store_id, old.store_id if old is not None else None}, new.name)


async def remove_staff(redis: Redis, keys: Keys, profiles: ProfileStore, tenant: str,
                       member: StaffMember, *, by: str) -> None:
    if await profiles.delete_staff(member.staff_id, tenant):
        await _log(redis, keys, tenant, "staff", member.staff_id, "removed", [], by,
                   {member.store_id}, member.name)


async def save_store(redis: Redis, keys: Keys, profiles: ProfileStore, tenant: str,
                     old: Store | None, new: Store, *, by: str) -> None:
    """Write a store (``old``: its record before, None without one) and log the change."""
    await profiles.put_store(new, tenant)
    fields = changed_fields(old, new)
    if old is None or fields:
        await _log(redis, keys, tenant, "store", new.store_id,
                   "added" if old is None else "changed", fields, by, {new.store_id},
                   new.name)


@dataclass(frozen=True)
class HandOver:
    """What a hand-over did: the customers given to the new owner, those kept because the new
    owner works at another store than theirs, how many open alerts went along, and (when only
    some were named) those named that were not the person's to give."""

    moved: list[str]
    kept: list[str]
    alerts: int
    not_owned: list[str] = field(default_factory=list)
    shares: dict[str, int] = field(default_factory=dict)  # shared out: staff id -> how many


SHARE_MAX = 50  # colleagues one hand-over may share someone's customers among
_RISK_FIRST = {"high": 0, "medium": 1}


def deal(items: list[owners.Owned], takers: list[StaffMember]
         ) -> tuple[dict[str, list[owners.Owned]], list[owners.Owned]]:
    """Share customers out evenly among ``takers``: those at high risk first, then medium, then
    the rest (by name), each to the taker with the fewest so far who may have them (works at
    their store, or at no store); ties go to the taker named first. So every taker gets about
    as many customers, and as many at risk, as the others. Returns staff id -> their customers,
    and the customers none of them may have."""
    got: dict[str, list[owners.Owned]] = {t.staff_id: [] for t in takers}
    kept: list[owners.Owned] = []
    ordered = sorted(items, key=lambda c: (_RISK_FIRST.get(c.tier or "", 2),
                                           (c.profile.name or c.customer_id).casefold(),
                                           c.customer_id))
    for item in ordered:
        able = [i for i, t in enumerate(takers) if t.store_id in (item.store, None)]
        if not able:
            kept.append(item)
            continue
        pick = takers[min(able, key=lambda i: (len(got[takers[i].staff_id]), i))]
        got[pick.staff_id].append(item)
    return got, kept


async def alerts_follow(redis: Redis, keys: Keys, tenant: str,
                        moves: dict[str, tuple[str | None, str | None, str | None]], *,
                        retention: Retention = DEFAULT_RETENTION) -> int:
    """Customers changed owner (customer id -> their owner before, their owner now, None:
    nobody, and their store): the alerts about them still unacknowledged in the list of
    whoever received them (the former owner; for a customer who had none, the store's
    manager) go to whoever receives them now (the new owner; for nobody, the store's
    manager; kept where the store has none). A manager keeps the escalations in their list:
    those were theirs as the manager. Escalations still due wait for the new owner's own
    window, or are dropped when the manager holds them (:func:`handed_on`); a high alert the
    manager alone received gets one, due after the new owner's window. Returns how many list
    entries moved."""
    stores = {store for _, _, store in moves.values()} - {None}
    profiles = ProfileStore(redis, keys)
    managers: dict[str | None, str | None] = {}
    for store_id in stores:
        record = await profiles.get_store(str(store_id), tenant)
        managers[store_id] = record.manager_staff_id if record is not None else None
    # (who holds them, as the store's manager of an ownerless customer) -> {customer: taker}
    takers: dict[tuple[str, bool], dict[str, str]] = {}
    for cid, (was, now, store) in moves.items():
        holder = was if was is not None else managers.get(store)
        who = now or managers.get(store)
        if holder is not None and who is not None and who != holder:
            takers.setdefault((holder, was is None), {})[cid] = who
    inbox = Inbox(redis, keys, retention=retention)
    # alert id -> the store's manager holds it now; apart: those from the manager's list
    held: dict[bool, dict[str, bool]] = {False: {}, True: {}}
    moved = 0  # entries of the console lists
    for (holder, as_manager), to in takers.items():
        keep = MANAGERS_OWN if as_manager else frozenset()
        for a in await inbox.move(holder, tenant, to, keep_kinds=keep):
            held[as_manager][a.alert_id] = a.owner == managers.get(moves[a.customer_id][2])
            moved += 1
    now_ms = int(time.time() * 1000)
    for from_manager, alerts in held.items():
        if alerts:  # an alert the manager alone received gets an escalation for the new owner
            await handed_on(redis, keys, alerts, now_ms=now_ms, parked=from_manager)
    return moved


async def hand_over(redis: Redis, keys: Keys, profiles: ProfileStore, tenant: str,
                    from_id: str, to: StaffMember | None, *, reach: ApiKey, by: str,
                    only: Iterable[str] | None = None,
                    share: list[StaffMember] | None = None,
                    retention: Retention = DEFAULT_RETENTION) -> HandOver:
    """Give every customer ``from_id`` owns within ``reach``'s stores to ``to`` (None: to
    nobody, the store's manager then receives their alerts), each profile written by
    :func:`give` (the rest kept as it stands, the timeline told; a customer whose owner
    someone changed meanwhile is left to them). A customer of a store
    ``to`` does not work at (``to`` bound to another store) is kept. ``from_id`` need not be on
    the team any more: someone who left still owns customers until they are handed over. Their
    unacknowledged alerts about those customers go along (:func:`alerts_follow`). The team log
    tells it. ``only``: just these of their customers (someone's customers shared among
    several colleagues); the ids among them that are not theirs within ``reach`` are said.
    ``share``: instead of ``to``, these colleagues, each given an even share (:func:`deal`);
    the team log tells each share."""
    named = None if only is None else set(only)
    mine: list[owners.Owned] = []
    found: set[str] = set()
    for item in await owners.owned(redis, keys, tenant, from_id):
        if not reach.allows_store(item.store):
            continue
        if named is not None:
            if item.customer_id not in named:
                continue
            found.add(item.customer_id)
        mine.append(item)
    not_owned = sorted(named - found) if named is not None else []
    dealt: dict[str | None, list[owners.Owned]] = {}  # new owner (None: nobody) -> customers
    if share:
        shared, left = deal(mine, share)
        dealt.update(shared)
    else:
        left = [c for c in mine if to is not None and to.store_id not in (c.store, None)]
        out = {c.customer_id for c in left}
        dealt[to.staff_id if to is not None else None] = [
            c for c in mine if c.customer_id not in out]
    kept = [c.customer_id for c in left]
    plan = [c for group in dealt.values() for c in group]
    if not plan:
        return HandOver([], kept, 0, not_owned, {t.staff_id: 0 for t in share or []})
    # their open alerts go first (a hand-over interrupted after the profiles is done again
    # without them)
    alerts = await alerts_follow(redis, keys, tenant, {
        c.customer_id: (from_id, to_id, c.store) for to_id, group in dealt.items()
        for c in group}, retention=retention)
    name = await known_name(redis, keys, profiles, tenant, from_id)
    moved: list[str] = []
    shares = {t.staff_id: 0 for t in share or []}
    for to_id, group in dealt.items():
        if not group:
            continue
        given = await give(redis, keys, tenant, [c.customer_id for c in group], to_id,
                           only_from=from_id, by=by, retention=retention, alerts=False)
        await _log(redis, keys, tenant, "staff", from_id, "handed_over", [], by,
                   {c.store for c in group}, name, to=to_id, count=len(given))
        moved += given
        if to_id in shares:
            shares[to_id] = len(given)
    return HandOver(moved, kept, alerts, not_owned, shares)


# Write a profile only if it is still what was read (compare and set): an owner change
# rewrites the rest of the profile as it stands, so a profile PUT landing between the read
# and the write is re-read rather than overwritten.
_CAS = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
_CAS_TRIES = 5


async def give(redis: Redis, keys: Keys, tenant: str, customer_ids: list[str],
               to_id: str | None, *, only_from: str | None = None, by: str,
               retention: Retention = DEFAULT_RETENTION, alerts: bool = True) -> list[str]:
    """Make ``to_id`` (None: nobody) the owner of each customer, the rest of each profile kept
    as it stands at the moment of the write (a customer without a profile gets one naming the
    owner); with ``only_from``, only customers whose profile still names ``only_from`` (someone
    else changed it meanwhile: theirs to keep). Each changed customer's timeline says
    ``owner_staff_id`` changed and by whom; the owners' sets follow as
    :func:`replace_profile` keeps them, and (``alerts``) their open alerts go along
    (:func:`alerts_follow`; a hand-over moves them itself, first). Batched: a few round trips
    per 500 customers. Returns the customers whose owner changed."""
    done: list[str] = []
    for start in range(0, len(customer_ids), owners.BATCH):
        done += await _give(redis, keys, tenant, customer_ids[start:start + owners.BATCH],
                            to_id, only_from, by, retention, alerts)
    return done


async def _give(redis: Redis, keys: Keys, tenant: str, chunk: list[str], to_id: str | None,
                only_from: str | None, by: str, retention: Retention, alerts: bool
                ) -> list[str]:
    if to_id is not None:  # the new owner's set first (a superset, see services.records.owners)
        await owners.note_owners(redis, keys, tenant, chunk, to_id)
    before: dict[str, str | None] = {}  # customer -> the owner their profile named
    written: dict[str, CustomerProfile] = {}  # customer -> their profile as written
    pending = list(chunk)
    for _ in range(_CAS_TRIES):
        if not pending:
            break
        raws = await get_many(redis, [keys.profile(c, tenant) for c in pending])
        writes: list[tuple[str, str, str]] = []
        for cid, raw in zip(pending, raws, strict=True):
            owner = owner_of(raw)
            if owner == to_id or (only_from is not None and owner != only_from):
                continue  # nothing to change, or no longer theirs to give
            try:
                profile = (CustomerProfile.model_validate_json(raw) if raw
                           else CustomerProfile.model_validate({}))
            except ValidationError:
                continue  # a profile this version cannot read is left as it is
            new = profile.model_copy(update={"owner_staff_id": to_id})
            writes.append((cid, raw or "", new.model_dump_json(exclude_none=True)))
            before[cid] = owner
            written[cid] = new
        if not writes:
            break
        pipe = redis.pipeline(transaction=False)
        for cid, old, new_json in writes:
            pipe.eval(_CAS, 1, keys.profile(cid, tenant), old, new_json)
        results = await pipe.execute()
        pending = [cid for (cid, _, _), ok in zip(writes, results, strict=True) if not ok]
        for cid in pending:
            before.pop(cid, None)
    changed = [cid for cid in chunk if cid in before]
    if not changed:
        return []
    gone: dict[str, list[str]] = {}
    for cid in changed:
        if (was := before[cid]) is not None:
            gone.setdefault(was, []).append(cid)
    for was, cids in gone.items():
        await owners.forget_owners(redis, keys, tenant, cids, was, to_id)
    if alerts:  # (from the store's manager too, for a customer who had no owner)
        stores = await owners.home_stores(redis, keys, tenant,
                                          {c: written[c] for c in changed})
        await alerts_follow(redis, keys, tenant, {
            cid: (before[cid], to_id, stores[cid]) for cid in changed}, retention=retention)
    at = iso_ms(int(time.time() * 1000))
    pipe = redis.pipeline(transaction=False)
    for cid in changed:
        await timeline.append(redis, keys, cid, tenant, {
            "kind": "profile_change", "at": at, "fields": ["owner_staff_id"], "by": by},
            pipe, retention=retention)
    await pipe.execute()
    return changed


async def known_name(redis: Redis, keys: Keys, profiles: ProfileStore, tenant: str,
                     staff_id: str) -> str | None:
    """A staff member's name: their record's, else (someone removed) the newest the team log
    kept, else None."""
    member = await profiles.get_staff(staff_id, tenant)
    if member is not None:
        return member.name
    for e in await team_log(redis, keys, tenant, limit=TEAM_LOG_MAX):
        if e.get("what") == "staff" and e.get("id") == staff_id and e.get("name"):
            return str(e["name"])
    return None


def in_reach(entry: dict[str, Any], reach: ApiKey) -> bool:
    """Whether a team log entry is about a store ``reach`` covers (any, tenant-wide)."""
    return reach.stores is None or any(reach.allows_store(str(s))
                                       for s in entry.get("stores") or [])


async def team_log(redis: Redis, keys: Keys, tenant: str, limit: int = 20, *,
                   reach: ApiKey | None = None) -> list[dict[str, Any]]:
    """The tenant's newest staff and store changes, newest first (entries that do not parse
    are left out); with ``reach``, only those about its stores (of the newest
    ``TEAM_LOG_MAX``), at most ``limit``."""
    raw = await redis.lrange(  # type: ignore[misc]
        keys.team_log(tenant), 0, (limit if reach is None else TEAM_LOG_MAX) - 1)
    out = []
    for blob in raw:
        try:
            entry = json.loads(blob)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if reach is not None and not in_reach(entry, reach):
            continue
        out.append(entry)
        if len(out) == limit:
            break
    return out
