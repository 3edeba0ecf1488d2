"""Inbound POS events: the Python models from which ``schemas/*.schema.json`` are generated.

Validation lives here so the HTTP edge and the scorer (records sent straight to Kafka) apply
exactly the same rules. Unknown fields are ignored (and not forwarded); known fields are
checked strictly and every error names the field and what it accepts.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from services.common import jsonfast

EVENT_TYPES = ("transaction", "visit", "complaint")
EventType = Literal["transaction", "visit", "complaint"]
Severity = Literal["low", "medium", "high"]
Channel = Literal["in_store", "online", "phone", "app", "delivery", "other"]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _rfc3339(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string with an offset, e.g. 2026-11-23T10:00:00+01:00")
    if not _RFC3339.match(value):
        raise ValueError(
            "must be RFC 3339 with a UTC offset, e.g. 2026-11-23T10:00:00Z or 2026-11-23T10:00:00+01:00"
        )
    return value


def _identifier(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if not value.strip():
        raise ValueError("must not be blank (only whitespace)")
    return value


Identifier = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=128, strip_whitespace=False),
    AfterValidator(_identifier),
]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
ShortText = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
DEFAULT_TENANT = "default"
TENANT_HEADER = "churnwatch-tenant"  # names the tenant of an erasure tombstone (key: customer id)
# Set on events a store-bound API key posted: they count in the customer's activity but never
# move a customer whose home store is another one (services/scorer/state.py APPLY_LUA).
STORE_BOUND_HEADER = "churnwatch-store-bound"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TenantId = Annotated[StrictStr, StringConstraints(pattern=TENANT_PATTERN)]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Identifier = Field(description="Unique id of the event; the same id sent twice changes nothing.")
    customer_id: Identifier = Field(description="The customer the event belongs to.")
    occurred_at: Timestamp = Field(
        description="When it happened, RFC 3339 with a UTC offset. Write the shop's own "
        "offset: the customer's days (active days, cadence, windows) are the calendar days "
        "at the offset each event carries. A time at offset 0 (Z) of a store given a time "
        "zone (PUT /v1/stores/{store_id}) is counted on that store's clock.",
        json_schema_extra={"type": "string", "format": "date-time"},
    )
    store_id: Identifier | None = Field(default=None, description="The store or outlet, if any.")
    channel: Channel | None = Field(default=None, description="Where the interaction happened.")
    tenant_id: TenantId | None = Field(
        default=None,
        description="The business (tenant) the customer belongs to; absent means 'default'. "
        "Over HTTP it is set from the API key's tenant; a different value is refused.",
    )

    @property
    def tenant(self) -> str:
        return self.tenant_id or DEFAULT_TENANT


# what a POS's staff id on an event does (and does not): routing follows the profile's owner
_SERVED_BY = ("Staff member who served the customer. Checked, not used for routing: a "
              "customer's alerts go to the owner on their profile (owner_staff_id, "
              "PUT /v1/customers/{customer_id}/profile), else to their store's manager.")


class TransactionEvent(_EventBase):
    """A purchase (positive amount) or a refund (negative amount)."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        title="TransactionEvent",
        json_schema_extra={"examples": [{
            "event_id": "pos-7781-000123", "type": "transaction", "customer_id": "c-1042",
            "occurred_at": "2026-11-23T10:15:00+01:00", "store_id": "salon-downtown",
            "amount": 58.5, "currency": "EUR", "quantity": 2,
        }]},
    )
    type: Literal["transaction"]
    amount: float = Field(
        strict=True, allow_inf_nan=False, ge=-1e9, le=1e9,
        description="Ticket total in currency units; negative for refunds.",
    )
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_upper=True)] | None = Field(
        default=None, description="ISO 4217 code, e.g. EUR (case-insensitive; stored upper-case)."
    )
    quantity: float | None = Field(
        default=None, strict=True, allow_inf_nan=False, ge=0, le=1_000_000,
        description="Number of items (or units, e.g. kilograms).",
    )
    staff_id: Identifier | None = Field(default=None, description=_SERVED_BY)


class VisitEvent(_EventBase):
    """A visit or appointment, whether or not it led to a purchase."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        title="VisitEvent",
        json_schema_extra={"examples": [{
            "event_id": "visit-55120", "type": "visit", "customer_id": "c-1042",
            "occurred_at": "2026-11-23T09:30:00+01:00", "store_id": "salon-downtown",
            "service": "haircut", "staff_id": "stylist-7", "duration_minutes": 45,
        }]},
    )
    type: Literal["visit"]
    service: ShortText | None = Field(default=None, description="What the visit was for.")
    staff_id: Identifier | None = Field(default=None, description=_SERVED_BY)
    duration_minutes: float | None = Field(default=None, strict=True, ge=0, le=1440,
                                           allow_inf_nan=False)


class ComplaintEvent(_EventBase):
    """A complaint raised by the customer, or a later update resolving it."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        title="ComplaintEvent",
        json_schema_extra={"examples": [{
            "event_id": "cmp-9001", "type": "complaint", "customer_id": "c-1042",
            "occurred_at": "2026-11-23T11:00:00+01:00", "store_id": "salon-downtown",
            "severity": "high", "category": "service_quality", "status": "open",
        }]},
    )
    type: Literal["complaint"]
    severity: Severity = Field(default="medium", description="How serious the complaint is.")
    category: ShortText | None = Field(default=None, description="Free-form category, e.g. wait_time.")
    complaint_id: Identifier | None = Field(
        default=None,
        description="Groups updates of one complaint; defaults to event_id. Send a later event "
        "with the same complaint_id and status=resolved to close it.",
    )
    status: Literal["open", "resolved"] = Field(default="open")


