"""Envelopes on the events topic (services/common/envelope.py): encode, decode, the limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from services.common.envelope import (
    ENVELOPE_HEADER,
    MAX_BYTES,
    MAX_EVENTS,
    Item,
    dead_letter_value,
    decode,
    encode_envelopes,
    is_envelope,
    partition_for,
)
from services.common.events import STORE_BOUND_HEADER
from services.common.schemagen import generate

HEADERS = [(ENVELOPE_HEADER, b"1")]


def event(i: int, customer: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"e-{i}", "type": "visit", "customer_id": customer,
            "occurred_at": "2026-11-23T10:00:00Z", **extra}


def events_of(env_value: bytes) -> list[dict[str, Any]]:
    items = decode(env_value, HEADERS)
    assert all(it.error is None for it in items)
    return [it.event for it in items if it.event is not None]


def test_partition_is_kafkas_default_murmur2() -> None:
    # Java client's Utils.murmur2 test vectors (as signed ints), masked like its partitioner.
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
            b"a-little-bit-longer-string": -1486304829, b"abc": 479470107,
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    for key, h in java.items():
        for n in (1, 2, 3, 4, 7, 12, 1024):
            assert partition_for(key, n) == (h & 0x7FFFFFFF) % n
    assert partition_for("c-1", 4) == partition_for(b"c-1", 4)


def test_grouped_by_partition_every_event_once_order_kept_per_customer() -> None:
    customers = [f"c-{k}" for k in range(40)]
    evs = [event(i, customers[(i * 7) % 40]) for i in range(1000)]
    envs = encode_envelopes(evs, 4)
    seen: list[dict[str, Any]] = []
    for env in envs:
        assert (ENVELOPE_HEADER, b"1") in env.headers
        got = events_of(env.value)
        assert {partition_for(e["customer_id"], 4) for e in got} == {env.partition}
        assert partition_for(env.key, 4) == env.partition
        assert env.key == got[0]["customer_id"].encode()
        seen.extend(got)
    assert sorted(e["event_id"] for e in seen) == sorted(e["event_id"] for e in evs)
    for c in customers:  # the envelopes of a partition are listed in the order to send them
        assert [e["event_id"] for e in seen if e["customer_id"] == c] == \
            [e["event_id"] for e in evs if e["customer_id"] == c]
    assert len({env.partition for env in envs}) == 4


def test_chunks_by_count() -> None:
    evs = [event(i, "one-customer") for i in range(MAX_EVENTS * 2 + 1)]
    envs = encode_envelopes(evs, 3)
    assert [len(events_of(e.value)) for e in envs] == [MAX_EVENTS, MAX_EVENTS, 1]
    assert [e["event_id"] for env in envs for e in events_of(env.value)] == \
        [e["event_id"] for e in evs]
    small = encode_envelopes(evs[:10], 3, max_events=3)
    assert [len(events_of(e.value)) for e in small] == [3, 3, 3, 1]


def test_chunks_by_bytes() -> None:
    big = "x" * 10_000  # unknown fields travel as they are in a dict; ~10 KB per event
    evs = [event(i, "c-bytes", note=big) for i in range(200)]
    envs = encode_envelopes(evs, 2)
    assert len(envs) > 1
    assert all(len(e.value) <= MAX_BYTES for e in envs)
    assert sum(len(events_of(e.value)) for e in envs) == 200
    # exactly at the limit: a chunk fills up to max_bytes and not one byte more
    forms = [(b"c", json.dumps(event(i, "c")).encode()) for i in range(10)]
    overhead = len(b'{"version":1,"events":[]}')
    two = overhead + len(forms[0][1]) + 1 + len(forms[1][1])
    envs = encode_envelopes(forms, 1, max_bytes=two)
    assert [len(events_of(e.value)) for e in envs] == [2, 2, 2, 2, 2]
    assert all(len(e.value) <= two for e in envs)
    envs = encode_envelopes(forms, 1, max_bytes=two - 1)
    assert [len(events_of(e.value)) for e in envs] == [1] * 10
    # an event larger than the limit on its own still travels, alone
    envs = encode_envelopes(forms, 1, max_bytes=10)
    assert len(envs) == 10


def test_pairs_from_the_api_are_embedded_as_they_are_and_headers_added() -> None:
    form = b'{"event_id":"a","type":"visit","customer_id":"c\xc3\xa9","occurred_at":"2026-11-23T10:00:00Z"}'
    (env,) = encode_envelopes([("cé".encode(), form)], 8,
                              headers=[(STORE_BOUND_HEADER, b"1")])
    assert env.value == b'{"version":1,"events":[' + form + b"]}"
    assert env.partition == partition_for("cé", 8)
    assert env.headers == [(ENVELOPE_HEADER, b"1"), (STORE_BOUND_HEADER, b"1")]
    assert is_envelope(env.headers) and not is_envelope([(STORE_BOUND_HEADER, b"1")])
    assert not is_envelope(None) and not is_envelope([])


def test_poison_event_inside_an_envelope_is_reported_alone() -> None:
    value = json.dumps({"version": 1, "events": [
        event(0, "c"), "not an event", event(2, "c"), [1, 2], {"type": "visit"}]}).encode()
    items = decode(value, HEADERS)
    assert [it.index for it in items] == [0, 1, 2, 3, 4]
    assert [it.error is None for it in items] == [True, False, True, False, True]
    assert "event 1 of the envelope" in (items[1].error or "")
    assert dead_letter_value(items[1]) == b'"not an event"'
    assert dead_letter_value(items[3]) == b"[1,2]"
    # an object that is no valid event is the caller's to validate (validate_event) and to
    # dead-letter alone, as the event it is
    assert items[4].event == {"type": "visit"}
    assert json.loads(dead_letter_value(items[4])) == {"type": "visit"}


def test_event_on_the_wrong_partition_is_reported_alone() -> None:
    home = partition_for("c-a", 4)
    other = next(c for c in (f"c-{k}" for k in range(100)) if partition_for(c, 4) != home)
    value = json.dumps({"version": 1, "events": [event(0, "c-a"), event(1, other)]}).encode()
    items = decode(value, HEADERS, partition=home, partitions_count=4)
    assert items[0].error is None and items[1].event is None
    assert f"belongs to partition {partition_for(other, 4)}" in (items[1].error or "")
    assert all(it.error is None for it in decode(value, HEADERS))  # unchecked without them


@pytest.mark.parametrize("value,headers,fragment", [
    (b"{not json", HEADERS, "not valid JSON"),
    (b"\xff\xfe", HEADERS, "not UTF-8"),
    (b'{"version":1,"events":[],"version":1}', HEADERS, "duplicate key"),
    (b"[]", HEADERS, "must be a JSON object"),
    (b'{"version":2,"events":[{}]}', HEADERS, '"version" must be 1'),
    (b'{"version":true,"events":[{}]}', HEADERS, '"version" must be 1'),
    (b'{"events":[{}]}', HEADERS, '"version" must be 1'),
    (b'{"version":1,"events":[]}', HEADERS, "non-empty JSON array"),
    (b'{"version":1,"events":{}}', HEADERS, "non-empty JSON array"),
    (b'{"version":1,"events":[{}]}', [(ENVELOPE_HEADER, b"2")], "is not supported"),
    (b'{"version":1,"events":[{}]}', [], "single event"),
    (None, HEADERS, "not valid JSON"),
    (json.dumps({"version": 1, "events": [{}] * (MAX_EVENTS + 1)}).encode(), HEADERS,
     f"at most {MAX_EVENTS}"),
])
def test_unreadable_envelope_is_one_error_for_the_whole_record(value, headers, fragment) -> None:
    items = decode(value, headers)
    assert len(items) == 1
    (item,) = items
    assert item.index == -1 and item.event is None
    assert fragment in (item.error or ""), item.error
    assert dead_letter_value(item) == (value or b"")


def test_unknown_top_level_fields_are_ignored() -> None:
    value = json.dumps({"version": 1, "producer": "pos-7", "events": [event(0, "c")]}).encode()
    assert decode(value, HEADERS) == [Item(0, event(0, "c"), None)]


def test_encoded_envelopes_validate_against_the_schema() -> None:
    schemas = generate()
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values())
    validator = Draft202012Validator(schemas["envelope.schema.json"], registry=registry)
    for example in schemas["envelope.schema.json"]["examples"]:
        validator.validate(example)
        assert all(it.error is None for it in decode(json.dumps(example).encode(), HEADERS))
    for env in encode_envelopes([event(i, f"c-{i % 3}") for i in range(20)], 2):
        validator.validate(json.loads(env.value))
    with pytest.raises(Exception, match="is too long"):
        validator.validate({"version": 1, "events": [event(0, "c")] * (MAX_EVENTS + 1)})


def test_the_contracts_example_is_a_valid_envelope() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text()
    section = text.split("### Envelopes", 1)[1].split("\n### ", 1)[0]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    schemas = generate()
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values())
    Draft202012Validator(schemas["envelope.schema.json"], registry=registry).validate(example)
    items = decode(json.dumps(example).encode(), HEADERS)
    assert [it.event for it in items] == example["events"]
    (env,) = encode_envelopes(example["events"], 12)
    assert json.loads(env.value) == example and env.key == b"c-1042"
