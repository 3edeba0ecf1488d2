"""The win-back loop: staff record what they did about an at-risk customer; alerts are acked."""

from __future__ import annotations

import base64
import hashlib
import html
import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from services.alerting.acks import (
    LINK_PATH,
    AckLink,
    AckLinks,
    InvalidAck,
    LinkRefused,
    get_acknowledgement,
    get_alert,
)
from services.alerting.alerts import find_alert
from services.api.schemas import Ack, Action, NewAction
from services.common.exceptions import BrokerUnavailable
from services.common.profiles import locale_of
from services.common.timefmt import for_people, iso_ms
from services.records import alertacks, timeline
from services.records.complaints import record_action
from services.web.deps import IngestKey, Res, Resources
from services.web.openapi import AUTH, NOT_FOUND, TOO_LARGE, error, responses
from services.web.params import CustomerId
from services.web.scope import check_store_read

router = APIRouter(tags=["win-back"])
AlertId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                              description="The risk-change CloudEvent id.",
                              examples=["3f1c0a9e5b7d4e2f8a6b1c0d9e8f7a6b"])]


@router.post("/v1/customers/{customer_id:anypath}/actions", response_model=Action,
             status_code=status.HTTP_201_CREATED,
             summary="Record a staff action on an at-risk customer",
             description="called, message_sent, coupon_sent, exclusive_offer, complaint_resolved or other; "
             "by whom, optionally about which alert (risk-change id). complaint_resolved also "
             "closes the customer's open complaints (or the one complaint_id names): the API "
             "publishes their resolution events to the events topic first, as a POS would, and "
             "answers 503 with nothing recorded if the broker does not take them. Stored with the customer "
             "(erased with them) and shown in their timeline. The action counts as a win-back "
             "when the customer has an event within CHURNWATCH_WINBACK_ATTRIBUTION_DAYS after "
             "it (see GET /v1/analytics/winback). The answer says whether the customer is in "
             "the holdout group (such actions are reported apart).",
             responses=responses(AUTH, NOT_FOUND, TOO_LARGE, {503: error(
                 "complaint_resolved: the broker did not take the resolution events; nothing "
                 "was recorded, retry", "the event broker is unavailable: the complaint could "
                 "not be marked resolved and nothing was recorded; retry later")}))
async def post_action(customer_id: CustomerId, body: NewAction, res: Res, key: IngestKey) -> Any:
    st = res.keys.state(customer_id, key.tenant)
    found: list[str | None] = await res.redis.hmget(st, ["tier", "store"])  # type: ignore[misc,assignment]
    tier, store = found
    tier = check_store_read(key, tier, store,
                            f"no scored customer {customer_id!r}; actions need a known customer")
    try:
        return await record_action(res, tenant=key.tenant, customer_id=customer_id,
                                   body=body.model_dump(exclude={"complaint_id"}), tier=tier,
                                   store_id=store, store_bound=key.stores is not None,
                                   complaint_id=body.complaint_id)
    except BrokerUnavailable:
        raise HTTPException(503, "the event broker is unavailable: the complaint could not "
                            "be marked resolved and nothing was recorded; retry later",
                            headers={"Retry-After": "5"}) from None
    except ValueError as exc:  # NoSuchComplaint, or an event the edge refuses
        raise HTTPException(422, str(exc)) from None


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str | None = Field(None, min_length=1, max_length=128,
                           description="Staff id acknowledging; defaults to the key's name.")
    customer_id: str | None = Field(None, min_length=1, max_length=128,
                                    description="The alert's customer: the acknowledgement is "
                                    "then shown in their timeline.")


@router.post("/v1/alerts/{alert_id}/ack", response_model=Ack,
             summary="Acknowledge an alert",
             description="Marks the risk change (its CloudEvent id, shown in every alert) as "
             "seen, so the notifier's escalation to the store manager stops. Only alerts the "
             "notifier sent to the key's tenant (and, for store-bound keys, their stores) exist "
             "for the key: any other id is a 404. Idempotent: a second acknowledgement answers "
             "200 with `new: false` and the first acknowledger and time.",
             responses=responses(AUTH, TOO_LARGE, {404: error(
                 "No alert with this id was sent in this tenant (or the key's stores)",
                 "no alert '3f1c0a9e' was sent in this tenant; use the alert id of a message")}))
