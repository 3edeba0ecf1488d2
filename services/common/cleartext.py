"""Plain ``http://`` to a receiver off this machine: refused unless explicitly allowed.

What the notifier sends over HTTP carries personal data: every risk change names a customer
(id, and reasons; SMS texts their name) and goes out signed with a secret or a gateway token.
Over plain http:// all of it crosses the network readable by anyone on the path. So a webhook
target or the SMS gateway must be ``https://``, except on this machine itself (``localhost``,
127.0.0.0/8, ``::1``: the tests' receivers and the development sinks of ``make run``), or when
``CHURNWATCH_WEBHOOK_ALLOW_HTTP=true`` says the network in between is trusted (a private one).

The check reads the URL only (no DNS lookup), so that settings can apply it at start-up; the
webhook target check (services/alerting/webhooks.py) also makes sure that ``localhost``
resolves to loopback addresses only.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from services.common.logs import mask_url_credentials

ALLOW_HTTP_SETTING = "CHURNWATCH_WEBHOOK_ALLOW_HTTP"
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    """``host`` (a URL's host, brackets and a trailing dot allowed) names this machine:
    ``localhost``, an address of 127.0.0.0/8, ``::1`` or an IPv4-mapped 127.x address."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return is_loopback_ip(ip)


def is_loopback_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """On this machine: a loopback address, also IPv4-mapped (6to4, Teredo and NAT64 forms of
    one go through a router)."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def cleartext_refusal(url: str, *, allow_http: bool, what: str) -> str | None:
    """Why ``url`` may not be used (it sends in clear beyond this machine), or None.

    ``what`` names the URL in the message: "the webhook url", or a setting's name."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "http" or allow_http:
        return None
    host = parts.hostname or ""
    if is_loopback_host(host):
        return None
    shown = mask_url_credentials(url.strip())
    secure = "https://" + shown.split("://", 1)[1] if parts.port is None else "an https:// URL"
    return (f"{what} {shown!r} uses plain http:// to {host!r}, which is not this machine: "
            "the alerts sent to it (customer ids, names, risk reasons) and their signature or "
            f"token would cross the network unencrypted. Use {secure}, or set {ALLOW_HTTP_SETTING}=true "
            "if every network between churnwatch and the receiver is private and trusted")
