"""What every delivery channel implements, and the message it delivers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from services.common.logs import mask_email, mask_phone

# A channel's name: one per module of this package with a SPEC (registry.py), e.g. email,
# sms, in_app, webhook.
ChannelName = str


def staff_key(tenant: str, staff_id: str) -> str:
    """The recipient key of a staff member (``Message.recipient_key``, ``Recipient.key``)."""
    return f"staff:{tenant}:{staff_id}"


def staff_id_of(recipient_key: str) -> str | None:
    """The staff id of a :func:`staff_key`; None for anyone else (a routing file's recipient,
    a customer)."""
    return recipient_key.split(":", 2)[2] if recipient_key.startswith("staff:") else None


def delivery_id(event_id: str, channel: str, target: str) -> str:
    """Deterministic id of one delivery: the same event, channel and target give the same id."""
    h = hashlib.sha256()
    for part in (event_id, channel, target):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Message:
    """One delivery of one risk change to one target.

    ``to`` is an email address (email), a phone number (sms) or a URL (webhook);
    ``event`` is the raw CloudEvent JSON as consumed (the webhook body). ``secret`` (webhook
    signing) is never stored with a queued retry: it is looked up again by
    ``subscription_id``.
    """

    delivery_id: str
    channel: ChannelName
    event_id: str
    customer_id: str
    to: str
    event: bytes
    recipient_name: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""
    subscription_id: str = ""
    secret: str = field(default="", repr=False)
    attempt: int = 1
    tenant: str = "default"
    created_ms: int = 0  # when the risk change was published (delivery latency is from here)
    recipient_key: str = ""  # who (rate limits, digests); empty for webhooks
    timezone: str = ""  # the clock quiet hours keep to (the recipient's, else the store's); empty: none
    kind: str = ""  # alert | won_back | escalation | digest; empty for webhooks
    # addressed to the customer's owner (or the manager standing in for none) as such: when it
    # goes out later, it goes to whoever receives the customer's alerts by then
    for_owner: bool = False

    @property
    def masked_target(self) -> str:
        """The target as logs show it (the channel's own mask: no contact data in clear)."""
        from services.notifier.channels import registry  # its modules import this one

        try:
            return registry.spec(self.channel).mask(self.to)
        except KeyError:  # a queued message of a channel this version no longer has
            return mask_email(self.to) if "@" in self.to else mask_phone(self.to)

    def with_attempt(self, attempt: int, *, secret: str = "", to: str | None = None) -> Message:
        return replace(self, attempt=attempt, secret=secret or self.secret,
                       to=self.to if to is None else to)

    def to_payload(self, *, attempts: int) -> dict[str, Any]:
        """A JSON-able form without the secret, for the persistent retry queue."""
        return {
            "delivery_id": self.delivery_id, "channel": self.channel, "event_id": self.event_id,
            "customer_id": self.customer_id, "to": self.to, "event": self.event.decode(),
            "recipient_name": self.recipient_name, "subject": self.subject, "text": self.text,
            "html": self.html, "subscription_id": self.subscription_id, "attempts": attempts,
            "tenant": self.tenant, "created_ms": self.created_ms,
            "recipient_key": self.recipient_key, "timezone": self.timezone, "kind": self.kind,
            "for_owner": self.for_owner,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Message:
        return cls(
            delivery_id=payload["delivery_id"], channel=payload["channel"],
            event_id=payload["event_id"], customer_id=payload["customer_id"], to=payload["to"],
            event=str(payload["event"]).encode(), recipient_name=payload.get("recipient_name", ""),
            subject=payload.get("subject", ""), text=payload.get("text", ""),
            html=payload.get("html", ""), subscription_id=payload.get("subscription_id", ""),
            attempt=int(payload.get("attempts", 0)) + 1,
            tenant=payload.get("tenant", "default"), created_ms=int(payload.get("created_ms", 0)),
            recipient_key=payload.get("recipient_key", ""), timezone=payload.get("timezone", ""),
            kind=payload.get("kind", ""), for_owner=bool(payload.get("for_owner", False)),
        )


class Channel(Protocol):
    """A way to deliver a :class:`Message`.

    ``send`` returns when the message was accepted by the next hop, and raises
    :class:`~services.common.exceptions.DeliveryError` otherwise: ``permanent=True`` when a
    retry cannot help, ``retry_after`` when the receiver asked for a delay.
    """

    name: ChannelName

    async def send(self, message: Message) -> None: ...

    async def aclose(self) -> None: ...