async def ack_alert(alert_id: AlertId, res: Res, key: IngestKey,
                    body: AckBody | None = None) -> Any:
    by = (body.by if body and body.by else None) or key.name
    try:
        alert = await find_alert(res.redis, res.keys, alert_id, key.tenant)
    except InvalidAck as exc:
        raise HTTPException(422, str(exc)) from None
    alert = check_store_read(key, alert, alert.get("store_id") if alert else None,
                             f"no alert {alert_id!r} was sent in this tenant"
                             + (" and the API key's stores" if key.stores is not None else "")
                             + "; use the alert id of a message")
    customer_id = (body.customer_id if body is not None and body.customer_id else None)
    if customer_id is not None and customer_id != alert.get("customer_id"):
        raise HTTPException(422, f"customer_id {customer_id!r} is not the customer of alert "
                            f"{alert_id!r}; leave it out or send the alert's customer")
    new, first = await alertacks.acknowledge(
        res.redis, res.keys, tenant=key.tenant, alert_id=alert_id,
        customer_id=str(alert["customer_id"]), by=by, retention=res.settings.retention)
    return _ack_answer(alert_id, new, first)


def _ack_answer(alert_id: str, new: bool, first: dict[str, Any]) -> dict[str, Any]:
    return {"alert_id": alert_id, "acknowledged": True, "new": new, "by": str(first["by"]),
            "at": str(iso_ms(int(float(first["at"]) * 1000)))}


# One-click acknowledge links (public: the signed token is the credential) -------------------

Token = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                            description="The token of a one-click link from a staff message.")]
# The page stands alone (no stylesheet, script, font or image to fetch: it opens from a mail
# on a phone, maybe before the person ever signed in to the console); its one inline style
# is allowed by its hash in the page's Content-Security-Policy, and nothing else is.
_STYLE = (
    "body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI','PingFang SC',"
    "'Noto Sans CJK SC',sans-serif;color:#1d2430;background:#f5f6f8}"
    "header{padding:.6rem 1rem;background:#1d2430;color:#fff;font-weight:700}"
    "main{max-width:36rem;margin:1rem auto;padding:1.25rem;background:#fff;border-radius:10px;"
    "box-shadow:0 1px 2px rgba(0,0,0,.08);overflow-wrap:anywhere}"
    "h1{font-size:1.4rem;margin:0 0 .75rem}"
    "button{font:inherit;font-weight:600;color:#fff;background:#1f5fbf;border:0;"
    "border-radius:8px;padding:.65rem 1.5rem;min-height:44px;cursor:pointer}"
    "a{color:#1f5fbf}"
    "@media (max-width:40rem){main{margin:0;border-radius:0}button{width:100%}}")
_PAGE = """<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>churnwatch: {title}</title>
<style>{style}</style></head>
<body><header>churnwatch</header><main>
<h1>{title}</h1><p>{text}</p>{form}{link}</main></body></html>"""
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    + "'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff"}
_HTML = {"text/html": {"schema": {"type": "string"}}}
# Page texts per locale of the recipient the link was made for ({x}: HTML-escaped values).
_TEXTS = {
    "en": {"ask": "Acknowledge this alert?",
           "ask_text": "Acknowledge the alert about <strong>{customer}</strong> as "
                       "<strong>{by}</strong>: its escalation to the store manager stops.",
           "button": "Acknowledge", "used": "Link already used",
           "used_text": "This link was already used.", "done": "Acknowledged",
           "already": "Already acknowledged",
           "acked": "The alert about <strong>{customer}</strong> was acknowledged by "
                    "<strong>{by}</strong> at {at}.",
           "console": "Open in the console",
           "unknown": "This link does not work",
           "unknown_text": "This acknowledge link is not one we know: perhaps only part of "
                           "it was copied, or it is too old.",
           "expired": "This link has expired",
           "expired_text": "Acknowledge links only work for a while, and this one's time is "
                           "up.",
           "still": "You can still acknowledge the alert in the staff console, on the "
                    "customer's page.",
           "still_about": "You can still acknowledge the alert about "
                          "<strong>{customer}</strong> on their page in the staff console.",
           "console_home": "Open the staff console",
           "busy": "Briefly unavailable",
           "busy_text": "Nothing was changed. Open the link again in a moment."},
    "zh-CN": {"ask": "确认此提醒？",
              "ask_text": "以 <strong>{by}</strong> 的身份确认关于 <strong>{customer}</strong> "
                          "的提醒：将不再升级给门店经理。",
              "button": "确认", "used": "链接已使用", "used_text": "此链接已被使用。",
              "done": "已确认", "already": "此前已确认",
              "acked": "关于 <strong>{customer}</strong> 的提醒已由 <strong>{by}</strong> 于 "
                       "{at} 确认。",
              "console": "在控制台中打开",
              "unknown": "此链接无法使用",
              "unknown_text": "无法识别此确认链接：可能只复制了一部分，或者链接太旧。",
              "expired": "链接已过期",
              "expired_text": "确认链接只在一段时间内有效，此链接已过期。",
              "still": "您仍可在员工控制台中该客户的页面上确认提醒。",
              "still_about": "您仍可在员工控制台中 <strong>{customer}</strong> 的页面上确认此提醒。",
              "console_home": "打开员工控制台",
              "busy": "暂时无法使用",
              "busy_text": "没有任何更改。请稍后再打开此链接。"},
}


