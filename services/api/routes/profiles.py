"""Who customers are to the business: profiles, staff and stores (read by the notifier)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.api.schemas import (
    HandOverRequest,
    HandOverResult,
    OwnedCustomer,
    StaffCustomers,
    Stores,
    TeamChange,
    TeamChanges,
)
from services.common.events import Identifier
from services.common.profiles import CustomerProfile, StaffMember, Store
from services.common.timefmt import iso_ms, now_ms
from services.records import owners
from services.records.profiles import (
    TEAM_LOG_MAX,
    ProfileBusy,
    remove_staff,
    replace_profile,
    save_staff,
    save_store,
    team_log,
)
from services.records.profiles import hand_over as handover
from services.records.profiles import patch_profile as apply_patch
from services.state.store import look_again_soon
from services.web.deps import AdminKey, IngestKey, Profiles, ReadKey, Res
from services.web.openapi import AUTH, TOO_LARGE, error, responses
from services.web.params import CustomerId, StaffId, StoreId
from services.web.scope import check_store_read, check_store_write

router = APIRouter(tags=["profiles"])
_404 = {404: error("Not found (in this tenant and the key's stores)", "no profile of 'c-1'")}


class StaffMemberBody(StaffMember):
    """A staff member as written: ``staff_id`` may be left out, the path names them."""

    staff_id: Identifier | None = None  # type: ignore[assignment]


class StoreBody(Store):
    """A store as written: ``store_id`` may be left out, the path names it."""

    store_id: Identifier | None = None  # type: ignore[assignment]


_M = TypeVar("_M", StaffMember, Store)


def _with_id(model: type[_M], body: StaffMember | Store, path_id: str, name: str) -> _M:
    """``body`` as ``model``, named by the path: its own id, when it gives one, must be the
    path's (422 saying both otherwise)."""
    body_id = getattr(body, name)
    if body_id is not None and body_id != path_id:
        raise HTTPException(422,
                            f"{name} in the body ({body_id!r}) differs from the path ({path_id!r})")
    return model.model_validate(body.model_dump(exclude_unset=True) | {name: path_id})


async def _scored_store(res: Res, key: IngestKey, customer_id: str) -> str | None:
    """The store the scorer knows the customer by, for a store-bound key (None otherwise)."""
    if key.stores is None:
        return None
    return await res.redis.hget(  # type: ignore[misc,return-value]
        res.keys.state(customer_id, key.tenant), "store")


async def _store_changed(res: Res, tenant: str, customer_id: str, changed: list[str]) -> None:
    """A profile naming another store: the scorer looks at the customer at its next sweep
    (a customer whose events name no store takes that store then, and its closed days)."""
    if "store_id" in changed:
        await look_again_soon(res.redis, res.keys, customer_id, tenant=tenant,
                              partitions=res.settings.topic_partitions,
                              now_ms=await now_ms(res.settings, res.redis, res.keys, tenant))


def _may_write(key: IngestKey, scored: str | None, old: CustomerProfile | None,
               new: CustomerProfile) -> None:
    """403 unless a store-bound key writes a profile of its stores: the new one's store, the
    stored one's, and the store the scorer knows the customer by (a scored customer of
    another store is not the key's either)."""
    for store in (new.store_id, *((old.store_id,) if old is not None else ()),
                  *((scored,) if scored is not None else ())):
        check_store_write(key, store)


@router.put("/v1/customers/{customer_id:anypath}/profile", response_model=CustomerProfile,
            summary="Create or replace a customer's profile",
            description="Owner staff member, home store, contact, preferred channel, consent, "
            "time zone, segment, birthday, locale — used by the notifier to route alerts. The "
            "whole profile is replaced, but for one thing: an owner_staff_id naming someone "
            "removed from the team (and not added back) does not take the customer from an "
            "owner who is on the team (a POS still naming a leaver would undo a hand-over); "
            "the answer is the profile as written. A new owner takes over the alerts the "
            "former owner had not acknowledged about the customer. The timeline records which "
            "fields changed (not values).",
            responses=responses(AUTH, TOO_LARGE))
async def put_profile(customer_id: CustomerId, body: CustomerProfile, res: Res, key: IngestKey,
                      profiles: Profiles) -> Any:
    old = await profiles.get_profile(customer_id, key.tenant)
    _may_write(key, await _scored_store(res, key, customer_id), old, body)
    written, changed = await replace_profile(res.redis, res.keys, profiles, customer_id,
                                             key.tenant, old, body, by=key.name,
                                             retention=res.settings.retention)
    await _store_changed(res, key.tenant, customer_id, changed)
    return written


