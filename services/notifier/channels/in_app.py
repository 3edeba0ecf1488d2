"""In-app channel: the alert lands in the staff member's list in the staff console
(``Keys.inbox``), where a badge counts the unacknowledged ones (services/console/alerts.py).

Idempotent by delivery id (a redelivery overwrites its own entry); the list itself, its cap
and lifetime are :class:`~services.alerting.inbox.Inbox`'s. Only staff with a profile have a
console identity: the planner sends in-app messages to them alone.

The same list also records, per person, each risk alert (and escalation) delivered to them
another way — e-mail, SMS — once it is delivered (:meth:`ConsoleList.record_sent`, called by
the notifier's delivered hook): one entry per alert (field ``sent:<alert id>``), whose ``via``
lists the channels it reached them by. So the console's alerts page is the person's whole
list of alerts to acknowledge, whatever the routing sends them by.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.alerting.inbox import Inbox
from services.common.exceptions import DeliveryError
from services.common.redisconn import Keys
from services.common.settings import DEFAULT_RETENTION, Retention
from services.notifier.channels.base import ChannelName, Message, staff_id_of
from services.notifier.channels.registry import Built, ChannelSpec

if TYPE_CHECKING:
    from services.notifier.routing import Recipient

SENT_KINDS = ("alert", "escalation")  # what asks a person to act: listed to acknowledge


class ConsoleList(Inbox):
    """Each staff member's alert list in the console (:class:`~services.alerting.inbox.Inbox`),
    and the alerts delivered to them another way."""

    async def record_sent(self, message: Message) -> bool:
        """``message`` (a risk alert or escalation to a staff member with a console identity,
        by any channel but the console's own) was delivered: listed in their alerts, once per
        alert. False when it is not such a message."""
        staff_id = staff_id_of(message.recipient_key)
        if message.kind not in SENT_KINDS or message.channel == "in_app" or staff_id is None:
            return False
        await self.add(staff_id, message.tenant, f"sent:{message.event_id}", {
            "alert_id": message.event_id, "customer_id": message.customer_id,
            "kind": message.kind, "subject": message.subject, **_tiers(message.event),
            "at_ms": message.created_ms or int(time.time() * 1000), **_zone(message),
            "via": [message.channel]}, merge=True)
        return True


def _zone(message: Message) -> dict[str, str]:
    """The clock the message kept to (the recipient's own, else the customer's store's...),
    so that the console says when on the clock the message said it."""
    return {"zone": message.timezone} if message.timezone else {}


def _tiers(event: bytes) -> dict[str, str]:
    """The tier change a risk-change CloudEvent announces (``tier``, ``previous_tier``), for
    the console to word the alert in the reader's language; empty if it does not say."""
    try:
        doc = json.loads(event)
        data = doc.get("data") or doc  # a CloudEvent, or a bare risk change
        return {k: str(data[k]) for k in ("tier", "previous_tier") if data.get(k)}
    except (ValueError, AttributeError, TypeError):
        return {}


class InAppChannel:
    name: ChannelName = "in_app"

    def __init__(self, redis: Redis, keys: Keys, *, retention: Retention = DEFAULT_RETENTION):
        self.list = ConsoleList(redis, keys, retention=retention)

    async def send(self, message: Message) -> None:
        entry = {"alert_id": message.event_id, "customer_id": message.customer_id,
                 "kind": message.kind, "subject": message.subject, "text": message.text,
                 **_tiers(message.event), "at_ms": message.created_ms or int(time.time() * 1000),
                 **_zone(message)}
        try:
            await self.list.add(message.to, message.tenant, message.delivery_id, entry)
        except RedisError as exc:
            raise DeliveryError(f"the console's alert list could not be written "
                                f"({type(exc).__name__})") from None

    async def aclose(self) -> None:
        return None


def _target(person: Recipient) -> str | None:
    """A staff member with a profile has a console identity (their staff id); nobody else."""
    return staff_id_of(person.key) if person.role != "customer" else None


def _build(b: Built) -> InAppChannel | None:
    # only when the routing file (or its escalation policy) sends in-app alerts
    if "in_app" not in b.used:
        return None
    return InAppChannel(b.redis, b.keys, retention=b.settings.retention)


SPEC = ChannelSpec(name="in_app", order=30, audience="staff", push=False, long_form=True,
                   target=_target, mask=lambda staff_id: f"console:{staff_id}",  # no contact data
                   build=_build)
