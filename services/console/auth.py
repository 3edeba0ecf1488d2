"""Signing in (e-mailed one-time link, or an admin API key), signing out, switching language,
and the stylesheet."""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError

from services.common.profiles import Email, StaffMember
from services.console import i18n
from services.console.mailer import MailUnavailable, send_sign_in_link
from services.console.sessions import CSRF_COOKIE, SESSION_COOKIE, Session, key_tag
from services.console.web import (
    HERE,
    HOME,
    browser_locale,
    csrf_refused,
    current_session,
    draft_of,
    env,
    is_loopback,
    page,
    pre_csrf,
    pre_csrf_ok,
    read_form,
    safe_next,
    session_store,
    sign_in_page,
    signed_in_form,
    start_session,
    to_sign_in,
    with_pre_csrf,
)
from services.web.deps import Res, Resources, get_profiles

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
_EMAIL = TypeAdapter(Email)


@router.get("/console")
async def console_home(request: Request, res: Res) -> Response:
    if await current_session(request, res) is None:
        return to_sign_in()
    return RedirectResponse(HOME, status_code=303)


@router.get("/console/sign-in")
async def sign_inpage(request: Request, res: Res) -> Response:
    """The sign-in forms; ``?next=`` (a console address, :func:`safe_next`) is where they
    return once the person has signed in."""
    next_url = safe_next(request.query_params.get("next"))
    if await current_session(request, res) is not None:
        return RedirectResponse(next_url or HOME, status_code=303)
    locale = browser_locale(request)
    token = pre_csrf(request)
    resp = sign_in_page(request, res, locale=locale, csrf=token, next_url=next_url)
    return with_pre_csrf(resp, request, res, token)


def _link_base(request: Request, res: Resources) -> str | None:
    if res.settings.public_url:
        return res.settings.public_url.rstrip("/")
    if is_loopback(request.url.hostname):
        return str(request.base_url).rstrip("/")
    return None


async def _find_staff(res: Resources, email: str) -> tuple[str, StaffMember] | None:
    """The staff member whose profile has ``email``, in any tenant the deployment knows."""
    tenants = {"default", *(k.tenant for k in res.settings.keys)}
    tenants |= {str(t) for t in await res.redis.smembers(res.keys.tenants)}  # type: ignore[misc]
    profiles = get_profiles(res)
    for tenant in sorted(tenants):
        for member in await profiles.list_staff(tenant):
            if member.email and member.email.lower() == email.lower():
                return tenant, member
    return None


@router.post("/console/sign-in/email")
async def sign_in_email(request: Request, res: Res) -> Response:
    form = await read_form(request)
    locale = i18n.locale_of(form.get("lang") or request.headers.get("accept-language", ""))
    t = i18n.words(locale)
    if not pre_csrf_ok(request, form):
        return csrf_refused(request, locale)
    next_url, draft = safe_next(form.get("next")), draft_of(form)
    try:
        email = _EMAIL.validate_python(form.get("email", "").strip())
    except ValidationError:
        return sign_in_page(request, res, locale=locale, status=422,
                            csrf=request.cookies.get(CSRF_COOKIE, ""), error=t["email_invalid"],
                            next_url=next_url, draft=draft)
    minutes = res.settings.console_link_seconds // 60
    found = await _find_staff(res, email)
    if found is not None:
        tenant, member = found
        base = _link_base(request, res)
        if base is None:
            logger.error("console sign-in link not sent: set CHURNWATCH_PUBLIC_URL to the "
                         "address staff reach the console at")
        else:
            # where to go after signing in travels with the token, in Redis: the link
            # itself stays a bare token
            token = await session_store(res).issue_link(tenant, member.staff_id,
                                                        next_url=next_url, draft=draft)
            link = f"{base}/console/sign-in/link?{urlencode({'token': token})}"
            mt = i18n.words(i18n.locale_of(member.locale))
            name = member.name or member.staff_id
            text = mt["mail_text"].format(name=name, link=link, minutes=minutes)
            html = env.get_template("mail.html.j2").render(
                t=mt, link=link, paragraphs=text.strip().split("\n\n"))
            try:
                await send_sign_in_link(res.settings, to=email, name=member.name, link=link,
                                        subject=mt["subject"], text=text, html=html)
            except MailUnavailable as exc:
                logger.error("console sign-in mail failed: %s", exc)
                return sign_in_page(request, res, locale=locale, status=503,
                                    csrf=request.cookies.get(CSRF_COOKIE, ""),
                                    error=t["mail_down"], next_url=next_url, draft=draft)
    # The same answer whether or not the address is known: no way to probe who is staff.
    return page("message.html.j2", request, locale=locale, heading=t["link_sent"],
                 message=t["link_sent_body"].format(email=email, minutes=minutes), back=None)


