"""Hostile input at both doors: ``POST /v1/events`` of a running API, fuzzed with Hypothesis, and
garbage written straight to the events topic. Always a clear 4xx (or a dead-letter with its
reason), never a 500, never a poisoned scorer: whatever got a 202 is scored, once.

Real parts only: the API and the scorer run as ``churnwatch`` child processes against the
session's broker and Redis. Hypothesis is derandomized with a bounded number of examples, so
every run sends the same requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from services.common.events import TENANT_HEADER, epoch_ms
from services.common.kafka import make_producer
from services.common.redisconn import Keys, make_redis
from services.common.settings import Settings
from services.common.timefmt import parse_iso
from services.scoring.features import DAY_MS
from services.scoring.summary import Summary
from services.state.store import read_states
from tests.integration.test_scorer import customer_state, known, scorer, wait_processed
from tests.kafkatools import produce, read_all
from tests.procs import ServiceProcess
from tests.reliability import record

pytestmark = pytest.mark.integration

QUIET = {"sweep_interval_seconds": 3600.0, "model": "scorecard"}
BODY_LIMIT = 64 * 1024  # CHURNWATCH_MAX_BODY_BYTES of the fuzzed API: oversized bodies stay cheap
MAX_AGE_DAYS = 36_500
MAX_FUTURE_S = 86_400
FUZZ_EXAMPLES = 800
HERE = "tests/integration/test_hostile_input.py"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # the contract's tenant id


# ------------------------------------------------------------------------------------------
# What a request is expected to get, decided from the contract (not from the service's code)
# ------------------------------------------------------------------------------------------
ACCEPT, REFUSE, EITHER = "accept", "refuse", "either"


@dataclass
class Case:
    """One request: the body as sent, its headers, and what the contract says about it."""

    body: bytes
    content_type: str | None = "application/json"
    verdict: str = ACCEPT            # accept (202), refuse (4xx) or either
    status: int | None = None        # the exact 4xx, when the contract fixes it
    fields: set[str] = field(default_factory=set)  # a 422 must name one of these fields
    mentions: tuple[str, ...] = ()   # a refusal's detail must contain these
    what: str = ""
    stream: Callable[[], Iterator[bytes]] | None = None  # sent chunked, without Content-Length

    def refuse(self, status: int | None = None, *, fields: set[str] | None = None,
               mentions: tuple[str, ...] = (), what: str = "") -> Case:
        self.verdict = REFUSE
        self.status = status
        self.fields = fields or set()
        self.mentions += mentions
        self.what = f"{self.what}; {what}" if self.what else what
        return self


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def identifier_verdict(value: Any) -> str:
    """Identifiers: a string of 1-128 characters, no control characters, valid Unicode."""
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or _CONTROL.search(value):
        return REFUSE
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800 in the JSON text)
        return REFUSE
    return ACCEPT


# Hostile values per kind of field, each with the verdict the contract gives it.
HUGE = 10**400  # Python's json writes it as 401 digits; JSON has no limit, the API must have one
NUMBERS_BAD: list[Any] = [HUGE, -HUGE, 1e308, -1e308, "12.5", True, False, [1], {"v": 1}, "", None]
STRINGS_BAD: list[Any] = [HUGE, 1.5, True, ["x"], {"x": "y"}, "", "a\x00b", "tab\there", "\x7f",
                          "x" * 129, "\ud800", "\udfff-lone", None]
UNICODE = ["\u202eevil\u202c", "zero\u200bwidth\u200d", "😀🙈🇫🇷", "ﷺ", "Ä" * 120, "\U0010fffd",
           "\ufeffbom", "q\u0301", "ｆｕｌｌ", "ĉliënt", "עמית", "客户"]


def recent(now: datetime, minutes: int, offset: str) -> str:
    sign = 1 if offset[0] == "+" else -1
    hours, mins = int(offset[1:3]), int(offset[4:6])
    local = now - timedelta(minutes=minutes) + sign * timedelta(hours=hours, minutes=mins)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + (offset if offset != "+00:00" else "Z")


def timestamps(now: datetime) -> list[tuple[str, str]]:
    """(occurred_at, verdict): offsets, precision, and the edges of the accepted window."""
    ancient_edge = now - timedelta(days=MAX_AGE_DAYS)
    future_edge = now + timedelta(seconds=MAX_FUTURE_S)
    return [
        (recent(now, 30, "+14:00"), ACCEPT), (recent(now, 30, "-12:00"), ACCEPT),
        (recent(now, 30, "+05:45"), ACCEPT), (recent(now, 30, "+23:59"), ACCEPT),
        (recent(now, 30, "-00:00"), ACCEPT),
        (iso(now - timedelta(days=3)).replace("Z", "z"), ACCEPT),
        (iso(now - timedelta(days=3)).replace("T", " "), ACCEPT),
        ((now - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z"), ACCEPT),
        # 2 minutes inside the window's edges: accepted, and the scorer that reads them later
        # (its clock has moved on) must not dead-letter them
        (iso(ancient_edge + timedelta(minutes=2)), ACCEPT),
        (iso(future_edge - timedelta(minutes=2)), ACCEPT),
        (iso(ancient_edge - timedelta(minutes=2)), REFUSE),
        (iso(future_edge + timedelta(minutes=2)), REFUSE),
        ("0001-01-01T00:00:00+00:01", REFUSE), ("9999-12-31T23:59:59-00:01", REFUSE),
        ("0000-01-01T00:00:00Z", REFUSE), ("2026-02-30T10:00:00Z", REFUSE),
        ("2026-12-31T23:59:60Z", REFUSE), ("2026-01-05T10:00:00+24:00", REFUSE),
        ("2026-01-05T10:00:00+99:99", REFUSE), ("2026-01-05T10:00:00", REFUSE),
        ("2026-01-05", REFUSE), ("1767607200", REFUSE), ("yesterday", REFUSE),
        ("", REFUSE), ("２０２６-01-05T10:00:00Z", REFUSE),
    ]


# Fields each type carries, with a valid value builder: (name, kind)
KINDS = {
    "transaction": {"amount": "amount", "currency": "currency", "quantity": "quantity",
                    "staff_id": "id"},
    "visit": {"service": "text", "staff_id": "id", "duration_minutes": "duration"},
    "complaint": {"severity": "severity", "category": "text", "complaint_id": "id",
                  "status": "status"},
}
COMMON = {"event_id": "id", "customer_id": "id", "occurred_at": "time", "store_id": "id",
          "channel": "channel", "tenant_id": "tenant", "type": "type"}
REQUIRED = {"event_id", "customer_id", "occurred_at", "type"}
NULLABLE = {"store_id", "channel", "tenant_id", "currency", "quantity", "staff_id", "service",
            "duration_minutes", "category", "complaint_id"}


def value_verdict(kind: str, value: Any) -> str:
    """The contract's verdict on one value of one kind of field (schemas/, docs/contract.md)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "id":
        return identifier_verdict(value)
    if kind == "text":  # 1-128 characters, valid Unicode (control characters allowed)
        return identifier_verdict(_CONTROL.sub(" ", value)) if isinstance(value, str) else REFUSE
    if kind == "time":  # nothing but an RFC 3339 timestamp with an offset
        return EITHER if isinstance(value, str) and _RFC3339.match(value) else REFUSE
    if kind == "amount":
        return ACCEPT if number and -1e9 <= value <= 1e9 else REFUSE
    if kind == "quantity":
        return ACCEPT if number and 0 <= value <= 1_000_000 else REFUSE
    if kind == "duration":
        return ACCEPT if number and 0 <= value <= 1440 else REFUSE
    if kind == "currency":
        return ACCEPT if isinstance(value, str) and re.fullmatch(r"[A-Za-z]{3}", value) else REFUSE
    if kind == "severity":
        return ACCEPT if value in ("low", "medium", "high") else REFUSE
    if kind == "status":
        return ACCEPT if value in ("open", "resolved") else REFUSE
    if kind == "channel":
        return ACCEPT if value in ("in_store", "online", "phone", "app", "delivery", "other") \
            else REFUSE
    if kind == "tenant":
        return ACCEPT if isinstance(value, str) and _TENANT.match(value) else REFUSE
    if kind == "type":
        return ACCEPT if value in ("transaction", "visit", "complaint") else REFUSE
    return EITHER


