"""Webhook subscriptions: target validation and the Redis store.

Subscriptions live in the Redis hash ``Keys.webhooks`` (id -> JSON ``{id, url, secret,
created_at, tenant}``; no ``tenant``: the default tenant). A subscription receives, lists and
deletes only its own tenant's risk changes and subscriptions. The HTTP API calls :func:`validate_target`, :func:`add_subscription`,
:func:`list_subscriptions` and :func:`delete_subscription`; only the notifier reads secrets.

:func:`validate_target` is also applied again right before every delivery, so that a host
whose DNS later points at a private address (DNS rebinding) is refused, and so is a plain
``http://`` subscription stored before such targets were refused (it is dead-lettered with
the reason instead of sending personal data in clear).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from services.common.cleartext import ALLOW_HTTP_SETTING, cleartext_refusal, is_loopback_ip
from services.common.logs import mask_url_credentials
from services.common.redisconn import Keys
from services.common.timefmt import utc_from_epoch_s, utc_now

logger = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 16
MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetUnresolvable(ValueError):
    """The target's host name does not resolve (now). At delivery time this is retryable."""


# Cloud instance-metadata services: refused even with CHURNWATCH_WEBHOOK_ALLOW_PRIVATE=true
# (a local receiver never needs them; an SSRF to them hands out the machine's credentials).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
    "169.254.170.2",    # AWS ECS task metadata
    "fd00:ec2::254",    # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded(ip: IPAddress) -> list[IPAddress]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64), which a
    router may well deliver to: each is checked like the address itself."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    out: list[IPAddress] = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out += list(ip.teredo)
    if ip in _NAT64:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _metadata(ip: IPAddress) -> bool:
    return ip in METADATA_ADDRESSES or any(_metadata(e) for e in _embedded(ip))


def _refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be a webhook target, or None when it is a public address."""
    for inner in _embedded(ip):
        why = _refusal(inner)
        if why is not None:
            return f"{why} (as {inner}, carried inside it)"
    for flag in ("loopback", "unspecified", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{flag}"):
            return flag.replace("_", "-")
    if not ip.is_global:
        return "non-public"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(
            f"the host {host!r} does not resolve ({exc}); check the spelling or the DNS record"
        ) from None
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        addr = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        out.append(ipaddress.ip_address(addr))
    return out


def checked_addresses(host: str, port: int, *, allow_private: bool, shown: str | None = None,
                      lookup: Callable[[str, int], list[IPAddress]] | None = None
                      ) -> list[IPAddress]:
    """The addresses ``host`` resolves to, all of them allowed as webhook targets, or raise
    ValueError (:class:`TargetUnresolvable` when it does not resolve). The webhook channel
    calls this again when it opens a connection and connects only to these addresses, so a
    DNS answer that changes after the check (DNS rebinding) cannot reach a private address."""
    addresses = (lookup or _resolve)(host, port)
    for ip in addresses:
        if _metadata(ip):
            raise ValueError(
                f"the webhook host {shown or host!r} resolves to {ip}, a cloud metadata address: "
                "never a webhook target, not even with CHURNWATCH_WEBHOOK_ALLOW_PRIVATE=true")
    if not allow_private:
        for ip in addresses:
            why = _refusal(ip)
            if why is not None:
                raise ValueError(
                    f"the webhook host {shown or host!r} resolves to {ip}, a {why} address; use a "
                    "public address, or set CHURNWATCH_WEBHOOK_ALLOW_PRIVATE=true for local receivers"
                )
    return addresses


def validate_target(url: str, *, allow_private: bool, allow_http: bool = False) -> str:
    """Return ``url`` normalised, or raise ValueError saying what to fix.

    Only http/https URLs with a host; the host is resolved and loopback, private,
    link-local, multicast, reserved and unspecified addresses are refused unless
    ``allow_private`` (``CHURNWATCH_WEBHOOK_ALLOW_PRIVATE=true``). Plain ``http://`` is
    refused unless the host is this machine (``localhost``, 127.0.0.0/8, ``::1``, and it
    resolves to loopback addresses only) or ``allow_http``
    (``CHURNWATCH_WEBHOOK_ALLOW_HTTP=true``): deliveries carry personal data. Raises
    :class:`TargetUnresolvable` (a ValueError) when the host does not resolve.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the webhook url is empty; give a full URL such as https://example.com/hooks")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the webhook url is {len(url)} characters long; use at most {MAX_URL_LENGTH}")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError("the webhook url contains whitespace or control characters; percent-encode them")
    parts = urlsplit(url)
    shown = mask_url_credentials(url)  # errors never echo user:password@
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"the webhook url {shown!r} uses scheme {parts.scheme or '(none)'!r}; "
                         "only http:// and https:// are accepted, e.g. https://example.com/hooks")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the webhook url contains credentials (user:password@); remove them - every "
                         "delivery is signed with the subscription secret instead")
    host = parts.hostname
    if not host:
        raise ValueError(f"the webhook url {shown!r} has no host; use e.g. https://example.com/hooks")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"the webhook url {shown!r} has an invalid port; use a number 1-65535") from None
    try:
        ascii_host = host.encode("idna").decode("ascii") if not _is_ip(host) else host
    except UnicodeError:
        raise ValueError(f"the host {host!r} is not a valid domain name") from None

    addresses = checked_addresses(ascii_host, port, allow_private=allow_private, shown=host)
    cleartext = cleartext_refusal(url, allow_http=allow_http, what="the webhook url")
    if cleartext is None and scheme == "http" and not allow_http \
            and not all(is_loopback_ip(ip) for ip in addresses):
        cleartext = (f"the webhook url {shown!r} uses plain http:// and its host {host!r} "
                     f"resolves to {', '.join(map(str, addresses))}, not only to this machine; "
                     f"use https://, or set {ALLOW_HTTP_SETTING}=true if the network in between "
                     "is private and trusted")
    if cleartext is not None:
        raise ValueError(cleartext)

    netloc = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if parts.port is not None and parts.port != _DEFAULT_PORTS[scheme]:
        netloc += f":{parts.port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def display_url(url: str) -> str:
    """``scheme://host[:port]/…`` - enough to recognise a target without leaking path tokens."""
    parts = urlsplit(url)
    suffix = "/…" if parts.path not in ("", "/") or parts.query else "/"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{suffix}"