Event = Annotated[TransactionEvent | VisitEvent | ComplaintEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[TransactionEvent | VisitEvent | ComplaintEvent] = TypeAdapter(Event)
EVENT_MODELS: dict[str, type[_EventBase]] = {
    "transaction": TransactionEvent,
    "visit": VisitEvent,
    "complaint": ComplaintEvent,
}
AnyEvent = TransactionEvent | VisitEvent | ComplaintEvent


class FieldError(BaseModel):
    """One problem with one event of a request."""

    index: int = Field(description="Position of the event in the request (0 for a single object).")
    field: str = Field(description="Dotted path of the offending field, or '' for the whole event.")
    message: str


class DuplicateKeyError(ValueError):
    pass


class _NonFinite(str):
    """A NaN/Infinity literal, held until the object around it can name its key."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKeyError(f"duplicate key {k[:60]!r} in a JSON object")
            seen.add(k)
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send numbers as finite decimals")


_SCALARS = (str, int, float, bool, type(None))


def _canonical(raw: bytes) -> Any | None:
    """The value ``raw`` holds when it is written exactly as compact JSON writes it — how
    churnwatch's API publishes events and envelopes, and how most producers (orjson,
    ``JSON.stringify``, ``json.dumps(..., separators=(",", ":"))``) send them, nested or not —
    or, for one flat object (scalar values only), as Python's ``json.dumps`` writes it by
    default; else None. orjson refuses what the strict parser refuses (invalid UTF-8, NaN and
    Infinity, integers beyond 64 bits, nesting beyond its limits), and a duplicate key at any
    depth, a BOM, other whitespace or another spelling makes the value written back differ
    from ``raw``: only an exact round trip is taken, so the result is what the strict parser
    gives."""
    try:
        obj = jsonfast.loads(raw)
        compact = jsonfast.dumps_bytes(obj)
    except (ValueError, TypeError):  # not JSON to orjson, or nested beyond its writer
        return None
    if compact == raw:
        return obj
    if type(obj) is not dict or not all(type(v) in _SCALARS for v in obj.values()):
        return None
    # Python's json.dumps default spelling: a space after every key's colon and every pair's
    # comma (2k - 1 spaces for k keys). The spaces go in after each `":` and before each `,"`
    # of the compact text; one that lands inside a string makes it differ from ``raw``
    # (strict path), and inserted spaces never change the structure: equal to ``raw``, it is
    # k pairs, no duplicate among them.
    if len(raw) == len(compact) + 2 * len(obj) - 1 and \
            compact.replace(b'":', b'": ').replace(b',"', b', "') == raw:
        return obj
    return None


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON strictly: UTF-8 only (a BOM is tolerated), no NaN/Infinity (the message names
    the key holding one), no duplicate keys, no nesting deep enough to exhaust the stack.
    Raises ValueError. An object or array in compact JSON (an event, an envelope, a request's
    array of events), or one flat event in ``json.dumps``'s default spelling, takes a fast
    path with the same result (:func:`_canonical`)."""
    if type(raw) is bytes and raw[:1] in (b"{", b"["):
        fast = _canonical(raw)
        if fast is not None:
            return fast
    return _parse_strict(raw)


def _parse_strict(raw: bytes | str) -> Any:
    """:func:`parse_json` without its fast path."""
    if isinstance(raw, bytes | bytearray):
        try:  # json.loads would guess UTF-16/32 from the first bytes; JSON on the wire is UTF-8
            raw = bytes(raw).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8: {exc}") from None
    found: list[str] = []

    def constant(name: str) -> _NonFinite:
        found.append(name)
        return _NonFinite(name)

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = _no_duplicates(pairs)
        if found:  # name the key of the first NaN/Infinity (or of the array holding it)
            for k, v in pairs:
                bad = [v] if type(v) is _NonFinite else v if type(v) is list else []
                for x in bad:
                    if type(x) is _NonFinite:
                        raise ValueError(f"{k[:60]!r} holds {x}, which is not valid JSON; "
                                         "send numbers as finite decimals")
        return out

    try:
        obj = json.loads(raw, object_pairs_hook=pairs_hook, parse_constant=constant)
    except RecursionError:  # the C scanner's own guard; never a crash of the caller
        raise ValueError("arrays or objects are nested too deeply") from None
    if found:  # a literal outside any object (top level or in an array)
        _no_constants(found[0])
    return obj


