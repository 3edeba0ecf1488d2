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

import json
import logging
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from services.alerting.acks import AckLinks, record_alert
from services.alerting.escalation import Escalations
from services.alerting.inbound import RiskChangeEvent
from services.alerting.webhooks import is_paused, tenant_of
from services.common.riskchange import RiskChange, before_alerts, lapsed, priority
from services.notifier.channels import registry
from services.notifier.channels.base import ChannelName, Message, delivery_id
from services.notifier.digests import Digester
from services.notifier.golive import Summaries
from services.notifier.ledger import OWNER_CHANGED, Ledger, now_iso
from services.notifier.metrics import NotifierMetrics
from services.notifier.noise import EpisodeLedger
from services.notifier.policy import ALERT, WON_BACK, apply_inhibition
from services.notifier.recipients import CustomerContext, RecipientResolver, for_owner, recipients
from services.notifier.routing import STAFF_CHANNELS, Recipient, Route, Routing
from services.notifier.settle import SettleQueue, pair
from services.notifier.templates import (
    SUMMARY_KEEP_LISTED,
    SUMMARY_LAPSED_LISTED,
    Templates,
    at_risk_url,
    clip_sms,
    packaged,
    said_once,
)

logger = logging.getLogger(__name__)

READDRESSED = ("alert", "won_back", "escalation")  # kinds of notice :meth:`readdressed` takes


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
                 metrics: NotifierMetrics | None = None, links: AckLinks | None = None,
                 settle: SettleQueue | None = None,
                 summaries: Summaries | None = None, max_age_s: float | None = None,
                 link_base: str = "http://127.0.0.1:8000"):
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
        self.settle = settle
        self.summaries = summaries
        self.max_age_s = max_age_s
        self.link_base = link_base.rstrip("/")

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

    def stale(self, change: RiskChange, now_ms: int) -> bool:
        """The change's cause is older than ``CHURNWATCH_ALERT_MAX_AGE`` by the wall clock (or
        the scorer marked it as produced while catching up): no staff alert about it."""
        return before_alerts(change, now_ms, self.max_age_s)

    async def _staff(self, event: RiskChangeEvent, created_ms: int) -> list[Message]:
        change = event.change
        now_ms = int(time.time() * 1000)
        decision = ALERT
        if self.episodes is not None:
            decision = await self.episodes.decide(change, event.id, now_ms=now_ms)
        if self.stale(change, now_ms):
            # Past changes are not news: at most one "currently at risk" summary later.
            self._count("stale")
            if self.summaries is not None:
                await self.summaries.add(event, created_ms=created_ms, now_ms=now_ms)
            logger.info("risk change %s: cause older than the alert max age; no staff "
                        "alert (summarised)", event.id, extra=_extra(event))
            return []
        ctx = await self.resolver.context(change)
        route = self.routing.route_for(change, ctx.segment)
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
            logger.info("risk change %s: holdout group, no staff alert", event.id,
                        extra=_extra(event))
            return []
        if decision not in (ALERT, WON_BACK):
            # Inside an episode (jitter, a resolved complaint, a fall without a return), or a
            # customer going back without having been alerted: nothing to tell staff.
            self._count("dedupe")
            logger.info("risk change %s: nothing new in this episode (%s)", event.id,
                        decision, extra=_extra(event))
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
        owners = for_owner(ctx, to, self.routing)
        links = await self._alert_links(event, people, ctx, kind)
        for person in people:
            for channel in channels:
                target = _target(person, channel)
                if not target:  # routed to a channel this person has no address or number for
                    self._count("no_contact")
                    continue
                if person.role == "customer" and not (ctx.consent and ctx.consent.allows(channel)):
                    self._count("no_consent")
                    continue
                if digest and self.digester is not None and registry.spec(channel).push:
                    await self._digest(event, person, channel, ctx, created_ms, action,
                                       ack_url=links.get(person.key, ""), route=route,
                                       owner=person.key in owners)
                    continue
                out.append(self._build(event, person, channel, ctx, created_ms, kind=kind,
                                       action=action, ack_url=links.get(person.key, ""),
                                       owner=person.key in owners))
        if kind != "alert" or not out:
            return out
        return await self._release(event, ctx, people, out, created_ms=created_ms,
                                   now_ms=now_ms)

    async def _release(self, event: RiskChangeEvent, ctx: CustomerContext,
                       people: list[Recipient], out: list[Message], *, created_ms: int,
                       now_ms: int) -> list[Message]:
        """Which of an alert's messages go out now: arms the escalation of a high tier, then
        holds them for the settle window, or keeps those the customer's episode allows."""
        change = event.change
        if change.tier == "high" and self.escalations is not None:
            # Armed only when one of these people's alert is delivered (see escalation.py).
            armers = [p.key for p in people if p.key != ctx.manager.key and p.role != "customer"]
            # The manager alone, standing in for a customer without an owner: none to arm
            # it, unless the customer is given an owner and the alert moves to them.
            parked = not armers and ctx.owner is None \
                and any(p.key == ctx.manager.key for p in people)
            if armers or parked:
                await self.escalations.prepare(event, created_ms=created_ms, armers=armers)
        if self.episodes is None:
            return out
        if self.settle is not None and self.settle.settle_ms > 0:
            await self.settle.hold(event.id, customer_id=change.customer_id,
                                   tenant=change.tenant_id, tier=change.tier, messages=out,
                                   now_ms=now_ms)
            return []
        allowed = set(await self.episodes.claim(change.customer_id, change.tenant_id, event.id,
                                                [pair(m) for m in out], change.tier))
        if len(allowed) < len(out):
            self._count("dedupe", len(out) - len(allowed))
        return [m for m in out if pair(m) in allowed]

    async def summary_messages(self, name: str, events: list[tuple[RiskChangeEvent, int]]
                               ) -> list[Message]:
        """One "currently at risk" message per (recipient, channel) for the customers of a
        go-live summary batch who are high now (see :mod:`services.notifier.golive`)."""
        groups: dict[tuple[str, str], tuple[Recipient, list[dict[str, Any]], str]] = {}
        created = 0
        alert_id = "summary:" + name
        events = sorted(events, key=lambda e: e[0].change.customer_id)
        events = [e for e in events if e[0].change.tier == "high" and not e[0].change.holdout]
        standing = (await self.summaries.standing([e.change for e, _ in events])
                    if self.summaries is not None else [None] * len(events))
        episodes = (await self.episodes.get_many([(e.change.customer_id, e.change.tenant_id)
                                                  for e, _ in events])
                    if self.episodes is not None else [None] * len(events))
        for (event, created_ms), now, episode in zip(events, standing, episodes, strict=True):
            if episode is not None and episode.tier != "high":
                continue  # not high any more (a newer change came live)
            # where they stand, store included: the change may have been made while a
            # shuffled import had not yet brought their newest events (another store)
            current = _standing(event.change, now)
            ctx = await self.resolver.context(current)
            route = self.routing.route_for(current, ctx.segment)
            if route is None:
                continue
            channels = [c for c in route.channels if c in STAFF_CHANNELS and c in self.enabled]
            wanted: list[tuple[Recipient, str]] = []
            for person in recipients(ctx, route.to, self.routing):
                if person.role == "customer":
                    continue  # a summary is for staff
                for channel in channels:
                    if registry.target(channel, person):
                        wanted.append((person, channel))
            if self.episodes is not None:
                allowed = set(await self.episodes.claim(
                    current.customer_id, current.tenant_id, alert_id,
                    [f"{p.key}|{c}" for p, c in wanted], "high"))
                wanted = [(p, c) for p, c in wanted if f"{p.key}|{c}" in allowed]
            _, action = apply_inhibition(current, self.routing.policies.inhibit)
            for person, channel in wanted:
                item = self.templates.digest_item(current, person, action=action,
                                                  event_id=event.id, customer_name=ctx.name,
                                                  home_store=ctx.store_id)
                item |= {"score_now": f"{current.score:.2f}",
                         "link": self._link(current.customer_id),
                         # silent past the horizon: listed after those still to keep
                         "lapsed": lapsed(current.lifecycle_stage),
                         "priority": priority(current.score, current.features)}
                groups.setdefault((person.key, channel),
                                  (person, [], _zone_of(person, ctx)))[1].append(item)
            created = max(created, created_ms)
        out = []
        for (_, channel), (person, items, tz) in sorted(groups.items()):
            target = _target(person, channel) or ""
            did = delivery_id(alert_id, channel, target)
            tenant = name.rsplit(":", 1)[0]
            # as the at-risk list: those who can still be kept first, then the lapsed; each
            # by priority (a year imported at go-live made most of them lapsed, and listed by
            # customer id they buried the few still to keep)
            items.sort(key=lambda i: (i["lapsed"], -i["priority"], str(i["customer"])))
            items, note = said_once(items, person.locale)
            keep = [i for i in items if not i["lapsed"]]
            gone = items[len(keep):]
            ctx_vars = {"items": items, "keep": keep, "lapsed": gone,
                        "keep_listed": keep[:SUMMARY_KEEP_LISTED],
                        "lapsed_listed": gone[:SUMMARY_LAPSED_LISTED],
                        "recipient_name": person.name, "tenant": tenant, "delivery_id": did,
                        # the rest of a long list, and who is at medium now: the console's
                        # lists (the summary names some of those high)
                        "high_url": at_risk_url(self.link_base, "high"),
                        "lapsed_url": at_risk_url(self.link_base, "high", stage="churned"),
                        "medium_url": at_risk_url(self.link_base, "medium"),
                        "reasons_note": note}
            if registry.spec(channel).long_form:
                subject = " ".join(self.templates.render(
                    tenant, person.locale, "summary.subject.j2", ctx_vars).split())
                text = self.templates.render(tenant, person.locale, "summary.txt.j2", ctx_vars) + "\n"
                html = self.templates.render(tenant, person.locale, "summary.html.j2", ctx_vars)
            else:
                subject, html = "", ""
                text = clip_sms(self.templates.render(tenant, person.locale, "summary.sms.j2",
                                                      ctx_vars))
            out.append(Message(delivery_id=did, channel=channel,  # type: ignore[arg-type]
                               event_id=alert_id, customer_id="", to=target,
                               event=json.dumps({"summary": [i["event_id"] for i in items]}).encode(),
                               recipient_name=person.name, subject=subject, text=text, html=html,
                               tenant=tenant, created_ms=created, recipient_key=person.key,
                               timezone=tz, kind="summary"))
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
                           customer_id=change.customer_id, store_id=ctx.store_id or change.store_id,
                           ttl_s=self.links.ack_ttl_s)
        if kind not in ("alert", "escalation"):
            return {}
        return {p.key: await self.links.register(change.tenant_id, event.id, p.name,
                                                 locale=p.locale) for p in staff}
    def _link(self, customer_id: str) -> str:
        """The customer's page in the staff console (docs/console.md)."""
        return f"{self.link_base}/console/customers/{quote(customer_id, safe='')}"

    def _build(self, event: RiskChangeEvent, person: Recipient, channel: str,
               ctx: CustomerContext, created_ms: int, *, kind: str, action: Any = None,
               did: str | None = None, ack_url: str = "", owner: bool = False) -> Message:
        """``owner``: ``person`` receives it as the customer's owner (:func:`for_owner`)."""
        change = event.change
        target = _target(person, channel) or ""
        did = did or delivery_id(event.id, channel, target)
        common: dict[str, Any] = {"recipient_name": person.name, "created_ms": created_ms,
                                  "recipient_key": person.key, "timezone": _zone_of(person, ctx),
                                  "kind": kind, "for_owner": owner}
        extra = {"alert_id": event.id, "kind": kind, "action": action,
                 "escalate_after_s": self.routing.policies.escalate_after_s or 0.0,
                 "customer_name": ctx.name, "home_store": ctx.store_id, "ack_url": ack_url,
                 "console_url": self._link(change.customer_id) if person.role != "customer" else "",
                 "customer_contact": ctx.customer if person.role != "customer" else None,
                 "consent": ctx.consent}
        if registry.spec(channel).long_form:
            subject, text, html = self.templates.email(change, person, delivery_id=did, **extra)
            return _message(event, channel, target, target, did=did,  # type: ignore[arg-type]
                            subject=subject, text=text, html=html, **common)
        return _message(event, channel, target, target, did=did,  # type: ignore[arg-type]
                        text=self.templates.sms(change, person, delivery_id=did, **extra),
                        **common)

    async def _digest(self, event: RiskChangeEvent, person: Recipient, channel: str,
                      ctx: CustomerContext, created_ms: int, action: Any,
                      ack_url: str = "", route: Route | None = None,
                      readdressed: bool = False, owner: bool = False) -> None:
        assert self.digester is not None
        item = self.templates.digest_item(event.change, person, action=action, event_id=event.id,
                                          customer_name=ctx.name, home_store=ctx.store_id)
        item |= {"created_ms": created_ms, "at_ms": int(time.time() * 1000),
                 # written again for someone else if it is no longer theirs when it goes out
                 # (they left, or the customer has another owner: Planner.taken_from)
                 "event": event.raw.decode("utf-8", errors="replace"),
                 "timezone": _zone_of(person, ctx), "ack_url": ack_url,
                 "for_owner": owner,  # listed to them as the customer's owner
                 "tier_id": event.change.tier,  # ``tier`` is in the recipient's language
                 # the customer's page in the console, for staff (as alerts and summaries)
                 "link": self._link(event.change.customer_id) if person.role != "customer"
                 else "",
                 # a long digest lists the most valuable first (and links the rest)
                 "priority": priority(event.change.score, event.change.features)}
        added = await self.digester.add(channel=channel, recipient=person,
                                        tenant=event.change.tenant_id, event_id=event.id,
                                        item=item, now_ms=int(time.time() * 1000),
                                        interval_s=route.digest_every_s if route else None,
                                        at=route.digest_at if route else None,
                                        timezone=_zone_of(person, ctx), readdressed=readdressed)
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
            if channel not in self.enabled:
                continue
            target = _target(ctx.manager, channel)
            if not target:
                self._count("no_contact")  # the manager has no address for it
                continue
            did = delivery_id(event.id, "escalation:" + channel, target)
            out.append(self._build(event, ctx.manager, channel, ctx, created_ms,
                                   kind="escalation", action=action, did=did,
                                   ack_url=links.get(ctx.manager.key, "")))
        return out

    async def readdressed(self, event: RiskChangeEvent, message: Message) -> list[Message]:
        """``message`` (an alert, won-back notice or escalation) was held for a staff member
        who is no longer the one to tell: they left the team, or (a notice for the customer's
        owner, ``Message.for_owner``) the customer has another owner, or none, since it was
        planned. The same notice, on the same channel, to whoever receives the customer's
        alerts now (the owner, else the store's manager; an escalation: the store's manager).
        Nothing when that person has no address for the channel, or is the same person. A
        high-risk alert's escalation, prepared for the first recipient, is armed now for a new
        owner (none for the manager, who holds it)."""
        if message.kind not in READDRESSED:
            return []
        taker = await self._taker(event, message.kind, message.recipient_key)
        if taker is None:
            return []
        ctx, person, action = taker
        target = _target(person, message.channel)
        if not target:
            self._count("no_contact")
            return []
        links = await self._alert_links(event, [person], ctx, message.kind)
        did = (delivery_id(event.id, "escalation:" + message.channel, target)
               if message.kind == "escalation" else None)
        if message.kind == "alert" and self.escalations is not None \
                and person.key != ctx.manager.key:
            await self.escalations.arm(event.id, message.recipient_key,
                                       now_ms=int(time.time() * 1000), readdressed=True)
        return [self._build(event, person, message.channel, ctx, message.created_ms,
                            kind=message.kind, action=action, did=did,
                            ack_url=links.get(person.key, ""),
                            owner=message.kind != "escalation")]

    async def owner_changed(self, event: RiskChangeEvent, message: Message) -> bool:
        """Does someone else than ``message``'s recipient, who had it as the customer's
        owner (or as the manager standing in for none), receive the customer's alerts now?"""
        return await self._taker(event, message.kind, message.recipient_key) is not None

    async def readdressed_digest(self, changes: list[tuple[RiskChangeEvent, int]],
                                 message: Message) -> int:
        """``message``, a digest due for a staff member who has left the team since its items
        were buffered (``changes``: the risk change and publication time of each): each item
        written again for whoever receives that customer's alerts now
        (:meth:`_readdress_items`). Returns how many were."""
        done = await self._readdress_items(changes, channel=message.channel,
                                           recipient_key=message.recipient_key)
        return sum(1 for d in done if d)

    async def taken_from(self, reader: Recipient, channel: str, tenant: str,
                         changes: list[tuple[RiskChangeEvent, int]], *, why: str) -> list[bool]:
        """Items of a digest due for ``reader``, who is no longer the one to tell (``why``:
        they left the team, or were listed them as the customers' owner, or as the manager
        standing in for none, and the customers have another owner now): for each, whether
        the customer's alerts go to someone else now. Those are written again for that person
        (:meth:`_readdress_items`) and logged as not sent to ``reader``; the digest leaves
        them out. Counted per item for an owner change (as items left out for ``moved_on``),
        once, as the digest not sent, for a leaver."""
        done = await self._readdress_items(changes, channel=channel, recipient_key=reader.key)
        taken = [event for (event, _), d in zip(changes, done, strict=True) if d is not None]
        if taken:
            if why == OWNER_CHANGED:
                self._count("owner_changed", len(taken))
            else:
                self._count("recipient_left")
            if self.ledger is not None:
                await self.ledger.log_outcomes([(event.change.customer_id, {
                    "delivery_id": "", "event_id": event.id, "channel": channel,
                    "kind": "digest", "target": _mask(channel, reader), "status": "not_sent",
                    "reason": why, "at": now_iso(), "attempts": 0})
                    for event in taken], tenant=tenant)
        return [d is not None for d in done]

    async def _readdress_items(self, changes: list[tuple[RiskChangeEvent, int]], *,
                               channel: str, recipient_key: str) -> list[bool | None]:
        """Digest items due for ``recipient_key`` (``changes``: the risk change and publication
        time of each), each written again, in the new reader's language and with their
        acknowledge link, for whoever receives that customer's alerts now (the owner, else the
        store's manager), in a digest to that person on the same channel that goes out at
        once (the list was due already). Per item: True when re-addressed, False when that
        person has no address for the channel, None when it is ``recipient_key`` still."""
        if self.digester is None:
            return [None] * len(changes)
        done: list[bool | None] = []
        for event, created_ms in changes:
            taker = await self._taker(event, "alert", recipient_key)
            if taker is None:
                done.append(None)
                continue
            ctx, person, action = taker
            if not _target(person, channel):
                self._count("no_contact")
                done.append(False)
                continue
            links = await self._alert_links(event, [person], ctx, "alert")
            await self._digest(event, person, channel, ctx, created_ms, action,
                               ack_url=links.get(person.key, ""), readdressed=True, owner=True)
            done.append(True)
        return done

    async def _taker(self, event: RiskChangeEvent, kind: str, recipient_key: str
                     ) -> tuple[CustomerContext, Recipient, Any] | None:
        """Who receives a notice of ``kind`` about ``event``'s customer now (the customer's
        owner, else the store's manager; an escalation: the manager), with the customer's
        context and the action to suggest; None when that is ``recipient_key``."""
        ctx = await self.resolver.context(event.change)
        person = ctx.manager if kind == "escalation" else ctx.owner or ctx.manager
        if person.key == recipient_key:
            return None
        _, action = apply_inhibition(event.change, self.routing.policies.inhibit)
        return ctx, person, action


