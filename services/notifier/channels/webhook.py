"""Webhook channel: POST the raw CloudEvent JSON to a subscription, signed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpcore
import httpx

from services.alerting.webhooks import (
    IPAddress,
    TargetUnresolvable,
    checked_addresses,
    display_url,
    validate_target,
)
from services.common.exceptions import DeliveryError
from services.common.riskchange import CONTENT_TYPE
from services.notifier.channels.base import ChannelName, Message
from services.notifier.channels.httpstatus import check_response, transport_error
from services.notifier.channels.registry import Built, ChannelSpec
from services.notifier.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign

USER_AGENT = "churnwatch-notifier/1"
Resolver = Callable[[str, int], list[IPAddress]]


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens a connection only to an address that passes the webhook target check, resolved
    here, at connect time, and connects to that very address: between the check and the
    connection there is no second DNS lookup for a rebinding answer to slip into."""

    def __init__(self, resolve: Resolver):
        self._resolve = resolve
        self._inner = httpcore.AnyIOBackend()

    # the signatures are httpcore.AsyncNetworkBackend's, timeout included
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.to_thread(self._resolve, host, port)
        except ValueError as exc:  # refused or unresolvable now: the delivery is retried
            raise httpcore.ConnectError(str(exc)) from None
        error: Exception = httpcore.ConnectError(f"{host!r} resolves to no address")
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout=timeout,
                                                     local_address=local_address,
                                                     socket_options=socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a unix socket is not a webhook target")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class WebhookChannel:
    name: ChannelName = "webhook"

    def __init__(self, *, timeout_s: float, allow_private: bool, allow_http: bool = False,
                 client: httpx.AsyncClient | None = None, resolve: Resolver | None = None):
        self.allow_private = allow_private
        self.allow_http = allow_http
        self._resolve: Resolver = resolve or (
            lambda host, port: checked_addresses(host, port, allow_private=allow_private))
        # Redirects are never followed: a receiver cannot send a delivery on to a private
        # address, nor from https:// down to plain http:// (a 3xx fails for good, naming it).
        self._client = client or httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, trust_env=False,
            transport=checked_transport(self._resolve))

    async def send(self, message: Message) -> None:
        what = f"webhook {display_url(message.to)}"
        try:  # again at delivery time: the DNS answer may have changed since subscription,
            # and a plain http:// target stored before they were refused is refused now
            url = await asyncio.to_thread(validate_target, message.to,
                                          allow_private=self.allow_private,
                                          allow_http=self.allow_http)
            # (and once more when the connection opens: see CheckedBackend)
        except TargetUnresolvable as exc:
            raise DeliveryError(f"{what}: {exc}") from None
        except ValueError as exc:
            raise DeliveryError(f"{what} refused: {exc}", permanent=True) from None
        if not message.secret:
            raise DeliveryError(f"{what}: the subscription has no secret", permanent=True)
        headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(message.secret, message.event),
            DELIVERY_HEADER: message.delivery_id,
        }
        try:
            response = await self._client.post(url, content=message.event, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, what=what) from None
        check_response(response, what=what)

    async def aclose(self) -> None:
        await self._client.aclose()


def checked_transport(resolve: Resolver) -> httpx.AsyncHTTPTransport:
    """httpx's own transport (TLS, pooling and Host/SNI by the URL's host name as usual) whose
    connections are opened by :class:`CheckedBackend`."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    pool = transport._pool  # noqa: SLF001 - httpx has no public hook for the network backend
    if not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpcore's connection pool changed: the webhook address check "
                           "cannot be installed (see services/notifier/channels/webhook.py)")
    pool._network_backend = CheckedBackend(resolve)  # noqa: SLF001
    return transport


def _build(b: Built) -> WebhookChannel:
    return WebhookChannel(timeout_s=b.settings.webhook_timeout_seconds,
                          allow_private=b.settings.webhook_allow_private,
                          allow_http=b.settings.webhook_allow_http)


SPEC = ChannelSpec(name="webhook", order=40, audience="subscribers", push=False, long_form=False,
                   target=lambda person: None,  # subscriptions, not people
                   mask=display_url, build=_build)
