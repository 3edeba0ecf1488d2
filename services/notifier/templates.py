"""Texts of the email and SMS notifications (Jinja2): who, what changed, why, what to do.

Templates are looked up, for tenant ``T`` and locale ``L`` (``en`` or ``zh-CN``), in

1. ``<CHURNWATCH_NOTIFIER_TEMPLATES_DIR>/T/L/<name>`` (one tenant's overrides),
2. ``<CHURNWATCH_NOTIFIER_TEMPLATES_DIR>/L/<name>`` (overrides for every tenant),
3. the packaged ``services/notifier/message_templates/L/<name>``.

Names: ``alert.{subject,txt,html,sms}.j2`` (``kind`` is ``alert``, ``won_back`` or
``escalation``) and ``digest.{subject,txt,html,sms}.j2``. ``*.html.j2`` is autoescaped.
Variables are listed in docs/notifier.md; the reason and action texts come from the risk
change in the recipient's locale (``text_zh`` for ``zh-CN``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from services.common.actions import NO_STORE, UNRECORDED_CLOSURES, reasons_why
from services.common.exceptions import ConfigError
from services.common.riskchange import (
    TIER_RANK,
    Reason,
    RiskChange,
    SuggestedAction,
    holds_tier,
    score_figures,
)
from services.notifier.channels import registry
from services.notifier.routing import Recipient

SMS_MAX_CHARS = 480
SMS_GSM_SEGMENT = 160  # one GSM-7 SMS
SMS_UCS2_SEGMENT = 70  # one SMS with any character outside GSM-7 (e.g. Chinese)
SMS_GSM_PART = 153  # GSM-7 septets per segment of a longer SMS (the rest carries the joining header)
SMS_UCS2_PART = 67
SMS_DETAIL_LEVELS = (3, 2, 1, 0)  # alert.sms.j2 is rendered with `detail` from 3 down
# Which alert SMS goes: (segments, lowest detail) in turn, the most detailed text that fits.
# One segment that still says why and what to do (detail 2); else two segments that keep at
# least the action (a link and a scorer's action did not fit 160 characters together, and
# "Priya Okafor high risk, was medium. Ack: <link>" told staff nothing to act on); else one
# segment with what fits; else the shortest, capped at SMS_MAX_CHARS.
SMS_PLANS = ((1, 2), (2, 1), (1, 0))
MAX_REASONS = 3
# An e-mail names at most this many customers — a go-live summary those still to keep and the
# lapsed (most valuable first), a digest its items — and counts and links the rest in the
# console: a year imported for a chain made one summary of hundreds of blocks (~850 bytes of
# HTML each), which mail clients clip (Gmail past 102 KB) and nobody works through; a large
# online shop's morning digest can list as many.
SUMMARY_KEEP_LISTED = 50
SUMMARY_LAPSED_LISTED = 20
DIGEST_LISTED = 50


def at_risk_url(base: str, tier: str, *, stage: str | None = None) -> str:
    """The staff console's at-risk list of ``tier`` (and lifecycle ``stage``) at ``base``:
    where a summary or digest sends staff for the customers it does not name."""
    return f"{base}/console/at-risk?tier={tier}" + (f"&stage={stage}" if stage else "")

# The GSM 03.38 basic character set (and its extension table, which costs two septets).
_GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLM"
                 "NOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM_EXT = set("^{}\\[~]|€")
PACKAGED_DIR = Path(__file__).with_name("message_templates")
_TIERS = {"en": {"low": "low", "medium": "medium", "high": "high"},
          "zh-CN": {"low": "低", "medium": "中", "high": "高"}}


# What a digest or summary says once, above its list, when every customer it lists has the
# clause (their reasons then leave it out): English, Chinese
_SAID_ONCE = {
    UNRECORDED_CLOSURES: (
        "Their stores have no closed days on record, so the days counted below may include a "
        "break (a manager enters closed days on the console's Team page).",
        "他们的门店尚未记录停业日期，以下计算的天数可能包含假期（店长可在控制台的团队页面填写"
        "停业日期）。"),
    NO_STORE: (
        "No store is on record for these customers, so no closed days count for them and the "
        "days counted below may include a break (set the store on their profiles, or have the "
        "POS send store_id).",
        "这些顾客尚未记录所属门店，停业日期无法计入，以下计算的天数可能包含假期（请在其档案中"
        "设置门店，或让收银系统发送 store_id）。"),
}


def said_once(items: Sequence[dict[str, Any]], locale: str
              ) -> tuple[list[dict[str, Any]], str]:
    """A digest's or summary's items (``reasons`` in the reader's words, as
    :meth:`Templates.digest_item` gives them) each with ``reasons_told``, and the note said
    once above the list: a school without closed days on record had every student's line end
    with "their store has no closed days on record". When every item of two or more has a
    reason ending with the same such clause, ``reasons_told`` leaves it out and the note
    says it; otherwise ``reasons_told`` is ``reasons`` and the note is empty. ``reasons``
    stays as it was (a tenant's own templates may list it; the packaged ones fall back to it
    for an item without ``reasons_told``)."""
    zh = locale == "zh-CN"
    for clause, note in _SAID_ONCE.items():
        tail = ("；" if zh else "; ") + clause[1 if zh else 0]
        if len(items) > 1 and all(any(r.endswith(tail) for r in it["reasons"]) for it in items):
            return [{**it, "reasons_told": [r.removesuffix(tail) for r in it["reasons"]]}
                    for it in items], note[1 if zh else 0]
    return [{**it, "reasons_told": it["reasons"]} for it in items], ""


def sms_units(text: str) -> tuple[int, int]:
    """(length in the SMS encoding, characters that fit one segment): GSM-7 counts extension
    characters twice and allows 160; anything else is UCS-2 with 70 per segment."""
    if all(c in _GSM_BASIC or c in _GSM_EXT for c in text):
        return sum(2 if c in _GSM_EXT else 1 for c in text), SMS_GSM_SEGMENT
    return len(text), SMS_UCS2_SEGMENT


def sms_segments(text: str) -> int:
    """How many segments ``text`` is sent as (a longer SMS is split into parts of 153 GSM-7
    septets or 67 UCS-2 characters)."""
    length, single = sms_units(text)
    if length <= single:
        return 1
    part = SMS_GSM_PART if single == SMS_GSM_SEGMENT else SMS_UCS2_PART
    return -(-length // part)


def _masked_contact(contact: Recipient | None, consent: Any) -> dict[str, str]:
    """The customer's phone/e-mail for staff: in full where the customer consented to that
    channel (and did not opt out of SMS), masked otherwise."""
    from services.common.logs import mask_email, mask_phone

    if contact is None:
        return {}
    out: dict[str, str] = {}
    allows = consent.allows if consent is not None else (lambda _channel: False)
    if contact.phone:
        out["phone"] = contact.phone if allows("sms") else mask_phone(contact.phone)
    if contact.email:
        out["email"] = contact.email if allows("email") else mask_email(contact.email)
    return out
_SAFE_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _autoescape(name: str | None) -> bool:
    return bool(name and name.endswith(".html.j2"))


def _duration(seconds: float, locale: str) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        n, unit = int(seconds // 3600), ("小时" if locale == "zh-CN" else "h")
    elif seconds >= 60 and seconds % 60 == 0:
        n, unit = int(seconds // 60), ("分钟" if locale == "zh-CN" else "min")
    else:
        n, unit = int(seconds), ("秒" if locale == "zh-CN" else "s")
    return f"{n}{unit}" if locale == "zh-CN" else f"{n} {unit}"


class Templates:
    """Renders the messages; ``directory`` holds optional overrides (see the module doc)."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory
        self._envs: dict[str, jinja2.Environment] = {}

    def check(self) -> None:
        """Compile every override template now: a syntax error fails start-up, naming the
        file and line."""
        if self.directory is None:
            return
        if not self.directory.is_dir():
            raise ConfigError(f"CHURNWATCH_NOTIFIER_TEMPLATES_DIR={self.directory} is not a "
                              "directory; create it (with <locale>/ or <tenant>/<locale>/ "
                              "subfolders) or unset it")
        env = self._env("default")
        for path in sorted(self.directory.rglob("*.j2")):
            try:
                env.parse(path.read_text(encoding="utf-8"), name=path.name, filename=str(path))
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(f"template {path}: line {exc.lineno}: {exc.message}") from None

    def _env(self, tenant: str) -> jinja2.Environment:
        env = self._envs.get(tenant)
        if env is None:
            paths: list[str | Path] = []
            if self.directory is not None:
                if _SAFE_TENANT.match(tenant):
                    paths.append(self.directory / tenant)
                paths.append(self.directory)
            paths.append(PACKAGED_DIR)
            env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths),
                                     autoescape=_autoescape, keep_trailing_newline=False,
                                     trim_blocks=False)
            self._envs[tenant] = env
        return env

    def render(self, tenant: str, locale: str, name: str, context: dict[str, Any]) -> str:
        locale = locale if locale in _TIERS else "en"
        template = self._env(tenant).get_template(f"{locale}/{name}")
        return template.render(**context).strip()

    # messages -------------------------------------------------------------------------
    def alert_context(self, change: RiskChange, recipient: Recipient, *, delivery_id: str,
                      alert_id: str = "", kind: str = "alert",
                      action: SuggestedAction | None = None,
                      escalate_after_s: float = 0.0, customer_name: str | None = None,
                      ack_url: str = "", customer_contact: Recipient | None = None,
                      consent: Any = None, detail: int = 3, console_url: str = "",
                      home_store: str | None = None) -> dict[str, Any]:
        """``home_store``: the store the customer is routed by (their profile's, else the
        change's), said beside the change's when they differ."""
        zh = recipient.locale == "zh-CN"
        tiers = _TIERS["zh-CN" if zh else "en"]
        act = action or change.suggested_action
        return {
            "kind": kind, "recipient_name": recipient.name, "customer_id": change.customer_id,
            # the profile name when there is one, else the id (the contract)
            "customer": customer_name or change.customer_id, "customer_name": customer_name,
            "value_tier": tiers[change.value_tier], "ack_url": ack_url,
            "console_url": console_url,
            "contact": _masked_contact(customer_contact, consent), "detail": detail,
            "tenant": change.tenant_id, "store": _store_text(home_store, change.store_id, zh),
            "previous_tier": tiers[change.previous_tier], "tier": tiers[change.tier],
            "worse": TIER_RANK[change.tier] > TIER_RANK[change.previous_tier],
            "score": _score(change), "score_value": change.score,
            # a rule, hysteresis or the dwell holds the tier above the score's own: an SMS
            # has no room to say so, and "high risk 0.30" read as a contradiction
            "held": any(holds_tier(r) for r in change.reasons),
            "reasons": [(r.text_zh if zh else r.text) for r in _listed(change, act)],
            "why": _why(change, act, zh),
            "action": act.text_zh if zh else act.text, "action_code": act.code,
            "delivery_id": delivery_id, "alert_id": alert_id,
            "escalate_after": _duration(escalate_after_s, recipient.locale),
        }

    def email(self, change: RiskChange, recipient: Recipient, *, delivery_id: str,
              **kwargs: Any) -> tuple[str, str, str]:
        ctx = self.alert_context(change, recipient, delivery_id=delivery_id, **kwargs)
        return self._email("alert", change.tenant_id, recipient.locale, ctx)

    def sms(self, change: RiskChange, recipient: Recipient, **kwargs: Any) -> str:
        """The alert as an SMS (``alert.sms.j2`` at ``detail`` 3..0) by :data:`SMS_PLANS`:
        one segment with the reason and the action, else two with the action, else what
        fits one; when nothing does (a very long name), the shortest, capped at
        ``SMS_MAX_CHARS``."""
        kwargs.setdefault("delivery_id", "")
        texts = {}
        for detail in SMS_DETAIL_LEVELS:
            ctx = self.alert_context(change, recipient, detail=detail, **kwargs)
            texts[detail] = " ".join(self.render(change.tenant_id, recipient.locale,
                                                 "alert.sms.j2", ctx).split())
        for segments, lowest in SMS_PLANS:
            for detail in SMS_DETAIL_LEVELS:
                if detail >= lowest and sms_segments(texts[detail]) <= segments:
                    return texts[detail]
        return clip_sms(texts[SMS_DETAIL_LEVELS[-1]])

    def digest_item(self, change: RiskChange, recipient: Recipient, *,
                    action: SuggestedAction | None = None, event_id: str = "",
                    customer_name: str | None = None, home_store: str | None = None
                    ) -> dict[str, Any]:
        ctx = self.alert_context(change, recipient, delivery_id="", action=action,
                                 customer_name=customer_name, home_store=home_store)
        return {k: ctx[k] for k in ("customer_id", "customer", "store", "previous_tier", "tier",
                                    "score", "reasons", "action", "value_tier")
                } | {"event_id": event_id}

    def digest(self, items: Sequence[dict[str, Any]], recipient: Recipient, *, tenant: str,
               channel: str, delivery_id: str, more_url: str = "") -> tuple[str, str, str]:
        """(subject, text, html) for email, ("", text, "") for SMS. The e-mail lists the
        first :data:`DIGEST_LISTED` items (``items_listed``) and links the rest in the console
        (``more_url``)."""
        items, note = said_once(items, recipient.locale)
        ctx = {"items": items, "items_listed": items[:DIGEST_LISTED],
               "recipient_name": recipient.name, "tenant": tenant, "delivery_id": delivery_id,
               "more_url": more_url,  # the templates show it only when items are left out
               "reasons_note": note}
        if not registry.spec(channel).long_form:
            return "", clip_sms(self.render(tenant, recipient.locale, "digest.sms.j2", ctx)), ""
        return self._email("digest", tenant, recipient.locale, ctx)

    def webhook_paused(self, sub: dict[str, Any], recipient: Recipient, *, tenant: str,
                       reason: str, pause_after_s: float, resume_url: str
                       ) -> tuple[str, str, str]:
        """(subject, text, html) telling a tenant admin that a subscription was paused."""
        from services.alerting.webhooks import display_url

        ctx = {"recipient_name": recipient.name, "subscription_id": sub["id"],
               "url": display_url(sub["url"]), "tenant": tenant,
               "failing_since": sub.get("failing_since", ""),
               "paused_at": sub.get("paused_at", ""), "reason": reason,
               "pause_after": _duration(pause_after_s, recipient.locale),
               "resume_url": resume_url}
        return self._email("webhook_paused", tenant, recipient.locale, ctx)

    def _email(self, prefix: str, tenant: str, locale: str, ctx: dict[str, Any]
               ) -> tuple[str, str, str]:
        subject = " ".join(self.render(tenant, locale, f"{prefix}.subject.j2", ctx).split())
        text = self.render(tenant, locale, f"{prefix}.txt.j2", ctx) + "\n"
        html = self.render(tenant, locale, f"{prefix}.html.j2", ctx)
        return subject, text, html


