"""The signed-in person's customers: the at-risk list and one customer's page (profile as
consent allows, score, tier and reasons, score over time, timeline, win-back actions)."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.common.exceptions import BrokerUnavailable
from services.common.profiles import CustomerProfile, ProfileStore, StaffMember
from services.common.riskchange import TIERS, holds_tier, lapsed
from services.common.timefmt import clock_parts, local_iso, parse_iso
from services.console import alerts, charts, i18n
from services.console.sessions import SESSION_COOKIE, Draft, Session
from services.console.web import (
    PAGE_SIZE,
    browser_locale,
    csrf_refused,
    current_session,
    here,
    page,
    pre_csrf,
    read_form,
    session_store,
    sign_in_page,
    signed_in_form,
    to_sign_in,
    with_pre_csrf,
)
from services.records import complaints, timeline
from services.records import cursor as cursors
from services.records.atrisk import AtRiskQuery, tenant_stores
from services.records.errors import QueryError
from services.records.holdout import holdout
from services.records.owners import home_store
from services.records.profiles import give
from services.records.winback import ACTION_TYPES
from services.scoring.lifecycle import LIFECYCLE_STAGES, stage_name
from services.scoring.scorecard import REGULAR
from services.state.store import StateRead
from services.web.deps import Res, Resources, get_profiles
from services.web.params import CustomerId
from services.web.scope import store_for_list

router = APIRouter(include_in_schema=False)
TIMELINE_SHOWN = 60
VALUE_TIERS = ("high", "medium", "low")
STAGES = LIFECYCLE_STAGES


def _text(obj: dict[str, Any] | None, zh: bool) -> str:
    if not obj:
        return ""
    return str((obj.get("text_zh") if zh else obj.get("text")) or obj.get("text") or "")


def _count_line(t: dict[str, str], *, shown: int, start: int, total: int,
                filtered: bool, paged: bool) -> str:
    """How many customers the list holds, as the page shows them: "3 customers", "51–100 of
    132", or, filtered (a filtered page examines a bounded number of entries), how many match
    of the tier's."""
    if filtered:
        return t["count_filtered"].format(n=shown, total=total)
    if paged or start:
        if not shown:
            return t["count_past"].format(total=total)
        return t["count_page"].format(first=start + 1, last=start + shown, total=total)
    return t["count_one"] if total == 1 else t["count_all"].format(n=total)


def _year_spend(item: dict[str, Any]) -> float | None:
    """A year's spend, from the list's order itself (priority = score × (1 + a year's
    spend)): what "most valuable first" sorts by, shown beside each customer."""
    score = float(item.get("score") or 0.0)
    if score <= 0:
        return None
    return max(float(item.get("priority") or 0.0) / score - 1.0, 0.0)


def _is_cursor(cursor: str) -> bool:
    try:
        cursors.decode(cursor)
    except QueryError:
        return False
    return True


def _stores_line(t: dict[str, str], stores: list[str]) -> str:
    """Whose customers a store-bound person sees, said to them: their store, or stores."""
    if not stores:
        return t["page_refused"]
    if len(stores) == 1:
        return t["only_your_store"].format(store=stores[0])
    return t["only_your_stores"].format(stores=", ".join(stores))


def _list_refused(request: Request, session: Session, status: int, message: str, *,
                  back: str = "/console/at-risk", back_text: str | None = None) -> Response:
    """The at-risk list could not be shown: why, in the person's words, and a way on."""
    t = i18n.words(session.locale)
    return page("message.html.j2", request, locale=session.locale, status=status,
                session=session, csrf=session.csrf, heading=t["at_risk"], message=message,
                back=back, back_text=back_text)