def _page(status_code: int, title: str, text: str, form: str = "",
          lang: str = "en", link: str = "") -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), text=text, form=form, lang=lang,
                                     link=link, style=_STYLE),
                        status_code=status_code, headers=_HEADERS)


def _console_link(t: dict[str, str], customer_id: str | None) -> str:
    """A link to the customer's page in the staff console (which asks to sign in first when
    needed), relative to this page: ``/a/<token>`` and ``/console/...`` share their base, also
    behind a path prefix."""
    if customer_id is None:
        return ""
    href = "../console/customers/" + quote(customer_id, safe="")
    return (f'<p><a href="{html.escape(href)}" id="console">{html.escape(t["console"])}'
            "</a></p>")


def _console_home(t: dict[str, str], request: Request) -> str:
    """A link to the staff console, relative to the link's address (as :func:`_console_link`),
    however many segments a garbled link has."""
    depth = request.url.path.partition(LINK_PATH)[2].count("/") + 1
    return (f'<p><a href="{"../" * depth}console" id="console">'
            f'{html.escape(t["console_home"])}</a></p>')


def unknown_link_page(request: Request, status_code: int) -> HTMLResponse:
    """A link no one made (made up, forged, cut short in copying, or so old its record is
    gone): said in plain words in the browser's language, with a way on to the console."""
    locale = locale_of(request.headers.get("accept-language"))
    t = _TEXTS[locale]
    return _page(status_code, t["unknown"], html.escape(t["unknown_text"] + " " + t["still"]),
                 lang=locale, link=_console_home(t, request))


def link_error_page(request: Request, status_code: int) -> HTMLResponse | None:
    """The page for an acknowledge link's address no route takes (a malformed token, extra
    path segments: a link garbled in copying) or that cannot be served now (503: Redis
    away); None for any other address."""
    if not request.url.path.startswith(LINK_PATH):
        return None
    if status_code in (400, 404, 422):
        return unknown_link_page(request, status_code)
    if status_code == 503:  # the state store away: said in words, not the API's JSON
        t = _TEXTS[locale_of(request.headers.get("accept-language"))]
        return _page(503, t["busy"], html.escape(t["busy_text"]),
                     lang=locale_of(request.headers.get("accept-language")))
    return None


async def _refused(res: Resources, request: Request, exc: LinkRefused) -> HTMLResponse:
    """A refused link's page, for the person who opened it (a store person, from a mail or
    an SMS), never the API's wording: in the recipient's language when the link's record is
    read (the locale the notifier wrote: their staff profile's or routing entry's), else the
    browser's, with a way on to the console (the customer's page when the alert is known)."""
    link = exc.link
    if link is None:
        return unknown_link_page(request, exc.status)
    if exc.kind == "used":
        return await _used_page(res, link)
    locale = locale_of(link.locale)
    t = _TEXTS[locale]
    cid, who = await _customer(res, link)
    still = (t["still_about"].format(customer=html.escape(who)) if cid is not None
             else html.escape(t["still"]))
    title, text = (t["expired"], t["expired_text"]) if exc.kind == "expired" \
        else (t["unknown"], t["unknown_text"])
    return _page(exc.status, title, html.escape(text) + " " + still, lang=locale,
                 link=_console_link(t, cid) if cid is not None else _console_home(t, request))


