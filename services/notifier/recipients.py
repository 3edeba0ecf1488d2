"""Who is told about a risk change (email/SMS), and in which time zone.

:class:`ProfileRecipientResolver` (the default) reads the customer's profile, staff and stores
through :class:`~services.common.profiles.ProfileStore`, all within ``RiskChange.tenant_id``:

- ``owner``: the staff member named by ``CustomerProfile.owner_staff_id``; when there is none
  (no profile, no owner, unknown staff id, or staff without any contact) the store manager;
- ``store_manager``: ``Store.manager_staff_id`` of the profile's store (else the change's
  store), falling back to the routing file's ``stores`` mapping and ``default_recipient``;
- ``customer``: the customer, from the profile's contact fields, with their consent
  (:meth:`~services.common.profiles.Consent.allows` is checked per channel by the planner);
- any recipient name defined in the routing file.

The time zone used for quiet hours and morning digests is the recipient's own when they have
one (``StaffMember.timezone``, a routing-file recipient's ``timezone``), else the store's
(``Store.timezone``), else the profile's, else the routing file's ``timezone``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from services.common.profiles import Consent, CustomerProfile, ProfileStore, StaffMember, Store
from services.common.riskchange import RiskChange
from services.notifier.channels.base import staff_key
from services.notifier.routing import CUSTOMER, OWNER, STORE_MANAGER, Recipient, Routing

logger = logging.getLogger(__name__)
_T = TypeVar("_T", CustomerProfile, StaffMember, Store)


@dataclass(frozen=True)
class CustomerContext:
    manager: Recipient
    owner: Recipient | None = None
    customer: Recipient | None = None
    consent: Consent | None = None
    timezone: str = "UTC"
    segment: str | None = None
    name: str | None = None  # the customer's profile name, shown in staff messages
    store_id: str | None = None  # the profile's home store, else the change's


class RecipientResolver(Protocol):
    async def context(self, change: RiskChange) -> CustomerContext:
        """Owner, manager, customer contact and time zone of ``change``'s customer; never
        raises for "unknown" (falls back to the routing file)."""
        ...


def recipients(ctx: CustomerContext, to: tuple[str, ...], routing: Routing) -> list[Recipient]:
    """The people a route's ``to`` names, deduplicated (owner falls back to the manager)."""
    out: dict[str, Recipient] = {}
    for who in to:
        person: Recipient | None
        if who == OWNER:
            person = ctx.owner or ctx.manager
        elif who == STORE_MANAGER:
            person = ctx.manager
        elif who == CUSTOMER:
            person = ctx.customer
        else:
            person = routing.recipients.get(who)
        if person is not None:
            out.setdefault(person.key, person)
    return list(out.values())


def for_owner(ctx: CustomerContext, to: tuple[str, ...], routing: Routing) -> set[str]:
    """The keys of the people a route's ``to`` names only as the customer's owner (or the
    store's manager standing in for a customer without one): a notice held for such a person
    follows the customer to whoever receives their alerts when it goes out. Someone the route
    names another way too (``store_manager``, by name) keeps theirs."""
    if OWNER not in to:
        return set()
    person = ctx.owner or ctx.manager
    others = recipients(ctx, tuple(who for who in to if who != OWNER), routing)
    return set() if any(p.key == person.key for p in others) else {person.key}


class StoreManagerResolver:
    """Only the routing file: the store's manager if mapped, else the default recipient."""

    def __init__(self, routing: Routing):
        self.routing = routing

    async def recipients_for(self, change: RiskChange) -> list[Recipient]:
        return [self.routing.store_manager(change.store_id)]

    async def context(self, change: RiskChange) -> CustomerContext:
        return CustomerContext(manager=self.routing.store_manager(change.store_id),
                               timezone=self.routing.policies.timezone)


def _staff_recipient(member: StaffMember, tenant: str) -> Recipient | None:
    if not (member.email or member.phone):
        return None
    return Recipient(key=staff_key(tenant, member.staff_id), name=member.name or member.staff_id,
                     email=member.email, phone=member.phone, locale=member.locale,
                     role=member.role, timezone=member.timezone)


class ProfileRecipientResolver:
    """Owner from the customer profile, store manager as fallback (see the module doc)."""

    def __init__(self, profiles: ProfileStore, routing: Routing):
        self.profiles = profiles
        self.routing = routing

    async def recipients_for(self, change: RiskChange) -> list[Recipient]:
        ctx = await self.context(change)
        return [ctx.owner or ctx.manager]

    async def context(self, change: RiskChange) -> CustomerContext:
        tenant = change.tenant_id
        profile = await self._get(self.profiles.get_profile(change.customer_id, tenant), "profile")
        store_id = (profile.store_id if profile and profile.store_id else None) or change.store_id
        store = await self._get(self.profiles.get_store(store_id, tenant), "store") if store_id else None
        manager: Recipient | None = None
        if store is not None and store.manager_staff_id:
            member = await self._get(self.profiles.get_staff(store.manager_staff_id, tenant), "staff")
            manager = _staff_recipient(member, tenant) if member else None
        if manager is None:
            manager = self.routing.store_manager(store_id)
        owner: Recipient | None = None
        customer: Recipient | None = None
        if profile is not None:
            if profile.owner_staff_id:
                member = await self._get(self.profiles.get_staff(profile.owner_staff_id, tenant),
                                         "staff")
                owner = _staff_recipient(member, tenant) if member else None
            if profile.email or profile.phone:
                customer = Recipient(key=f"customer:{tenant}:{change.customer_id}",
                                     name=profile.name or change.customer_id, email=profile.email,
                                     phone=profile.phone, locale=profile.locale or "en",
                                     role="customer")
        tz = (store.timezone if store is not None else None) or (
            profile.timezone if profile else None) or self.routing.policies.timezone
        return CustomerContext(manager=manager, owner=owner, customer=customer,
                               consent=profile.consent if profile else None, timezone=tz,
                               segment=profile.segment if profile else None,
                               name=profile.name if profile else None, store_id=store_id)

    @staticmethod
    async def _get(pending: Awaitable[_T | None], what: str) -> _T | None:
        try:
            return await pending
        except ValueError as exc:  # a stored document that no longer validates
            logger.warning("ignoring an unreadable %s document: %s", what, exc)
            return None