@router.get("/console/at-risk")
async def at_risk_page(request: Request, res: Res, tier: str = "high", store: str | None = None,
                       cursor: str | None = None, owner: str | None = None,
                       value: str | None = None, stage: str | None = None,
                       start: str = "0") -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    tier = tier if tier in TIERS else "high"
    # the stores to choose from: a store-bound person's own; anyone else's the tenant's (all
    # of them, the default, or one: a chain admin looking at one store's customers)
    bound = session.stores is not None
    stores = list(session.stores or ()) if bound else await tenant_stores(
        res.redis, res.keys, session.tenant)
    if not store and bound and len(stores) > 1:
        store = stores[0]
    t = i18n.words(session.locale)
    stage = stage_name(stage)  # a bookmark from before issue 16 (growing, mature): active
    try:  # the API's scope rule: a store-bound person never reads another store's list
        scoped = store_for_list(session.as_key(), store or None)
    except QueryError as exc:  # another store's list, by URL: say which ones are theirs
        return _list_refused(request, session, exc.status, _stores_line(t, stores))
    if scoped is not None and scoped not in stores:  # a store with no customers yet, by URL
        stores = sorted([*stores, scoped])
    filters = {"owner": owner or "", "value": value if value in VALUE_TIERS else "",
               "stage": stage if stage in STAGES else ""}
    kept = {"owner": filters["owner"][:128], "value": filters["value"],
            "stage": filters["stage"]}

    def link(**changed: str) -> str:  # this list's address with ``changed``, filters kept
        params = {"tier": tier, "store": scoped or "", **kept, **changed}
        return "/console/at-risk?" + urlencode({k: v for k, v in params.items() if v})

    cursor = cursor[:1024] if cursor else None
    if cursor is not None and not _is_cursor(cursor):  # an old or mangled "next page" link
        return _list_refused(request, session, 400, t["page_link_stale"], back=link(),
                             back_text=t["first"])
    try:
        listing = await AtRiskQuery(res.redis, res.keys).page(
            tenant=session.tenant, tier=tier, store=scoped, owner=kept["owner"] or None,
            limit=PAGE_SIZE, cursor=cursor, holdout_share=res.settings.holdout_share,
            value_tier=kept["value"] or None, lifecycle=kept["stage"] or None)
    except QueryError as exc:  # the API's words are not for people: the console's own
        return _list_refused(request, session, exc.status, t["page_refused"], back=link(),
                             back_text=t["first"])
    zh = session.locale == "zh-CN"
    for item in listing["items"]:
        item["why"] = _text(item.get("top_reason"), zh)
        item["held"] = _text(item.get("tier_reason"), zh)
        item["todo"] = _text(item.get("suggested_action"), zh)
        item["year_spend"] = _year_spend(item)
    total = int(await res.redis.zcard(res.keys.tier_index(tier, session.tenant, scoped)))
    first = min(int(start), 1_000_000_000) if start.isdigit() else 0
    shown = len(listing["items"])
    count = _count_line(t, shown=shown, start=first, total=total,
                        filtered=any(kept.values()),
                        paged=bool(listing["next_cursor"]))
    # owners to choose by name (a staff id typed by hand was the only way, and a name as the
    # page shows it found nobody): the tenant's staff of the stores this person sees
    staff = [m for m in await ProfileStore(res.redis, res.keys).list_staff(session.tenant)
             if session.stores is None or m.store_id in session.stores]
    owners = [(m.staff_id, m.name or m.staff_id) for m in staff]
    if kept["owner"] and kept["owner"] not in {sid for sid, _ in owners}:
        owners.append((kept["owner"], kept["owner"]))  # a bookmark's: kept, shown as it is
    return page("at_risk.html.j2", request, locale=session.locale, session=session,
                csrf=session.csrf, page=listing, tier=tier, tiers=("high", "medium"),
                store=scoped, stores=stores, all_stores=not bound, here=here(request),
                filters=filters,
                keep=[i for i in listing["items"] if not lapsed(i.get("lifecycle_stage"))],
                lapsed=[i for i in listing["items"] if lapsed(i.get("lifecycle_stage"))],
                value_tiers=VALUE_TIERS, stages=STAGES, count=count, owners=owners,
                tier_links={name: link(tier=name) for name in ("high", "medium")},
                next_link=link(cursor=listing["next_cursor"], start=str(first + shown))
                if listing["next_cursor"] else None)


async def _customer(res: Resources, session: Session, customer_id: str
                    ) -> tuple[dict[str, str], CustomerProfile | None] | None:
    """The customer's state and profile when this session may see them, else None."""
    reader = StateRead(res.keys)
    pipe = res.redis.pipeline(transaction=False)
    reader.queue(pipe, customer_id, session.tenant)
    pipe.get(res.keys.profile(customer_id, session.tenant))
    *rows, raw = await pipe.execute()
    state = reader.result(rows)
    profile = CustomerProfile.model_validate_json(raw) if raw else None
    store = state.get("store") or (profile.store_id if profile else None)
    if not state and profile is None:
        return None
    if not session.as_key().allows_store(store):
        return None
    return dict(state), profile