# The store ----------------------------------------------------------------------------


def _public(sub: dict[str, Any]) -> dict[str, Any]:
    out = {"id": sub["id"], "url": sub["url"], "created_at": sub["created_at"],
           "status": "paused" if is_paused(sub) else "active"}
    if is_paused(sub):
        out |= {k: sub.get(k) for k in ("paused_at", "failing_since", "paused_reason")}
    return out


def is_paused(sub: dict[str, Any]) -> bool:
    """A paused subscription gets no deliveries until resumed (POST /v1/webhooks/{id}/resume)."""
    return bool(sub.get("paused_at"))


async def add_subscription(redis: Redis, keys: Keys, *, url: str, secret: str,
                           tenant: str = "default") -> dict[str, Any]:
    """Store a subscription; returns ``{id, url, created_at}`` (never the secret).

    ``url`` should already have passed :func:`validate_target`.
    """
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"the webhook secret must be at least {MIN_SECRET_LENGTH} characters long")
    sub = {
        "id": "wh_" + secrets.token_hex(8),
        "url": url,
        "secret": secret,
        "created_at": utc_now("seconds"),
        "tenant": tenant,
    }
    await redis.hset(keys.webhooks, sub["id"], json.dumps(sub))
    return _public(sub)


async def load_subscriptions_with_secrets(redis: Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every subscription including its secret (notifier only), oldest first."""
    raw = await redis.hgetall(keys.webhooks)
    subs = [json.loads(v) for v in raw.values()]
    return sorted(subs, key=lambda s: (s.get("created_at", ""), s["id"]))


def tenant_of(sub: dict[str, Any]) -> str:
    return str(sub.get("tenant") or "default")


async def list_subscriptions(redis: Redis, keys: Keys, tenant: str = "default") -> list[dict[str, Any]]:
    """The tenant's subscriptions without secrets, oldest first."""
    return [_public(s) for s in await load_subscriptions_with_secrets(redis, keys)
            if tenant_of(s) == tenant]


async def get_subscription_with_secret(redis: Redis, keys: Keys, sub_id: str) -> dict[str, Any] | None:
    raw = await redis.hget(keys.webhooks, sub_id)
    return json.loads(raw) if raw else None


async def delete_subscription(redis: Redis, keys: Keys, sub_id: str,
                              tenant: str = "default") -> bool:
    """Remove a subscription; False when the tenant has none with that id."""
    sub = await get_subscription_with_secret(redis, keys, sub_id)
    if sub is None or tenant_of(sub) != tenant:
        return False
    removed = await redis.hdel(keys.webhooks, sub_id)
    return int(removed) > 0


async def resume_subscription(redis: Redis, keys: Keys, sub_id: str,
                              tenant: str = "default") -> dict[str, Any] | None:
    """Resume a paused subscription (idempotent: an active one stays active); None when the
    tenant has none with that id. Its failure clock starts afresh."""
    sub = await get_subscription_with_secret(redis, keys, sub_id)
    if sub is None or tenant_of(sub) != tenant:
        return None
    for field in ("paused_at", "failing_since", "paused_reason"):
        sub.pop(field, None)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(keys.webhooks, sub_id, json.dumps(sub))
        pipe.hdel(keys.notifier_key(FAILING), sub_id)
        await pipe.execute()
    return _public(sub)


# Health: pause a subscription that keeps failing ---------------------------------------

FAILING = "wh:failing"  # hash subscription id -> unix seconds of the first failure in a row
# A success clears the failure record at most this often per subscription and process: the
# record matters only after days of failing, and a round trip per delivery halved the rate.
CLEAR_EVERY_S = 10.0
TOLD = "wh:told"  # hash "<id>|<first failure>" -> 1: the admins were told of that pause
Tell = Callable[[dict[str, Any], str], Awaitable[None]]


class WebhookHealth:
    """Tracks, per subscription, since when its deliveries fail without a success in between;
    once that is ``pause_after_s`` or longer the subscription is paused and ``tell`` is called
    once per pause (the tenant's admins are told). A delivered webhook clears the record."""

    def __init__(self, redis: Redis, keys: Keys, *, pause_after_s: float,
                 tell: Tell | None = None, clock: Callable[[], float] = time.time):
        self.redis = redis
        self.keys = keys
        self.pause_after_s = pause_after_s
        self.tell = tell
        self.clock = clock
        self._cleared: dict[str, float] = {}  # subscription -> when this process last cleared it

    async def succeeded(self, sub_id: str) -> None:
        now = self.clock()
        if now - self._cleared.get(sub_id, float("-inf")) < CLEAR_EVERY_S:
            return  # cleared moments ago (a failure since then is seen by failed())
        await self.redis.hdel(self.keys.notifier_key(FAILING), sub_id)
        self._cleared[sub_id] = now

    async def failed(self, sub_id: str, reason: str) -> bool:
        """Record a failed delivery; True when this call paused the subscription."""
        now = self.clock()
        self._cleared.pop(sub_id, None)  # the next success clears the record at once
        failing = self.keys.notifier_key(FAILING)
        await self.redis.hsetnx(failing, sub_id, repr(now))
        first = float(await self.redis.hget(failing, sub_id) or now)
        if now - first < self.pause_after_s:
            return False
        sub = await get_subscription_with_secret(self.redis, self.keys, sub_id)
        if sub is None or is_paused(sub):
            return False
        sub |= {"paused_at": utc_from_epoch_s(now, "seconds"),
                "failing_since": utc_from_epoch_s(first, "seconds"), "paused_reason": reason[:500]}
        await self.redis.hset(self.keys.webhooks, sub_id, json.dumps(sub))
        if not await self.redis.hsetnx(self.keys.notifier_key(TOLD), f"{sub_id}|{first!r}", 1):
            return False  # another notifier paused it and tells
        logger.warning("webhook subscription %s paused: failing since %s (%s)", sub_id,
                       sub["failing_since"], reason, extra={"tenant": tenant_of(sub)})
        if self.tell is not None:
            await self.tell(sub, reason)
        return True