def dumps(obj: Any) -> str:
    """Python's json: it writes NaN/Infinity and lone surrogates (as \\udXXX escapes)."""
    return json.dumps(obj, ensure_ascii=False) if _utf8_safe(obj) else json.dumps(obj)


def _utf8_safe(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ------------------------------------------------------------------------------------------
# Strategies: a near-valid event, then at most one mutation (of a field or of the raw text)
# ------------------------------------------------------------------------------------------
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


@st.composite
def events(draw: st.DrawFn, now: datetime, counter: Counter) -> tuple[dict[str, Any], str, set[str]]:
    """A valid event, maybe with one field made hostile: (event, verdict, fields to blame)."""
    n = counter.next()
    etype = draw(st.sampled_from(sorted(KINDS)))
    base: dict[str, Any] = {"event_id": f"hx-{n}", "type": etype, "customer_id": f"hc-{n}",
                            "occurred_at": iso(now - timedelta(minutes=n))}
    optional = {"store_id": "salon-downtown", "channel": "in_store", "amount": 12.5,
                "currency": "eur", "quantity": 2, "staff_id": "stylist-7", "service": "haircut",
                "duration_minutes": 45, "severity": "high", "category": "wait_time",
                "complaint_id": f"k-{n}", "status": "open"}
    if etype == "transaction":
        base["amount"] = draw(st.floats(-1e9, 1e9, allow_nan=False) | st.integers(-10**9, 10**9))
    for name in sorted(set(KINDS[etype]) | {"store_id", "channel"}):
        if name not in base and draw(st.booleans()):
            base[name] = optional[name]
    kinds = {**COMMON, **KINDS[etype]}
    how = draw(st.sampled_from(["valid", "value", "value", "unicode", "time", "drop", "extra"]))
    if how == "valid":
        return base, ACCEPT, set()
    if how == "drop":
        name = draw(st.sampled_from(sorted(REQUIRED - {"type"})))
        del base[name]
        return base, REFUSE, {name}
    if how == "extra":  # unknown fields are ignored, whatever they hold (nesting included)
        depth = draw(st.integers(1, 60))
        base[draw(st.sampled_from(["loyalty", "ünknown", "😀", "meta"]))] = \
            draw(st.sampled_from([[1] * 3, {"a": None}, "x" * 300, -HUGE])) if depth < 5 \
            else json.loads("[" * depth + "]" * depth)
        return base, ACCEPT, set()
    if how == "time":
        ts, verdict = draw(st.sampled_from(timestamps(now)))
        base["occurred_at"] = ts
        return base, verdict, {"occurred_at"}
    name = draw(st.sampled_from(sorted(kinds)))
    kind = kinds[name]
    if how == "unicode":
        prefix = draw(st.sampled_from(UNICODE))
        value: Any = (prefix + f"#{n}") if kind == "id" else prefix
    elif kind in ("amount", "quantity", "duration"):
        value = draw(st.sampled_from(NUMBERS_BAD) | st.floats(allow_nan=False, allow_infinity=False)
                     | st.integers(-10**30, 10**30))
    else:
        value = draw(st.sampled_from(STRINGS_BAD) | st.text(max_size=140))
    if name == "type" and value == "transaction" and "amount" not in base:
        return {**base, "type": value}, REFUSE, {"amount"}
    base[name] = value
    verdict = ACCEPT if value is None and name in NULLABLE else value_verdict(kind, value)
    return base, verdict, {name}


RAW_MUTATIONS = ["none", "none", "none", "batch", "batch", "nan", "dup", "truncate", "bom",
                 "badbytes", "surrogate_bytes", "deep", "top_scalar", "content_type",
                 "whitespace"]


@st.composite
def requests(draw: st.DrawFn, now: datetime, counter: Counter) -> Case:
    event, verdict, blame = draw(events(now, counter))
    mutation = draw(st.sampled_from(RAW_MUTATIONS))
    case = Case(body=dumps(event).encode("utf-8", "surrogatepass"), verdict=verdict, fields=blame,
                what=f"{mutation}: {json.dumps(event)[:300]}")
    if verdict == REFUSE:
        case.status = 422
    if mutation == "batch":
        more = [draw(events(now, counter)) for _ in range(draw(st.integers(1, 3)))]
        items = [(event, verdict, blame), *more]
        verdicts = {v for _, v, _ in items}
        case.body = dumps([e for e, _, _ in items]).encode("utf-8", "surrogatepass")
        case.verdict = REFUSE if REFUSE in verdicts else EITHER if EITHER in verdicts else ACCEPT
        case.fields = set().union(*(b for _, v, b in items if v != ACCEPT))
        case.status = 422 if case.verdict == REFUSE else None
    elif mutation == "nan":
        name = draw(st.sampled_from(["amount", "quantity", "duration_minutes", "store_id"]))
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        obj = {**event, name: float(literal.lower().replace("infinity", "inf"))}
        case.body = json.dumps(obj).encode()  # Python's json writes the bare literal
        case.status = None
        case.refuse(400, mentions=(literal, name), what="NaN/Infinity literal")
    elif mutation == "dup":
        name = draw(st.sampled_from(sorted(event)))
        text = case.body.decode("utf-8", "surrogatepass")
        case.body = (text[:-1] + f', "{name}": "other"' + "}").encode("utf-8", "surrogatepass")
        case.status = None
        case.refuse(400, mentions=("duplicate", name), what="duplicate key")
    elif mutation == "truncate":
        cut = draw(st.integers(0, max(0, len(case.body) - 1)))
        case.body = case.body[:cut]
        case.status = None
        case.refuse(400, what="truncated")
    elif mutation == "bom":  # a UTF-8 byte-order mark may be ignored (RFC 8259, 8.1)
        case.body = b"\xef\xbb\xbf" + case.body
    elif mutation == "whitespace":
        case.body = b" \n\t\r" + case.body + b"\n  "
    elif mutation == "badbytes":
        at = draw(st.integers(0, len(case.body)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\x80", b"\xf8\x88\x80\x80\x80"]))
        case.body = case.body[:at] + junk + case.body[at:]
        case.status = None
        case.refuse(400, what="not UTF-8")
    elif mutation == "surrogate_bytes":  # a UTF-16 surrogate encoded as UTF-8 bytes: invalid
        case.body = case.body.replace(b'"hc-', b'"\xed\xa0\x80hc-', 1)
        if b"\xed\xa0\x80" in case.body:
            case.status = None
            case.refuse(400, mentions=("UTF-8",), what="surrogate bytes")
    elif mutation == "deep":
        depth = draw(st.sampled_from([1_000, 10_000, 100_000]))
        case.body = b"[" * depth + case.body + b"]" * depth
        case.status = None
        if len(case.body) > BODY_LIMIT:
            case.refuse(413, mentions=(str(BODY_LIMIT),), what="deep and oversized")
        else:
            case.refuse(400, mentions=("nested",), what="deep nesting")
    elif mutation == "top_scalar":
        case.body = draw(st.sampled_from([b"42", b'"event"', b"null", b"true", b"-0.0", b"[]",
                                          b"[[]]", b"[null]", b"{}"]))
        case.status = None
        case.refuse(422, what="not an event")
    elif mutation == "content_type":
        ctype = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded",
                                      "multipart/form-data; boundary=x", "application/xml",
                                      "application/json; charset=utf-8",
                                      "application/cloudevents+json", None]))
        case.content_type = ctype
        if ctype and not ctype.startswith("application/json") and not ctype.endswith("+json"):
            case.status = None
            case.refuse(415, mentions=("application/json",), what="wrong content type")
    return case


