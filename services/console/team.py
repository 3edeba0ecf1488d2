"""Team (团队): the staff and stores a manager looks after — who receives alerts, by which
channel, on which clock — kept up to date in the console rather than by ``curl``.

The forms write the same records as ``PUT /v1/staff/{id}``, ``DELETE /v1/staff/{id}`` and
``PUT /v1/stores/{id}`` (:class:`~services.common.profiles.ProfileStore`), validated by the same
models, within the session's tenant and stores: a manager of one store sees and edits that
store's staff and the store itself, and cannot move anyone to, or make anyone of, another. Every
staff member edits their own contact details, language and time zone ("My details"); nobody
changes their own role or store or removes themselves (a manager cannot lock themselves out).
Changes apply at once: the notifier routes the next alert with them, and a removed or changed
person's console session follows on their next page (:func:`~services.console.sessions.as_now`).
"""

from __future__ import annotations

import difflib
import re
import time
import zoneinfo
from collections.abc import Collection
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, get_args
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from services.common.profiles import (
    LOCALES,
    MAX_CLOSURES,
    ChannelName,
    Closure,
    StaffMember,
    Store,
)
from services.common.timefmt import clock_parts, named_zone, offset_minutes
from services.console import i18n
from services.console.alerts import own_clock
from services.console.sessions import Session
from services.console.web import current_session, here, page, signed_in_form, to_sign_in
from services.records import owners as ownership
from services.records import profiles as profilelog
from services.records.atrisk import stores_with_customers, tenant_stores
from services.scoring.closures import closed_days_missing
from services.web.deps import Res, Resources, get_profiles

router = APIRouter(include_in_schema=False)

TEAM = "/console/team"
STAFF_FIELDS = ("staff_id", "name", "email", "phone", "store_id", "role", "locale",
                "preferred_channel", "timezone")
OWN_FIELDS = ("name", "email", "phone", "locale", "preferred_channel", "timezone")
STORE_FIELDS = ("name", "timezone", "manager_staff_id", "locale")
# a closure as people write it, one a line: "2026-07-01 .. 2026-08-31 summer break", a single
# day "2026-12-24 Christmas Eve"; "to", "–" and "—" do for ".."
_CLOSURE_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\s*(?:\.\.|–|—|\bto\b|至)\s*"
                           r"(\d{4}-\d{2}-\d{2}))?(?:\s+(.*))?$")


def closures_text(closures: list[Closure]) -> str:
    """A store's closures as the form shows them, one a line."""
    lines = []
    for c in closures:
        line = c.first.isoformat() if c.first == c.last else f"{c.first} .. {c.last}"
        lines.append(f"{line} {c.note}" if c.note else line)
    return "\n".join(lines)


def closed_next(store: Store, today_ms: float) -> Closure | None:
    """The store's closure going on or coming next on its own calendar (the team page shows
    it beside the store), None without one."""
    zone = named_zone(store.timezone) or UTC
    today = datetime.fromtimestamp(today_ms / 1000, zone).date()
    ahead = [c for c in store.closures if c.last >= today]
    return min(ahead, key=lambda c: c.first) if ahead else None


