"""Acknowledgement of alerts: the storage the API's ``POST /v1/alerts/{alert_id}/ack`` and the
notifier's escalation share.

``alert_id`` is the ``id`` of the risk-change CloudEvent that raised the alert (the same id
every channel's message carries). An acknowledgement is one Redis string under
``Keys.ack(alert_id, tenant)`` (one tenant's key cannot acknowledge another tenant's alert) holding JSON ``{"by": "<staff id or name>", "at": <unix seconds>}``,
kept ``ACK_TTL_SECONDS``. The first acknowledgement wins; later ones change nothing.

Escalation (a high-risk alert not acknowledged within ``notifier_escalate_after_s`` goes to
the store manager) checks :func:`is_acknowledged` when the escalation falls due.

Known alerts: the notifier records every alert it sends (or digests) with :func:`record_alert`
under ``Keys.alert(alert_id, tenant)`` (customer and store, ``ACK_TTL_SECONDS``); the API
answers 404 to an acknowledgement of an id without such a record.

One-click links (:class:`AckLinks`): each staff message carries ``<public url>/a/<token>``.
The token is an HMAC-SHA256 (``CHURNWATCH_ACK_LINK_SECRET``) over the tenant, the alert id and
the recipient, so it is the same on every replay of the record; the notifier stores
``Keys.ack_link(token)`` = ``{"tenant", "alert_id", "by", "exp", "locale"}`` before the message goes out,
for ``CHURNWATCH_ACK_LINK_TTL_SECONDS``. The API checks the HMAC against that record (a record
written without the secret is refused), the expiry, and uses the link once (a ``:used``
marker, SET NX).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from services.common.redisconn import Keys
from services.common.settings import DEFAULT_RETENTION

ACK_TTL_SECONDS = DEFAULT_RETENTION.alert_record_ttl_s  # CHURNWATCH_ALERT_RECORD_DAYS
MAX_ALERT_ID_LENGTH = 256
MAX_BY_LENGTH = 256


class InvalidAck(ValueError):
    """The alert id or the acknowledger is empty or too long."""


def _check(alert_id: str, by: str | None = None) -> None:
    if not alert_id or len(alert_id) > MAX_ALERT_ID_LENGTH:
        raise InvalidAck(f"alert_id must be 1..{MAX_ALERT_ID_LENGTH} characters, got "
                         f"{len(alert_id)}")
    if by is not None and (not by or len(by) > MAX_BY_LENGTH):
        raise InvalidAck(f"'by' must be 1..{MAX_BY_LENGTH} characters, got {len(by)}")


async def acknowledge(redis: Redis, keys: Keys, alert_id: str, by: str,
                      *, now: float | None = None, tenant: str = "default",
                      ttl_s: int = ACK_TTL_SECONDS) -> bool:
    """Record that ``by`` acknowledged ``alert_id``. True when this call recorded it, False
    when the alert was already acknowledged (idempotent; the first acknowledger is kept).
    Raises :class:`InvalidAck` for an empty or over-long id or ``by``."""
    _check(alert_id, by)
    value = json.dumps({"by": by, "at": time.time() if now is None else now})
    created = await redis.set(keys.ack(alert_id, tenant), value, nx=True, ex=ttl_s)
    return bool(created)


async def is_acknowledged(redis: Redis, keys: Keys, alert_id: str,
                          tenant: str = "default") -> bool:
    """Whether anyone of ``tenant`` acknowledged ``alert_id``."""
    _check(alert_id)
    return bool(await redis.exists(keys.ack(alert_id, tenant)))


async def get_acknowledgement(redis: Redis, keys: Keys, alert_id: str,
                              tenant: str = "default") -> dict[str, Any] | None:
    """``{"by", "at"}`` of the acknowledgement, or None."""
    _check(alert_id)
    return await _json(redis, keys.ack(alert_id, tenant))


async def acknowledge_once(redis: Redis, keys: Keys, alert_id: str, by: str, *,
                           tenant: str = "default", now: float | None = None,
                           ttl_s: int = ACK_TTL_SECONDS) -> tuple[bool, dict[str, Any]]:
    """Acknowledge and return ``(new, {"by", "at"})``: the first acknowledgement, whoever
    recorded it (``new`` is True when this call did)."""
    new = await acknowledge(redis, keys, alert_id, by, now=now, tenant=tenant, ttl_s=ttl_s)
    first = await get_acknowledgement(redis, keys, alert_id, tenant)
    return new, first or {"by": by, "at": time.time() if now is None else now}


# known alerts ------------------------------------------------------------------------------

async def record_alert(redis: Redis, keys: Keys, alert_id: str, *, tenant: str,
                       customer_id: str, store_id: str | None, now: float | None = None,
                       ttl_s: int = ACK_TTL_SECONDS) -> None:
    """Remember that ``alert_id`` was sent to staff of ``tenant`` (idempotent: a replay keeps
    the first record)."""
    _check(alert_id)
    value = json.dumps({"customer_id": customer_id, "store_id": store_id,
                        "at": time.time() if now is None else now})
    mine = keys.customer_alerts(customer_id, tenant)  # erasure finds the record through it
    pipe = redis.pipeline(transaction=False)  # single-key commands: cluster-safe
    pipe.set(keys.alert(alert_id, tenant), value, nx=True, ex=ttl_s)
    pipe.sadd(mine, alert_id)
    pipe.expire(mine, ttl_s)
    await pipe.execute()


async def get_alert(redis: Redis, keys: Keys, alert_id: str, tenant: str = "default"
                    ) -> dict[str, Any] | None:
    """``{"customer_id", "store_id", "at"}`` of an alert the notifier sent, or None."""
    _check(alert_id)
    return await _json(redis, keys.alert(alert_id, tenant))


async def _json(redis: Redis, key: str) -> dict[str, Any] | None:
    raw = await redis.get(key)
    return json.loads(raw) if raw is not None else None  # type: ignore[no-any-return]


# one-click links ---------------------------------------------------------------------------

LINK_PATH = "/a/"
TOKEN_LENGTH = 22  # 16 bytes of HMAC-SHA256, base64url without padding


class LinkRefused(Exception):
    """The link is unknown, forged, expired or used; ``status`` is the HTTP status to answer,
    ``kind`` what to tell the person (``unknown``: made up, forged, unreadable or gone;
    ``expired``; ``used``) and ``link`` the link's record when it was read and checked (whose
    it is, in what language: the refusal speaks it)."""

    def __init__(self, status: int, message: str, *, kind: str = "unknown",
                 link: AckLink | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.link = link


@dataclass(frozen=True)
class AckLink:
    token: str
    tenant: str
    alert_id: str
    by: str
    exp: float
    locale: str = "en"  # the recipient's: the confirmation page speaks it


class AckLinks:
    """Signed, expiring, single-use acknowledge links (see the module doc)."""

    def __init__(self, redis: Redis, keys: Keys, *, secret: str, public_url: str, ttl_s: float,
                 ack_ttl_s: int = ACK_TTL_SECONDS):
        self.redis = redis
        self.keys = keys
        self.ack_ttl_s = ack_ttl_s  # how long acknowledgements and alert records are kept
        self._secret = secret.encode()
        self.public_url = public_url.rstrip("/")
        self.ttl_s = ttl_s

    def token(self, tenant: str, alert_id: str, by: str) -> str:
        mac = hmac.new(self._secret, "\0".join(("ack-link", tenant, alert_id, by)).encode(),
                       hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(self, token: str) -> str:
        return f"{self.public_url}{LINK_PATH}{token}"

    async def register(self, tenant: str, alert_id: str, by: str, *,
                       now: float | None = None, locale: str = "en") -> str:
        """Store the link (idempotent: a replay keeps the first expiry) and return its URL."""
        token = self.token(tenant, alert_id, by)
        exp = (time.time() if now is None else now) + self.ttl_s
        value = json.dumps({"tenant": tenant, "alert_id": alert_id, "by": by, "exp": exp,
                            "locale": locale})
        await self.redis.set(self.keys.ack_link(token), value, nx=True,
                             ex=max(1, int(self.ttl_s) + 1))
        return self.url(token)

    async def resolve(self, token: str, *, now: float | None = None) -> AckLink:
        """The link's record, checked; raises :class:`LinkRefused` (404 unknown or forged,
        410 expired or already used)."""
        if len(token) != TOKEN_LENGTH:
            raise LinkRefused(404, "unknown acknowledge link; use the link from the message")
        raw = await self.redis.get(self.keys.ack_link(token))
        if raw is None:
            raise LinkRefused(404, "unknown or expired acknowledge link; acknowledge the alert "
                              "with POST /v1/alerts/{alert_id}/ack instead")
        try:
            rec = json.loads(raw)
            link = AckLink(token, str(rec["tenant"]), str(rec["alert_id"]), str(rec["by"]),
                           float(rec["exp"]), str(rec.get("locale") or "en"))
        except (ValueError, KeyError, TypeError):
            raise LinkRefused(404, "unreadable acknowledge link") from None
        if not hmac.compare_digest(self.token(link.tenant, link.alert_id, link.by), token):
            raise LinkRefused(404, "unknown acknowledge link; use the link from the message")
        if (time.time() if now is None else now) > link.exp:
            raise LinkRefused(410, "this acknowledge link has expired; acknowledge the alert "
                              "with POST /v1/alerts/{alert_id}/ack instead", kind="expired",
                              link=link)
        return link

    async def is_used(self, token: str) -> bool:
        return bool(await self.redis.exists(self.keys.ack_link(token) + ":used"))

    async def use(self, token: str, *, now: float | None = None
                  ) -> tuple[AckLink, bool, dict[str, Any]]:
        """Acknowledge through the link, once: ``(link, new, first acknowledgement)``.
        Raises :class:`LinkRefused` (410 when it was used before)."""
        link = await self.resolve(token, now=now)
        first_use = await self.redis.set(self.keys.ack_link(token) + ":used", "1", nx=True,
                                         ex=max(1, int(self.ttl_s) + 1))
        if not first_use:
            raise LinkRefused(410, "this acknowledge link was already used", kind="used",
                              link=link)
        new, ack = await acknowledge_once(self.redis, self.keys, link.alert_id, link.by,
                                          tenant=link.tenant, now=now, ttl_s=self.ack_ttl_s)
        return link, new, ack