def fixed_cases(now: datetime) -> list[Case]:
    """The named hostile inputs of the issue, each with its exact answer."""
    ok = {"event_id": "fx-1", "type": "transaction", "customer_id": "fx-c1",
          "occurred_at": iso(now - timedelta(hours=1)), "amount": 20}
    text = json.dumps(ok)
    big_unknown = json.dumps({**ok, "note": "n" * BODY_LIMIT}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield text[:-1].encode() + b', "note": "'
        for _ in range(BODY_LIMIT // 4096 + 1):
            yield b"x" * 4096
        yield b'"}'

    return [
        Case(text.encode(), what="valid"),
        Case(json.dumps({**ok, "amount": HUGE}).encode()).refuse(422, fields={"amount"}),
        Case(json.dumps({**ok, "event_id": HUGE}).encode()).refuse(422, fields={"event_id"}),
        Case(b'{"a": ' + b"1" * 5000 + b"}").refuse(400, mentions=("digits",)),
        Case(json.dumps({**ok, "amount": 1e308}).encode()).refuse(422, fields={"amount"}),
        Case(text.replace("20", "1e400").encode()).refuse(422, fields={"amount"}),
        Case(json.dumps({**ok, "amount": float("nan")}).encode()).refuse(400, mentions=("amount", "NaN")),
        Case(json.dumps([{**ok, "quantity": float("inf")}]).encode()).refuse(
            400, mentions=("quantity", "Infinity")),
        Case(text.replace('"customer_id": "fx-c1"', '"customer_id": "fx-c1", "customer_id": "fx-c2"')
             .encode()).refuse(400, mentions=("duplicate", "customer_id")),
        Case(b"[" * 10_000 + b"]" * 10_000).refuse(400, mentions=("nested",)),
        Case(b'{"a":' * 10_000 + b"1" + b"}" * 10_000).refuse(400, mentions=("nested",)),
        Case((text[:-1] + ', "x": ' + "[" * 5_000 + "]" * 5_000 + "}").encode()).refuse(
            400, mentions=("nested",)),
        Case(json.dumps({**ok, "type": json.loads("[" * 400 + "]" * 400)}).encode()).refuse(
            422, fields={"type"}),
        Case(big_unknown).refuse(413, mentions=(str(BODY_LIMIT),)),
        Case(b"", what="empty").refuse(400),
        Case(text.encode()[:-7]).refuse(400),
        Case(text.encode("utf-16")).refuse(400, mentions=("UTF-8",)),
        Case(text.encode().replace(b"fx-c1", b"fx-\xe9")).refuse(400, mentions=("UTF-8",)),
        Case(text.replace("fx-c1", "fx-\\ud800").encode()).refuse(422, fields={"customer_id"}),
        Case(json.dumps({**ok, "event_id": "fx-2", "customer_id": "😀\u200b\u202e"},
                        ensure_ascii=False).encode(), what="unicode id"),
        Case(json.dumps({**ok, "event_id": "fx-3", "occurred_at": "9999-12-31T23:59:59Z"}).encode()
             ).refuse(422, fields={"occurred_at"}, mentions=("future",)),
        Case(json.dumps({**ok, "event_id": "fx-4", "occurred_at": "1000-01-01T00:00:00+14:00"})
             .encode()).refuse(422, fields={"occurred_at"}, mentions=("older",)),
        Case(b"[]").refuse(422, mentions=("empty",)),
        Case(b"42").refuse(422), Case(b'"x"').refuse(422), Case(b"null").refuse(422),
        Case(text.encode(), content_type="text/plain").refuse(415, mentions=("application/json",)),
        Case(text.encode(), content_type="application/x-www-form-urlencoded").refuse(415),
        Case(text.encode(), content_type=None, what="no content type"),
        Case(json.dumps([ok]).replace("fx-1", "fx-5").encode(), what="batch of one"),
        # seconds inside the window's edges: accepted now, and still accepted by the scorer
        # that reads them later (an event must not age out while it waits in the topic)
        Case(json.dumps({**ok, "event_id": "fx-6", "customer_id": "fx-old", "occurred_at": iso(
            datetime.now(UTC) - timedelta(days=MAX_AGE_DAYS, seconds=-3))}).encode(), what="old edge"),
        Case(json.dumps({**ok, "event_id": "fx-7", "customer_id": "fx-new", "occurred_at": iso(
            datetime.now(UTC) + timedelta(seconds=MAX_FUTURE_S - 3))}).encode(), what="future edge"),
        Case(b"", stream=chunks, what="streamed, no Content-Length").refuse(
            413, mentions=(str(BODY_LIMIT),)),
    ]


# ------------------------------------------------------------------------------------------
# Sending and judging
# ------------------------------------------------------------------------------------------
@dataclass
class Tally:
    sent: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.answers.items() if s >= 500)

    @property
    def client_errors(self) -> int:
        return sum(n for s, n in self.answers.items() if 400 <= s < 500)


def send(client: httpx.Client, case: Case, tally: Tally) -> None:
    headers = {"content-type": case.content_type} if case.content_type else {}
    r = client.post("/v1/events", content=case.stream() if case.stream else case.body,
                    headers=headers)
    tally.sent += 1
    tally.answers[r.status_code] = tally.answers.get(r.status_code, 0) + 1
    problem = judge(case, r)
    if problem:
        tally.problems.append(f"{problem} [{case.what[:200]}] -> {r.status_code} {r.text[:300]}")
    elif r.status_code == 202:
        items = json.loads(case.body.decode("utf-8-sig"))
        tally.accepted += items if isinstance(items, list) else [items]


def judge(case: Case, r: httpx.Response) -> str | None:
    if r.status_code >= 500:
        return "server error"
    if r.status_code == 202:
        if case.verdict == REFUSE:
            return "accepted what the contract refuses"
        return None if r.json() == {"accepted": r.json().get("accepted")} else "odd 202 body"
    if not 400 <= r.status_code < 500:
        return "neither 202 nor 4xx"
    if case.verdict == ACCEPT:
        return "refused a valid request"
    try:
        body = r.json()
    except ValueError:
        return "4xx without a JSON body"
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str) or len(detail) < 10:
        return "4xx without a detail saying what to fix"
    if case.status and r.status_code != case.status:
        return f"expected {case.status}"
    text = detail + " " + json.dumps(body.get("errors", []), ensure_ascii=False)
    missing = [m for m in case.mentions if m not in text]
    if missing:
        return f"detail does not mention {missing}"
    if r.status_code == 422 and case.fields:
        named = {e.get("field") for e in body.get("errors", [])}
        if not named & case.fields:
            return f"422 names {sorted(map(str, named))}, not {sorted(case.fields)}"
    return None


