"""The console's pages: sign-in (e-mailed one-time link, or an admin API key), sign-out and
the at-risk list of the signed-in person's tenant and stores.

Pages are server-rendered (Jinja2, autoescaped); forms are urlencoded and carry a CSRF token:
the session's own once signed in, a double-submit cookie before. Sessions live in Redis
(:mod:`services.console.sessions`); a staff member sees their tenant and their store, an admin
what their key sees.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError

from services.common.profiles import Email, ProfileStore, StaffMember
from services.common.riskchange import TIERS
from services.console import i18n
from services.console.mailer import MailUnavailable, send_sign_in_link
from services.console.sessions import CSRF_COOKIE, SESSION_COOKIE, Session, SessionStore
from services.ingest.deps import Res, Resources
from services.ingest.queries.atrisk import AtRiskQuery
from services.ingest.queries.errors import QueryError
from services.ingest.queries.scope import store_for_list

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
HERE = Path(__file__).parent
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)
_EMAIL = TypeAdapter(Email)
MAX_FORM_BYTES = 8192
PAGE_SIZE = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _store(res: Resources) -> SessionStore:
    s = res.settings
    return SessionStore(res.redis, res.keys, session_seconds=s.console_session_seconds,
                        link_seconds=s.console_link_seconds)


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secure(request: Request, res: Resources) -> bool:
    if res.settings.console_cookie_secure == "always":
        return True
    return request.url.scheme == "https" or not _loopback(request.url.hostname)


def _page(name: str, request: Request, *, locale: str, status: int = 200,
          session: Session | None = None, csrf: str = "", **context: Any) -> HTMLResponse:
    t = i18n.words(locale)
    html = _env.get_template(name).render(t=t, locale=locale, session=session, csrf=csrf,
                                          **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


async def _form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if media != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return {}
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items()}


def _browser_locale(request: Request) -> str:
    return i18n.locale_of(request.query_params.get("lang")
                          or request.headers.get("accept-language", ""))


async def _session(request: Request, res: Resources) -> Session | None:
    return await _store(res).get(request.cookies.get(SESSION_COOKIE))


def _to_sign_in() -> RedirectResponse:
    return RedirectResponse("/console/sign-in", status_code=303)


def _pre_csrf(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def _with_pre_csrf(response: Response, request: Request, res: Resources, token: str) -> Response:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=_secure(request, res), path="/console")
    return response


def _pre_csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and secrets.compare_digest(cookie, form.get("csrf", ""))


def _csrf_refused(request: Request, locale: str) -> HTMLResponse:
    return _page("message.html.j2", request, locale=locale, status=403,
                 heading=i18n.words(locale)["sign_in"], message=i18n.words(locale)["csrf"],
                 back="/console/sign-in")


async def _start_session(request: Request, res: Resources, session: Session) -> Response:
    sid = await _store(res).create(session)
    response = RedirectResponse("/console/at-risk", status_code=303)
    response.set_cookie(SESSION_COOKIE, sid, max_age=res.settings.console_session_seconds,
                        httponly=True, samesite="lax", secure=_secure(request, res),
                        path="/console")
    response.delete_cookie(CSRF_COOKIE, path="/console")
    return response


@router.get("/console")
async def console_home(request: Request, res: Res) -> Response:
    if await _session(request, res) is None:
        return _to_sign_in()
    return RedirectResponse("/console/at-risk", status_code=303)


@router.get("/console/sign-in")
async def sign_in_page(request: Request, res: Res) -> Response:
    if await _session(request, res) is not None:
        return RedirectResponse("/console/at-risk", status_code=303)
    locale = _browser_locale(request)
    token = _pre_csrf(request)
    page = _page("sign_in.html.j2", request, locale=locale, csrf=token,
                 dev_mode=not res.settings.auth_enabled, error=None)
    return _with_pre_csrf(page, request, res, token)


def _link_base(request: Request, res: Resources) -> str | None:
    if res.settings.console_url:
        return res.settings.console_url.rstrip("/")
    if _loopback(request.url.hostname):
        return str(request.base_url).rstrip("/")
    return None


async def _find_staff(res: Resources, email: str) -> tuple[str, StaffMember] | None:
    """The staff member whose profile has ``email``, in any tenant the deployment knows."""
    tenants = {"default", *(k.tenant for k in res.settings.keys)}
    tenants |= {str(t) for t in await res.redis.smembers(res.keys.tenants)}  # type: ignore[misc]
    profiles = res.profiles or ProfileStore(res.redis, res.keys)
    for tenant in sorted(tenants):
        for member in await profiles.list_staff(tenant):
            if member.email and member.email.lower() == email.lower():
                return tenant, member
    return None


@router.post("/console/sign-in/email")
async def sign_in_email(request: Request, res: Res) -> Response:
    form = await _form(request)
    locale = i18n.locale_of(form.get("lang") or request.headers.get("accept-language", ""))
    t = i18n.words(locale)
    if not _pre_csrf_ok(request, form):
        return _csrf_refused(request, locale)
    try:
        email = _EMAIL.validate_python(form.get("email", "").strip())
    except ValidationError:
        page = _page("sign_in.html.j2", request, locale=locale, status=422,
                     csrf=request.cookies.get(CSRF_COOKIE, ""),
                     dev_mode=not res.settings.auth_enabled, error=t["email_invalid"])
        return page
    minutes = res.settings.console_link_seconds // 60
    found = await _find_staff(res, email)
    if found is not None:
        tenant, member = found
        base = _link_base(request, res)
        if base is None:
            logger.error("console sign-in link not sent: set CHURNWATCH_CONSOLE_URL to the "
                         "address staff reach the console at")
        else:
            token = await _store(res).issue_link(tenant, member.staff_id)
            link = f"{base}/console/sign-in/link?{urlencode({'token': token})}"
            mt = i18n.words(i18n.locale_of(member.locale))
            name = member.name or member.staff_id
            text = mt["mail_text"].format(name=name, link=link, minutes=minutes)
            html = _env.get_template("mail.html.j2").render(
                t=mt, link=link, paragraphs=text.strip().split("\n\n"))
            try:
                await send_sign_in_link(res.settings, to=email, name=member.name, link=link,
                                        subject=mt["subject"], text=text, html=html)
            except MailUnavailable as exc:
                logger.error("console sign-in mail failed: %s", exc)
                return _page("sign_in.html.j2", request, locale=locale, status=503,
                             csrf=request.cookies.get(CSRF_COOKIE, ""),
                             dev_mode=not res.settings.auth_enabled, error=t["mail_down"])
    # The same answer whether or not the address is known: no way to probe who is staff.
    return _page("message.html.j2", request, locale=locale, heading=t["link_sent"],
                 message=t["link_sent_body"].format(email=email, minutes=minutes), back=None)


@router.get("/console/sign-in/link")
async def sign_in_link_page(request: Request, res: Res, token: str = "") -> Response:
    locale = _browser_locale(request)
    t = i18n.words(locale)
    if not await _store(res).peek_link(token):
        return _page("message.html.j2", request, locale=locale, status=400,
                     heading=t["sign_in"], message=t["link_invalid"], back="/console/sign-in")
    # A GET only shows a button: mail scanners that fetch links do not spend them.
    csrf = _pre_csrf(request)
    page = _page("confirm.html.j2", request, locale=locale, csrf=csrf, token=token)
    return _with_pre_csrf(page, request, res, csrf)


@router.post("/console/sign-in/link")
async def sign_in_link(request: Request, res: Res) -> Response:
    form = await _form(request)
    locale = _browser_locale(request)
    t = i18n.words(locale)
    if not _pre_csrf_ok(request, form):
        return _csrf_refused(request, locale)
    redeemed = await _store(res).redeem_link(form.get("token", ""))
    member = None
    if redeemed is not None:
        tenant, staff_id = redeemed
        profiles = res.profiles or ProfileStore(res.redis, res.keys)
        member = await profiles.get_staff(staff_id, tenant)
    if redeemed is None or member is None:
        return _page("message.html.j2", request, locale=locale, status=400,
                     heading=t["sign_in"], message=t["link_invalid"], back="/console/sign-in")
    stores = (member.store_id,) if member.store_id else None
    session = Session(kind="staff", tenant=redeemed[0], stores=stores,
                      name=member.name or member.staff_id, locale=i18n.locale_of(member.locale),
                      csrf=secrets.token_urlsafe(24), staff_id=member.staff_id)
    logger.info("console sign-in by staff link")
    return await _start_session(request, res, session)


@router.post("/console/sign-in/key")
async def sign_in_key(request: Request, res: Res) -> Response:
    form = await _form(request)
    locale = _browser_locale(request)
    if not _pre_csrf_ok(request, form):
        return _csrf_refused(request, locale)
    if not res.settings.auth_enabled:
        key_tenant, key_stores, name = "default", None, "admin (development mode)"
    else:
        key = res.settings.find_key(form.get("api_key", "").strip())
        if key is None or not key.allows("admin"):
            return _page("sign_in.html.j2", request, locale=locale, status=401,
                         csrf=request.cookies.get(CSRF_COOKIE, ""), dev_mode=False,
                         error=i18n.words(locale)["key_invalid"])
        key_tenant, name = key.tenant, key.name
        key_stores = tuple(sorted(key.stores)) if key.stores is not None else None
    session = Session(kind="admin", tenant=key_tenant, stores=key_stores, name=name,
                      locale=locale, csrf=secrets.token_urlsafe(24))
    logger.info("console sign-in with an admin key")
    return await _start_session(request, res, session)


@router.post("/console/sign-out")
async def sign_out(request: Request, res: Res) -> Response:
    form = await _form(request)
    session = await _session(request, res)
    if session is not None and not secrets.compare_digest(session.csrf, form.get("csrf", "")):
        return _csrf_refused(request, session.locale)
    await _store(res).delete(request.cookies.get(SESSION_COOKIE))
    response = _to_sign_in()
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.post("/console/language")
async def switch_language(request: Request, res: Res) -> Response:
    form = await _form(request)
    session = await _session(request, res)
    if session is None:
        return _to_sign_in()
    if not secrets.compare_digest(session.csrf, form.get("csrf", "")):
        return _csrf_refused(request, session.locale)
    await _store(res).update_locale(request.cookies.get(SESSION_COOKIE, ""), session,
                                    i18n.locale_of(form.get("locale")))
    back = form.get("back", "")
    return RedirectResponse(back if back.startswith("/console/") else "/console/at-risk",
                            status_code=303)


@router.get("/console/at-risk")
async def at_risk_page(request: Request, res: Res, tier: str = "high", store: str | None = None,
                       cursor: str | None = None) -> Response:
    session = await _session(request, res)
    if session is None:
        return _to_sign_in()
    tier = tier if tier in TIERS else "high"
    stores = list(session.stores) if session.stores is not None else []
    if store is None and len(stores) > 1:
        store = stores[0]
    try:
        scoped = store_for_list(session.as_key(), store or None)
        page = await AtRiskQuery(res.redis, res.keys).page(
            tenant=session.tenant, tier=tier, store=scoped, owner=None, limit=PAGE_SIZE,
            cursor=cursor[:1024] if cursor else None, holdout_share=res.settings.holdout_share)
    except QueryError as exc:
        return _page("message.html.j2", request, locale=session.locale, status=exc.status,
                      session=session, csrf=session.csrf, heading=i18n.words(session.locale)["at_risk"],
                      message=str(exc), back="/console/at-risk")
    zh = session.locale == "zh-CN"
    for item in page["items"]:
        reason = item.get("top_reason") or {}
        action = item.get("suggested_action") or {}
        item["why"] = (reason.get("text_zh") if zh else reason.get("text")) or ""
        item["todo"] = (action.get("text_zh") if zh else action.get("text")) or ""
    here = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
    return _page("at_risk.html.j2", request, locale=session.locale, session=session,
                 csrf=session.csrf, page=page, tier=tier, tiers=("high", "medium"),
                 store=scoped, stores=stores, here=here)


@router.get("/console/static/console.css")
async def stylesheet() -> Response:
    css = (HERE / "static" / "console.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
