"""What every console page shares: templates, the session of the request, forms and their
CSRF tokens, the security headers.

Pages are server-rendered (Jinja2, autoescaped); forms are urlencoded and carry a CSRF token:
the session's own once signed in, a double-submit cookie before. Sessions live in Redis
(:mod:`services.console.sessions`); a staff member sees their tenant and their store, an admin
what their key sees.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from redis.exceptions import RedisError

from services.console import i18n
from services.console.sessions import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Draft,
    Session,
    SessionStore,
    as_now,
    find_tagged_key,
)
from services.records.winback import ACTION_TYPES
from services.web.deps import Resources, get_profiles

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)
env.globals["customers"] = i18n.customers  # "1 customer" / "3 customers" in the reader's words
# a 1000-character note in Chinese is ~9 kB urlencoded (3 bytes a character, 3 characters a
# byte), 12 kB in 4-byte characters: with the form's other fields, 16 kB
MAX_FORM_BYTES = 16384
PAGE_SIZE = 50
NEXT_MAX = 2048  # the longest console address a sign-in returns to
HOME = "/console/at-risk"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def session_store(res: Resources) -> SessionStore:
    s = res.settings
    return SessionStore(res.redis, res.keys, session_seconds=s.console_session_seconds,
                        link_seconds=s.console_link_seconds)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cookie_secure(request: Request, res: Resources) -> bool:
    if res.settings.console_cookie_secure == "always":
        return True
    return request.url.scheme == "https" or not is_loopback(request.url.hostname)


def page(name: str, request: Request, *, locale: str, status: int = 200,
          session: Session | None = None, csrf: str = "", **context: Any) -> HTMLResponse:
    t = i18n.words(locale)
    badge = getattr(request.state, "console_badge", None)
    html = env.get_template(name).render(t=t, locale=locale, session=session, csrf=csrf,
                                          badge=badge, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


class Form(dict[str, str]):
    """A posted form: each field's first value; :meth:`every` gives a repeated field's all
    (the ticked boxes of a list)."""

    def __init__(self, parsed: dict[str, list[str]] | None = None):
        super().__init__({k: v[0] for k, v in (parsed or {}).items()})
        self._all = parsed or {}

    def every(self, name: str) -> list[str]:
        return list(self._all.get(name, []))


async def read_form(request: Request, *, max_fields: int = 20) -> Form:
    """The form of a POST (empty when it is not a form, too big, or has more than
    ``max_fields`` fields)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if media != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return Form()
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        return Form()
    return Form(parsed)


_ERRORS = {404: ("page_not_found_title", "page_not_found"),
           400: ("page_invalid_title", "page_invalid"),
           422: ("page_invalid_title", "page_invalid")}


async def error_page(request: Request, status: int, request_id: str
                     ) -> HTMLResponse | None:
    """A console URL's error as a page (not found, an address no page takes, not allowed, an
    internal error with its request id), with a way back; None for any other path (the API
    answers JSON). For a signed-in person it is a console page like any other: in the
    session's language, with the navigation, back to the at-risk list; signed out, in the
    browser's language, back to signing in. 503 (the state store, Redis, is unreachable) says
    the console is briefly unavailable, to try again: in the browser's language (the session
    is in the store that is away; it is not tried again), with a link to try the page again."""
    if not request.url.path.startswith("/console"):
        return None
    if status == 503:
        locale = browser_locale(request)
        t = i18n.words(locale)
        return page("message.html.j2", request, locale=locale, status=status,
                    heading=t["page_unavailable_title"], message=t["page_unavailable"],
                    back=here(request) if request.method in ("GET", "HEAD") else None,
                    back_text=t["try_again"])
    session = await _session_if_any(request)
    locale = session.locale if session is not None else browser_locale(request)
    t = i18n.words(locale)
    heading, message = _ERRORS.get(status, ("page_refused_title", "page_refused"))
    if status >= 500:
        heading, message = "page_error_title", "page_error"
    back = HOME if session is not None else "/console"
    return page("message.html.j2", request, locale=locale, status=status, session=session,
                csrf=session.csrf if session is not None else "", heading=t[heading],
                message=t[message].format(request_id=request_id), back=back,
                here=safe_next(here(request)) or HOME)


async def _session_if_any(request: Request) -> Session | None:
    """The request's session for an error page; None when there is none, or when it cannot
    be read (Redis down, the app still starting): the error is shown all the same."""
    res = getattr(request.app.state, "resources", None)
    if res is None or not request.cookies.get(SESSION_COOKIE):
        return None
    try:
        return await current_session(request, res)
    except (RedisError, OSError, ValueError, TypeError):
        return None


def browser_locale(request: Request) -> str:
    return i18n.locale_of(request.query_params.get("lang")
                          or request.headers.get("accept-language", ""))


async def current_session(request: Request, res: Resources) -> Session | None:
    """The request's session; for a staff member also counts their unacknowledged in-app
    alerts, which every page shows as a badge."""
    store = session_store(res)
    sid = request.cookies.get(SESSION_COOKIE)
    session = await store.get(sid)
    if session is not None:
        session = await _as_now(res, session)
        if session is None:  # removed, or their key was: signed out
            await store.delete(sid)
            return None
    if session is not None and session.staff_id:
        from services.console.alerts import inbox

        entries = await inbox(res, session, titled=False)
        request.state.console_badge = sum(1 for e in entries
                                          if not e["acknowledged"] and not e["settled"])
    return session


