"""SMS channel: an HTTP SMS gateway.

``json`` style: POST ``{"from", "to", "text"}`` with ``Authorization: Bearer <token>`` and an
``X-Churnwatch-Signature`` header (same format as webhooks, keyed by the token) when a token
is set. ``form`` style (Twilio-like): form-encoded ``From``/``To``/``Body`` with HTTP basic auth
``username:token``. Both carry ``Idempotency-Key: <delivery id>`` so a gateway can drop retries.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx

from services.common.logs import mask_phone
from services.notifier.channels.base import ChannelName, Message
from services.notifier.channels.httpstatus import check_response, transport_error
from services.notifier.channels.registry import Built, ChannelSpec
from services.notifier.signing import sign

SIGNATURE_HEADER = "X-Churnwatch-Signature"


class SmsChannel:
    name: ChannelName = "sms"

    def __init__(self, *, url: str, style: Literal["json", "form"], sender: str,
                 token: str | None, username: str | None, timeout_s: float,
                 client: httpx.AsyncClient | None = None):
        self.url = url
        self.style = style
        self.sender = sender
        self.token = token or None
        self.username = username
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                                   trust_env=False)

    async def send(self, message: Message) -> None:
        headers = {"Idempotency-Key": message.delivery_id}
        try:
            if self.style == "json":
                body = json.dumps({"from": self.sender, "to": message.to, "text": message.text},
                                  ensure_ascii=False).encode()
                headers["Content-Type"] = "application/json"
                if self.token:
                    headers["Authorization"] = f"Bearer {self.token}"
                    headers[SIGNATURE_HEADER] = sign(self.token, body)
                response = await self._client.post(self.url, content=body, headers=headers)
            else:
                auth = httpx.BasicAuth(self.username or "", self.token) if self.token else None
                form = {"From": self.sender, "To": message.to, "Body": message.text}
                response = await self._client.post(self.url, data=form, headers=headers,
                                                   auth=auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise transport_error(exc, what="the SMS gateway") from None
        check_response(response, what="the SMS gateway")

    async def aclose(self) -> None:
        await self._client.aclose()


def _build(b: Built) -> SmsChannel | None:
    s = b.settings
    if not s.sms_gateway_url:
        return None
    return SmsChannel(
        url=s.sms_gateway_url, style=s.sms_gateway_style, sender=s.sms_sender,
        username=s.sms_gateway_username,
        token=s.sms_gateway_token.get_secret_value() if s.sms_gateway_token else None,
        timeout_s=s.webhook_timeout_seconds)


SPEC = ChannelSpec(name="sms", order=20, audience="staff", push=True, long_form=False,
                   target=lambda person: person.phone, mask=mask_phone, build=_build,
                   off="CHURNWATCH_SMS_GATEWAY_URL is not set")
