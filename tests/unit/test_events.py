"""Event validation at the edge (pure; shared by the API and the scorer)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.common.events import (
    EVENT_TYPES,
    _canonical,
    _parse_strict,
    event_to_json,
    parse_json,
    validate_event,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def ok(**fields):
    base = {"event_id": "e1", "type": "transaction", "customer_id": "c1",
            "occurred_at": "2026-11-23T10:00:00+01:00", "amount": 12.5}
    base.update(fields)
    return base


def errors(obj, **kw):
    event, errs = validate_event(obj, 3, now=NOW, max_age=timedelta(days=36500),
                                 max_future=timedelta(days=1), **kw)
    return event, {(e.index, e.field): e.message for e in errs}


def test_valid_events_of_each_type() -> None:
    assert errors(ok())[1] == {}
    assert errors({"event_id": "v", "type": "visit", "customer_id": "c",
                   "occurred_at": "2026-11-23T10:00:00Z"})[1] == {}
    event, errs = errors({"event_id": "k", "type": "complaint", "customer_id": "c",
                          "occurred_at": "2026-11-23T10:00:00Z"})
    assert errs == {} and event.severity == "medium" and event.status == "open"


@pytest.mark.parametrize("fields,field,fragment", [
    ({"occurred_at": "2026-11-23T10:00:00"}, "occurred_at", "offset"),
    ({"occurred_at": 1700000000}, "occurred_at", "RFC 3339"),
    ({"occurred_at": "2027-11-23T10:00:00Z"}, "occurred_at", "future"),
    ({"occurred_at": "1899-11-23T10:00:00Z"}, "occurred_at", "older"),
    ({"amount": "12"}, "amount", "number"),
    ({"amount": 1e12}, "amount", "less than"),
    ({"event_id": ""}, "event_id", "at least 1"),
    ({"event_id": "x" * 129}, "event_id", "at most 128"),
    ({"customer_id": 42}, "customer_id", "string"),
    ({"customer_id": "a\nb"}, "customer_id", "control"),
    ({"currency": "euro"}, "currency", "pattern"),
    ({"quantity": "2"}, "quantity", "number"),
    ({"quantity": -1}, "quantity", "greater than"),
])
def test_each_problem_names_the_field(fields, field, fragment) -> None:
    event, errs = errors(ok(**fields))
    assert event is None
    assert (3, field) in errs and fragment in errs[(3, field)]


def test_missing_fields_and_wrong_type() -> None:
    _, errs = errors({"type": "transaction"})
    assert {f for _, f in errs} == {"event_id", "customer_id", "occurred_at", "amount"}
    assert set(errs.values()) == {"is required"}
    _, errs = errors(ok(type="refund"))
    assert list(errs) == [(3, "type")]
    assert errors([1, 2])[1] == {(3, ""): "each event must be a JSON object"}


def test_lenient_where_it_is_safe() -> None:
    event, errs = errors(ok(currency="eur", quantity=1.5, occurred_at="2010-12-01T08:26:00z"))
    assert not errs and event.currency == "EUR" and event.quantity == 1.5


def test_unknown_fields_are_ignored_and_not_forwarded() -> None:
    event, errs = errors(ok(loyalty_card="123"))
    assert not errs
    assert "loyalty_card" not in json.loads(event_to_json(event))


@pytest.mark.parametrize("raw", [b'{"a": 1, "a": 2}', b'{"amount": NaN}', b'[Infinity]', b"{"])
def test_parse_json_refuses_what_json_should_not_carry(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(raw)


@given(amount=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
       customer=st.text(min_size=1, max_size=128).filter(lambda s: s.strip() and not any(ord(c) < 32 or ord(c) == 127 for c in s)),
       minutes=st.integers(min_value=-60 * 24 * 365 * 60, max_value=60 * 23))
def test_canonical_form_round_trips(amount: float, customer: str, minutes: int) -> None:
    at = (NOW + timedelta(minutes=minutes)).isoformat()
    event, errs = errors(ok(amount=amount, customer_id=customer, occurred_at=at))
    assert not errs
    again, errs2 = errors(parse_json(event_to_json(event)))
    assert not errs2 and again == event


@given(amount=st.one_of(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
                        st.integers(-10**9, 10**9)),
       quantity=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6), st.integers(0, 10**6)),
       text=st.text(min_size=1, max_size=128), kind=st.sampled_from(EVENT_TYPES),
       zone=st.sampled_from(["Z", "+01:00", "-05:30", "+00:00"]))
@example(amount=1e-7, quantity=1e6, text="\u2028 é \"x\"\n", kind="transaction", zone="Z")
def test_the_published_form_holds_the_validated_event(amount: float, quantity: float | None,
                                                      text: str, kind: str, zone: str) -> None:
    """The canonical form is pydantic's compact JSON: the same JSON values as the standard
    library writes from ``model_dump(mode="json")`` (floats, ints, non-ASCII and escaped
    text, offsets), and read back it validates to the very same event."""
    obj: dict[str, Any] = {"event_id": "e-1", "type": kind, "customer_id": "c-1",
                           "occurred_at": f"2026-11-02T10:15:00.5{zone}", "amount": amount,
                           "quantity": quantity, "service": text, "category": text,
                           "currency": "eur", "severity": "high", "store_id": "s-1"}
    event, errs = validate_event(obj)
    assert event is not None, errs
    form = event_to_json(event)
    assert json.loads(form) == json.loads(json.dumps(event.model_dump(mode="json",
                                                                      exclude_none=True)))
    again, errs2 = validate_event(parse_json(form))
    assert not errs2 and again == event


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
_KEY = st.text(max_size=6)


def _outcome(fn: Callable[[bytes], Any], raw: bytes) -> object:
    try:
        return ("ok", fn(raw))
    except ValueError as exc:
        return ("error", str(exc))


@given(obj=st.dictionaries(_KEY, _SCALAR, max_size=6), dup=st.one_of(st.none(), _KEY),
       style=st.sampled_from(["compact", "ascii", "spaced", "default", "orjson"]))
@example(obj={"a": 'say "hi": ok', "b": 'x,', "c": 1}, dup=None, style="default")
@example(obj={"a": '",', "b": '":'}, dup="a", style="default")
@example(obj={"k": ", \"", "n": None}, dup=None, style="spaced")
def test_the_fast_path_gives_what_the_strict_parser_gives(obj: dict[str, object],
                                                          dup: str | None, style: str) -> None:
    """One compact flat object takes a fast path (orjson, then written back and compared
    byte for byte); whatever the spelling — escapes, spaces, big integers, a duplicate key —
    parse_json answers exactly as the strict parser does: the same object or the same error."""
    if style == "orjson":
        try:
            text = orjson.dumps(obj).decode()
        except TypeError:  # integers beyond 64 bits
            text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    elif style == "default":  # json.dumps as Python producers call it
        text = json.dumps(obj)
    else:
        text = json.dumps(obj, separators=(", ", ": ") if style == "spaced" else (",", ":"),
                          ensure_ascii=style == "ascii")
    if dup is not None:  # the same key twice, spelled as the rest
        comma, colon = (", ", ": ") if style in ("spaced", "default") else (",", ":")
        text = (text[:-1] + (comma if obj else "") + json.dumps(dup) + colon + "1" + comma
                + json.dumps(dup) + colon + "2}")
    raw = text.encode("utf-8", "surrogatepass")
    assert _outcome(parse_json, raw) == _outcome(_parse_strict, raw)


_JSON = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_KEY, inner, max_size=4)), max_leaves=12)


@given(value=st.one_of(st.lists(_JSON, max_size=4), st.dictionaries(_KEY, _JSON, max_size=4)),
       dup=st.one_of(st.none(), _KEY), spaced=st.booleans())
@example(value={"version": 1, "events": [{"a": 1}, {"a": 1, "b": [1.5, "x"]}]}, dup=None,
         spaced=False)
@example(value=[{"k": '{"k":1,"k":2}'}], dup=None, spaced=False)
def test_nested_compact_json_gives_what_the_strict_parser_gives(value: Any, dup: str | None,
                                                                 spaced: bool) -> None:
    """An envelope or a request's array of events, compact, takes the fast path too (read by
    orjson, written back, compared byte for byte). Nested anywhere — a duplicate key in an
    inner object, a NaN, an integer beyond 64 bits, spaces — parse_json answers exactly as
    the strict parser does."""
    text = json.dumps(value, separators=(", ", ": ") if spaced else (",", ":"),
                      ensure_ascii=False)
    if dup is not None:  # an inner object holding one key twice: [<value>,{"k":1,"k":2}]
        text = f'[{text},{{{json.dumps(dup)}:1,{json.dumps(dup)}:2}}]'
    raw = text.encode("utf-8", "surrogatepass")
    assert _outcome(parse_json, raw) == _outcome(_parse_strict, raw)
    assert _outcome(parse_json, raw.replace(b"1.5", b"NaN")) == \
        _outcome(_parse_strict, raw.replace(b"1.5", b"NaN"))


def test_deeply_nested_json_is_refused_as_the_strict_parser_refuses_it() -> None:
    """Nesting beyond orjson's limits falls to the strict parser: its answer, never a crash."""
    for depth in (200, 300, 1100, 100_000):
        raw = b"[" * depth + b"]" * depth
        assert _outcome(parse_json, raw) == _outcome(_parse_strict, raw)