async def _as_now(res: Resources, session: Session) -> Session | None:
    """The session with its person's reach now (:func:`~services.console.sessions.as_now`):
    a staff member's record is read again on every request (one ``HGET``)."""
    member = None
    if session.kind == "staff" and session.staff_id:
        profiles = get_profiles(res)
        member = await profiles.get_staff(session.staff_id, session.tenant)
    s = res.settings
    key = None
    if session.kind != "staff" and s.auth_enabled:
        key = await asyncio.to_thread(find_tagged_key, session.key_tag, s.keys)
    now = as_now(session, member=member, key=key, auth_enabled=s.auth_enabled)
    if now is None:
        logger.info("console session ended: its %s is no longer allowed",
                    "staff member" if session.kind == "staff" else "API key")
    return now


def safe_next(value: str | None) -> str | None:
    """``value`` when it is a console address to return to after signing in, else None.

    Only a relative path under ``/console/`` (with its query): no scheme, no host, no ``//``,
    no backslash, no ``.``/``..`` segment, no control character or space, ASCII only (the
    console's own addresses are percent-encoded) and not the sign-in pages themselves. Anything
    else could send the person, just signed in, to another site (an open redirect)."""
    if not value or len(value) > NEXT_MAX or not value.isascii():
        return None
    if not value.startswith("/console/") or "\\" in value or "//" in value:
        return None
    if any(c <= " " or c == "\x7f" for c in value):
        return None
    parts = urlsplit(value)
    path = unquote(parts.path)  # what a browser may decode: %2f%2f, %5c, %2e%2e
    if parts.scheme or parts.netloc or "\\" in path or "//" in path:
        return None
    if any(c < " " or c == "\x7f" for c in path):
        return None
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    if path == "/console/sign-in" or path.startswith("/console/sign-in/"):
        return None
    return value


def here(request: Request, *, query: bool = True) -> str:
    """The request's console address (path and, unless ``query`` is false, query), as a URL:
    where to come back to after signing in or switching language."""
    path = quote(request.url.path, safe="/:@!$&'()*+,;=-._~")
    return path + (f"?{request.url.query}" if query and request.url.query else "")


def to_sign_in(next_url: str | None = None) -> RedirectResponse:
    """To the sign-in page; with ``next_url`` (when :func:`safe_next` accepts it) the page
    returns there once the person has signed in."""
    back = safe_next(next_url)
    query = f"?{urlencode({'next': back})}" if back else ""
    return RedirectResponse(f"/console/sign-in{query}", status_code=303)


def pre_csrf(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def with_pre_csrf(response: Response, request: Request, res: Resources, token: str) -> Response:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=cookie_secure(request, res), path="/console")
    return response


def pre_csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and secrets.compare_digest(cookie, form.get("csrf", ""))


def csrf_refused(request: Request, locale: str) -> HTMLResponse:
    return page("message.html.j2", request, locale=locale, status=403,
                 heading=i18n.words(locale)["sign_in"], message=i18n.words(locale)["csrf"],
                 back="/console/sign-in")


def draft_of(form: dict[str, str]) -> Draft | None:
    """The unsaved win-back action a sign-in form carries (fields ``draft_customer``,
    ``draft_action``, ``draft_note``), checked and bounded; None without one."""
    return Draft.of(form.get("draft_customer", ""), form.get("draft_action", ""),
                    form.get("draft_note", ""), ACTION_TYPES)


def sign_in_page(request: Request, res: Resources, *, locale: str, csrf: str,
                 status: int = 200, error: str | None = None, next_url: str | None = None,
                 draft: Draft | None = None) -> HTMLResponse:
    """The sign-in forms, each carrying ``next_url`` and ``draft`` on to the session they
    start; with a draft, a line says the session had ended and nothing was saved yet."""
    t = i18n.words(locale)
    expired = None
    if draft is not None:
        expired = t["session_ended_draft"].format(action=t[f"action_{draft.action}"])
    return page("sign_in.html.j2", request, locale=locale, status=status, csrf=csrf,
                dev_mode=not res.settings.auth_enabled, error=error, next=safe_next(next_url),
                draft=draft, expired=expired)


async def start_session(request: Request, res: Resources, session: Session,
                        next_url: str | None = None, draft: Draft | None = None) -> Response:
    """Signs ``session`` in and goes to ``next_url`` (a console address :func:`safe_next`
    accepts), else to the at-risk list; ``draft`` waits for the person on its customer's
    page."""
    store = session_store(res)
    sid = await store.create(session)
    if draft is not None:
        await store.put_draft(sid, session.tenant, draft)
    response = RedirectResponse(safe_next(next_url) or HOME, status_code=303)
    response.set_cookie(SESSION_COOKIE, sid, max_age=res.settings.console_session_seconds,
                        httponly=True, samesite="lax", secure=cookie_secure(request, res),
                        path="/console")
    response.delete_cookie(CSRF_COOKIE, path="/console")
    return response


async def signed_in_form(request: Request, res: Resources, *, max_fields: int = 20
                         ) -> tuple[Session, Form] | Response:
    """The session and form of a signed-in person's POST, or the answer to give instead: to
    the sign-in page without a session, 403 when the form lacks the session's CSRF token."""
    form = await read_form(request, max_fields=max_fields)
    session = await current_session(request, res)
    if session is None:
        return to_sign_in()
    if not secrets.compare_digest(session.csrf, form.get("csrf", "")):
        return csrf_refused(request, session.locale)
    return session, form