async def _staff_names(res: Resources, tenant: str, ids: set[str]) -> dict[str, str]:
    """The names of the staff members ``ids`` on the team (one without a name: their id; an id
    not on the team is left out): people read "Olga", not "stylist-7"."""
    store = get_profiles(res)
    ordered = sorted(i for i in ids if i)
    members = await asyncio.gather(*(store.get_staff(i, tenant) for i in ordered))
    return {i: m.name or i for i, m in zip(ordered, members, strict=True) if m is not None}


def _offered(risk: dict[str, Any], draft: Draft | None, just_resolved: bool = False
             ) -> tuple[str, ...]:
    """The actions the page offers: "Complaint resolved" only while a complaint is open (or
    it is the unsaved form given back); on anyone else it would record a resolution of
    nothing. Not right after it was pressed (``just_resolved``): the score still counts the
    complaint until the scorer has read its resolution, and the button read as not done."""
    open_now = (risk.get("features") or {}).get("open_complaints") or 0
    keep = (open_now > 0 and not just_resolved) or (
        draft is not None and draft.action == "complaint_resolved")
    return tuple(a for a in ACTION_TYPES if keep or a != "complaint_resolved")


def _count_param(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() and len(value) < 4 else 0


async def _owners(res: Resources, session: Session, store: str | None) -> list[StaffMember]:
    """Who may own a customer of ``store``, by name: the store's staff and staff of no store
    (over every store), within the session's stores."""
    staff = await get_profiles(res).list_staff(session.tenant)
    return sorted((m for m in staff if m.store_id in (store, None)
                   and session.as_key().allows_store(m.store_id)),
                  key=lambda m: ((m.name or m.staff_id).casefold(), m.staff_id))


def _not_found(request: Request, session: Session, customer_id: str) -> Response:
    t = i18n.words(session.locale)
    return page("message.html.j2", request, locale=session.locale, status=404, session=session,
                csrf=session.csrf, heading=t["customer"],
                message=t["no_customer"].format(customer=customer_id), back="/console/at-risk")


def _why_tier(codes: list[Any]) -> str:
    """Why a tier may sit above its score's band: "rule" (a business rule raised it), else
    "held" (hysteresis or the minimum dwell, or nothing said)."""
    return "rule" if "tier_raised_by_rule" in codes else "held"


def _levels(res: Resources, tenant: str, risk: dict[str, Any]) -> tuple[float, float]:
    """The medium and high entry levels the customer is judged at (the chart's lines): the
    scoring engine's for the tenant, which for an online shop, or a customer who buys mostly
    online, are an online shop's (Engine.levels)."""
    t = res.engine.levels(tenant, risk.get("features") or {})
    return t.medium_enter, t.high_enter


def _history(entries: list[dict[str, Any]], state: dict[str, str], risk: dict[str, Any]
             ) -> list[tuple[int, float, str, str]]:
    """Score over time: each tier change's score, then the current one, each with its tier
    and why that tier may be above the score's band (:func:`_why_tier`)."""
    points = []
    for e in reversed(entries):
        if e["kind"] == "tier_change" and isinstance(e["data"].get("score"), int | float):
            at = parse_iso(e["at"])
            if at is not None:
                points.append((int(at.timestamp() * 1000), float(e["data"]["score"]),
                               str(e["data"].get("to", "")),
                               _why_tier(list(e["data"].get("reasons") or []))))
    if state.get("score"):
        at_ms = int(float(state.get("scored_at") or state.get("last_ts") or 0)) or (
            points[-1][0] if points else 0)
        codes = [r.get("code") for r in risk.get("reasons") or [] if isinstance(r, dict)]
        points.append((max(at_ms, points[-1][0] if points else at_ms), float(state["score"]),
                       state.get("tier", ""), _why_tier(codes)))
    return points


def _as_of_there(as_of: Any, tz_minutes: int) -> str | None:
    """The risk's ``as_of`` at the customer's offset (None when it has none)."""
    at = parse_iso(as_of) if isinstance(as_of, str) else None
    return None if at is None else local_iso(int(at.timestamp() * 1000), tz_minutes)


def _on_their_clock(entries: list[dict[str, Any]], tz_minutes: int) -> None:
    """Each entry's ``when`` as the page shows it, on the customer's clock (the offset of
    their newest event): a day's activity by its date there, anything else to the minute,
    and its ``zone`` (``2026-12-04 19:25``, ``UTC-05:00``). At 23:00 UTC a New York
    customer's alert went out at 18:00 on their day, not "tomorrow"."""
    for e in entries:
        if e.get("kind") == "activity":
            e["when"] = (e.get("data") or {}).get("day") or str(e.get("at", ""))[:10]
            continue
        at = parse_iso(str(e.get("at", "")))
        if at is None:
            e["when"] = e.get("at", "")
            continue
        e["when"], e["zone"] = clock_parts(at.timestamp(), tz_minutes)


@router.get("/console/customers/{customer_id:anypath}")
async def customer_page(customer_id: CustomerId, request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    found = await _customer(res, session, customer_id)
    if found is None:
        return _not_found(request, session, customer_id)
    state, profile = found
    t = i18n.words(session.locale)
    zh = session.locale == "zh-CN"
    risk = json.loads(state["risk"]) if state.get("risk") else {}
    if risk.get("lifecycle_stage"):
        risk["lifecycle_stage"] = stage_name(risk["lifecycle_stage"])
    entries = await timeline.read(res.redis, res.keys, customer_id, session.tenant,
                                  limit=TIMELINE_SHOWN, before=None)
    tz = int(state.get("tz") or 0)  # the customer's clock: the offset of their newest event
    _on_their_clock(entries, tz)
    contact = []
    if profile is not None:
        if profile.email and profile.consent.allows("email"):
            contact.append(profile.email)
        if profile.phone and profile.consent.allows("sms"):
            contact.append(profile.phone)
    chart = charts.score_line(
        t["score_over_time"], _history(entries, state, risk),
        thresholds=_levels(res, session.tenant, risk),
        notes={"rule": t["raised_by_rule"], "held": t["held_above_score"]},
        tz_minutes=tz)
    # a form that could not be saved (signed out, stale token): back, pre-filled, once
    draft = await session_store(res).take_draft(request.cookies.get(SESSION_COOKIE),
                                                session.tenant, customer_id)
    names = await _staff_names(res, session.tenant, {
        *(str(e["data"].get("staff_id") or "") for e in entries if e["kind"] == "staff_action"),
        *(str(e["data"].get("by") or "") for e in entries if e["kind"] == "acknowledged"),
        profile.owner_staff_id if profile is not None and profile.owner_staff_id else ""})
    # a manager gives the customer to another owner (someone left, or a regular changed
    # stylist); an owner no longer on the team is said to be, their alerts going to the manager
    owner_id = profile.owner_staff_id if profile is not None else None
    owners = (await _owners(res, session, home_store(profile, state.get("store")))
              if session.manages else None)
    owner_gone = bool(owner_id) and owner_id not in names  # (names: the team's, read above)
    # a customer back to low risk leaves nothing to acknowledge (their alerts are settled)
    unacked = [] if state.get("tier") == "low" else await alerts.unacknowledged(res, session,
                                                                                 entries)
    _on_their_clock(unacked, tz)
    return page("customer.html.j2", request, locale=session.locale, session=session,
                unacked=unacked, page_path=f"/console/customers/{quote(customer_id, safe='')}",
                csrf=session.csrf, customer_id=customer_id, profile=profile, contact=contact,
                state=state, risk=risk, tier=state.get("tier"),
                score=float(state["score"]) if state.get("score") else None,
                # what holds first; that a rule or hysteresis holds the tier after it (read
                # first, "Held at high: score 0.73 is still above the exit level" hid why)
                reasons=[_text(r, zh) for r in sorted(
                    risk.get("reasons") or [],
                    key=holds_tier)],
                as_usual=bool(risk.get("reasons")) and all(
                    isinstance(r, dict) and r.get("code") == REGULAR.code
                    for r in risk.get("reasons") or []),
                action=_text(risk.get("suggested_action"), zh),
                held=holdout(state.get("tier"), session.tenant, customer_id,
                             res.settings.holdout_share),
                last_seen=local_iso(state.get("last_ts"), state.get("tz")), chart=chart,
                # the day the reasons' day counts are as of, on the customer's clock too
                as_of=_as_of_there(risk.get("as_of"), tz),
                entries=entries,
                actions=_offered(risk, draft, bool(
                    _count_param(request.query_params.get("resolved")))),
                recorded=request.query_params.get("recorded") == "1",
                resolved=_count_param(request.query_params.get("resolved")),
                names=names, draft=draft, owners=owners, owner_gone=owner_gone,
                owner_saved=request.query_params.get("owner") == "1",
                here=here(request, query=False))


@router.post("/console/customers/{customer_id:anypath}/actions")
async def record_action(customer_id: CustomerId, request: Request, res: Res) -> Response:
    """One-click win-back actions, recorded by the same code as POST /v1/customers/{id}/actions.

    Recorded only with a session and its CSRF token. Without them what the person typed is
    not lost: signed out (the session expired), the answer is the sign-in page, which carries
    the form on to the new session; with a stale token (signed in again in another tab), the
    session keeps it. Either way the customer's page shows it again, pre-filled, to save."""
    form = await read_form(request)
    session = await current_session(request, res)
    back = f"/console/customers/{quote(customer_id, safe='')}"
    draft = Draft.of(customer_id, form.get("action", ""), form.get("note", ""), ACTION_TYPES)
    if session is None:
        if draft is None:
            return to_sign_in(back)
        token = pre_csrf(request)
        resp = sign_in_page(request, res, locale=browser_locale(request), csrf=token,
                            status=401, next_url=back, draft=draft)
        return with_pre_csrf(resp, request, res, token)
    if not secrets.compare_digest(session.csrf, form.get("csrf", "")):
        if draft is None:
            return csrf_refused(request, session.locale)
        await session_store(res).put_draft(request.cookies.get(SESSION_COOKIE, ""),
                                           session.tenant, draft)
        return RedirectResponse(back, status_code=303)
    found = await _customer(res, session, customer_id)
    if found is None or not found[0].get("tier"):
        return _not_found(request, session, customer_id)
    state, _ = found
    action = form.get("action", "")
    if action not in ACTION_TYPES:  # not one of the page's buttons (an edited form)
        t = i18n.words(session.locale)
        return page("message.html.j2", request, locale=session.locale, status=422,
                    session=session, csrf=session.csrf, heading=t["customer"],
                    message=t["unknown_action"], back=back, back_text=t["customer"])
    # the note is a textarea: a browser sends its line breaks as CRLF
    note = form.get("note", "").replace("\r\n", "\n").strip()[:1000] or None
    try:  # the same code as POST /v1/customers/{id}/actions
        recorded = await complaints.record_action(
            res, tenant=session.tenant, customer_id=customer_id,
            body={"action": action, "staff_id": session.staff_id or session.name,
                  "note": note, "alert_id": None},
            tier=state.get("tier"), store_id=state.get("store"),
            store_bound=session.as_key().stores is not None)
    except (BrokerUnavailable, ValueError) as exc:  # a complaint not resolved: nothing recorded
        t = i18n.words(session.locale)
        return page("message.html.j2", request, locale=session.locale,
                    status=503 if isinstance(exc, BrokerUnavailable) else 422,
                    session=session, csrf=session.csrf, heading=t["customer"],
                    message=t["not_resolved"] if isinstance(exc, BrokerUnavailable)
                    else str(exc), back=f"/console/customers/{customer_id}")
    resolved = len(recorded.get("resolved_complaints") or [])
    return RedirectResponse(f"/console/customers/{customer_id}?recorded=1"
                            + (f"&resolved={resolved}" if resolved else ""), status_code=303)


@router.post("/console/customers/{customer_id:anypath}/owner")
async def change_owner(customer_id: CustomerId, request: Request, res: Res) -> Response:
    """A manager gives the customer to another member of their store's staff (or to nobody:
    the store's manager then receives the alerts): the rest of the profile kept as it stands
    when written (a POS's profile PUT meanwhile is not undone), the timeline told."""
    checked = await signed_in_form(request, res)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    back = f"/console/customers/{quote(customer_id, safe='')}"
    t = i18n.words(session.locale)
    if not session.manages:
        return page("message.html.j2", request, locale=session.locale, status=403,
                    session=session, csrf=session.csrf, heading=t["customer"],
                    message=t["managers_only"], back=back, back_text=t["customer"])
    found = await _customer(res, session, customer_id)
    if found is None:
        return _not_found(request, session, customer_id)
    state, profile = found
    owner = form.get("owner", "").strip() or None
    key = session.as_key()  # a profile of another store is not this person's to change
    theirs = all(s is None or key.allows_store(s)
                 for s in (profile.store_id if profile else None, state.get("store")))
    if not theirs or owner is not None and owner not in {
            m.staff_id for m in await _owners(res, session,
                                              home_store(profile, state.get("store")))}:
        return page("message.html.j2", request, locale=session.locale, status=422,
                    session=session, csrf=session.csrf, heading=t["customer"],
                    message=t["not_your_staff"], back=back, back_text=t["customer"])
    await give(res.redis, res.keys, session.tenant, [customer_id], owner,
               by=session.staff_id or session.name, retention=res.settings.retention)
    return RedirectResponse(f"{back}?owner=1", status_code=303)
