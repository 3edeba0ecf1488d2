"""Console sessions and one-time sign-in links, kept in Redis.

A session is a random 256-bit id in an HttpOnly cookie; Redis holds only its SHA-256, so a
copy of Redis cannot be replayed as a cookie. A session reaches what its person may reach now,
not what they could when they signed in (:func:`as_now`, on every request): a staff member
removed is signed out, one moved or given another role has the new reach on their next page,
an API key taken out of the configuration ends the admin sessions it started. A sign-in link
token is single use (``GETDEL``) and expires. Every key is a single key (no multi-key
scripts): Redis Cluster safe.

Drafts (win-back action forms that could not be saved) are kept with the customer they are
about, under ``Keys.drafts`` (one hash per customer, a field per session or sign-in link that
holds one), not with the session: erasing the customer (``erase_customer`` deletes every key
``Keys.customer_all`` lists) drops them, note and all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

from pydantic import SecretStr
from redis.asyncio import Redis

from services.common.profiles import StaffMember
from services.common.redisconn import Keys
from services.common.settings import ApiKey
from services.records.winback import ACTION_TYPES

SESSION_COOKIE = "cw_session"
CSRF_COOKIE = "cw_csrf"  # double-submit token for the forms shown before a session exists


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Session:
    """Who is signed in: a staff member (e-mailed link) or an admin key's holder."""

    kind: str  # "staff" | "admin"
    tenant: str
    stores: tuple[str, ...] | None  # None: every store of the tenant
    name: str
    locale: str
    csrf: str
    staff_id: str | None = None
    role: str = "staff"  # "manager" (staff profile role) and admins see the manager views
    # an admin's: which API key signed in (:func:`key_tag`), checked on every request so that
    # a key taken out of CHURNWATCH_API_KEYS ends its sessions; None in development mode
    key_tag: str | None = None

    @property
    def manages(self) -> bool:
        return self.kind == "admin" or self.role == "manager"

    def as_key(self) -> ApiKey:
        """The session's reach, as the API's scope helpers know it (read scope only)."""
        scopes = frozenset({"admin"}) if self.kind == "admin" else frozenset({"read"})
        return ApiKey(name=self.staff_id or self.name, secret=SecretStr(""), scopes=scopes,
                      tenant=self.tenant,
                      stores=frozenset(self.stores) if self.stores is not None else None)


KEY_TAG_ROUNDS = 100_000  # PBKDF2-SHA256: ~25 ms; what Redis keeps of a key is slow to guess


def key_tag(secret: str) -> str:
    """What an admin session keeps of the API key it signed in with: a random salt and the
    PBKDF2 of the key's secret with it, never the secret or a fast hash of it (a copy of Redis
    does not give a key back)."""
    salt = secrets.token_hex(16)
    return f"{salt}${_derive(salt, secret)}"


def _derive(salt: str, secret: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), bytes.fromhex(salt),
                               KEY_TAG_ROUNDS).hex()


@lru_cache(maxsize=1024)
def tagged_key_index(tag: str, key_secrets: tuple[str, ...]) -> int | None:
    """The index in ``key_secrets`` of the secret ``tag`` was made from, else None. Kept per
    process (a key set changes only with a restart): one derivation per configured key the
    first time a session is seen, a dict lookup after."""
    salt, _, digest = tag.partition("$")
    try:
        bytes.fromhex(salt)
    except ValueError:
        return None
    found = None
    for i, secret in enumerate(key_secrets):
        if secrets.compare_digest(_derive(salt, secret), digest):
            found = i
    return found