def _store_text(home: str | None, latest: str | None, zh: bool) -> str | None:
    """The customer's store as their console page says it: the store their profile names,
    and that of their latest visits when it is another (a manager reading "Store: downtown"
    about a customer of their own harbor store asked why it came to them)."""
    if home and latest and home != latest:
        return f"{home}，最近到访门店{latest}" if zh else f"{home}, latest visits at {latest}"
    return home or latest


def _score(change: RiskChange) -> str:
    if change.previous_score is None:
        return f"{change.score:.2f}"
    before, now = score_figures(change.previous_score, change.score)
    return f"{before} → {now}"


def _listed(change: RiskChange, action: SuggestedAction) -> list[Reason]:
    """The reasons a message lists: up to MAX_REASONS that say why the customer is at risk,
    the one the suggested action answers among them ("Resolve the open complaint first"
    beside the complaint, which came fourth and was cut), then that a rule or hysteresis
    holds the tier — after them, as the console lists them ("Raised to high by a business
    rule" led e-mails and digests, naming neither the reason nor the rule)."""
    held = [r for r in change.reasons if holds_tier(r)]
    return [*reasons_why(change.reasons, action.code, MAX_REASONS), *held[:1]]


def _why(change: RiskChange, action: SuggestedAction, zh: bool) -> str:
    """The one reason an SMS has room for: the first the suggested action answers (the
    scorer's pairing of reasons and actions: "Resolve the open complaint first" goes with the
    complaint, whichever reason is the strongest), else the strongest that says why the
    customer is at risk ("Raised to high by a business rule" says only that a rule holds the
    tier); "" when there is none."""
    reason = next(iter(reasons_why(change.reasons, action.code, 1)), None)
    return "" if reason is None else reason.text_zh if zh else reason.text


def clip_sms(text: str) -> str:
    """``text`` on one line, at most ``SMS_MAX_CHARS`` (three segments) long."""
    text = " ".join(text.split())
    return text if len(text) <= SMS_MAX_CHARS else text[: SMS_MAX_CHARS - 1] + "…"


@lru_cache(maxsize=1)
def packaged() -> Templates:
    return Templates(None)


def render_email(change: RiskChange, recipient: Recipient, *, delivery_id: str, **kwargs: Any
                 ) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of the email about ``change`` (packaged templates)."""
    return packaged().email(change, recipient, delivery_id=delivery_id, **kwargs)


def render_sms(change: RiskChange, recipient: Recipient, **kwargs: Any) -> str:
    """A short SMS: customer, tier change, top reason, action, acknowledge link."""
    return packaged().sms(change, recipient, **kwargs)
