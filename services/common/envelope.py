"""Envelopes on the events topic: many events of one partition in one Kafka message.

The one definition of the format (docs/contract.md, "Envelopes"; schemas/envelope.schema.json).
A scorer that receives one Kafka message per event pays Faust's per-message cost (~100 µs) per
event; an envelope pays it once for up to :data:`MAX_EVENTS` events (issue 20).

A record is an envelope when it carries the header :data:`ENVELOPE_HEADER`
(``churnwatch-envelope``) whose value is the format version (``1``). Without that header a
record is a single event, exactly as before. The value is UTF-8 JSON::

    {"version": 1, "events": [{...event...}, {...event...}]}

- Every event is a complete event object as a single-event record would carry it (the same
  schema, ``schemas/event.schema.json``), with its own ``event_id``.
- Every event of an envelope belongs to one partition: the one a single-event record keyed by
  the event's ``customer_id`` (UTF-8) gets from Kafka's default partitioner
  (``murmur2(key) & 0x7fffffff % partitions``, the Java client's and aiokafka's). So one
  customer's events, single or enveloped, are on one partition, in the order they were
  written; within an envelope, in array order.
- The record's partition is set explicitly; its key is the ``customer_id`` of the envelope's
  first event (it hashes to that same partition, so a tool re-partitioning by key keeps
  envelopes where they are). The key is not "the customer of the record".
- Record headers apply to every event of the envelope (e.g. ``churnwatch-store-bound``).
- At most :data:`MAX_EVENTS` events and :data:`MAX_BYTES` bytes of value per envelope (an event
  larger than MAX_BYTES on its own, which the event schema's bounds make impossible for events
  the API accepted, travels alone in its envelope).

A consumer :func:`decode` s an envelope into one :class:`Item` per event: the parsed event
object, or the reason that element is not one (it is dead-lettered alone; the others are
processed). An envelope that cannot be read as a whole (not JSON, unknown version, no
``events`` array) is one error for the whole record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from aiokafka.partitioner import murmur2

from services.common.events import parse_json

ENVELOPE_HEADER = "churnwatch-envelope"
ENVELOPE_VERSION = 1
MAX_EVENTS = 500
MAX_BYTES = 512 * 1024
_PREFIX = b'{"version":%d,"events":[' % ENVELOPE_VERSION
_SUFFIX = b"]}"

Headers = Sequence[tuple[str, bytes]]


class Envelope(NamedTuple):
    """One Kafka record to send: partition set explicitly."""

    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Item:
    """One element of a decoded envelope: ``event`` (a JSON object, not yet validated as an
    event) or ``error`` (why this element cannot be one). ``index`` is its position in the
    envelope (-1 for an error about the whole envelope). ``raw`` is what to dead-letter for an
    error: the element's JSON (the whole record's value for index -1); for an event it is
    empty (not computed on the hot path): :func:`dead_letter_value` gives it."""

    index: int
    event: dict[str, Any] | None
    error: str | None
    raw: bytes = b""


def dead_letter_value(item: Item) -> bytes:
    """The bytes to put on the dead-letter topic for this element: the event alone, as a
    single-event record would carry it."""
    return item.raw if item.raw or item.event is None else _dumps(item.event)


def partition_for(customer_id: str | bytes, partitions_count: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed by this customer id."""
    if partitions_count < 1:
        raise ValueError("partitions_count must be at least 1")
    key = customer_id.encode() if isinstance(customer_id, str) else customer_id
    return (_murmur2(key) & 0x7FFFFFFF) % partitions_count


