"""The routing file: who is told about a risk change, and over which channels.

Loaded and validated once at start-up (``CHURNWATCH_ROUTING_FILE``, else the packaged
``routing.default.yaml``). Every problem raises :class:`ConfigError` naming the file, the path
inside it (e.g. ``routes[1].match.to``) and what is accepted. Format::

    recipients:                      # named recipients
      default_manager: {name: "Store manager", email: "m@example.com",
                        phone: "+15550100000", locale: en}
    stores:                          # store_id -> recipient name; optional
      salon-downtown: default_manager
    default_recipient: default_manager
    routes:                          # first match wins
      - match: {to: high}            # keys optional: from, to, store, value_tier
        channels: [email, sms, webhook]
      - match: {}
        channels: [webhook]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from services.common.exceptions import ConfigError
from services.common.riskchange import TIERS, RiskChange

CHANNELS: tuple[str, ...] = ("email", "sms", "webhook")
LOCALES: tuple[str, ...] = ("en", "zh-CN")
DEFAULT_ROUTING_RESOURCE = "routing.default.yaml"

_TOP_KEYS = ("recipients", "stores", "default_recipient", "routes")
_RECIPIENT_KEYS = ("name", "email", "phone", "locale")
_ROUTE_KEYS = ("match", "channels")
_MATCH_KEYS = ("from", "to", "store", "value_tier")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


@dataclass(frozen=True)
class Recipient:
    """A person notified by email/SMS. ``key`` is the name used in the routing file."""

    key: str
    name: str
    email: str | None = None
    phone: str | None = None
    locale: str = "en"


@dataclass(frozen=True)
class Match:
    """Conditions of one route; ``None`` means "any". All given conditions must hold."""

    from_tiers: frozenset[str] | None = None
    to_tiers: frozenset[str] | None = None
    stores: frozenset[str] | None = None
    value_tiers: frozenset[str] | None = None

    def matches(self, change: RiskChange) -> bool:
        checks = (
            (self.from_tiers, change.previous_tier),
            (self.to_tiers, change.tier),
            (self.stores, change.store_id),
            (self.value_tiers, change.value_tier),
        )
        return all(allowed is None or value in allowed for allowed, value in checks)


@dataclass(frozen=True)
class Route:
    match: Match
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Routing:
    source: str
    recipients: Mapping[str, Recipient]
    stores: Mapping[str, str]
    default_recipient: str
    routes: tuple[Route, ...]

    def channels_for(self, change: RiskChange) -> tuple[str, ...]:
        """Channels of the first matching route; empty when no route matches."""
        for route in self.routes:
            if route.match.matches(change):
                return route.channels
        return ()

    def store_manager(self, store_id: str | None) -> Recipient:
        """The manager of ``store_id`` if the store is mapped, else the default recipient."""
        key = self.stores.get(store_id, self.default_recipient) if store_id else self.default_recipient
        return self.recipients[key]

    @property
    def used_channels(self) -> frozenset[str]:
        return frozenset(c for r in self.routes for c in r.channels)


# Loading ------------------------------------------------------------------------------


def load_routing(path: Path | None) -> Routing:
    """Read and validate the routing file at ``path`` (``None``: the packaged default)."""
    if path is None:
        ref = resources.files("services.notifier").joinpath(DEFAULT_ROUTING_RESOURCE)
        return parse_routing_text(ref.read_text(encoding="utf-8"),
                                  source=f"packaged {DEFAULT_ROUTING_RESOURCE}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"CHURNWATCH_ROUTING_FILE={path}: no such file; point it at a "
                          "routing YAML file or unset it to use the packaged default") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"CHURNWATCH_ROUTING_FILE={path}: cannot read it ({exc})") from None
    return parse_routing_text(text, source=str(path))


def parse_routing_text(text: str, *, source: str) -> Routing:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    return parse_routing(data, source=source)


def parse_routing(data: Any, *, source: str) -> Routing:
    """Validate an already-parsed routing document."""
    p = _Parser(source)
    doc = p.mapping(data, "(top level)", _TOP_KEYS)
    recipients = _recipients(p, doc.get("recipients"))
    default = doc.get("default_recipient")
    if default is None:
        p.fail("default_recipient", "is missing", "name one of the recipients, "
               f"e.g. default_recipient: {next(iter(recipients))}")
    p.known(default, "default_recipient", recipients)
    stores_raw = p.mapping(doc.get("stores") or {}, "stores", None)
    stores: dict[str, str] = {}
    for store_id, who in stores_raw.items():
        p.known(who, f"stores.{store_id}", recipients)
        stores[str(store_id)] = who
    routes = _routes(p, doc.get("routes"))
    return Routing(source=source, recipients=recipients, stores=stores,
                   default_recipient=default, routes=routes)


def _recipients(p: _Parser, raw: Any) -> dict[str, Recipient]:
    if raw is None:
        p.fail("recipients", "is missing", "define at least one named recipient with name, "
               "email and/or phone, e.g. recipients: {manager: {name: ..., email: ...}}")
    entries = p.mapping(raw, "recipients", None)
    if not entries:
        p.fail("recipients", "is empty", "define at least one named recipient")
    out: dict[str, Recipient] = {}
    for key, value in entries.items():
        where = f"recipients.{key}"
        fields = p.mapping(value, where, _RECIPIENT_KEYS)
        name = p.string(fields.get("name", key), f"{where}.name")
        email = fields.get("email")
        if email is not None and not _EMAIL.match(p.string(email, f"{where}.email")):
            p.fail(f"{where}.email", f"{email!r} is not an email address",
                   "use an address such as manager@example.com")
        phone = fields.get("phone")
        if phone is not None:
            phone = p.string(phone, f"{where}.phone").replace(" ", "")
            if not _PHONE.match(phone):
                p.fail(f"{where}.phone", f"{fields['phone']!r} is not an E.164 number",
                       "use + and the country code, e.g. \"+15550100000\" (quote it in YAML)")
        locale = p.string(fields.get("locale", "en"), f"{where}.locale")
        if locale not in LOCALES:
            p.fail(f"{where}.locale", f"{locale!r} is not supported", f"use one of {', '.join(LOCALES)}")
        out[str(key)] = Recipient(key=str(key), name=name, email=email, phone=phone, locale=locale)
    return out


def _routes(p: _Parser, raw: Any) -> tuple[Route, ...]:
    if not isinstance(raw, list) or not raw:
        p.fail("routes", "must be a non-empty list" + ("" if raw is None else f" (got {type(raw).__name__})"),
               "list routes like '- match: {to: high}' / '  channels: [email, webhook]'; "
               "the first matching route wins")
    routes: list[Route] = []
    for n, item in enumerate(raw):
        where = f"routes[{n}]"
        fields = p.mapping(item, where, _ROUTE_KEYS)
        match_raw = p.mapping(fields.get("match") or {}, f"{where}.match", _MATCH_KEYS)
        match = Match(
            from_tiers=p.choices(match_raw.get("from"), f"{where}.match.from", TIERS),
            to_tiers=p.choices(match_raw.get("to"), f"{where}.match.to", TIERS),
            stores=p.choices(match_raw.get("store"), f"{where}.match.store", None),
            value_tiers=p.choices(match_raw.get("value_tier"), f"{where}.match.value_tier", TIERS),
        )
        channels_raw = fields.get("channels")
        if not isinstance(channels_raw, list) or not channels_raw:
            p.fail(f"{where}.channels", "must be a non-empty list",
                   f"list one or more of {', '.join(CHANNELS)}, e.g. channels: [email, webhook]")
        channels = p.choices(channels_raw, f"{where}.channels", CHANNELS)
        assert channels is not None
        ordered = tuple(c for c in CHANNELS if c in channels)
        routes.append(Route(match=match, channels=ordered))
    return tuple(routes)


class _Parser:
    """Validation helpers that raise ConfigError naming the file and the path inside it."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str, fix: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {where}: {problem}; {fix}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"must be a mapping (got {type(value).__name__})", "use key: value pairs")
        if allowed is not None:
            unknown = sorted(str(k) for k in value if k not in allowed)
            if unknown:
                self.fail(where, f"unknown key(s) {', '.join(unknown)}",
                          f"accepted keys are {', '.join(allowed)}")
        return {str(k): v for k, v in value.items()}

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"must be a non-empty string (got {value!r})", "quote the value")
        return str(value).strip()

    def known(self, value: Any, where: str, recipients: Mapping[str, Recipient]) -> None:
        if not isinstance(value, str) or value not in recipients:
            self.fail(where, f"{value!r} is not a defined recipient",
                      f"use one of {', '.join(sorted(recipients))} (defined under recipients)")

    def choices(self, value: Any, where: str, allowed: tuple[str, ...] | None) -> frozenset[str] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if not items:
            self.fail(where, "is an empty list", "leave the key out to match anything")
        accepted = f"use one of {', '.join(allowed)} or a list of them" if allowed else "use a string or a list of strings"
        out: set[str] = set()
        for item in items:
            if not isinstance(item, str) or (allowed is not None and item not in allowed):
                self.fail(where, f"{item!r} is not accepted", accepted)
            out.add(item)
        return frozenset(out)
