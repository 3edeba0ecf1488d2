"""From one risk change to the deliveries it needs: route, recipients, subscriptions."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from services.notifier.channels.base import ChannelName, Message, delivery_id
from services.notifier.inbound import RiskChangeEvent
from services.notifier.recipients import RecipientResolver
from services.notifier.routing import Routing
from services.notifier.templates import render_email, render_sms

logger = logging.getLogger(__name__)


def _message(event: RiskChangeEvent, channel: ChannelName, target: str, to: str,
             **fields: Any) -> Message:
    return Message(delivery_id=delivery_id(event.id, channel, target), channel=channel,
                   event_id=event.id, customer_id=event.change.customer_id, to=to,
                   event=event.raw, **fields)


class Planner:
    """Route a risk change and expand it into one :class:`Message` per target.

    Email and SMS go to the recipients the resolver names, on the channels the routing picks.
    Every risk change goes to every webhook subscription whatever the routing says (the
    contract: subscribers chose to receive them all). Channels that are not configured
    (``enabled_channels``) are left out.
    """

    def __init__(self, *, routing: Routing, resolver: RecipientResolver,
                 enabled_channels: Collection[str]):
        self.routing = routing
        self.resolver = resolver
        self.enabled = frozenset(enabled_channels)

    async def plan(self, event: RiskChangeEvent, *, subscriptions: list[dict[str, Any]]
                   ) -> list[Message]:
        change = event.change
        channels = [c for c in self.routing.channels_for(change) if c in self.enabled]
        out: list[Message] = []
        if "email" in channels or "sms" in channels:
            for person in await self.resolver.recipients_for(change):
                if "email" in channels and person.email:
                    did = delivery_id(event.id, "email", person.email)
                    subject, text, html = render_email(change, person, delivery_id=did)
                    out.append(_message(event, "email", person.email, person.email,
                                        recipient_name=person.name, subject=subject, text=text,
                                        html=html))
                if "sms" in channels and person.phone:
                    out.append(_message(event, "sms", person.phone, person.phone,
                                        recipient_name=person.name, text=render_sms(change, person)))
        if "webhook" in self.enabled:
            for sub in subscriptions:
                out.append(_message(event, "webhook", sub["id"], sub["url"],
                                    subscription_id=sub["id"], secret=sub.get("secret", "")))
        logger.debug("risk change %s routed to %s: %d deliveries", event.id,
                     ",".join(channels) or "nothing", len(out), extra={"event_id": event.id})
        return out
