"""Alerts (系统提示): the risk alerts the notifier sent the signed-in staff member — routed to
the console (``in_app``) or delivered to them by e-mail or SMS —, newest first, each with
"acknowledge" and "open customer"; the badge on every page counts the unacknowledged ones
(services/console/web.py). Any alert can also be acknowledged from its customer's page."""

from __future__ import annotations

import json
from datetime import UTC, tzinfo
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from redis.asyncio import Redis

from services.alerting.acks import InvalidAck
from services.alerting.alerts import find_alert
from services.common.profiles import CustomerProfile
from services.common.redisconn import get_many
from services.common.timefmt import clock_parts, iso_ms, named_zone, offset_minutes
from services.console import i18n
from services.console.sessions import Session
from services.console.web import current_session, here, page, safe_next, signed_in_form, to_sign_in
from services.records import alertacks
from services.state.store import StateRead
from services.web.deps import Res, Resources, get_profiles

router = APIRouter(include_in_schema=False)
SHOWN = 50


async def inbox(res: Resources, session: Session, *, titled: bool = True
                ) -> list[dict[str, Any]]:
    """The staff member's alerts, newest first, each marked acknowledged or not: those routed
    to the console (in-app) and those delivered to them by e-mail or SMS (the notifier lists
    them here once delivered), one entry per alert with ``via`` the channels it came by.
    ``titled=False`` (the badge every page counts): without the words of each, so without
    reading the customers' profiles."""
    if not session.staff_id:
        return []
    redis: Redis = res.redis
    raw = await redis.hgetall(res.keys.inbox(session.staff_id, session.tenant))  # type: ignore[misc]
    by_alert: dict[str, dict[str, Any]] = {}
    for blob in raw.values():
        try:
            entry = json.loads(blob)
            alert_id = str(entry["alert_id"])
        except (ValueError, KeyError, TypeError):
            continue
        via = [str(c) for c in entry.get("via") or ["in_app"]]
        kept = by_alert.setdefault(alert_id, entry)
        kept["via"] = list(dict.fromkeys([*(kept.get("via") or []), *via]))
        if kept is not entry and "text" in entry:  # the in-app entry's words are the fuller
            kept.update({k: entry[k] for k in ("subject", "text") if entry.get(k)})
    entries = sorted(by_alert.values(), key=lambda e: int(e.get("at_ms") or 0), reverse=True)
    entries = entries[:SHOWN]
    acked = await get_many(redis, [res.keys.ack(e["alert_id"], session.tenant) for e in entries])
    now = await _customers_now(res, session.tenant,
                               [str(e.get("customer_id", "")) for e in entries], names=titled)
    own, store = await reader_clocks(res, session) if titled else (None, None)
    t = i18n.words(session.locale)
    for e, ack, (tier, name) in zip(entries, acked, now, strict=True):
        e["acknowledged"] = ack is not None
        e["title"] = _title(e, t, name) if titled else ""
        # a notice that asks for nothing (won back), or an alert whose customer is back to low
        # risk since: nothing left to act on, no button, not counted as unread
        ackable = e.get("kind", "alert") in alertacks.ACKABLE
        e["settled"] = not ackable or tier == "low"
        e["settled_text"] = "alert_settled" if ackable else f"notice_{e.get('kind')}"
        e["at"] = iso_ms(e.get("at_ms"))
        if titled and e.get("at_ms") is not None:
            # the reader's own clock, else the one the message kept to (its customer's
            # store's, for someone over several), else the reader's store's
            ms = int(e["at_ms"])
            said = e.get("zone")
            clock = own or (named_zone(str(said)) if said else store)
            e["when"], e["zone"] = clock_parts(ms / 1000, offset_minutes(clock, ms))
        e["href"] = f"/console/customers/{quote(str(e.get('customer_id', '')), safe='')}"
    return entries


async def own_clock(res: Resources, session: Session) -> tzinfo | None:
    """The signed-in person's clock: their own time zone (``StaffMember.timezone``), else
    their store's (``Store.timezone``), else UTC (None)."""
    own, store = await reader_clocks(res, session)
    return own or store


async def reader_clocks(res: Resources, session: Session
                        ) -> tuple[tzinfo | None, tzinfo | None]:
    """The signed-in person's own time zone (``StaffMember.timezone``; None without one)
    and, without one, their store's (``Store.timezone``; None without a store or on UTC)."""
    if not session.staff_id:
        return None, None
    profiles = get_profiles(res)
    member = await profiles.get_staff(session.staff_id, session.tenant)
    if member is None:
        return None, None
    if member.timezone:  # their own, UTC too
        return named_zone(member.timezone) or UTC, None
    store = await profiles.get_store(member.store_id, session.tenant) if member.store_id else None
    return None, named_zone(store.timezone) if store is not None else None