def find_tagged_key(tag: str | None, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The configured key an admin session's ``tag`` was made from, else None (blocks for a
    derivation per key the first time a tag is seen in the process: call it off the loop)."""
    if not tag:
        return None
    index = tagged_key_index(tag, tuple(k.secret.get_secret_value() for k in keys))
    return keys[index] if index is not None else None


def as_now(session: Session, *, member: StaffMember | None = None, key: ApiKey | None = None,
           auth_enabled: bool = True) -> Session | None:
    """The session with the reach its person has now, or None when they have none any more.
    A staff member removed (``member`` None) is signed out; one given another role or store
    has it from their next page on. An admin session ends when the key it signed in with
    (``key``, :func:`find_tagged_key`) is no longer configured, lacks the admin scope now or
    is bound to another tenant; its stores follow the key. A session started in development
    mode (no keys) ends when keys are configured."""
    if session.kind == "staff":
        if member is None:
            return None
        return replace(session, role=member.role, name=member.name or member.staff_id,
                       stores=(member.store_id,) if member.store_id else None)
    if not auth_enabled:
        return session
    if key is None or not key.allows("admin") or key.tenant != session.tenant:
        return None
    return replace(session, stores=tuple(sorted(key.stores)) if key.stores is not None else None)


@dataclass(frozen=True)
class Draft:
    """A win-back action form that could not be saved (the session had ended or the form's
    token was stale): given back, pre-filled, on the customer's page after signing in. Never
    recorded from here: the person presses the button again, with a valid session and token."""

    customer_id: str
    action: str
    note: str = ""

    NOTE_MAX = 1000  # the note's own limit on the form (and in the record)

    @classmethod
    def of(cls, customer_id: str, action: str, note: str, actions: tuple[str, ...]
           ) -> Draft | None:
        """A draft from a form's fields: an action of ``actions``, a customer id of at most
        128 characters without control characters, the note cut to its limit; else None."""
        if action not in actions or not customer_id or len(customer_id) > 128:
            return None
        if any(c < " " or c == "\x7f" for c in customer_id):
            return None
        return cls(customer_id, action, note.replace("\r\n", "\n").strip()[:cls.NOTE_MAX])


@dataclass(frozen=True)
class Link:
    """A redeemed sign-in link: whose it was, the console address to return to and the
    unsaved form to give back."""

    tenant: str
    staff_id: str
    next_url: str | None = None
    draft: Draft | None = None


class SessionStore:
    def __init__(self, redis: Redis, keys: Keys, *, session_seconds: int, link_seconds: int):
        self.redis = redis
        self.keys = keys
        self.session_seconds = session_seconds
        self.link_seconds = link_seconds

    def _session_key(self, sid: str) -> str:
        return f"{self.keys.prefix}:console:sess:{_digest(sid)}"

    def _link_key(self, token: str) -> str:
        return f"{self.keys.prefix}:console:link:{_digest(token)}"

    async def create(self, session: Session) -> str:
        sid = new_token()
        await self.redis.set(self._session_key(sid), json.dumps(asdict(session)),
                             ex=self.session_seconds)
        return sid

    async def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 128:
            return None
        raw = await self.redis.get(self._session_key(sid))
        if raw is None:
            return None
        data = json.loads(raw)
        stores = data.get("stores")
        return Session(**{**data, "stores": tuple(stores) if stores is not None else None})

    async def update_locale(self, sid: str, session: Session, locale: str) -> Session:
        updated = Session(**{**asdict(session), "locale": locale})
        await self.redis.set(self._session_key(sid), json.dumps(asdict(updated)), keepttl=True)
        return updated

    async def delete(self, sid: str | None) -> None:
        if sid and len(sid) <= 128:
            await self.redis.delete(self._session_key(sid))

    async def put_draft(self, sid: str, tenant: str, draft: Draft) -> None:
        """Keep a form the session's person could not save (signed out, or the form's token
        was stale) until their next look at the customer's page, for the session's lifetime,
        with the customer (erased with them)."""
        await self._put_draft(tenant, draft, f"s:{_digest(sid)}", self.session_seconds)

    async def take_draft(self, sid: str | None, tenant: str, customer_id: str) -> Draft | None:
        """The session's unsaved form for ``customer_id``, removed as it is given (a page
        shows it once); None when there is none (another customer's are kept)."""
        if not sid or len(sid) > 128:
            return None
        return await self._take_draft(tenant, customer_id, f"s:{_digest(sid)}")

    async def _put_draft(self, tenant: str, draft: Draft, holder: str, seconds: int) -> None:
        key = self.keys.drafts(draft.customer_id, tenant)
        value = json.dumps({"action": draft.action, "note": draft.note,
                            "until": time.time() + seconds})
        ttl = await self.redis.ttl(key)  # the hash lives as long as its longest-lived draft
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, holder, value)
        pipe.expire(key, max(seconds, int(ttl)))
        await pipe.execute()

    async def _take_draft(self, tenant: str, customer_id: str, holder: str) -> Draft | None:
        key = self.keys.drafts(customer_id, tenant)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(key, holder)
        pipe.hdel(key, holder)
        raw, _ = await pipe.execute()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("until"), int | float) \
                or data["until"] < time.time():  # (its holder's lifetime is over)
            return None
        return Draft.of(customer_id, str(data.get("action") or ""), str(data.get("note") or ""),
                        ACTION_TYPES)

    async def issue_link(self, tenant: str, staff_id: str, *, next_url: str | None = None,
                         draft: Draft | None = None) -> str:
        """A one-time sign-in link's token for the staff member; ``next_url`` (a console
        address, already checked) is where signing in with it returns to, ``draft`` the
        unsaved form the new session gets back."""
        token = new_token()
        if draft is not None:  # with the customer (erased with them); the link names whom
            await self._put_draft(tenant, draft, f"l:{_digest(token)}", self.link_seconds)
        await self.redis.set(self._link_key(token),
                             json.dumps({"tenant": tenant, "staff_id": staff_id,
                                         "next": next_url,
                                         "draft_customer": draft.customer_id if draft else None}),
                             ex=self.link_seconds)
        return token

    async def peek_link(self, token: str) -> bool:
        return len(token) <= 128 and bool(await self.redis.exists(self._link_key(token)))

    async def redeem_link(self, token: str) -> Link | None:
        """The staff member (and where to go) of a valid link, which is spent by this call;
        else None."""
        if not token or len(token) > 128:
            return None
        raw = await self.redis.getdel(self._link_key(token))
        if raw is None:
            return None
        data = json.loads(raw)
        tenant, about = str(data["tenant"]), data.get("draft_customer")
        draft = await self._take_draft(tenant, about, f"l:{_digest(token)}") \
            if isinstance(about, str) and about else None
        return Link(tenant=tenant, staff_id=str(data["staff_id"]),
                    next_url=data.get("next") if isinstance(data.get("next"), str) else None,
                    draft=draft)
