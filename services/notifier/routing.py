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
    timezone: UTC                    # stores without a time zone of their own; optional
    routes:                          # first match wins
      - match: {to: high}            # keys optional: from, to, store, value_tier, segment
        channels: [email, sms, webhook]
        to: [owner]                  # owner | store_manager | customer | <recipient name>
        digest: false                # true: grouped into the recipient's digest; a
                                     # duration (1d): a digest of this route's own, that often;
                                     # {at: "08:00"}: one of its own every day at 08:00 store time
      - match: {}
        channels: [webhook]
    # optional policies (docs/notifier.md):
    quiet_hours: {start: "21:00", end: "08:00", channels: [sms, email]}   # store local time
    digest: {interval: 15m}
    rate_limits: {per_recipient: {count: 20, per: 1h}, per_channel: {sms: {count: 100, per: 1m}}}
    escalation: {after: 30m, channels: [email, sms]}
    inhibit:
      - {name: complaint_first, feature: open_complaints, above: 0,
         actions: [win_back_offer, coupon_offer], then: resolve_complaint}
    won_back: {channels: [email], to: [owner]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time as dtime
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from services.common.contact import is_email, is_phone, normalize_phone
from services.common.exceptions import ConfigError
from services.common.riskchange import TIERS, RiskChange
from services.notifier.channels import registry

# Every channel (one module each: services/notifier/channels/registry.py).
CHANNELS: tuple[str, ...] = registry.names()
LOCALES: tuple[str, ...] = ("en", "zh-CN")
DEFAULT_ROUTING_RESOURCE = "routing.default.yaml"

_TOP_KEYS = ("recipients", "stores", "default_recipient", "routes", "timezone", "quiet_hours",
             "digest", "rate_limits", "escalation", "inhibit", "won_back")
_RECIPIENT_KEYS = ("name", "email", "phone", "locale", "timezone")
_ROUTE_KEYS = ("match", "channels", "to", "digest")
_MATCH_KEYS = ("from", "to", "store", "value_tier", "segment")
# The channels that reach a person. in_app (the staff console's alert list) wakes nobody, so
# the defaults of quiet hours and escalation are the push channels (e-mail and SMS).
STAFF_CHANNELS: tuple[str, ...] = registry.names(audience="staff")
PUSH_CHANNELS: tuple[str, ...] = registry.names(audience="staff", push=True)
# Who a route's ``to`` may name besides the recipients defined in the file.
OWNER, STORE_MANAGER, CUSTOMER = "owner", "store_manager", "customer"
RECIPIENT_ROLES: tuple[str, ...] = (OWNER, STORE_MANAGER, CUSTOMER)
INHIBIT_THEN = ("suppress", "resolve_complaint")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True)
class Recipient:
    """A person notified by email/SMS. ``key`` is the name used in the routing file."""

    key: str
    name: str
    email: str | None = None
    phone: str | None = None
    locale: str = "en"
    role: str = "staff"  # staff | manager | customer (messages to customers need consent)
    # the person's own IANA time zone: their quiet hours and morning digests follow it, one
    # digest for all their stores (None: each customer's store's zone)
    timezone: str | None = None


@dataclass(frozen=True)
class Match:
    """Conditions of one route; ``None`` means "any". All given conditions must hold."""

    from_tiers: frozenset[str] | None = None
    to_tiers: frozenset[str] | None = None
    stores: frozenset[str] | None = None
    value_tiers: frozenset[str] | None = None
    segments: frozenset[str] | None = None

    def matches(self, change: RiskChange, segment: str | None = None) -> bool:
        checks = (
            (self.from_tiers, change.previous_tier),
            (self.to_tiers, change.tier),
            (self.stores, change.store_id),
            (self.value_tiers, change.value_tier),
            (self.segments, segment),
        )
        return all(allowed is None or value in allowed for allowed, value in checks)