@router.get("/console/sign-in/link")
async def sign_in_linkpage(request: Request, res: Res, token: str = "") -> Response:
    locale = browser_locale(request)
    t = i18n.words(locale)
    if not await session_store(res).peek_link(token):
        return page("message.html.j2", request, locale=locale, status=400,
                     heading=t["sign_in"], message=t["link_invalid"], back="/console/sign-in")
    # A GET only shows a button: mail scanners that fetch links do not spend them.
    csrf = pre_csrf(request)
    resp = page("confirm.html.j2", request, locale=locale, csrf=csrf, token=token)
    return with_pre_csrf(resp, request, res, csrf)


@router.post("/console/sign-in/link")
async def sign_in_link(request: Request, res: Res) -> Response:
    form = await read_form(request)
    locale = browser_locale(request)
    t = i18n.words(locale)
    if not pre_csrf_ok(request, form):
        return csrf_refused(request, locale)
    redeemed = await session_store(res).redeem_link(form.get("token", ""))
    member = None
    if redeemed is not None:
        profiles = get_profiles(res)
        member = await profiles.get_staff(redeemed.staff_id, redeemed.tenant)
    if redeemed is None or member is None:
        return page("message.html.j2", request, locale=locale, status=400,
                     heading=t["sign_in"], message=t["link_invalid"], back="/console/sign-in")
    stores = (member.store_id,) if member.store_id else None
    session = Session(kind="staff", tenant=redeemed.tenant, stores=stores,
                      name=member.name or member.staff_id, locale=i18n.locale_of(member.locale),
                      csrf=secrets.token_urlsafe(24), staff_id=member.staff_id, role=member.role)
    logger.info("console sign-in by staff link")
    return await start_session(request, res, session, redeemed.next_url, redeemed.draft)


@router.post("/console/sign-in/key")
async def sign_in_key(request: Request, res: Res) -> Response:
    form = await read_form(request)
    locale = browser_locale(request)
    if not pre_csrf_ok(request, form):
        return csrf_refused(request, locale)
    next_url, draft = safe_next(form.get("next")), draft_of(form)
    tag = None
    if not res.settings.auth_enabled:
        key_tenant, key_stores, name = "default", None, "admin (development mode)"
    else:
        key = res.settings.find_key(form.get("api_key", "").strip())
        if key is None or not key.allows("admin"):
            return sign_in_page(request, res, locale=locale, status=401,
                                csrf=request.cookies.get(CSRF_COOKIE, ""),
                                error=i18n.words(locale)["key_invalid"], next_url=next_url,
                                draft=draft)
        key_tenant, name = key.tenant, key.name
        key_stores = tuple(sorted(key.stores)) if key.stores is not None else None
        tag = await asyncio.to_thread(key_tag, key.secret.get_secret_value())
    session = Session(kind="admin", tenant=key_tenant, stores=key_stores, name=name,
                      locale=locale, csrf=secrets.token_urlsafe(24), key_tag=tag)
    logger.info("console sign-in with an admin key")
    return await start_session(request, res, session, next_url, draft)


@router.post("/console/sign-out")
async def sign_out(request: Request, res: Res) -> Response:
    form = await read_form(request)
    session = await current_session(request, res)
    if session is not None and not secrets.compare_digest(session.csrf, form.get("csrf", "")):
        return csrf_refused(request, session.locale)
    await session_store(res).delete(request.cookies.get(SESSION_COOKIE))
    response = to_sign_in()
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.post("/console/language")
async def switch_language(request: Request, res: Res) -> Response:
    checked = await signed_in_form(request, res)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    await session_store(res).update_locale(request.cookies.get(SESSION_COOKIE, ""), session,
                                    i18n.locale_of(form.get("locale")))
    return RedirectResponse(safe_next(form.get("back")) or HOME, status_code=303)


@router.get("/console/static/console.css")
async def stylesheet() -> Response:
    css = (HERE / "static" / "console.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