async def _used_page(res: Resources, link: AckLink) -> HTMLResponse:
    """410: the link was used already; who acknowledged the alert, and when."""
    t = _TEXTS[locale_of(link.locale)]
    cid, who = await _customer(res, link)
    ack = await get_acknowledgement(res.redis, res.keys, link.alert_id, link.tenant)
    return _page(410, t["used"], t["used_text"] + (
        " " + _ack_text(t, who, ack) if ack else ""), lang=locale_of(link.locale),
        link=_console_link(t, cid))


def _links(res: Resources) -> AckLinks:
    s = res.settings
    return AckLinks(res.redis, res.keys, secret=s.ack_link_key, public_url=s.api_public_url,
                    ttl_s=s.ack_link_ttl_seconds, ack_ttl_s=s.retention.alert_record_ttl_s)


async def _customer(res: Resources, link: AckLink) -> tuple[str | None, str]:
    """(customer id, how to call them: the profile name, else the id) of the link's alert."""
    alert = await get_alert(res.redis, res.keys, link.alert_id, link.tenant)
    cid = str(alert["customer_id"]) if alert else None
    if cid is None:
        return None, link.alert_id
    try:
        profile = await res.profiles.get_profile(cid, link.tenant) if res.profiles else None
    except ValueError:
        profile = None
    return cid, (profile.name if profile and profile.name else cid)


def _ack_text(t: dict[str, str], who: str, ack: dict[str, Any]) -> str:
    return t["acked"].format(customer=html.escape(who), by=html.escape(str(ack["by"])),
                             at=html.escape(for_people(float(ack["at"]))))


_LINK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "An HTML page", "content": _HTML},
    404: {"description": "Unknown or forged link (HTML page, in the browser's language)",
          "content": _HTML},
    410: {"description": "The link expired or was already used (HTML page, in the "
          "recipient's language)", "content": _HTML},
    422: {"description": "The token is malformed (letters, digits, - and _ only): the page "
          "of an unknown link", "content": _HTML},
}


@router.get("/a/{token}", response_class=HTMLResponse, tags=["alerts"],
            summary="One-click acknowledge link: confirmation page",
            description="The link in every staff alert. Needs no API key: the token is an "
            "HMAC-signed, expiring, single-use credential for one alert and one recipient. GET "
            "changes nothing (mail scanners pre-fetch links): it shows the alert and a button "
            "that POSTs to the same URL.", responses=_LINK_RESPONSES)
async def ack_link_page(token: Token, request: Request, res: Res) -> HTMLResponse:
    links = _links(res)
    try:
        link = await links.resolve(token)
    except LinkRefused as exc:
        return await _refused(res, request, exc)
    if await links.is_used(token):
        return await _used_page(res, link)
    t = _TEXTS.get(link.locale, _TEXTS["en"])
    cid, who = await _customer(res, link)
    ack = await get_acknowledgement(res.redis, res.keys, link.alert_id, link.tenant)
    note = (" " + _ack_text(t, who, ack)) if ack else ""
    # no action attribute: the form posts to this very URL, also behind a path prefix
    form = f'<form method="post"><button type="submit">{html.escape(t["button"])}</button></form>'
    return _page(200, t["ask"], t["ask_text"].format(
        customer=html.escape(who), by=html.escape(link.by)) + note, form, lang=link.locale,
        link=_console_link(t, cid))


@router.post("/a/{token}", response_class=HTMLResponse, tags=["alerts"],
             summary="One-click acknowledge link: acknowledge",
             description="Acknowledges the link's alert as the link's recipient (the first "
             "acknowledgement is kept) and uses the link up: a second POST answers 410. Needs "
             "no API key and no body.", responses=_LINK_RESPONSES)
async def ack_link_use(token: Token, request: Request, res: Res) -> HTMLResponse:
    try:
        link, new, ack = await _links(res).use(token)
    except LinkRefused as exc:
        return await _refused(res, request, exc)
    t = _TEXTS.get(link.locale, _TEXTS["en"])
    cid, who = await _customer(res, link)
    if new and cid is not None:
        await timeline.append(res.redis, res.keys, cid, link.tenant, {
            "kind": "acknowledged", "at": iso_ms(int(time.time() * 1000)),
            "alert_id": link.alert_id, "by": link.by, "via": "link"},
            retention=res.settings.retention)
    return _page(200, t["done"] if new else t["already"], _ack_text(t, who, ack),
                 lang=link.locale, link=_console_link(t, cid))
