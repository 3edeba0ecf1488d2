"""Who a customer is to the business: profiles, staff and stores, kept in Redis.

The API writes them (``PUT /v1/customers/{id}/profile`` and friends); the notifier reads them
to route an alert to the staff member who owns the customer, falling back to the store's
manager, in the store's time zone, honouring the customer's consent. Everything is per tenant.

Storage (see :class:`~services.common.redisconn.Keys`): a customer's profile is one JSON
string under the customer's hash tag (so erasure removes it with the rest); staff and stores
are one hash per tenant, id -> JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from redis.asyncio import Redis

from services.common.contact import (
    EMAIL_MAX_LENGTH,
    PHONE_MAX_LENGTH,
    check_email,
    check_phone,
    normalize_phone,
)
from services.common.events import DEFAULT_TENANT, Identifier
from services.common.redisconn import Keys, get_many

Locale = Literal["en", "zh-CN"]
LOCALES: tuple[Locale, ...] = ("en", "zh-CN")


def locale_of(value: str | None) -> Locale:
    """The language of a page a person reads (the staff console, a one-click acknowledge
    link's page) for a locale, a language tag or an Accept-Language header: any Chinese is
    zh-CN, anything else English."""
    if value and value.strip().lower().startswith("zh"):
        return "zh-CN"
    return "en"


ChannelName = Literal["sms", "email", "webhook"]

def _timezone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone like Europe/Berlin or Asia/Shanghai") from None
    return v


# contact details: services/common/contact.py is the one validator (the routing file's too)
Email = Annotated[str, StringConstraints(max_length=EMAIL_MAX_LENGTH), AfterValidator(check_email)]
Phone = Annotated[str, BeforeValidator(normalize_phone),
                  StringConstraints(max_length=PHONE_MAX_LENGTH), AfterValidator(check_phone)]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_timezone)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Consent(BaseModel):
    """What the customer agreed to be contacted by. Staff alerts about the customer are not
    contact with the customer; messages *to* the customer need consent for that channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sms: bool = False
    email: bool = False
    sms_opt_out: bool = Field(False, description="The customer replied STOP: never SMS them.")

    def allows(self, channel: str) -> bool:
        if channel == "sms":
            return self.sms and not self.sms_opt_out
        return bool(getattr(self, channel, False))


class CustomerProfile(BaseModel):
    """Profile fields the API upserts and the notifier reads; all optional."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{
        "owner_staff_id": "stylist-7", "store_id": "salon-downtown", "name": "Mei Chen",
        "email": "mei@example.com", "phone": "+8613800138000", "preferred_channel": "sms",
        "consent": {"sms": True, "email": False, "sms_opt_out": False},
        "timezone": "Asia/Shanghai", "segment": "vip", "birthday": "1990-04-12", "locale": "zh-CN",
    }]})
    owner_staff_id: Identifier | None = Field(None, description="Staff member who owns the customer.")
    store_id: Identifier | None = Field(None, description="Home store; defaults to the store of the events.")
    name: Label | None = None
    email: Email | None = None
    phone: Phone | None = None
    preferred_channel: ChannelName | None = None
    consent: Consent = Consent(sms=False, email=False, sms_opt_out=False)
    timezone: TimeZone | None = Field(None, description="IANA zone; defaults to the store's.")
    segment: Label | None = Field(None, description="Free-form segment used by routing, e.g. vip.")
    birthday: date | None = None
    locale: Locale | None = None


class StaffMember(BaseModel):
    """A member of staff who can receive alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    staff_id: Identifier
    name: Label | None = None
    email: Email | None = None
    phone: Phone | None = None
    store_id: Identifier | None = None
    role: Literal["staff", "manager"] = "staff"
    locale: Locale = "en"
    preferred_channel: ChannelName | None = None
    timezone: TimeZone | None = Field(
        default=None,
        description="The staff member's own IANA time zone, for someone over stores in "
        "several zones (a regional manager): their quiet hours and morning digests follow it, "
        "one digest for all their stores. Absent: each customer's store's zone.")


MAX_CLOSURES = 100
MAX_CLOSURE_DAYS = 366


class Closure(BaseModel):
    """Days the store is closed (a summer break, a holiday, a renovation): its customers'
    silence does not count on them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    first: date = Field(description="First closed day, on the store's calendar.")
    last: date = Field(description="Last closed day (inclusive); the store opens the day after.")
    note: Label | None = Field(None, description="Why, for people: e.g. summer break.")

    @model_validator(mode="after")
    def _ordered(self) -> Closure:
        if self.last < self.first:
            raise ValueError(f"last ({self.last}) must not be before first ({self.first})")
        if (self.last - self.first).days >= MAX_CLOSURE_DAYS:
            raise ValueError(f"a closure is at most {MAX_CLOSURE_DAYS} days "
                             f"({self.first} .. {self.last} is {(self.last - self.first).days + 1})")
        return self


class Store(BaseModel):
    """A store: its time zone (its customers' days for events written in UTC, quiet hours,
    digests), its manager (fallback recipient) and the days it is closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    store_id: Identifier
    name: Label | None = None
    timezone: TimeZone = Field(
        "UTC", description="The store's IANA time zone. Events written at offset 0 (Z) that "
        "name this store, or name none and belong to its customers, are counted on its "
        "calendar days (summer time included); its staff's quiet hours and digests follow it.")
    manager_staff_id: Identifier | None = None
    locale: Locale = "en"
    closures: list[Closure] = Field(
        default_factory=list, max_length=MAX_CLOSURES,
        description="Days the store is closed, past and planned (at most "
        f"{MAX_CLOSURES}). Its customers' silence does not count on them: a customer's days "
        "since their last visit count the days the store was open, so closing for the "
        "summer does not make every customer look as if they left. The scorer reads them "
        "within 5 s; customers already scored are re-scored at their next look.")
    never_closes: bool = Field(
        False, description="The store is never closed (an online course beside a school): "
        "it has no closed days to enter, and a business whose rules expect closed days (a "
        "school's) is not warned of it, nor are its customers' reasons said to lack them. "
        "Not with closures.")

    @field_validator("never_closes")
    @classmethod
    def _closes_or_not(cls, never: bool, info: ValidationInfo) -> bool:
        if never and info.data.get("closures"):
            raise ValueError("a store that never closes has no closures: remove the closures "
                             "or set never_closes to false")
        return never

    @property
    def closed_days_on_record(self) -> bool:
        """Whether its record says when it closes: a closed day, or that it never closes
        (:func:`~services.scoring.closures.closed_days_missing`)."""
        return bool(self.closures) or self.never_closes


def owner_of(raw: str | bytes | None) -> str | None:
    """The ``owner_staff_id`` of a stored profile (its JSON), None without one."""
    return _profile_text(raw, "owner_staff_id")


def home_store_of(raw: str | bytes | None) -> str | None:
    """The ``store_id`` of a stored profile (its JSON), None without one."""
    return _profile_text(raw, "store_id")


def _profile_text(raw: str | bytes | None, name: str) -> str | None:
    if not raw:
        return None
    try:
        value = json.loads(raw).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


class ProfileStore:
    """Reads and writes profiles, staff and stores; one instance per process."""

    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    # customers ------------------------------------------------------------------------
    async def get_profile(self, customer_id: str, tenant: str = DEFAULT_TENANT
                          ) -> CustomerProfile | None:
        raw = await self.redis.get(self.keys.profile(customer_id, tenant))
        return CustomerProfile.model_validate_json(raw) if raw else None

    async def get_profiles(self, refs: Iterable[tuple[str, str]]
                           ) -> dict[tuple[str, str], CustomerProfile]:
        """Many profiles in one round trip (one per node on a cluster); customers without one
        are left out."""
        order = list(refs)
        if not order:
            return {}
        raws = await get_many(self.redis, [self.keys.profile(c, t) for t, c in order])
        return {ref: CustomerProfile.model_validate_json(raw)
                for ref, raw in zip(order, raws, strict=True) if raw}

    async def put_profile(self, customer_id: str, profile: CustomerProfile,
                          tenant: str = DEFAULT_TENANT) -> None:
        """Write the profile; one naming a store marks the tenant's profiles as naming stores
        first (``Keys.profile_stores``), in the same round trip."""
        pipe = self.redis.pipeline(transaction=False)
        if profile.store_id is not None:
            pipe.set(self.keys.profile_stores(tenant), "1")
        pipe.set(self.keys.profile(customer_id, tenant),
                 profile.model_dump_json(exclude_none=True))
        await pipe.execute()

    async def delete_profile(self, customer_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        return bool(await self.redis.delete(self.keys.profile(customer_id, tenant)))

    # staff ----------------------------------------------------------------------------
    async def get_staff(self, staff_id: str, tenant: str = DEFAULT_TENANT) -> StaffMember | None:
        raw = await self.redis.hget(self.keys.staff(tenant), staff_id)  # type: ignore[misc]
        return StaffMember.model_validate_json(raw) if raw else None

    async def list_staff(self, tenant: str = DEFAULT_TENANT) -> list[StaffMember]:
        raw = await self.redis.hgetall(self.keys.staff(tenant))  # type: ignore[misc]
        return sorted((StaffMember.model_validate_json(v) for v in raw.values()),
                      key=lambda s: s.staff_id)

    async def put_staff(self, member: StaffMember, tenant: str = DEFAULT_TENANT) -> None:
        """Write a staff member (someone who had left is on the team again)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.staff(tenant), member.staff_id,
                  member.model_dump_json(exclude_none=True))
        pipe.srem(self.keys.former_staff(tenant), member.staff_id)
        await pipe.execute()

    async def delete_staff(self, staff_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        """Remove a staff member; they are remembered as having left (``Keys.former_staff``).
        False when there was none."""
        if not await self.redis.hdel(self.keys.staff(tenant), staff_id):  # type: ignore[misc]
            return False
        await self.redis.sadd(self.keys.former_staff(tenant), staff_id)  # type: ignore[misc]
        return True

    # stores ---------------------------------------------------------------------------
    async def get_store(self, store_id: str, tenant: str = DEFAULT_TENANT) -> Store | None:
        raw = await self.redis.hget(self.keys.stores(tenant), store_id)  # type: ignore[misc]
        return Store.model_validate_json(raw) if raw else None

    async def list_stores(self, tenant: str = DEFAULT_TENANT) -> list[Store]:
        raw = await self.redis.hgetall(self.keys.stores(tenant))  # type: ignore[misc]
        return sorted((Store.model_validate_json(v) for v in raw.values()),
                      key=lambda s: s.store_id)

    async def put_store(self, store: Store, tenant: str = DEFAULT_TENANT) -> None:
        await self.redis.hset(self.keys.stores(tenant), store.store_id,  # type: ignore[misc]
                              store.model_dump_json(exclude_none=True))

    async def delete_store(self, store_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        return bool(await self.redis.hdel(self.keys.stores(tenant), store_id))  # type: ignore[misc]


__all__ = ["Consent", "CustomerProfile", "ProfileStore", "StaffMember", "Store"]