async def _customers_now(res: Resources, tenant: str, customer_ids: list[str], *,
                         names: bool = True) -> list[tuple[str | None, str | None]]:
    """Each customer's (tier now, name from their profile, when ``names``): None when not
    scored or erased, or without a name; one round trip."""
    if not customer_ids:
        return []
    reader = StateRead(res.keys, ["tier"], risk=False)
    pipe = res.redis.pipeline(transaction=False)
    for cid in customer_ids:
        reader.queue(pipe, cid, tenant)
        if names:
            pipe.get(res.keys.profile(cid, tenant))
    raw = await pipe.execute()
    n = reader.size + int(names)
    out: list[tuple[str | None, str | None]] = []
    for i in range(len(customer_ids)):
        tier = reader.result(raw[n * i:n * i + reader.size]).get("tier")
        blob = raw[n * i + reader.size] if names else None
        try:
            name = CustomerProfile.model_validate_json(blob).name if blob else None
        except ValueError:
            name = None
        out.append((tier, name))
    return out


def _title(entry: dict[str, Any], t: dict[str, str], name: str | None) -> str:
    """The alert in the reader's words: "<name> is now high churn risk (was medium)" from
    the tier change it announced; an entry written before it said so, its message's subject
    without the mail's "[churnwatch]" tag."""
    tier, previous = entry.get("tier"), entry.get("previous_tier")
    who = name or str(entry.get("customer_id", ""))
    if tier in ("low", "medium", "high") and previous in ("low", "medium", "high"):
        return t["alert_title"].format(name=who, tier=t[tier], previous=t[previous])
    subject = str(entry.get("subject") or who)
    return subject.split("] ", 1)[1] if subject.startswith("[") and "] " in subject else subject


@router.get("/console/alerts")
async def alerts_page(request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    entries = await inbox(res, session)
    return page("alerts.html.j2", request, locale=session.locale, session=session,
                csrf=session.csrf, entries=entries, here="/console/alerts")


@router.post("/console/alerts/{alert_id}/ack")
async def acknowledge_alert(alert_id: str, request: Request, res: Res) -> Response:
    """Acknowledge one of the person's own in-app alerts (the escalation stops), as
    ``POST /v1/alerts/{id}/ack`` does: recorded once, shown on the customer's timeline."""
    checked = await signed_in_form(request, res)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    back = safe_next(form.get("back")) or "/console/alerts"
    mine = {e["alert_id"]: e for e in await inbox(res, session)}
    entry = mine.get(alert_id) or await _sent_about_visible(res, session, alert_id)
    if entry is None:
        t = i18n.words(session.locale)
        return page("message.html.j2", request, locale=session.locale, status=404,
                    session=session, csrf=session.csrf, heading=t["alerts"],
                    message=t["no_alert"], back=back)
    await acknowledge(res, session, alert_id,
                      str(entry["customer_id"]) if entry.get("customer_id") else None)
    return RedirectResponse(back, status_code=303)


async def _sent_about_visible(res: Resources, session: Session, alert_id: str
                              ) -> dict[str, Any] | None:
    """An alert the notifier sent in the session's tenant (by mail, SMS, a webhook... to
    anyone) about a customer of a store the person sees, as ``POST /v1/alerts/{id}/ack``
    allows a key of that tenant and those stores to acknowledge it; else None."""
    try:
        alert = await find_alert(res.redis, res.keys, alert_id, session.tenant)
    except InvalidAck:
        return None
    if alert is None or not session.as_key().allows_store(alert.get("store_id")):
        return None
    return alert


async def unacknowledged(res: Resources, session: Session, entries: list[dict[str, Any]]
                         ) -> list[dict[str, Any]]:
    """The alerts a customer's timeline ``entries`` show as sent and nobody acknowledged
    (:func:`services.records.alertacks.unacknowledged`), for the customer page's buttons."""
    return await alertacks.unacknowledged(res.redis, res.keys, session.tenant, entries)


async def acknowledge(res: Resources, session: Session, alert_id: str, customer_id: str | None
                      ) -> None:
    """Acknowledge ``alert_id`` as the signed-in person, as ``POST /v1/alerts/{id}/ack`` does:
    recorded once (the escalation stops), shown on the customer's timeline."""
    await alertacks.acknowledge(res.redis, res.keys, tenant=session.tenant, alert_id=alert_id,
                                customer_id=customer_id, by=session.staff_id or session.name,
                                retention=res.settings.retention)