def test_compact_and_json_dumps_default_spellings_take_the_fast_path() -> None:
    """The two spellings producers mostly send are read by orjson, not the strict parser."""
    event = {"event_id": "e-1", "type": "transaction", "customer_id": "c-1", "amount": 42.5,
             "occurred_at": "2026-11-02T10:15:00+00:00", "store_id": None, "refund": False}
    for text in (json.dumps(event), json.dumps(event, separators=(",", ":"))):
        assert _canonical(text.encode()) == event
    # a string holding the separators' bytes is read right, by the strict parser
    tricky = {**event, "note": 'said "ok": fine,'}
    assert _canonical(json.dumps(tricky).encode()) is None
    assert parse_json(json.dumps(tricky).encode()) == tricky
    # an envelope as the API writes it, and a request's array of events, compact
    from services.common.envelope import encode_envelopes

    envelope = encode_envelopes([event, {**event, "event_id": "e-2"}], 4)[0].value
    assert _canonical(envelope) == json.loads(envelope)
    assert _canonical(json.dumps([event], separators=(",", ":")).encode()) == [event]


def test_time_bounds_in_milliseconds_agree_with_the_exact_check() -> None:
    """The API and the scorer check a batch's event times against its bounds in epoch ms, a
    millisecond inside them, and only near or past them exactly (TimeBounds): at every
    distance from either bound, down to the microsecond, with or without extra age allowed
    (the scorer's wait in the topic), they accept and refuse what check_time_bounds does,
    with its message."""
    from services.common.events import TimeBounds, check_time_bounds, epoch_ms, validate_event_in

    wall = datetime(2026, 12, 3, 20, 0, 0, 123456, tzinfo=UTC)
    max_age, max_future = timedelta(days=400), timedelta(seconds=300)
    bounds = TimeBounds(wall, max_age, max_future)
    for waited_ms in (0, 2_500):
        age = max_age + timedelta(milliseconds=waited_ms)
        for edge in (wall + max_future, wall - age):
            for us in (-2001, -1000, -999, -1, 0, 1, 999, 1000, 2001):
                at = edge + timedelta(microseconds=us)
                obj = {"event_id": "e", "type": "visit", "customer_id": "c",
                       "occurred_at": at.isoformat()}
                event, ts, errors = validate_event_in(obj, bounds, 4, older_ms=waited_ms)
                exact, _ = validate_event(obj)
                assert exact is not None
                why = check_time_bounds(exact, now=wall, max_age=age, max_future=max_future)
                if why is None:
                    assert event == exact and ts == epoch_ms(exact.occurred_at) and not errors
                else:
                    assert event is None and [(e.index, e.field, e.message) for e in errors] \
                        == [(4, "occurred_at", why)]