def _shown(value: Any) -> str:
    """A short, printable account of a wrong value (a deeply nested one is not rendered)."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return repr(str(value)[:40])


def _loc(err: dict[str, Any]) -> str:
    parts = [str(p) for p in err.get("loc", ()) if str(p) not in EVENT_TYPES]
    return ".".join(parts)


def validate_event(obj: Any, index: int = 0, *, now: datetime | None = None,
                   max_age: timedelta | None = None, max_future: timedelta | None = None
                   ) -> tuple[AnyEvent | None, list[FieldError]]:
    """Validate one decoded JSON value as an event; return the model or the errors."""
    if not isinstance(obj, dict):
        return None, [FieldError(index=index, field="", message="each event must be a JSON object")]
    t = obj.get("type")
    if t not in EVENT_TYPES:
        return None, [FieldError(
            index=index, field="type",
            message=f"must be one of {', '.join(EVENT_TYPES)} (got {_shown(t)})",
        )]
    try:
        event = EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        errors = []
        for e in exc.errors(include_url=False):
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "missing":
                msg = "is required"
            errors.append(FieldError(index=index, field=_loc(dict(e)), message=msg))
        return None, errors
    bound = check_time_bounds(event, now=now, max_age=max_age, max_future=max_future)
    if bound:
        return None, [FieldError(index=index, field="occurred_at", message=bound)]
    return event, []


def check_time_bounds(event: AnyEvent, *, now: datetime | None = None,
                      max_age: timedelta | None = None, max_future: timedelta | None = None
                      ) -> str | None:
    """Refuse far-future and ancient timestamps (they would poison an event-time clock)."""
    if max_future is None and max_age is None:
        return None  # nothing to check: no clock read (validate_event_in checks per batch)
    now = now or datetime.now(UTC)
    if max_future is not None and event.occurred_at > now + max_future:
        return f"is more than {int(max_future.total_seconds())} s in the future; check the POS clock"
    if max_age is not None and event.occurred_at < now - max_age:
        return f"is older than {max_age.days} days; such history cannot be scored"
    return None


_MS = timedelta(milliseconds=1)
_FAR = 1 << 62  # epoch ms no event reaches: no bound on that side


class TimeBounds:
    """The event times :func:`check_time_bounds` accepts at ``now``, for a whole batch. In epoch
    ms, a millisecond inside the exact limits, an event clear of them passes without datetime
    arithmetic (~0.2 µs where comparing datetimes took ~1.1); one near or past them gets the
    exact check and its message."""

    __slots__ = ("now", "max_age", "max_future", "_oldest", "_newest")

    def __init__(self, now: datetime, max_age: timedelta | None = None,
                 max_future: timedelta | None = None) -> None:
        self.now, self.max_age, self.max_future = now, max_age, max_future
        now_ms = epoch_ms(now)
        self._oldest = -_FAR if max_age is None else now_ms - max_age // _MS + 1
        self._newest = _FAR if max_future is None else now_ms + max_future // _MS - 1

    def check(self, event: AnyEvent, older_ms: int = 0) -> tuple[int, str | None]:
        """The event's time in epoch ms, and why it is out of bounds (None: it is not).
        ``older_ms``: age allowed beyond ``max_age`` (the scorer: how long the event waited in
        the topic)."""
        ts = epoch_ms(event.occurred_at)
        if self._oldest - older_ms < ts < self._newest:
            return ts, None
        max_age = None if self.max_age is None else self.max_age + older_ms * _MS
        return ts, check_time_bounds(event, now=self.now, max_age=max_age,
                                     max_future=self.max_future)


def validate_event_in(obj: Any, bounds: TimeBounds, index: int = 0, older_ms: int = 0
                      ) -> tuple[AnyEvent | None, int, list[FieldError]]:
    """:func:`validate_event` against a batch's :class:`TimeBounds`; with the event's time in
    epoch ms (0 when it is refused)."""
    event, errors = validate_event(obj, index)
    if event is None:
        return None, 0, errors
    ts, why = bounds.check(event, older_ms)
    if why:
        return None, 0, [FieldError(index=index, field="occurred_at", message=why)]
    return event, ts, []


def event_to_json(event: AnyEvent) -> bytes:
    """The canonical form published to the events topic (unknown fields dropped): compact
    UTF-8 JSON written by pydantic's serializer in one call (~1.8 µs an event, where
    ``json.dumps`` of ``model_dump(mode="json")`` took ~4.8 on the API's hot path). The same
    JSON values; a float may be spelled shorter (``1e16``, not ``1e+16``)."""
    return event.model_dump_json(exclude_none=True).encode()


def epoch_ms(dt: datetime) -> int:
    return int(math.floor(dt.timestamp() * 1000))
