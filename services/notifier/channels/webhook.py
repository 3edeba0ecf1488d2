"""Webhook channel: POST the raw CloudEvent JSON to a subscription, signed."""

from __future__ import annotations

import asyncio

import httpx

from services.common.exceptions import DeliveryError
from services.common.riskchange import CONTENT_TYPE
from services.notifier.channels.base import ChannelName, Message
from services.notifier.channels.httpstatus import check_response, transport_error
from services.notifier.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from services.notifier.webhooks import TargetUnresolvable, display_url, validate_target

USER_AGENT = "churnwatch-notifier/1"


class WebhookChannel:
    name: ChannelName = "webhook"

    def __init__(self, *, timeout_s: float, allow_private: bool,
                 client: httpx.AsyncClient | None = None):
        self.allow_private = allow_private
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                                   trust_env=False)

    async def send(self, message: Message) -> None:
        what = f"webhook {display_url(message.to)}"
        try:  # again at delivery time: the DNS answer may have changed since subscription
            url = await asyncio.to_thread(validate_target, message.to,
                                          allow_private=self.allow_private)
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