@router.patch("/v1/customers/{customer_id:anypath}/profile", response_model=CustomerProfile,
              summary="Change some fields of a customer's profile",
              description="A JSON merge patch (RFC 7396): the fields sent replace the stored "
              "ones, `consent` merged field by field, a `null` removes a field; the rest is "
              "kept (a POS that syncs contact details without knowing the owner staff chose "
              "in the console keeps that owner). Applied to the profile as it stands (none: "
              "an empty one) and validated as a whole; the timeline records which fields "
              "changed.",
              responses=responses(AUTH, TOO_LARGE, {409: error(
                  "The profile changed under every attempt to apply the patch; send it again",
                  "the profile of 'c-1' changed under 5 attempts to patch it")}),
              openapi_extra={"requestBody": {"content": {"application/merge-patch+json": {
                  "schema": {"type": "object"}, "example": {"email": "mei@example.com",
                                                            "phone": None}}}}})
async def patch_profile(customer_id: CustomerId, res: Res, key: IngestKey,
                        body: Annotated[dict[str, Any], Body(examples=[
                            {"email": "mei@example.com", "phone": None},
                            {"consent": {"sms": False}}])]) -> Any:
    scored = await _scored_store(res, key, customer_id)
    try:
        profile, changed = await apply_patch(
            res.redis, res.keys, key.tenant, customer_id, body, by=key.name,
            allow=lambda old, new: _may_write(key, scored, old, new),
            retention=res.settings.retention)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors()]) from None
    except ProfileBusy as exc:
        raise HTTPException(409, f"{exc}; send it again") from None
    await _store_changed(res, key.tenant, customer_id, changed)
    return profile


@router.get("/v1/customers/{customer_id:anypath}/profile", response_model=CustomerProfile,
            summary="A customer's profile", responses=responses(AUTH, _404))
async def get_profile(customer_id: CustomerId, key: ReadKey, profiles: Profiles) -> Any:
    found = await profiles.get_profile(customer_id, key.tenant)
    return check_store_read(key, found, found.store_id if found else None,
                            f"no profile of customer {customer_id!r}")


@router.put("/v1/staff/{staff_id}", response_model=StaffMember,
            summary="Create or replace a staff member",
            description="Staff receive alerts about the customers they own (profile "
            "owner_staff_id); managers are the fallback of their store.",
            responses=responses(AUTH, TOO_LARGE))
async def put_staff(staff_id: StaffId, sent: StaffMemberBody, res: Res, key: AdminKey,
                    profiles: Profiles) -> Any:
    body = _with_id(StaffMember, sent, staff_id, "staff_id")
    check_store_write(key, body.store_id)
    old = await profiles.get_staff(staff_id, key.tenant)
    if old is not None:
        check_store_write(key, old.store_id)
    await save_staff(res.redis, res.keys, profiles, key.tenant, old, body, by=key.name)
    return body


@router.get("/v1/staff/{staff_id}", response_model=StaffMember, summary="A staff member",
            responses=responses(AUTH, _404))
async def get_staff(staff_id: StaffId, key: ReadKey, profiles: Profiles) -> Any:
    found = await profiles.get_staff(staff_id, key.tenant)
    return check_store_read(key, found, found.store_id if found else None,
                            f"no staff member {staff_id!r}")


@router.delete("/v1/staff/{staff_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a staff member",
               description="Idempotent. They are signed out of the console on their next page "
               "(a role or store changed with PUT takes effect there too).",
               responses=responses(AUTH))
async def delete_staff(staff_id: StaffId, res: Res, key: AdminKey,
                       profiles: Profiles) -> Response:
    found = await profiles.get_staff(staff_id, key.tenant)
    if found is not None:
        check_store_write(key, found.store_id)
        await remove_staff(res.redis, res.keys, profiles, key.tenant, found, by=key.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/v1/stores/{store_id}", response_model=Store, summary="Create or replace a store",
            description="A store's time zone (its customers' days for events written in UTC, "
            "quiet hours, digests) and manager (fallback recipient). The scorer reads the "
            "zone within 5 s; events already scored keep their days.",
            responses=responses(AUTH, TOO_LARGE))
async def put_store(store_id: StoreId, sent: StoreBody, res: Res, key: AdminKey,
                    profiles: Profiles) -> Any:
    body = _with_id(Store, sent, store_id, "store_id")
    check_store_write(key, store_id)
    old = await profiles.get_store(store_id, key.tenant)
    await save_store(res.redis, res.keys, profiles, key.tenant, old, body, by=key.name)
    return body