@dataclass(frozen=True)
class Route:
    match: Match
    channels: tuple[str, ...]
    to: tuple[str, ...] = (OWNER,)
    digest: bool = False
    # ``digest: 1d``: this route's alerts go into a digest of their own, sent that often
    # (None: the file's ``digest.interval``); ``digest: {at: "08:00"}``: one of its own, sent
    # every day at that time of the store's clock
    digest_every_s: float | None = None
    digest_at: dtime | None = None


@dataclass(frozen=True)
class QuietHours:
    """A daily window in the store's local time; ``end <= start`` spans midnight."""

    start: dtime
    end: dtime
    channels: frozenset[str] = frozenset(PUSH_CHANNELS)


@dataclass(frozen=True)
class RateLimit:
    count: int
    per_s: float


@dataclass(frozen=True)
class Inhibit:
    """When feature ``feature`` > ``above`` and the suggested action is one of ``actions``:
    ``suppress`` the staff message, or replace the action by ``resolve_complaint``."""

    name: str
    feature: str
    above: float
    actions: frozenset[str]
    then: str


@dataclass(frozen=True)
class Policies:
    timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    digest_interval_s: float = 900.0
    per_recipient: RateLimit | None = None
    per_channel: Mapping[str, RateLimit] = field(default_factory=dict)
    escalate_after_s: float | None = None
    escalation_channels: tuple[str, ...] = PUSH_CHANNELS
    inhibit: tuple[Inhibit, ...] = ()
    won_back_channels: tuple[str, ...] = ()
    won_back_to: tuple[str, ...] = (OWNER,)


