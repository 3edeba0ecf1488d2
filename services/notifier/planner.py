"""From one risk change to the deliveries it needs.

Webhooks: every risk change goes to every subscription of its tenant, whatever the routing says (the
contract: subscribers chose to receive them all); no noise rule applies to them.

Staff email/SMS: route (transition, value tier, store, segment) -> holdout (the win-back
control group gets no staff alert) -> episode check (one alert
per customer per episode and tier level, one "won back") -> inhibition -> recipients (owner,
store manager, customer with consent, named) -> digest buffer or an immediate message; a
high-risk alert to someone other than the store manager also schedules an escalation. Every
Redis write here is idempotent per event id, and all happen before the record is committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from services.notifier.acks import AckLinks, record_alert
from services.notifier.channels.base import ChannelName, Message, delivery_id
from services.notifier.digests import Digester
from services.notifier.escalation import Escalations
from services.notifier.inbound import RiskChangeEvent
from services.notifier.ledger import Ledger, now_iso
from services.notifier.metrics import NotifierMetrics
from services.notifier.noise import EpisodeLedger
from services.notifier.policy import ALERT, DEDUPE, WON_BACK, apply_inhibition
from services.notifier.recipients import CustomerContext, RecipientResolver, recipients
from services.notifier.routing import STAFF_CHANNELS, Recipient, Routing
from services.notifier.templates import Templates, packaged
from services.notifier.webhooks import is_paused, tenant_of

logger = logging.getLogger(__name__)


def _message(event: RiskChangeEvent, channel: ChannelName, target: str, to: str,
             *, did: str | None = None, **fields: Any) -> Message:
    return Message(delivery_id=did or delivery_id(event.id, channel, target), channel=channel,
                   event_id=event.id, customer_id=event.change.customer_id, to=to,
                   event=event.raw, tenant=event.change.tenant_id, **fields)


class Planner:
    """Route a risk change and expand it into the :class:`Message` s to send now.

    ``episodes``/``digester``/``escalations``/``ledger`` are optional so that the routing
    alone can be exercised (unit tests); the notifier always passes them.
    """

    def __init__(self, *, routing: Routing, resolver: RecipientResolver,
                 enabled_channels: Collection[str], templates: Templates | None = None,
                 episodes: EpisodeLedger | None = None, digester: Digester | None = None,
                 escalations: Escalations | None = None, ledger: Ledger | None = None,
                 metrics: NotifierMetrics | None = None, links: AckLinks | None = None):
        self.routing = routing
        self.resolver = resolver
        self.enabled = frozenset(enabled_channels)
        self.templates = templates or packaged()
        self.episodes = episodes
        self.digester = digester
        self.escalations = escalations
        self.ledger = ledger
        self.metrics = metrics
        self.links = links

    def _count(self, reason: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            self.metrics.suppressed.labels(reason=reason).inc(n)

    async def plan(self, event: RiskChangeEvent, *, subscriptions: list[dict[str, Any]],
                   created_ms: int | None = None) -> list[Message]:
        created = int(time.time() * 1000) if created_ms is None else created_ms
        out = await self._staff(event, created) if self.enabled & set(STAFF_CHANNELS) else []
        if "webhook" in self.enabled:
            for sub in subscriptions:
                if tenant_of(sub) != event.change.tenant_id or is_paused(sub):
                    continue  # its own tenant's changes only; none while paused
                out.append(_message(event, "webhook", sub["id"], sub["url"],
                                    subscription_id=sub["id"], secret=sub.get("secret", ""),
                                    created_ms=created))
        return out

    async def _staff(self, event: RiskChangeEvent, created_ms: int) -> list[Message]:
        change = event.change
        ctx = await self.resolver.context(change)
        route = self.routing.route_for(change, ctx.segment)
        decision = ALERT
        if self.episodes is not None:
            decision = await self.episodes.decide(change, event.id)
        channels = [c for c in (route.channels if route else ()) if c in STAFF_CHANNELS]
        to = route.to if route else ()
        digest = route.digest if route else False
        kind = "alert"
        policies = self.routing.policies
        if decision == WON_BACK:
            kind = "won_back"
            if policies.won_back_channels:
                channels, to, digest = list(policies.won_back_channels), policies.won_back_to, False
        channels = [c for c in channels if c in self.enabled]
        if not channels:
            return []
        if change.holdout and kind == "alert":
            # The win-back control group: measured, never acted on (webhooks still get it).
            self._count("holdout")
            logger.info("risk change %s of %s: holdout group, no staff alert", event.id,
                        change.customer_id)
            return []
        if decision == DEDUPE:
            self._count("dedupe")
            logger.info("risk change %s of %s: already alerted in this episode", event.id,
                        change.customer_id, extra=_extra(event))
            return []
        rule, action = apply_inhibition(change, policies.inhibit)
        if rule is not None:
            self._count("inhibited")
            if action is change.suggested_action:  # a "suppress" rule
                logger.info("risk change %s: staff message suppressed by inhibit rule %s",
                            event.id, rule, extra=_extra(event))
                return []
        out: list[Message] = []
        people = recipients(ctx, to, self.routing)
        links = await self._alert_links(event, people, ctx, kind)
        for person in people:
            for channel in channels:
                target = person.email if channel == "email" else person.phone
                if not target:
                    continue
                if person.role == "customer" and not (ctx.consent and ctx.consent.allows(channel)):
                    self._count("no_consent")
                    continue
                if digest and self.digester is not None:
                    await self._digest(event, person, channel, ctx, created_ms, action,
                                       ack_url=links.get(person.key, ""))
                    continue
                out.append(self._build(event, person, channel, ctx, created_ms, kind=kind,
                                       action=action, ack_url=links.get(person.key, "")))
        if (kind == "alert" and change.tier == "high" and self.escalations is not None
                and any(p.key != ctx.manager.key and p.role != "customer" for p in people)):
            await self.escalations.schedule(event, created_ms=created_ms,
                                            now_ms=int(time.time() * 1000))
        return out

    async def _alert_links(self, event: RiskChangeEvent, people: list[Recipient],
                           ctx: CustomerContext, kind: str) -> dict[str, str]:
        """Record the alert as sent (acknowledgements of unknown ids are refused) and the
        one-click acknowledge link of each staff recipient (recipient key -> URL)."""
        staff = [p for p in people if p.role != "customer"]
        if not staff or self.links is None:
            return {}
        change = event.change
        await record_alert(self.links.redis, self.links.keys, event.id, tenant=change.tenant_id,
                           customer_id=change.customer_id, store_id=ctx.store_id or change.store_id)
        if kind not in ("alert", "escalation"):
            return {}
        return {p.key: await self.links.register(change.tenant_id, event.id, p.name,
                                                 locale=p.locale) for p in staff}

    def _build(self, event: RiskChangeEvent, person: Recipient, channel: str,
               ctx: CustomerContext, created_ms: int, *, kind: str, action: Any = None,
               did: str | None = None, ack_url: str = "") -> Message:
        change = event.change
        target = (person.email if channel == "email" else person.phone) or ""
        did = did or delivery_id(event.id, channel, target)
        common: dict[str, Any] = {"recipient_name": person.name, "created_ms": created_ms,
                                  "recipient_key": person.key, "timezone": ctx.timezone,
                                  "kind": kind}
        extra = {"alert_id": event.id, "kind": kind, "action": action,
                 "escalate_after_s": self.routing.policies.escalate_after_s or 0.0,
                 "customer_name": ctx.name, "ack_url": ack_url,
                 "customer_contact": ctx.customer if person.role != "customer" else None,
                 "consent": ctx.consent}
        if channel == "email":
            subject, text, html = self.templates.email(change, person, delivery_id=did, **extra)
            return _message(event, "email", target, target, did=did, subject=subject,
                            text=text, html=html, **common)
        return _message(event, "sms", target, target, did=did,
                        text=self.templates.sms(change, person, delivery_id=did, **extra),
                        **common)

    async def _digest(self, event: RiskChangeEvent, person: Recipient, channel: str,
                      ctx: CustomerContext, created_ms: int, action: Any,
                      ack_url: str = "") -> None:
        assert self.digester is not None
        item = self.templates.digest_item(event.change, person, action=action, event_id=event.id,
                                          customer_name=ctx.name)
        item |= {"created_ms": created_ms, "at_ms": int(time.time() * 1000),
                 "timezone": ctx.timezone, "ack_url": ack_url}
        added = await self.digester.add(channel=channel, recipient=person,
                                        tenant=event.change.tenant_id, event_id=event.id,
                                        item=item, now_ms=int(time.time() * 1000))
        if added:
            self._count("digested")
            if self.ledger is not None:
                await self.ledger.log_outcome(event.change.customer_id, {
                    "delivery_id": "", "event_id": event.id, "channel": channel,
                    "kind": "digest", "target": _mask(channel, person), "status": "digested",
                    "at": now_iso(), "attempts": 0}, tenant=event.change.tenant_id)

    async def escalation_messages(self, event: RiskChangeEvent, created_ms: int) -> list[Message]:
        """The store manager's messages for an unacknowledged high-risk alert."""
        ctx = await self.resolver.context(event.change)
        _, action = apply_inhibition(event.change, self.routing.policies.inhibit)
        links = await self._alert_links(event, [ctx.manager], ctx, "escalation")
        out = []
        for channel in self.routing.policies.escalation_channels:
            target = ctx.manager.email if channel == "email" else ctx.manager.phone
            if channel in self.enabled and target:
                did = delivery_id(event.id, "escalation:" + channel, target)
                out.append(self._build(event, ctx.manager, channel, ctx, created_ms,
                                       kind="escalation", action=action, did=did,
                                       ack_url=links.get(ctx.manager.key, "")))
        return out


def _mask(channel: str, person: Recipient) -> str:
    from services.common.logs import mask_email, mask_phone

    if channel == "email":
        return mask_email(person.email or "")
    return mask_phone(person.phone or "")


def _extra(event: RiskChangeEvent) -> dict[str, str]:
    return {"event_id": event.id, "customer_id": event.change.customer_id,
            "tenant": event.change.tenant_id}