def parse_closures(text: str, locale: str = "en") -> tuple[list[dict[str, str]], str | None]:
    """The closures typed in the store form (one a line, blank lines skipped): the records,
    or the first line that is not one and what to write instead, in the reader's language."""
    t = i18n.words(locale)
    out: list[dict[str, str]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _CLOSURE_LINE.match(line)
        if m is None:
            return [], t["invalid_closure_line"].format(n=n, line=line[:40])
        first, last, note = m.group(1), m.group(2) or m.group(1), (m.group(3) or "").strip()
        try:
            Closure.model_validate({"first": first, "last": last, "note": note or None})
        except ValidationError as exc:
            why = exc.errors()[0]
            if why["type"] == "value_error" and "before" in str(why.get("msg")):
                return [], t["invalid_closure_order"].format(n=n, first=first, last=last)
            if why["type"] == "value_error":
                return [], t["invalid_closure_long"].format(n=n)
            return [], t["invalid_closure_line"].format(n=n, line=line[:40])
        out.append({"first": first, "last": last, **({"note": note} if note else {})})
    if len(out) > MAX_CLOSURES:
        return [], t["invalid_closure_many"].format(n=MAX_CLOSURES)
    return out, None
ROLES = ("staff", "manager")
CHANGES_SHOWN = 20
HANDOVER_SHOWN = 50  # customers listed on the hand-over page (all are handed over)
CHANNELS: tuple[str, ...] = get_args(ChannelName)


@lru_cache(maxsize=1)
def zones() -> tuple[str, ...]:
    """The IANA time zones a form offers (its list; any valid name is accepted)."""
    return tuple(sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC"))


def staff_path(staff_id: str) -> str:
    return f"{TEAM}/staff/{quote(staff_id, safe='')}"


def remove_path(staff_id: str) -> str:
    return f"{TEAM}/remove-staff/{quote(staff_id, safe='')}"


def handover_path(staff_id: str) -> str:
    return f"{TEAM}/handover/{quote(staff_id, safe='')}"


def store_path(store_id: str) -> str:
    return f"{TEAM}/stores/{quote(store_id, safe='')}"


UNKNOWN_LISTED = 10  # stores the notice of an unknown store ID names (the rest: the Team page)


def _folded(store_id: str) -> str:
    """A store ID as a person may mistype it: case, spaces and punctuation set aside."""
    return "".join(ch for ch in store_id.casefold() if ch.isalnum())


def unknown_store(store_id: str, with_customers: Collection[str]) -> dict[str, Any] | None:
    """What the form of a store that no customer belongs to says, while others have customers
    (``with_customers``, :func:`~services.records.atrisk.stores_with_customers`): a store
    entered under another ID than the one its POS sends is a second store, whose closed days,
    time zone and manager count for none of them. ``near``: up to 3 of those stores the ID may have
    meant ("Lycee West" for ``lycee-west``); ``named``: the first of them all, ``more``: how
    many more. The same ID but for case, spaces and punctuation is the only near one. None
    when the ID has customers, or no store has any yet (nothing to tell)."""
    if not with_customers or store_id in with_customers:
        return None
    named = sorted(with_customers)
    by_fold: dict[str, list[str]] = {}
    for s in named:
        by_fold.setdefault(_folded(s), []).append(s)
    typed = _folded(store_id)
    close = [typed] if typed in by_fold else \
        difflib.get_close_matches(typed, list(by_fold), n=3, cutoff=0.75)
    return {"near": [s for f in close for s in by_fold[f]][:3],
            "named": named[:UNKNOWN_LISTED], "more": max(0, len(named) - UNKNOWN_LISTED)}


def _by(session: Session) -> str:
    """Who made a change, as the logs and timelines name them: a staff id, or an admin key's
    name (key2)."""
    return session.staff_id or session.name


def form_record(model: type[BaseModel], base: dict[str, Any], form: dict[str, str],
                fields: tuple[str, ...], locale: str = "en") -> tuple[Any, dict[str, str]]:
    """``base`` with ``fields`` taken from the form (an empty field: unset), validated by
    ``model``: the record and no errors, or None and each field's error in plain words, in
    the reader's language: the fields people mistype (e-mail, phone, time zone) say what a
    good value looks like, the rest what is wrong (missing, too long, a value the form does
    not offer, control characters); anything else keeps the model's own words."""
    t = i18n.words(locale)
    data = dict(base)
    for name in fields:
        value = form.get(name, "").strip()
        if value:
            data[name] = value
        else:
            data.pop(name, None)
    try:
        return model.model_validate(data), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else ""
            errors.setdefault(field, t.get(f"invalid_{field}") or _in_words(e, t))
        return None, errors


def _in_words(error: Any, t: dict[str, str]) -> str:
    """A validation error of a field without words of its own, in the reader's language."""
    kind, ctx = str(error["type"]), error.get("ctx") or {}
    if kind == "string_too_long":
        return t["error_too_long"].format(n=ctx.get("max_length", ""))
    if kind in ("missing", "string_too_short"):
        return t["error_missing"]
    if kind in ("literal_error", "enum"):
        return t["error_choice"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if "control characters" in message:
        return t["error_control"]
    if "blank" in message:
        return t["error_missing"]
    return message


async def team_of(res: Resources, session: Session) -> tuple[list[Store], list[StaffMember]]:
    """The stores and staff the session reaches. Stores without a record are listed too (a
    blank one), so that someone sets their time zone: a store-bound session's own, and for a
    tenant-wide one every store the tenant's events named."""
    profiles = get_profiles(res)
    reach = session.as_key()
    staff = [m for m in await profiles.list_staff(session.tenant) if reach.allows_store(m.store_id)]
    stores = {s.store_id: s for s in await profiles.list_stores(session.tenant)
              if reach.allows_store(s.store_id)}
    named = session.stores if session.stores is not None else \
        await tenant_stores(res.redis, res.keys, session.tenant)
    for store_id in named:
        if store_id not in stores:
            try:
                stores[store_id] = Store(store_id=store_id)
            except ValidationError:  # (an id no store record could have)
                continue
    return sorted(stores.values(), key=lambda s: s.store_id), staff


def _message(request: Request, session: Session, status: int, key: str, *,
             back: str = TEAM) -> Response:
    t = i18n.words(session.locale)
    return page("message.html.j2", request, locale=session.locale, status=status,
                session=session, csrf=session.csrf, heading=t["team"], message=t[key],
                back=back, back_text=t["team"] if session.manages else t["my_details"])


@router.get(TEAM)
async def team_page(request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    if not session.manages:  # staff: their own details
        if session.staff_id:
            return RedirectResponse(staff_path(session.staff_id), status_code=303)
        return _message(request, session, 403, "managers_only", back="/console/at-risk")
    stores, staff = await team_of(res, session)
    staff.sort(key=lambda m: ((m.name or m.staff_id).casefold(), m.staff_id))  # by name
    names = {m.staff_id: m.name or m.staff_id for m in staff}
    # "Saved: <name>" only for a record on the page: the address carries an id, never words
    # to show (a link cannot make the page say what its sender wants)
    saved = request.query_params.get("saved", "")
    kind, _, saved_id = saved.partition(":")
    saved_name = None
    if kind == "staff":
        saved_name = names.get(saved_id)
    elif kind == "store":
        saved_name = next((s.name or s.store_id for s in stores if s.store_id == saved_id), None)
    log = await profilelog.team_log(res.redis, res.keys, session.tenant,
                                    limit=profilelog.TEAM_LOG_MAX)
    changes = await _changes(res, session, log, names,
                             {s.store_id: s.name for s in stores if s.name})
    recorded = {s.store_id for s in stores if s.model_fields_set - {"store_id"}}
    with_customers = await stores_with_customers(res.redis, res.keys, session.tenant)
    everyone = {m.staff_id for m in await get_profiles(res).list_staff(session.tenant)}
    former = await _former(res, session, everyone, {
        str(e["id"]): str(e["name"]) for e in reversed(log)
        if e.get("what") == "staff" and e.get("id") and e.get("name")})
    return page("team.html.j2", request, locale=session.locale, session=session,
                csrf=session.csrf, stores=stores, staff=staff, names=names, saved=saved_name,
                changes=changes, former=former,
                removed=request.query_params.get("removed") == "1", staff_path=staff_path,
                store_path=store_path, recorded=recorded,
                idle=recorded - with_customers if with_customers else set(),
                closed={s.store_id: c for s in stores
                        if (c := closed_next(s, time.time() * 1000)) is not None},
                missing=closed_days_missing(res.engine.business_of(session.tenant).rules,
                                            {s.store_id: s.closed_days_on_record for s in stores}),
                add_store=session.stores is None, here=TEAM)


@router.get(f"{TEAM}/new-store")
async def new_store(request: Request, res: Res) -> Response:
    """The Team page's "Add a store": the new store's form (saved from there, as any
    store's), for a manager of every store of the tenant."""
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    if not session.manages or session.stores is not None:
        return _message(request, session, 403, "every_store_only")
    store_id = request.query_params.get("store_id", "").strip()
    try:
        Store(store_id=store_id)
    except ValidationError:
        return _message(request, session, 422, "invalid_store_id")
    return RedirectResponse(store_path(store_id), status_code=303)


async def _changes(res: Resources, session: Session, log: list[dict[str, Any]],
                   names: dict[str, str], store_names: dict[str, str]) -> list[dict[str, Any]]:
    """The newest changes of the team the session reaches (``PUT|DELETE /v1/staff``, ``PUT
    /v1/stores``, hand-overs and these forms alike; ``log``: the team log, newest first): when,
    on the reader's clock; who (by name when on the team); what; which fields."""
    clock = await own_clock(res, session)
    t = i18n.words(session.locale)
    reach = session.as_key()
    out = []
    for e in log:
        if not profilelog.in_reach(e, reach):
            continue
        ms = int(e.get("at_ms") or 0)
        when, zone = clock_parts(ms / 1000, offset_minutes(clock, ms))
        who, about = str(e.get("by") or ""), str(e.get("id") or "")
        out.append({"when": when, "zone": zone, "by": names.get(who, who),
                    "about": (names if e.get("what") == "staff" else store_names).get(
                        about, str(e.get("name") or about)),
                    "what": str(e.get("what")), "action": str(e.get("action")),
                    "fields": [str(f) for f in e.get("fields") or []],
                    "count": int(e.get("count") or 0),
                    "to": names.get(str(e["to"]), str(e["to"])) if e.get("to")
                    else t["handover_nobody"]})
        if len(out) == CHANGES_SHOWN:
            break
    return out


async def _staff_form(request: Request, res: Resources, session: Session, *,
                      member: StaffMember | None, values: dict[str, Any],
                      errors: dict[str, str] | None = None, status: int = 200) -> Response:
    """The form of a staff member (``member`` None: a new one), filled with ``values``."""
    stores, staff = await team_of(res, session)
    own = member is not None and member.staff_id == session.staff_id
    return page("staff_form.html.j2", request, locale=session.locale, status=status,
                session=session, csrf=session.csrf, member=member, values=values,
                errors=errors or {}, own=own, managing=session.manages and not own,
                store_ids=[s.store_id for s in stores], any_store=session.stores is None,
                roles=ROLES, channels=CHANNELS, locales=LOCALES, zones=zones(),
                action=staff_path(member.staff_id) if member else f"{TEAM}/staff",
                staff_path=staff_path, remove_path=remove_path, handover_path=handover_path,
                saved=request.query_params.get("saved") == "1",
                here=here(request))


async def _visible_member(res: Resources, session: Session, staff_id: str
                          ) -> StaffMember | None:
    """The staff member, when the session may open their form: their own, or any of the
    session's stores' for a manager."""
    profiles = get_profiles(res)
    member = await profiles.get_staff(staff_id, session.tenant)
    if member is None:
        return None
    if member.staff_id == session.staff_id or (
            session.manages and session.as_key().allows_store(member.store_id)):
        return member
    return None


@router.get(f"{TEAM}/new-staff")
async def new_staff_page(request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    if not session.manages:
        return _message(request, session, 403, "managers_only", back="/console/at-risk")
    one = session.stores[0] if session.stores and len(session.stores) == 1 else None
    return await _staff_form(request, res, session, member=None,
                             values={"store_id": one, "role": "staff",
                                     "locale": session.locale})


@router.get(f"{TEAM}/staff/{{staff_id:anypath}}")
async def staff_page(staff_id: str, request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    member = await _visible_member(res, session, staff_id)
    if member is None:
        return _message(request, session, 404, "no_staff_member")
    return await _staff_form(request, res, session, member=member,
                             values=member.model_dump(exclude_none=True),
                             errors={}, status=200)


@router.post(f"{TEAM}/staff")
async def create_staff(request: Request, res: Res) -> Response:
    checked = await signed_in_form(request, res)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    if not session.manages:
        return _message(request, session, 403, "managers_only", back="/console/at-risk")
    member, errors = form_record(StaffMember, {}, form, STAFF_FIELDS, session.locale)
    profiles = get_profiles(res)
    if member is not None and await profiles.get_staff(member.staff_id, session.tenant):
        member, errors = None, {"staff_id": i18n.words(session.locale)["staff_id_taken"]}
    if member is not None and not session.as_key().allows_store(member.store_id):
        member, errors = None, {"store_id": i18n.words(session.locale)["not_your_store"]}
    if member is None:
        return await _staff_form(request, res, session, member=None, values=form,
                                 errors=errors, status=422)
    await profilelog.save_staff(res.redis, res.keys, profiles, session.tenant, None, member,
                                by=_by(session))
    return RedirectResponse(f"{TEAM}?{urlencode({'saved': f'staff:{member.staff_id}'})}",
                            status_code=303)


@router.post(f"{TEAM}/staff/{{staff_id:anypath}}")
async def save_staff(staff_id: str, request: Request, res: Res) -> Response:
    checked = await signed_in_form(request, res)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    old = await _visible_member(res, session, staff_id)
    if old is None:
        return _message(request, session, 404, "no_staff_member")
    own = old.staff_id == session.staff_id
    fields = OWN_FIELDS if own or not session.manages else \
        tuple(f for f in STAFF_FIELDS if f != "staff_id")
    member, errors = form_record(StaffMember, old.model_dump(exclude_none=True), form, fields,
                                 session.locale)
    if member is not None and not session.as_key().allows_store(member.store_id):
        member, errors = None, {"store_id": i18n.words(session.locale)["not_your_store"]}
    if member is None:
        return await _staff_form(request, res, session, member=old,
                                 values={**old.model_dump(exclude_none=True), **form},
                                 errors=errors, status=422)
    await profilelog.save_staff(res.redis, res.keys, get_profiles(res), session.tenant, old,
                                member, by=_by(session))
    if not session.manages:
        return RedirectResponse(f"{staff_path(staff_id)}?saved=1", status_code=303)
    return RedirectResponse(f"{TEAM}?{urlencode({'saved': f'staff:{member.staff_id}'})}",
                            status_code=303)


@router.get(f"{TEAM}/remove-staff/{{staff_id:anypath}}")
async def remove_staff_page(staff_id: str, request: Request, res: Res) -> Response:
    """Asks first (the console runs no scripts, so no confirm() dialog): what removing does."""
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    member = await _visible_member(res, session, staff_id)
    if member is None or not session.manages:
        return _message(request, session, 404, "no_staff_member")
    if member.staff_id == session.staff_id:
        return _message(request, session, 409, "not_yourself", back=staff_path(staff_id))
    theirs = await _their_customers(res, session, member.staff_id)
    return page("staff_remove.html.j2", request, locale=session.locale, session=session,
                csrf=session.csrf, member=member, action=remove_path(staff_id),
                owns=len(theirs), handover=handover_path(staff_id),
                back=staff_path(staff_id), here=here(request))


@router.post(f"{TEAM}/remove-staff/{{staff_id:anypath}}")
async def remove_staff(staff_id: str, request: Request, res: Res) -> Response:
    checked = await signed_in_form(request, res)
    if isinstance(checked, Response):
        return checked
    session, _ = checked
    member = await _visible_member(res, session, staff_id)
    if member is None or not session.manages:
        return _message(request, session, 404, "no_staff_member")
    if member.staff_id == session.staff_id:
        return _message(request, session, 409, "not_yourself", back=staff_path(staff_id))
    await profilelog.remove_staff(res.redis, res.keys, get_profiles(res), session.tenant,
                                  member, by=_by(session))
    return RedirectResponse(f"{TEAM}?removed=1", status_code=303)


async def _store_form(request: Request, res: Resources, session: Session, store: Store,
                      values: dict[str, Any], errors: dict[str, str] | None = None,
                      status: int = 200) -> Response:
    managers = await _managers(res, session, store.store_id)
    # the other stores are named only to whom reaches every store
    unknown = None if session.stores is not None else unknown_store(
        store.store_id, await stores_with_customers(res.redis, res.keys, session.tenant))
    return page("store_form.html.j2", request, locale=session.locale, status=status,
                session=session, csrf=session.csrf, store=store, values=values,
                errors=errors or {}, managers=managers, locales=LOCALES, zones=zones(),
                unknown=unknown, store_path=store_path,
                action=store_path(store.store_id), here=here(request))


async def _managers(res: Resources, session: Session, store_id: str) -> list[StaffMember]:
    """Who may be named the store's manager (its fallback recipient), or take customers of
    the store: its own staff, and staff of no store (over every store of the tenant), the
    session reaches."""
    _, staff = await team_of(res, session)
    return [m for m in staff if m.store_id in (store_id, None)]


async def _visible_store(res: Resources, session: Session, store_id: str) -> Store | None:
    """The store (a blank record if it has none yet), when the session manages it."""
    if not session.manages or not session.as_key().allows_store(store_id):
        return None
    profiles = get_profiles(res)
    found = await profiles.get_store(store_id, session.tenant)
    if found is not None:
        return found
    try:
        return Store(store_id=store_id)
    except ValidationError:
        return None


@router.get(f"{TEAM}/stores/{{store_id:anypath}}")
async def store_page(store_id: str, request: Request, res: Res) -> Response:
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    store = await _visible_store(res, session, store_id)
    if store is None:
        return _message(request, session, 404, "no_store")
    return await _store_form(request, res, session, store, {
        **store.model_dump(exclude_none=True), "closures": closures_text(store.closures)})


@router.post(f"{TEAM}/stores/{{store_id:anypath}}")
async def save_store(store_id: str, request: Request, res: Res) -> Response:
    checked = await signed_in_form(request, res)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    old = await _visible_store(res, session, store_id)
    if old is None:
        return _message(request, session, 404, "no_store")
    closures, wrong = parse_closures(form.get("closures", ""), session.locale)
    store, errors = form_record(Store, {"store_id": old.store_id, "closures": closures,
                                        "never_closes": form.get("never_closes") == "on"},
                               form, STORE_FIELDS, session.locale)
    if wrong is not None:
        store, errors = None, {**errors, "closures": wrong}
    if store is not None and store.manager_staff_id is not None and store.manager_staff_id \
            not in {m.staff_id for m in await _managers(res, session, store_id)}:
        store, errors = None, {"manager_staff_id": i18n.words(session.locale)["not_your_staff"]}
    if store is None:
        return await _store_form(request, res, session, old,
                                 {**old.model_dump(exclude_none=True), **form,
                                  "never_closes": form.get("never_closes") == "on"},
                                 errors, 422)
    recorded = await get_profiles(res).get_store(store.store_id, session.tenant)
    await profilelog.save_store(res.redis, res.keys, get_profiles(res), session.tenant,
                                recorded, store, by=_by(session))
    return RedirectResponse(f"{TEAM}?{urlencode({'saved': f'store:{store.store_id}'})}",
                            status_code=303)


async def _their_customers(res: Resources, session: Session, staff_id: str
                           ) -> list[ownership.Owned]:
    """The customers ``staff_id`` owns in the session's stores."""
    reach = session.as_key()
    return [c for c in await ownership.owned(res.redis, res.keys, session.tenant, staff_id)
            if reach.allows_store(c.store)]


async def _former(res: Resources, session: Session, team: set[str],
                  names: dict[str, str]) -> list[dict[str, Any]]:
    """People no longer on the team who still own customers in the session's stores (the
    store's manager receives those customers' alerts meanwhile): id, name, how many."""
    out = []
    for staff_id in await ownership.owners(res.redis, res.keys, session.tenant):
        if staff_id in team:
            continue
        theirs = await _their_customers(res, session, staff_id)
        if theirs:
            out.append({"staff_id": staff_id, "name": names.get(staff_id, staff_id),
                        "count": len(theirs), "path": handover_path(staff_id)})
    return out


async def _handover_member(res: Resources, session: Session, staff_id: str
                           ) -> tuple[StaffMember | None, list[ownership.Owned]] | None:
    """Whose customers a manager may hand over: a staff member of their stores, or someone no
    longer on the team who owns customers there (None: neither)."""
    if not session.manages:
        return None
    member = await get_profiles(res).get_staff(staff_id, session.tenant)
    if member is not None and not session.as_key().allows_store(member.store_id):
        return None
    theirs = await _their_customers(res, session, staff_id)
    if member is None and not theirs:
        return None
    return member, theirs


async def _handover_page(request: Request, res: Resources, session: Session, staff_id: str,
                         member: StaffMember | None, theirs: list[ownership.Owned], *,
                         done: profilelog.HandOver | None = None, to: str | None = None,
                         mistake: str | None = None) -> Response:
    """``mistake``: what the form lacked, said above it (an i18n key; the answer is a 422)."""
    candidates = await _takers(res, session, staff_id, member)
    name = await profilelog.known_name(res.redis, res.keys, get_profiles(res), session.tenant,
                                       staff_id) or staff_id
    shown = sorted(theirs, key=lambda c: ({"high": 0, "medium": 1}.get(c.tier or "", 2),
                                          (c.profile.name or c.customer_id).casefold()))
    return page("staff_handover.html.j2", request, locale=session.locale, session=session,
                csrf=session.csrf, person=name, staff_id=staff_id,
                listed=shown[:HANDOVER_SHOWN], more=max(0, len(shown) - HANDOVER_SHOWN),
                count=len(theirs), risky=sum(c.tier in ("medium", "high") for c in theirs),
                candidates=candidates, done=done, to=to, action=handover_path(staff_id),
                back=staff_path(staff_id) if member is not None else TEAM,
                here=here(request), mistake=mistake, status=422 if mistake else 200)


async def _takers(res: Resources, session: Session, staff_id: str,
                  member: StaffMember | None) -> list[StaffMember]:
    """Who may take someone's customers, by name: the staff of their store (of any of the
    session's stores, for someone whose store is not known any more) and of no store."""
    if member is not None and member.store_id is not None:
        staff = await _managers(res, session, member.store_id)
    else:
        _, staff = await team_of(res, session)
    return sorted((m for m in staff if m.staff_id != staff_id),
                  key=lambda m: ((m.name or m.staff_id).casefold(), m.staff_id))


@router.get(f"{TEAM}/handover/{{staff_id:anypath}}")
async def handover_page(staff_id: str, request: Request, res: Res) -> Response:
    """How many customers someone owns in the manager's stores (those at risk first, each
    with a box to tick), and to whom to give them: all of them, or those ticked."""
    session = await current_session(request, res)
    if session is None:
        return to_sign_in(here(request))
    found = await _handover_member(res, session, staff_id)
    if found is None:
        return _message(request, session, 404, "no_staff_member")
    return await _handover_page(request, res, session, staff_id, *found)


@router.post(f"{TEAM}/handover/{{staff_id:anypath}}")
async def hand_over(staff_id: str, request: Request, res: Res) -> Response:
    """Writes as ``POST /v1/staff/{id}/handover`` does, within the session's stores: all of the
    person's customers, or (``which=ticked``) those ticked in the list, to one colleague; or
    (``which=share``) all of them shared out evenly among the colleagues ticked. Answers with
    the page itself, saying what was done (doing it again moves nothing more)."""
    checked = await signed_in_form(request, res,
                                   max_fields=HANDOVER_SHOWN + profilelog.SHARE_MAX + 10)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    found = await _handover_member(res, session, staff_id)
    if found is None:
        return _message(request, session, 404, "no_staff_member")
    member, theirs = found
    which = form.get("which")
    ticked = form.every("c") if which == "ticked" else None
    if ticked is not None and not ticked:
        return await _handover_page(request, res, session, staff_id, member, theirs,
                                    mistake="handover_tick_first")
    takers = {m.staff_id: m for m in await _takers(res, session, staff_id, member)}
    to: StaffMember | None = None
    share: list[StaffMember] | None = None
    if which == "share":
        chosen = list(dict.fromkeys(form.every("share")))
        if len(chosen) < 2 or len(chosen) > profilelog.SHARE_MAX:
            return await _handover_page(request, res, session, staff_id, member, theirs,
                                        mistake="handover_share_first")
        share = [takers[c] for c in chosen if c in takers]
        unknown = len(share) < len(chosen)
    else:
        to_id = form.get("to", "").strip() or None
        to = takers.get(to_id) if to_id is not None else None
        unknown = to_id is not None and to is None
    if unknown:
        return _message(request, session, 422, "not_your_staff",
                        back=handover_path(staff_id))
    done = await profilelog.hand_over(
        res.redis, res.keys, get_profiles(res), session.tenant, staff_id, to,
        reach=session.as_key(), by=_by(session), only=ticked, share=share,
        retention=res.settings.retention)
    theirs = await _their_customers(res, session, staff_id)
    t = i18n.words(session.locale)
    if share is not None:
        said = t["handover_shares_sep"].join(
            t["handover_share_each"].format(name=m.name or m.staff_id, n=done.shares[m.staff_id])
            for m in share)
    else:
        said = (to.name or to.staff_id) if to is not None else t["handover_nobody"]
    return await _handover_page(request, res, session, staff_id, member, theirs, done=done,
                                to=said)