@router.get("/v1/stores", response_model=Stores, summary="The stores",
            description="Every store of the tenant the key reaches (a store-bound key: its "
            "stores), by store_id.", responses=responses(AUTH))
async def list_stores(key: ReadKey, profiles: Profiles) -> Any:
    found = [s for s in await profiles.list_stores(key.tenant) if key.allows_store(s.store_id)]
    return Stores(count=len(found), stores=found)


@router.get("/v1/stores/{store_id}", response_model=Store, summary="A store",
            responses=responses(AUTH, _404))
async def get_store(store_id: StoreId, key: ReadKey, profiles: Profiles) -> Any:
    found = await profiles.get_store(store_id, key.tenant)
    return check_store_read(key, found, store_id, f"no store {store_id!r}")


@router.get("/v1/staff/{staff_id}/customers", response_model=StaffCustomers,
            summary="A staff member's customers",
            description="The customers whose profile names the staff member their owner "
            "(also after the staff member was removed: they keep them until handed over), "
            "within the key's stores.", responses=responses(AUTH))
async def staff_customers(staff_id: StaffId, res: Res, key: ReadKey) -> Any:
    found = [c for c in await owners.owned(res.redis, res.keys, key.tenant, staff_id)
             if key.allows_store(c.store)]
    return StaffCustomers(staff_id=staff_id, count=len(found), customers=[
        OwnedCustomer(customer_id=c.customer_id, store_id=c.store) for c in found])


@router.post("/v1/staff/{staff_id}/handover", response_model=HandOverResult,
             summary="Hand a staff member's customers over",
             description="Every customer the staff member owns, within the key's stores (or "
             "only those named in customer_ids), gets another owner (or none: the store's "
             "manager then receives their alerts), or with share_among an even share goes to "
             "each of several colleagues: only the owner changes, on each profile as it "
             "stands when written; each timeline and the team log say so. Customers of a "
             "store the new owner does not work at are kept (listed). For someone who left or "
             "changed store; idempotent.",
             responses=responses(AUTH, TOO_LARGE))
async def hand_over(staff_id: StaffId, body: HandOverRequest, res: Res, key: AdminKey,
                    profiles: Profiles) -> Any:
    async def taker(field: str, taker_id: str) -> StaffMember:
        if taker_id == staff_id:
            raise HTTPException(422, f"{field} names the staff member whose customers are "
                                "handed over; name someone else" + (
                                    ", or null for nobody" if field == "to_staff_id" else ""))
        found = await profiles.get_staff(taker_id, key.tenant)
        if found is None:
            raise HTTPException(422, f"{field}: no staff member {taker_id!r} in this tenant: "
                                f"add them first (PUT /v1/staff/{taker_id})")
        check_store_write(key, found.store_id)
        return found

    to = await taker("to_staff_id", body.to_staff_id) if body.to_staff_id is not None else None
    share = ([await taker("share_among", t) for t in body.share_among]
             if body.share_among is not None else None)
    done = await handover(res.redis, res.keys, profiles, key.tenant, staff_id, to, reach=key,
                          by=key.name, only=body.customer_ids, share=share,
                          retention=res.settings.retention)
    return HandOverResult(moved=len(done.moved), kept=done.kept, alerts_moved=done.alerts,
                          not_owned=done.not_owned, shares=done.shares)


@router.get("/v1/team/changes", response_model=TeamChanges, summary="Who changed the team",
            description="The tenant's newest staff and store changes, newest first, through "
            "the API and the console alike: who added, changed or removed a staff member or "
            "store (which fields, never the values) or handed someone's customers over. A "
            "store-bound key sees its stores' changes.", responses=responses(AUTH))
async def team_changes(res: Res, key: ReadKey,
                       limit: Annotated[int, Query(ge=1, le=TEAM_LOG_MAX)] = 50) -> Any:
    out: list[TeamChange] = []
    for e in await team_log(res.redis, res.keys, key.tenant, limit, reach=key):
        try:
            out.append(TeamChange(
                at=iso_ms(int(e.get("at_ms") or 0)), what=e.get("what"), id=str(e.get("id")),
                name=e.get("name"), action=e.get("action"), fields=e.get("fields") or [],
                by=str(e.get("by")), stores=[str(s) for s in e.get("stores") or []],
                to_staff_id=e.get("to"), count=e.get("count")))
        except ValidationError:  # an entry this version does not know: left out
            continue
    return TeamChanges(changes=out)