async def scored(settings: Settings, accepted: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(lost, doubled, distinct): events of a 202 that are not applied and scored, and how
    many more applications the scorer counted than there were distinct events."""
    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    distinct = {(e.get("tenant_id") or "default", e["customer_id"], e["event_id"]) for e in accepted}
    when = {(e.get("tenant_id") or "default", e["customer_id"], e["event_id"]): e["occurred_at"]
            for e in accepted}
    lost = 0
    try:
        for tenant, cid, eid in sorted(distinct):
            st = (await read_states(redis, keys, [(tenant, cid)]))[0]
            summary = Summary.decode(st["sm"]) if st.get("sm") else Summary.empty()
            # The summary remembers ids of the last 30+ days of the customer's events; an older
            # one is checked by the applied count below.
            at = parse_iso(str(when[(tenant, cid, eid)]))
            recent = (summary.last_ts is not None and at is not None
                      and epoch_ms(at) >= summary.last_ts - 30 * DAY_MS)
            if "risk" not in st or (recent and not summary.knows(eid)):
                lost += 1
        stats = await redis.hgetall(keys.stats)
        applied = int(stats.get("events_applied_total", 0))
        lost = max(lost, len(distinct) - applied)
    finally:
        await redis.aclose()
    return lost, max(0, applied - len(distinct)), len(distinct)


# ------------------------------------------------------------------------------------------
# 1. POST /v1/events under Hypothesis, then the scorer eats whatever was accepted
# ------------------------------------------------------------------------------------------
async def test_ingest_fuzz_gets_clear_4xx_and_accepted_events_are_scored(
        settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(max_body_bytes=BODY_LIMIT, max_event_age_days=MAX_AGE_DAYS,
                                max_event_future_seconds=MAX_FUTURE_S, api_rate_limit_per_second=0,
                                **QUIET)
    now = datetime.now(UTC).replace(microsecond=0)
    tally = Tally()

    def fuzz_the_api() -> tuple[int, float, str]:
        """Hypothesis drives a blocking client: in a thread of its own, off the event loop."""
        started = time.monotonic()
        with ServiceProcess("api", settings, tmp_path / "api.log",
                            health_port_setting="api_port") as api, \
                httpx.Client(base_url=api.url, timeout=30) as client:
            for case in fixed_cases(now):
                send(client, case, tally)
            fixed = tally.sent
            counter = Counter()

            @hsettings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None,
                       deadline=None, phases=[Phase.explicit, Phase.generate],
                       suppress_health_check=list(HealthCheck), print_blob=False)
            @given(case=requests(now, counter))
            def fuzz(case: Case) -> None:
                send(client, case, tally)

            fuzz()
            fuzz_seconds = time.monotonic() - started
            assert client.get("/health").status_code == 200 and api.proc \
                and api.proc.poll() is None
            canary = {"event_id": "canary-1", "type": "visit", "customer_id": "canary",
                      "occurred_at": iso(datetime.now(UTC))}
            assert client.post("/v1/events", json=canary).status_code == 202
            tally.accepted.append(canary)
            return fixed, fuzz_seconds, (tmp_path / "api.log").read_text(errors="replace")

    fixed, fuzz_seconds, log = await asyncio.to_thread(fuzz_the_api)

    # the scorer reads every accepted record: none may be dead-lettered, all must be scored
    with scorer(settings, tmp_path):
        redis = make_redis(settings)
        try:
            await wait_processed(redis, settings, len(tally.accepted), timeout=60)
        finally:
            await redis.aclose()
    dead = await read_all(settings, settings.topic_events_dlq, idle_ms=300, timeout=10)
    lost, doubled, distinct = await scored(settings, tally.accepted)
    lost += len(dead)
    record(kind="fuzz", name="ingest-hypothesis-fuzz",
           tried="Hypothesis mutates near-valid events posted to POST /v1/events: wrong types, "
                 "huge numbers, NaN/Infinity, edge and absurd timestamps, unicode, deep nesting, "
                 "oversized bodies, duplicate keys, bad bytes, wrong Content-Type; then a scorer "
                 "reads every accepted event",
           load=f"{fixed} named hostile requests + {FUZZ_EXAMPLES} derandomized "
                "Hypothesis examples against one API process",
           checked="every answer a 202 or a 4xx whose JSON detail names what to fix, never a 5xx; "
                   "every event of a 202 scored once, none dead-lettered; the API stays healthy",
           sent=tally.sent + 1, lost=lost, doubled=doubled,
           test=f"{HERE}::test_ingest_fuzz_gets_clear_4xx_and_accepted_events_are_scored",
           measured={"answers": {str(k): v for k, v in sorted(tally.answers.items())},
                     "client_errors_4xx": tally.client_errors, "server_errors_5xx": tally.server_errors,
                     "accepted_events": distinct, "fixed_requests": fixed,
                     "fuzz_seconds": round(fuzz_seconds, 1)})
    assert tally.server_errors == 0
    assert not tally.problems, f"{len(tally.problems)} bad answers:\n" + "\n".join(tally.problems[:25])
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]
    assert not dead, [dict(r.headers) for r in dead[:5]]
    assert (lost, doubled) == (0, 0)
    assert tally.answers.get(202, 0) >= 20 and tally.client_errors >= 100, tally.answers


# ------------------------------------------------------------------------------------------
# 2. Garbage straight to the events topic
# ------------------------------------------------------------------------------------------
def garbage(now: datetime) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(name, key, value, a fragment the dead-letter reason must contain)."""
    at = iso(now - timedelta(hours=2))
    ev = {"event_id": "g-x", "type": "visit", "customer_id": "g-x", "occurred_at": at}
    return [
        ("not utf-8", b"k1", b"\xff\xfe\x00{", "UTF-8"),
        ("latin-1", b"k2", '{"event_id": "é"}'.encode("latin-1"), "UTF-8"),
        ("not json", b"k3", b"{not json", "not valid JSON"),
        ("empty", b"k4", b"", "not valid JSON"),
        ("json null", b"k5", b"null", "JSON object"),
        ("json array", b"k6", json.dumps([ev]).encode(), "JSON object"),
        ("json number", b"k7", b"42", "JSON object"),
        ("json string", None, b'"visit"', "JSON object"),
        ("missing fields", b"k8", b'{"type": "visit"}', "required"),
        ("unknown type", b"k9", json.dumps({**ev, "type": "refund"}).encode(), "type"),
        ("NaN literal", b"k10", json.dumps({**ev, "type": "transaction", "amount": float("nan")}).encode(),
         "amount"),
        ("duplicate keys", b"k11", json.dumps(ev)[:-1].encode() + b', "customer_id": "y"}', "duplicate"),
        ("1 MB value", b"k12", json.dumps({**ev, "customer_id": "c" * 1_000_000}).encode(),
         "customer_id"),
        ("deep nesting", b"k13", b"[" * 100_000 + b"]" * 100_000, "nested"),
        ("deep type", b"k14", json.dumps({**ev, "type": json.loads("[" * 200 + "]" * 200)}).encode(),
         "type"),
        ("lone surrogate", b"k15", json.dumps({**ev, "customer_id": "\ud800"}).encode(), "customer_id"),
        ("far future", b"k16", json.dumps({**ev, "occurred_at": "9999-12-31T23:59:59Z"}).encode(),
         "future"),
        ("ancient", b"k17", json.dumps({**ev, "occurred_at": "0001-01-01T00:00:00Z"}).encode(),
         "older"),
        ("tombstone without key", None, None, "nothing to erase"),
    ]


async def test_garbage_on_the_events_topic_is_dead_lettered_with_its_reason(
        settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(**QUIET)
    now = datetime.now(UTC).replace(microsecond=0)
    junk = garbage(now)

    def good(cid: str, n: int) -> list[tuple[bytes | None, bytes | None]]:
        return [(cid.encode(), json.dumps({
            "event_id": f"{cid}-{i}", "type": "transaction", "customer_id": cid, "amount": 30 + i,
            "occurred_at": iso(now - timedelta(days=n - i))}).encode()) for i in range(n)]

    before = good("g-before", 3) + good("g-erased", 3)
    after = good("g-after", 3) + good("g-after-2", 2)
    proc = scorer(settings, tmp_path)
    with proc:
        await produce(settings, settings.topic_events, before)
        await produce_odd(settings, [(k, v, []) for _, k, v, _ in junk])
        # a legitimate erasure: a null value keyed by the customer id, tenant header or not
        await produce_odd(settings, [(b"g-erased", None, []),
                                     (b"g-nobody", None, [(TENANT_HEADER, b"acme")])])
        await produce(settings, settings.topic_events, after)
        total = len(before) + len(junk) + 2 + len(after)
        redis = make_redis(settings)
        try:
            await wait_processed(redis, settings, total, timeout=60)
            pid = proc.proc.pid if proc.proc else None
            alive = bool(proc.proc and proc.proc.poll() is None)
            async with httpx.AsyncClient(timeout=5) as http:
                metrics = (await http.get(f"{proc.url}/metrics")).text
        finally:
            await redis.aclose()
    dead = await read_all(settings, settings.topic_events_dlq, expect=len(junk), idle_ms=500)
    log = (tmp_path / "scorer.log").read_text(errors="replace")

    by_value: dict[bytes | None, list[str]] = {}
    for r in dead:
        headers = dict(r.headers)
        by_value.setdefault(r.value, []).append(headers["churnwatch-error"].decode("utf-8"))
        assert headers["churnwatch-source"].decode().startswith(settings.topic_events + "/")
    missing = [name for name, _, value, reason in junk
               if not any(reason in why for why in by_value.get(value, []))]
    doubled = sum(len(v) - 1 for v in by_value.values() if len(v) > 1)
    unexpected = [v for v in by_value if v not in {value for _, _, value, _ in junk}]

    redis = make_redis(settings)
    try:
        lost = 0
        for cid, n in (("g-before", 3), ("g-after", 3), ("g-after-2", 2)):
            state = await customer_state(redis, settings, cid)
            ids = [f"{cid}-{i}" for i in range(n)]
            lost += n - len(known(state, ids)) + (0 if "risk" in state["st"] else 1)
        erased = await customer_state(redis, settings, "g-erased")
        stats = await redis.hgetall(Keys(settings.redis_prefix).stats)
    finally:
        await redis.aclose()
    record(kind="fuzz", name="events-topic-garbage",
           tried="garbage produced straight to the events topic between valid events: bad bytes, "
                 "not JSON, JSON null/array/number, missing fields, unknown type, NaN, duplicate "
                 "keys, a 1 MB value, 100,000-deep nesting, lone surrogates, absurd timestamps, a "
                 "keyless tombstone; plus two legitimate erasure tombstones",
           load=f"{len(junk)} garbage records, 2 erasure tombstones, {len(before) + len(after)} "
                "valid events, one scorer process",
           checked="each garbage record on the dead-letter topic once, with a readable reason; "
                   "tombstones erase and are not dead-lettered; valid events after the garbage "
                   "scored; the scorer never restarted",
           sent=total, lost=lost + len(missing), doubled=doubled,
           test=f"{HERE}::test_garbage_on_the_events_topic_is_dead_lettered_with_its_reason",
           measured={"dead_lettered": len(dead),
                     "dead_lettered_total_stat": int(stats.get("events_dead_lettered_total", 0))})
    assert alive and pid, f"the scorer died:\n{log[-3000:]}"
    assert "Traceback" not in log and "crashed" not in log.lower(), log[-3000:]
    assert not missing, f"not dead-lettered with the expected reason: {missing}\n" + \
        "\n".join(f"{str(v)[:60]}: {w}" for v, w in by_value.items())
    assert not unexpected, f"dead-lettered but not garbage: {[str(v)[:80] for v in unexpected]}"
    assert erased["st"] == {}
    assert 'churnwatch_scorer_dead_letters_total{reason="tombstone_without_key"} 1.0' in metrics
    assert (lost, doubled) == (0, 0)


async def produce_odd(settings: Settings, records: list[tuple[bytes | None, bytes | None,
                                                      list[tuple[str, bytes]]]]) -> None:
    """Records the helpers in tests.kafkatools cannot write: with headers, or with neither key
    nor value (aiokafka's send() refuses that; its batch API writes what the protocol allows)."""
    producer = make_producer(settings)
    await producer.start()
    try:
        for key, value, headers in records:
            if key is None and value is None:
                batch = producer.create_batch()
                batch.append(key=None, value=None, timestamp=None, headers=headers)
                await (await producer.send_batch(batch, settings.topic_events, partition=0))
            else:
                await (await producer.send(settings.topic_events, value, key=key, headers=headers))
    finally:
        await producer.stop()