@lru_cache(maxsize=1 << 16)
def _murmur2(key: bytes) -> int:
    """aiokafka's murmur2 (pure Python, ~3 µs a key), remembered for the customers seen last:
    the scorer checks each customer of each envelope it opens, the API hashes each customer
    of each batch it publishes, and the same customers come back."""
    return murmur2(key)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_envelopes(events: Iterable[Mapping[str, Any] | tuple[bytes, bytes]],
                     partitions_count: int, *, headers: Headers | None = None,
                     max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES
                     ) -> list[Envelope]:
    """Group events by partition and chunk them into envelopes, keeping their order.

    An event is a JSON object (a mapping with ``customer_id``) or a ``(customer id, event
    JSON)`` pair as the API encodes them (the JSON bytes are embedded as they are). The
    result lists each partition's envelopes in event order; ``headers`` are added to each."""
    if max_events < 1 or max_bytes < 1:
        raise ValueError("max_events and max_bytes must be at least 1")
    extra = [(ENVELOPE_HEADER, str(ENVELOPE_VERSION).encode()), *(headers or ())]
    partition_of: dict[bytes, int] = {}
    groups: dict[int, list[tuple[bytes, bytes]]] = {}  # partition -> [(key, event JSON)]
    for e in events:
        if isinstance(e, tuple):
            key, form = e
        else:
            key, form = str(e["customer_id"]).encode(), _dumps(dict(e))
        p = partition_of.get(key)
        if p is None:
            p = partition_of[key] = partition_for(key, partitions_count)
        groups.setdefault(p, []).append((key, form))
    out: list[Envelope] = []
    overhead = len(_PREFIX) + len(_SUFFIX)
    for p in sorted(groups):
        chunk: list[bytes] = []
        first_key = b""
        size = overhead
        for key, form in groups[p]:
            grown = size + len(form) + (1 if chunk else 0)
            if chunk and (len(chunk) >= max_events or grown > max_bytes):
                out.append(Envelope(p, first_key, _PREFIX + b",".join(chunk) + _SUFFIX,
                                    list(extra)))
                chunk, size = [], overhead
                grown = size + len(form)
            if not chunk:
                first_key = key
            chunk.append(form)
            size = grown
        out.append(Envelope(p, first_key, _PREFIX + b",".join(chunk) + _SUFFIX,
                                    list(extra)))
    return out


def is_envelope(headers: Iterable[tuple[str, bytes]] | None) -> bool:
    """Whether a record with these headers is an envelope (else: a single event)."""
    return any(name == ENVELOPE_HEADER for name, _ in headers or ())


def _version(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    for name, value in headers or ():
        if name == ENVELOPE_HEADER:
            return bytes(value or b"")
    return None


def _whole(error: str, value: bytes | None) -> list[Item]:
    return [Item(-1, None, f"envelope: {error}", value or b"")]


def decode(value: bytes | None, headers: Iterable[tuple[str, bytes]] | None, *,
           partition: int | None = None, partitions_count: int | None = None) -> list[Item]:
    """The events of an envelope record, one :class:`Item` each, in order.

    A whole-envelope problem (wrong or missing version, not JSON, no ``events`` array, more
    than MAX_EVENTS) is one Item with ``index == -1``: dead-letter the record as it is.
    Otherwise an element that is not a JSON object is an Item with its ``error``; so is one
    whose ``customer_id`` belongs to another partition, when the record's ``partition`` and
    the topic's ``partitions_count`` are given (a producer that set the partition wrong would
    break that customer's order). The caller validates the others as events
    (``services.common.events.validate_event``) and dead-letters those one by one."""
    headers = list(headers or ())
    version = _version(headers)
    if version is None:
        return _whole(f"no {ENVELOPE_HEADER} header; this record is a single event", value)
    if version != str(ENVELOPE_VERSION).encode():
        return _whole(f"version {version[:20]!r} in the {ENVELOPE_HEADER} header is not "
                      f"supported (this consumer reads version {ENVELOPE_VERSION})", value)
    try:
        obj = parse_json(value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        return _whole(f"not valid JSON: {exc}", value)
    if not isinstance(obj, dict):
        return _whole('must be a JSON object {"version": 1, "events": [...]}', value)
    if obj.get("version") != ENVELOPE_VERSION or isinstance(obj.get("version"), bool):
        return _whole(f"\"version\" must be {ENVELOPE_VERSION} (got "
                      f"{str(obj.get('version'))[:20]!r})", value)
    events = obj.get("events")
    if not isinstance(events, list) or not events:
        return _whole('"events" must be a non-empty JSON array of events', value)
    if len(events) > MAX_EVENTS:
        return _whole(f'"events" holds {len(events)} events; at most {MAX_EVENTS}', value)
    check = partition is not None and partitions_count is not None
    items: list[Item] = []
    homes: dict[str, int] = {}  # an envelope groups each customer's events: hash each once
    for i, e in enumerate(events):
        if not isinstance(e, dict):
            items.append(Item(i, None, f"event {i} of the envelope: each event must be a JSON "
                                       "object", _dumps(e)))
            continue
        if check:
            customer = e.get("customer_id")
            if isinstance(customer, str):
                home = homes.get(customer)
                if home is None:
                    home = homes[customer] = partition_for(
                        customer, partitions_count)  # type: ignore[arg-type]
                if home != partition:
                    items.append(Item(i, None, (
                        f"event {i} of the envelope: customer_id {customer[:128]!r} belongs to "
                        f"partition {home}, this envelope is on partition {partition}; put each "
                        "event in an envelope on its customer's partition"), _dumps(e)))
                    continue
        items.append(Item(i, e, None))
    return items