def _zone_of(person: Recipient, ctx: CustomerContext) -> str:
    """The clock a message to ``person`` keeps to (quiet hours, a morning digest's 08:00, the
    times it shows): the person's own time zone, else the customer's store's."""
    return person.timezone or ctx.timezone


def _target(person: Recipient, channel: str) -> str | None:
    """Where ``channel`` reaches ``person``: an address, a phone number, or for in_app the
    staff id of a staff member with a profile (others have no console identity)."""
    return registry.target(channel, person)


def _mask(channel: str, person: Recipient) -> str:
    return registry.spec(channel).mask(registry.target(channel, person) or "")


def _extra(event: RiskChangeEvent) -> dict[str, str]:
    # the customer as a field: the log formatter writes their pseudonymous token, not the id
    return {"event_id": event.id, "customer_id": event.change.customer_id,
            "tenant": event.change.tenant_id}


def _standing(change: RiskChange, now: dict[str, Any] | None) -> RiskChange:
    """A summary's customer as they stand: ``change`` with the score, reasons, action, value,
    stage, features and store the scorer stored last (``now``, :meth:`Summaries.standing`) when
    those are high too; else ``change`` as it came (the newest change told them)."""
    if now is None or now.get("tier") != "high":
        return change
    fields = ("score", "reasons", "suggested_action", "value_tier", "lifecycle_stage", "features",
              "store_id")
    try:
        return RiskChange.model_validate(
            change.model_dump() | {k: now[k] for k in fields if k in now})
    except ValidationError:
        return change