@dataclass(frozen=True)
class Routing:
    source: str
    recipients: Mapping[str, Recipient]
    stores: Mapping[str, str]
    default_recipient: str
    routes: tuple[Route, ...]
    policies: Policies = Policies()

    def route_for(self, change: RiskChange, segment: str | None = None) -> Route | None:
        """The first matching route, or None."""
        for route in self.routes:
            if route.match.matches(change, segment):
                return route
        return None

    def channels_for(self, change: RiskChange, segment: str | None = None) -> tuple[str, ...]:
        """Channels of the first matching route; empty when no route matches."""
        route = self.route_for(change, segment)
        return route.channels if route is not None else ()

    def store_manager(self, store_id: str | None) -> Recipient:
        """The manager of ``store_id`` if the store is mapped, else the default recipient."""
        key = self.stores.get(store_id, self.default_recipient) if store_id else self.default_recipient
        return self.recipients[key]

    def store_manager_key(self, store_id: str | None) -> str:
        return self.stores.get(store_id, self.default_recipient) if store_id else self.default_recipient

    @property
    def used_channels(self) -> frozenset[str]:
        return frozenset(c for r in self.routes for c in r.channels) | frozenset(
            self.policies.won_back_channels)


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
    routes = _routes(p, doc.get("routes"), recipients)
    policies = _policies(p, doc, recipients)
    return Routing(source=source, recipients=recipients, stores=stores,
                   default_recipient=default, routes=routes, policies=policies)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90``, ``1.5s``, ``15m``, ``2h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    m = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"{value!r} is not a duration")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_clock(value: Any) -> dtime:
    """``HH:MM`` or ``HH:MM:SS`` (24 h)."""
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 21:00 as 1260
        return dtime(value // 60 % 24, value % 60)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time of day")
    try:
        return dtime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day") from None


def _zone_name(p: _Parser, raw: Any, where: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz = p.string(raw, where)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        p.fail(where, f"{tz!r} is not an IANA time zone", "use e.g. Europe/Berlin or Asia/Shanghai")
    return tz


def _policies(p: _Parser, doc: dict[str, Any], recipients: Mapping[str, Recipient]) -> Policies:
    tz = _zone_name(p, doc.get("timezone", "UTC"), "timezone")
    quiet = None
    if doc.get("quiet_hours") is not None:
        raw = p.mapping(doc["quiet_hours"], "quiet_hours", ("start", "end", "channels"))
        start = p.clock(raw.get("start"), "quiet_hours.start")
        end = p.clock(raw.get("end"), "quiet_hours.end")
        chans = p.choices(raw.get("channels"), "quiet_hours.channels", STAFF_CHANNELS)
        quiet = QuietHours(start=start, end=end, channels=chans or frozenset(PUSH_CHANNELS))
    digest_s = 900.0
    if doc.get("digest") is not None:
        raw = p.mapping(doc["digest"], "digest", ("interval",))
        digest_s = p.duration(raw.get("interval", "15m"), "digest.interval", positive=True)
    per_recipient = None
    per_channel: dict[str, RateLimit] = {}
    if doc.get("rate_limits") is not None:
        raw = p.mapping(doc["rate_limits"], "rate_limits", ("per_recipient", "per_channel"))
        if raw.get("per_recipient") is not None:
            per_recipient = p.rate(raw["per_recipient"], "rate_limits.per_recipient")
        by_channel = p.mapping(raw.get("per_channel") or {}, "rate_limits.per_channel",
                               STAFF_CHANNELS)
        per_channel = {c: p.rate(v, f"rate_limits.per_channel.{c}") for c, v in by_channel.items()}
    escalate_after = None
    escalation_channels: tuple[str, ...] = PUSH_CHANNELS
    if doc.get("escalation") is not None:
        raw = p.mapping(doc["escalation"], "escalation", ("after", "channels"))
        escalate_after = p.duration(raw.get("after"), "escalation.after", positive=True)
        chans = p.choices(raw.get("channels"), "escalation.channels", STAFF_CHANNELS)
        escalation_channels = tuple(c for c in STAFF_CHANNELS if c in (chans or PUSH_CHANNELS))
    inhibit: list[Inhibit] = []
    rules = doc.get("inhibit") or []
    if not isinstance(rules, list):
        p.fail("inhibit", "must be a list", "list rules like '- {name: ..., feature: "
               "open_complaints, above: 0, actions: [win_back_offer], then: resolve_complaint}'")
    for n, item in enumerate(rules):
        where = f"inhibit[{n}]"
        raw = p.mapping(item, where, ("name", "feature", "above", "actions", "then"))
        above = raw.get("above", 0)
        if isinstance(above, bool) or not isinstance(above, int | float):
            p.fail(f"{where}.above", f"{above!r} is not a number", "use e.g. above: 0")
        actions = p.choices(raw.get("actions"), f"{where}.actions", None)
        if actions is None:
            p.fail(f"{where}.actions", "is missing", "list the suggested-action codes it inhibits")
        then = raw.get("then", "suppress")
        if then not in INHIBIT_THEN:
            p.fail(f"{where}.then", f"{then!r} is not accepted", f"use one of {', '.join(INHIBIT_THEN)}")
        inhibit.append(Inhibit(name=p.string(raw.get("name", f"rule{n}"), f"{where}.name"),
                               feature=p.string(raw.get("feature"), f"{where}.feature"),
                               above=float(above), actions=actions, then=then))
    won_channels: tuple[str, ...] = ()
    won_to: tuple[str, ...] = (OWNER,)
    if doc.get("won_back") is not None:
        raw = p.mapping(doc["won_back"], "won_back", ("channels", "to"))
        chans = p.choices(raw.get("channels"), "won_back.channels", STAFF_CHANNELS)
        if chans is None:
            p.fail("won_back.channels", "is missing", "list email and/or sms")
        won_channels = tuple(c for c in STAFF_CHANNELS if c in chans)
        won_to = _to(p, raw.get("to"), "won_back.to", recipients)
    return Policies(timezone=tz, quiet_hours=quiet, digest_interval_s=digest_s,
                    per_recipient=per_recipient, per_channel=per_channel,
                    escalate_after_s=escalate_after, escalation_channels=escalation_channels,
                    inhibit=tuple(inhibit), won_back_channels=won_channels, won_back_to=won_to)


def _to(p: _Parser, raw: Any, where: str, recipients: Mapping[str, Recipient]) -> tuple[str, ...]:
    if raw is None:
        return (OWNER,)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        p.fail(where, "is an empty list", "leave it out to notify the customer's owner")
    for item in items:
        if not isinstance(item, str) or (item not in RECIPIENT_ROLES and item not in recipients):
            p.fail(where, f"{item!r} is neither a role nor a defined recipient",
                   f"use {', '.join(RECIPIENT_ROLES)} or one of {', '.join(sorted(recipients))}")
    return tuple(dict.fromkeys(items))


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
        if email is not None and not is_email(p.string(email, f"{where}.email")):
            p.fail(f"{where}.email", f"{email!r} is not an email address",
                   "use an address such as manager@example.com")
        phone = fields.get("phone")
        if phone is not None:
            phone = normalize_phone(p.string(phone, f"{where}.phone"))
            if not is_phone(phone):
                p.fail(f"{where}.phone", f"{fields['phone']!r} is not an E.164 number",
                       "use + and the country code, e.g. \"+15550100000\" (quote it in YAML)")
        locale = p.string(fields.get("locale", "en"), f"{where}.locale")
        if locale not in LOCALES:
            p.fail(f"{where}.locale", f"{locale!r} is not supported", f"use one of {', '.join(LOCALES)}")
        tz = fields.get("timezone")
        out[str(key)] = Recipient(key=str(key), name=name, email=email, phone=phone, locale=locale,
                                  timezone=None if tz is None
                                  else _zone_name(p, tz, f"{where}.timezone"))
    return out


def _routes(p: _Parser, raw: Any, recipients: Mapping[str, Recipient]) -> tuple[Route, ...]:
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
            segments=p.choices(match_raw.get("segment"), f"{where}.match.segment", None),
        )
        channels_raw = fields.get("channels")
        if not isinstance(channels_raw, list) or not channels_raw:
            p.fail(f"{where}.channels", "must be a non-empty list",
                   f"list one or more of {', '.join(CHANNELS)}, e.g. channels: [email, webhook]")
        channels = p.choices(channels_raw, f"{where}.channels", CHANNELS)
        assert channels is not None
        ordered = tuple(c for c in CHANNELS if c in channels)
        digest = fields.get("digest", False)
        every: float | None = None
        at: dtime | None = None
        if isinstance(digest, dict):
            at = p.clock(p.mapping(digest, f"{where}.digest", ("at",)).get("at"),
                         f"{where}.digest.at")
            digest = True
        elif not isinstance(digest, bool):
            try:
                every = parse_duration(digest)
            except ValueError:
                every = 0.0
            if every <= 0:
                p.fail(f"{where}.digest", f"{digest!r} is not true, false, a duration or "
                       "{at: <time of day>}",
                       "use digest: true to group these alerts per recipient (every "
                       'digest.interval), a duration such as digest: 1d, or digest: {at: "08:00"} '
                       "for one a day at that time of the store's clock")
            digest = True
        routes.append(Route(match=match, channels=ordered,
                            to=_to(p, fields.get("to"), f"{where}.to", recipients), digest=digest,
                            digest_every_s=every, digest_at=at))
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

    def duration(self, value: Any, where: str, *, positive: bool = False) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(where, str(exc), "use seconds or a string such as 30s, 15m, 2h")
        if positive and seconds <= 0:
            self.fail(where, "must be greater than zero", "use e.g. 15m")
        return seconds

    def clock(self, value: Any, where: str) -> dtime:
        try:
            return parse_clock(value)
        except ValueError as exc:
            self.fail(where, str(exc), 'use a quoted 24-hour time such as "21:00"')

    def rate(self, value: Any, where: str) -> RateLimit:
        raw = self.mapping(value, where, ("count", "per"))
        count = raw.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            self.fail(f"{where}.count", f"{count!r} is not a positive integer", "use e.g. count: 20")
        return RateLimit(count=count, per_s=self.duration(raw.get("per"), f"{where}.per", positive=True))

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
