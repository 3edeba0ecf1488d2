"""The notifier against the real broker and Redis, with real SMTP/HTTP receivers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis

from services.alerting.webhooks import add_subscription
from services.cli.sinks import Sinks
from services.common.embedded import free_port
from services.common.kafka import end_offsets, make_consumer, make_producer
from services.common.redisconn import Keys
from services.common.riskchange import (
    Cause,
    Reason,
    RiskChange,
    SuggestedAction,
    encode_cloudevent,
    to_cloudevent,
)
from services.common.settings import Settings
from services.notifier.applied import AppliedMark
from services.notifier.channels.base import delivery_id
from services.notifier.signing import verify
from services.notifier.worker import run_notifier
from tests.kafkatools import produce, read_all
from tests.peers import LoopbackHttp

pytestmark = pytest.mark.integration

SECRET = "test-webhook-secret-0123456789"
SMS_TOKEN = "sms-token-0123456789"


# helpers ------------------------------------------------------------------------------


def risk_change(customer_id: str, *, previous: str = "low", tier: str = "high",
                cause_event: str = "e-1") -> RiskChange:
    return RiskChange(
        customer_id=customer_id, store_id="salon-downtown", previous_tier=previous,  # type: ignore[arg-type]
        tier=tier, score=0.81, previous_score=0.22,  # type: ignore[arg-type]
        reasons=[Reason(code="overdue", text="63 days since the last visit; usually every 28 days",
                        text_zh="距上次到店已63天；平时每28天一次", weight=1.9)],
        suggested_action=SuggestedAction(code="personal_call", text="Call the customer personally",
                                         text_zh="亲自致电客户"),
        value_tier="high", lifecycle_stage="active", model_version="scorecard-1",
        as_of=datetime(2026, 11, 23, 10, tzinfo=UTC), cause=Cause(kind="event", event_id=cause_event),
        features={"days_since_last_activity": 63.0},
    )


def cloudevent(customer_id: str, **kwargs: Any) -> tuple[str, bytes]:
    event = to_cloudevent(risk_change(customer_id, **kwargs))
    return event["id"], encode_cloudevent(event)


async def produce_changes(settings: Settings, *records: tuple[str, bytes]) -> None:
    await produce(settings, settings.topic_risk_changes, [(k.encode(), v) for k, v in records])


async def wait_until(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or check}")
        await asyncio.sleep(0.05)


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def deliveries(registry: CollectorRegistry, channel: str, outcome: str) -> float:
    return metric(registry, "churnwatch_notifier_deliveries_total", channel=channel, outcome=outcome)


class Receiver(LoopbackHttp):
    """A webhook receiver answering the given statuses in turn (then ``then``)."""

    path = "/hook"

    def __init__(self, statuses: list[int | tuple[int, dict[str, str]]] | None = None, *,
                 then: int = 200):
        super().__init__()
        self.statuses = list(statuses or [])
        self.then = then
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        answer = self.statuses.pop(0) if self.statuses else self.then
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.Response(status=status, text="ok" if status < 300 else "nope", headers=headers)


@asynccontextmanager
async def notifier(settings: Settings) -> AsyncIterator[CollectorRegistry]:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, stop=stop, registry=registry))
    try:
        yield registry
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def read_dlq(settings: Settings, count: int) -> list[Any]:
    records = await read_all(settings, settings.topic_notifications_dlq, expect=count, idle_ms=300)
    assert len(records) == count, f"expected {count} DLQ record(s), found {len(records)}"
    return records


@pytest.fixture
def fast(settings_factory) -> Settings:
    return settings_factory(delivery_backoff_base_seconds=0.2, delivery_backoff_max_seconds=1.0,
                            delivery_max_attempts=3, webhook_allow_private=True,
                            webhook_timeout_seconds=3.0, notifier_metrics_port=free_port())


# tests --------------------------------------------------------------------------------


async def test_fans_out_to_webhook_email_and_sms_once_per_target(
        fast: Settings, redis: Redis, tmp_path: Path) -> None:
    sinks = Sinks(out_dir=tmp_path / "out")
    ports = await sinks.start()
    try:
        settings = fast.model_copy(update={
            "smtp_host": "127.0.0.1", "smtp_port": ports["smtp"],
            "sms_gateway_url": f"http://127.0.0.1:{ports['sms']}/sms",
            "sms_gateway_token": SecretStr(SMS_TOKEN),
        })
        keys = Keys(settings.redis_prefix)
        sub = await add_subscription(redis, keys, url=f"http://127.0.0.1:{ports['webhook']}/webhook",
                                     secret=SECRET)
        assert "secret" not in sub
        event_id, raw = cloudevent("c-1042")
        # Published twice: every target must still get it exactly once.
        await produce_changes(settings, ("c-1042", raw), ("c-1042", raw))

        async with notifier(settings) as registry:
            await wait_until(lambda: all(
                deliveries(registry, ch, "delivered") == 1 and
                deliveries(registry, ch, "skipped_duplicate") == 1
                for ch in ("email", "sms", "webhook")), what="one delivery + one skip per channel")
            async with httpx.AsyncClient() as client:
                base = f"http://127.0.0.1:{settings.notifier_metrics_port}"
                assert (await client.get(f"{base}/health")).status_code == 200
                text = (await client.get(f"{base}/metrics")).text
            assert 'churnwatch_notifier_deliveries_total{channel="webhook",outcome="delivered"} 1.0' in text
            assert metric(registry, "churnwatch_notifier_risk_changes_consumed_total") == 2

        out = tmp_path / "out"
        # Webhook: the raw CloudEvent bytes, signed, with a delivery id.
        [hook] = [json.loads(line) for line in (out / "webhooks.ndjson").read_text().splitlines()]
        headers = {k.lower(): v for k, v in hook["headers"].items()}
        assert hook["body"].encode() == raw
        assert headers["content-type"] == "application/cloudevents+json"
        assert verify(SECRET, headers["churnwatch-signature"], raw, 60)
        assert headers["churnwatch-delivery"] == delivery_id(event_id, "webhook", sub["id"])

        # Email: one mail, multipart, Message-ID derived from the delivery id.
        [eml] = list((out / "mail").glob("*.eml"))
        mail = message_from_bytes(eml.read_bytes(), policy=default_policy)
        did = delivery_id(event_id, "email", "manager@churnwatch.local")
        assert mail["Message-ID"] == f"<{did}@localhost>"
        assert "manager@churnwatch.local" in mail["To"] and "c-1042" in mail["Subject"]
        body = mail.get_body(preferencelist=("plain",))
        assert body is not None
        plain = body.get_content()
        assert "63 days since the last visit" in plain and "Call the customer personally" in plain
        assert mail.get_body(preferencelist=("html",)) is not None
        assert len((out / "mail.log").read_text().splitlines()) == 1

        # SMS: json style, bearer token and signature.
        [sms] = [json.loads(line) for line in (out / "sms.ndjson").read_text().splitlines()]
        assert (sms["style"], sms["to"], sms["from"]) == ("json", "+15550100000", "churnwatch")
        assert "c-1042" in sms["text"] and sms["authorization"] == "Bearer"
        assert sms["idempotency_key"] == delivery_id(event_id, "sms", "+15550100000")

        # Delivery log: one entry per target, masked.
        log = [json.loads(x) for x in await redis.lrange(keys.delivery_log("c-1042"), 0, -1)]
        assert sorted((e["channel"], e["status"]) for e in log) == [
            ("email", "delivered"), ("sms", "delivered"), ("webhook", "delivered")]
        targets = {e["channel"]: e["target"] for e in log}
        assert targets["email"] == "m***@churnwatch.local"
        assert targets["sms"].endswith("000") and "+1555" not in targets["sms"]

        # A restart that reads the topic again (new group) delivers nothing twice.
        again = settings.model_copy(update={"notifier_group": settings.notifier_group + "-2"})
        async with notifier(again) as registry:
            await wait_until(lambda: all(deliveries(registry, ch, "skipped_duplicate") == 2
                                         for ch in ("email", "sms", "webhook")),
                             what="everything skipped after the restart")
            assert all(deliveries(registry, ch, "delivered") == 0 for ch in ("email", "sms", "webhook"))
        assert len((out / "webhooks.ndjson").read_text().splitlines()) == 1
        assert len(list((out / "mail").glob("*.eml"))) == 1
    finally:
        await sinks.stop()


async def test_retryable_failure_is_retried_with_the_same_delivery_id(
        fast: Settings, redis: Redis) -> None:
    keys = Keys(fast.redis_prefix)
    # One 500 asking for a 1 s pause, then 200s.
    async with Receiver([(500, {"Retry-After": "1"})]) as flaky:
        sub = await add_subscription(redis, keys, url=flaky.url, secret=SECRET)
        first_id, first = cloudevent("c-7", previous="high", tier="low", cause_event="e-1")
        second_id, second = cloudevent("c-7", previous="low", tier="medium", cause_event="e-2")
        await produce_changes(fast, ("c-7", first), ("c-7", second))
        async with notifier(fast) as registry:
            await wait_until(lambda: deliveries(registry, "webhook", "delivered") == 2,
                             what="both delivered after the pause")
            await asyncio.sleep(0.5)  # nothing else arrives afterwards
            await wait_until(lambda: metric(registry, "churnwatch_notifier_retry_queue_depth") == 0,
                             what="an empty retry queue")
            # first: failed once; second: queued untried while the receiver was paused.
            assert deliveries(registry, "webhook", "retry") == 2
        first_did = delivery_id(first_id, "webhook", sub["id"])
        second_did = delivery_id(second_id, "webhook", sub["id"])
        seen = [h["Churnwatch-Delivery"] for h, _ in flaky.requests]
        assert seen[0] == first_did and sorted(seen) == sorted([first_did, first_did, second_did])
        assert all(verify(SECRET, h["Churnwatch-Signature"], body, 60) for h, body in flaky.requests)
        assert {body for h, body in flaky.requests if h["Churnwatch-Delivery"] == first_did} == {first}
        for did in (first_did, second_did):
            assert await redis.get(keys.delivery(did)) == "delivered"
        assert await redis.zcard(keys.retry_queue) == 0
        log = [json.loads(x) for x in await redis.lrange(keys.delivery_log("c-7"), 0, -1)]
        assert [e["status"] for e in log if e["delivery_id"] == first_did] == ["delivered", "retrying"]
        assert [e["attempts"] for e in log if e["delivery_id"] == first_did] == [2, 1]


async def test_permanent_failures_and_exhausted_retries_are_dead_lettered(
        fast: Settings, redis: Redis) -> None:
    keys = Keys(fast.redis_prefix)
    async with Receiver(then=400) as rejecting, Receiver(then=503) as down:
        bad = await add_subscription(redis, keys, url=rejecting.url, secret=SECRET)
        gone = await add_subscription(redis, keys, url=down.url, secret=SECRET)
        event_id, raw = cloudevent("c-9")
        await produce_changes(fast, ("c-9", raw))
        async with notifier(fast) as registry:
            await wait_until(lambda: metric(registry, "churnwatch_notifier_dead_letters_total",
                                            channel="webhook") == 2, what="two dead letters")
            await asyncio.sleep(0.6)
        assert len(rejecting.requests) == 1  # 400: not retried
        assert len(down.requests) == fast.delivery_max_attempts
        records = await read_dlq(fast, 2)
        letters = {json.loads(r.value)["delivery_id"]: (r, json.loads(r.value)) for r in records}
        record, letter = letters[delivery_id(event_id, "webhook", bad["id"])]
        assert letter["attempts"] == 1 and "HTTP 400" in letter["reason"]
        assert letter["channel"] == "webhook" and letter["event"]["id"] == event_id
        assert letter["target"] == f"http://127.0.0.1:{rejecting.url.split(':')[2].split('/')[0]}/…"
        assert dict(record.headers)["reason"].decode().startswith("webhook")
        assert record.key == b"c-9"
        _, letter = letters[delivery_id(event_id, "webhook", gone["id"])]
        assert letter["attempts"] == 3 and letter["reason"].startswith("gave up after 3 attempts")
        assert {h["Churnwatch-Delivery"] for h, _ in down.requests} == {letter["delivery_id"]}
        assert await redis.get(keys.delivery(letter["delivery_id"])) == "failed"


async def test_unreadable_records_go_to_the_dlq_and_the_worker_carries_on(
        fast: Settings, redis: Redis) -> None:
    keys = Keys(fast.redis_prefix)
    async with Receiver() as ok:
        await add_subscription(redis, keys, url=ok.url, secret=SECRET)
        _, raw = cloudevent("c-5")
        broken = json.loads(raw)
        broken["data"]["tier"] = "extreme"
        await produce_changes(fast, ("c-5", b"\xff\x00 garbage"), ("c-5", b'{"specversion": "0.3"}'),
                      ("c-5", json.dumps(broken).encode()), ("c-5", raw))
        async with notifier(fast) as registry:
            await wait_until(lambda: len(ok.requests) == 1, what="the valid event delivered")
            assert metric(registry, "churnwatch_notifier_dead_letters_total", channel="input") == 3
        records = sorted(await read_dlq(fast, 3), key=lambda r: r.offset)
        reasons = [dict(r.headers)["reason"].decode() for r in records]
        assert reasons[0].startswith("not UTF-8 JSON")
        assert "specversion" in reasons[1]
        assert reasons[2].startswith("data is not a RiskChange: tier")
        assert records[0].value == b"\xff\x00 garbage"
        assert all(dict(r.headers)["kind"] == b"invalid-record" for r in records)
        assert ok.requests[0][1] == raw


async def test_sms_gateway_styles(tmp_path: Path) -> None:
    from base64 import b64decode

    from services.notifier.channels.base import Message
    from services.notifier.channels.sms import SmsChannel

    message = Message(delivery_id="d-1", channel="sms", event_id="e-1", customer_id="c-1",
                      to="+15550100000", event=b"{}", text="churnwatch: customer c-1 is high risk")
    async with Receiver() as gateway:
        json_style = SmsChannel(url=gateway.url, style="json", sender="churnwatch",
                                token=SMS_TOKEN, username=None, timeout_s=3)
        form_style = SmsChannel(url=gateway.url, style="form", sender="+15550199999",
                                token=SMS_TOKEN, username="AC123", timeout_s=3)
        await json_style.send(message)
        await form_style.send(message)
        await json_style.aclose()
        await form_style.aclose()
    (jh, jbody), (fh, fbody) = gateway.requests
    assert json.loads(jbody) == {"from": "churnwatch", "to": "+15550100000", "text": message.text}
    assert jh["Authorization"] == f"Bearer {SMS_TOKEN}"
    assert verify(SMS_TOKEN, jh["X-Churnwatch-Signature"], jbody, 60)
    assert fh["Content-Type"] == "application/x-www-form-urlencoded"
    assert b64decode(fh["Authorization"].split()[1]).decode() == f"AC123:{SMS_TOKEN}"
    assert b"To=%2B15550100000" in fbody and b"From=%2B15550199999" in fbody and b"Body=" in fbody

    sinks = Sinks(out_dir=tmp_path)
    ports = await sinks.start()
    try:
        url = f"http://127.0.0.1:{ports['sms']}/sms"
        channel = SmsChannel(url=url, style="form", sender="cw", token=None, username=None,
                             timeout_s=3)
        await channel.send(message)
        await channel.aclose()
        async with httpx.AsyncClient() as client:
            assert (await client.post(url, json={"text": "no recipient"})).status_code == 400
    finally:
        await sinks.stop()
    [line] = (tmp_path / "sms.ndjson").read_text().splitlines()
    assert json.loads(line) | {"at": None} == {
        "at": None, "style": "form", "from": "cw", "to": "+15550100000", "text": message.text,
        "authorization": None, "signature": None, "idempotency_key": "d-1"}


def test_sinks_main_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from services.common.embedded import wait_for_port

    smtp, http = free_port(), free_port()
    code = ("import logging, pathlib, sys; from services.cli.sinks import main; "
            f"sys.exit(main(smtp_port={smtp}, sms_port={http}, webhook_port={http}, "
            f"out_dir=pathlib.Path({str(tmp_path)!r})))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for_port(smtp, proc=proc)  # type: ignore[arg-type]
        wait_for_port(http, proc=proc)  # type: ignore[arg-type]
        response = httpx.post(f"http://127.0.0.1:{http}/webhook", content=b'{"x":1}',
                              headers={"Churnwatch-Delivery": "d-9"})
        assert response.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out == b""
    [line] = (tmp_path / "webhooks.ndjson").read_text().splitlines()
    assert json.loads(line)["body"] == '{"x":1}'


async def test_a_change_published_before_the_customers_erasure_is_not_delivered(
        fast: Settings, redis: Redis) -> None:
    """The notifier replaying (or catching up on) risk changes of a customer erased since
    they were published sends nothing about them; others' changes go out as usual."""
    from services.common import pseudonym
    from services.state.store import StateStore

    keys = Keys(fast.redis_prefix)
    async with Receiver() as hook:
        await add_subscription(redis, keys, url=hook.url, secret=SECRET)
        _, gone = cloudevent("gone-1", previous="low", tier="high", cause_event="e-1")
        kept_id, kept = cloudevent("kept-1", previous="low", tier="high", cause_event="e-1")
        await produce_changes(fast, ("gone-1", gone), ("kept-1", kept))
        # the scorer processed gone-1's tombstone after both were published
        key = await pseudonym.load_key(fast, redis)
        await StateStore.from_settings(redis, fast).record_erasure(
            "default", pseudonym.pseudonym(key, "default", "gone-1"), 0, 99,
            at_ms=int(time.time() * 1000) + 1000, keep_ms=3_600_000)
        async with notifier(fast) as registry:
            await wait_until(lambda: deliveries(registry, "webhook", "delivered") == 1,
                             what="the kept customer's change delivered")
            await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                            reason="erased") == 1, what="the erased one ignored")
        assert [json.loads(body)["id"] for _, body in hook.requests] == [kept_id]
        assert not await redis.exists(keys.delivery_log("gone-1"))


async def test_a_damaged_escalation_entry_is_dropped_and_stops_no_other(
        fast: Settings, redis: Redis) -> None:
    """One unreadable escalation entry (a hand edit, a bug of an older version) is logged and
    dropped; the due escalations after it still run (before, it raised on every tick and the
    retry queue behind it in the same tick never ran)."""
    from services.alerting.escalation import Escalations
    from services.alerting.inbound import decode_risk_change

    keys = Keys(fast.redis_prefix)
    esc = Escalations(redis, keys, after_s=0)
    good_id, good = cloudevent("esc-1", previous="low", tier="high", cause_event="e-1")
    await esc.prepare(decode_risk_change(good), created_ms=1, armers=["r1"])
    await esc.arm(good_id, "r1", now_ms=1)
    await redis.hset(keys.escalation_data, "broken", "{not json")
    await redis.zadd(keys.escalation_queue, {"broken": 0})
    escalated: list[str] = []

    async def escalate(event: Any, created_ms: int) -> None:
        escalated.append(event.id)

    assert await esc.run_due(now_ms=10, escalate=escalate) == 1
    assert escalated == [good_id]
    assert await redis.zcard(keys.escalation_queue) == 0
    assert not await redis.hexists(keys.escalation_data, "broken")


async def test_an_escalation_entry_no_delivery_armed_is_dropped_a_week_on(
        fast: Settings, redis: Redis) -> None:
    """A high alert's escalation is prepared before its delivery; one never delivered to an
    armer (held back as a duplicate, given up, or received by the manager alone and never
    moved) stayed in the hash for good, a raw CloudEvent each. A week on it is dropped; an
    armed one waits for its due time, and entries of an older version are found at start."""
    from services.alerting.escalation import UNARMED_TTL_S, Escalations
    from services.alerting.inbound import decode_risk_change

    keys = Keys(fast.redis_prefix)
    esc = Escalations(redis, keys, after_s=30 * 86_400)  # the armed one is not due yet
    armed_id, armed = cloudevent("esc-a", previous="low", tier="high", cause_event="e-a")
    idle_id, idle = cloudevent("esc-i", previous="low", tier="high", cause_event="e-i")
    now = int(time.time() * 1000)
    await esc.prepare(decode_risk_change(armed), created_ms=now, armers=["r1"])
    await esc.prepare(decode_risk_change(idle), created_ms=now, armers=["r1"])
    assert await esc.arm(armed_id, "r1", now_ms=now)
    await redis.hset(keys.escalation_data, "old-version", json.dumps(  # type: ignore[misc]
        {"event": idle.decode(), "created_ms": 1, "armers": []}))
    assert await esc.note_unnoted(now_ms=now) == 1  # the notifier's start
    assert await esc.note_unnoted(now_ms=now) == 0
    day_before = now + UNARMED_TTL_S * 1000 - 86_400_000
    assert await esc.run_due(now_ms=day_before, escalate=_never) == 0
    assert await redis.hlen(keys.escalation_data) == 3  # type: ignore[misc]
    week_on = now + UNARMED_TTL_S * 1000 + 1000
    assert await esc.prune(now_ms=week_on) == 2
    assert await redis.hkeys(keys.escalation_data) == [armed_id]  # type: ignore[misc]
    assert await redis.zcard(keys.escalation_prepared) == 0
    assert await redis.zscore(keys.escalation_queue, armed_id)  # still due in its time


async def _never(event: Any, created_ms: int) -> None:
    raise AssertionError(f"nothing is due: {event.id}")


async def test_a_planning_bug_is_loud_retried_then_dead_letters_only_its_record(
        fast: Settings, redis: Redis, tmp_path: Path) -> None:
    """A bug while planning one change (a TypeError, not bad input) is logged at ERROR and
    counted each time, retried with its batch (PLAN_ATTEMPTS in all), then that one record
    goes to the DLQ saying so; the other changes are delivered once."""
    from services.common.profiles import ProfileStore
    from services.notifier.recipients import ProfileRecipientResolver
    from services.notifier.routing import load_routing
    from services.notifier.worker import PLAN_ATTEMPTS

    keys = Keys(fast.redis_prefix)

    class Buggy(ProfileRecipientResolver):
        async def context(self, change: Any) -> Any:
            if change.customer_id == "bug-1":
                raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")
            return await super().context(change)

    resolver = Buggy(ProfileStore(redis, keys), load_routing(fast.routing_file))
    sinks = Sinks(out_dir=tmp_path / "out")  # staff e-mail on: planning asks the resolver
    ports = await sinks.start()
    fast = fast.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": ports["smtp"]})
    async with Receiver() as hook:
        await add_subscription(redis, keys, url=hook.url, secret=SECRET)
        _, bad = cloudevent("bug-1", previous="low", tier="high", cause_event="e-1")
        ok_id, ok = cloudevent("ok-1", previous="low", tier="high", cause_event="e-1")
        await produce_changes(fast, ("bug-1", bad), ("ok-1", ok))
        registry = CollectorRegistry()
        stop = asyncio.Event()
        task = asyncio.create_task(run_notifier(fast, stop=stop, registry=registry,
                                                resolver=resolver))
        try:
            await wait_until(lambda: metric(registry, "churnwatch_notifier_dead_letters_total",
                                            channel="input") == 1, timeout=30,
                             what="the buggy record dead-lettered")
            await wait_until(lambda: deliveries(registry, "webhook", "delivered") >= 1,
                             what="the other change delivered")
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)
            await sinks.stop()
    assert metric(registry, "churnwatch_notifier_unexpected_errors_total",
                  step="plan") == PLAN_ATTEMPTS
    [dead] = await read_dlq(fast, 1)
    assert dict(dead.headers).get("reason", b"").decode().startswith(
        f"planning failed {PLAN_ATTEMPTS} times: TypeError")
    assert [json.loads(body)["id"] for _, body in hook.requests] == [ok_id]


async def erased_in_ledger(settings: Settings, redis: Redis, customer: str, *, at_ms: int) -> None:
    """Record ``customer``'s erasure in the tenant's ledger as the scorer does."""
    from services.common import pseudonym
    from services.state.store import StateStore

    key = await pseudonym.load_key(settings, redis)
    await StateStore.from_settings(redis, settings).record_erasure(
        "default", pseudonym.pseudonym(key, "default", customer), 0, 7, at_ms=at_ms,
        keep_ms=3_600_000)


async def test_an_alert_held_in_the_settle_window_is_not_sent_once_its_customer_is_erased(
        fast: Settings, redis: Redis) -> None:
    """A staff alert waiting out the settle window when its customer is erased is dropped
    unsent (counted as suppressed, reason erased); another customer's goes out."""
    from services.notifier.channels.base import Message
    from services.notifier.worker import Notifier

    registry = CollectorRegistry()
    notifier = Notifier(fast, registry=registry)
    keys = Keys(fast.redis_prefix)
    now = int(time.time() * 1000)
    for customer in ("alice", "bob"):
        change = risk_change(customer, previous="low", tier="high", cause_event=f"e-{customer}")
        await notifier.episodes.decide(change, f"alert-{customer}", now_ms=now - 5_000)
        await notifier.settle.hold(
            f"alert-{customer}", customer_id=customer, tenant="default", tier="high",
            messages=[Message(delivery_id=f"d-{customer}", channel="email",
                              event_id=f"alert-{customer}", customer_id=customer,
                              to=f"owner-{customer}@example.com", event=b"{}",
                              recipient_key=f"staff:default:{customer}-owner", kind="alert",
                              created_ms=now - 5_000)],
            now_ms=now - 200_000)
    await erased_in_ledger(fast, redis, "alice", at_ms=now - 1_000)
    sent: list[Message] = []

    async def deliver(m: Message) -> None:
        sent.append(m)
    try:
        await notifier.settle.run_due(now_ms=now, deliver=deliver,
                                      erased=notifier.erased)
    finally:
        await notifier.redis.aclose()
    assert [m.customer_id for m in sent] == ["bob"]
    assert metric(registry, "churnwatch_notifier_suppressed_total", reason="erased") == 1
    assert not await redis.zcard(keys.settle_queue)  # both entries done


async def test_digests_and_go_live_summaries_leave_out_a_customer_erased_since(
        fast: Settings, redis: Redis) -> None:
    """Items waiting in a digest or a go-live summary when their customer is erased are left
    out when it is sent (counted as suppressed, reason erased); a digest left with nothing is
    not sent, and other customers' items still go out."""
    from services.alerting.inbound import decode_risk_change
    from services.notifier.channels.base import Message
    from services.notifier.routing import Recipient
    from services.notifier.worker import Notifier

    registry = CollectorRegistry()
    notifier = Notifier(fast, registry=registry)
    now = int(time.time() * 1000)
    owner = Recipient(key="owner", name="Olivia", email="olivia@example.com")
    other = Recipient(key="other", name="Oscar", email="oscar@example.com")
    for person, customers in ((owner, ("alice", "bob")), (other, ("alice",))):
        for customer in customers:
            change = risk_change(customer, previous="low", tier="high", cause_event=f"e-{customer}")
            item = notifier.templates.digest_item(change, person, event_id=f"ev-{customer}")
            item |= {"created_ms": now - 60_000, "at_ms": now - 60_000}
            await notifier.digester.add(channel="email", recipient=person, tenant="default",
                                        event_id=f"ev-{customer}", item=item, now_ms=now - 3_600_000)
    for customer in ("alice", "bob"):
        _, raw = cloudevent(customer, previous="low", tier="high", cause_event=f"e-{customer}")
        await notifier.summaries.add(decode_risk_change(raw), created_ms=now - 60_000,
                                     now_ms=now - 3_600_000)
    await erased_in_ledger(fast, redis, "alice", at_ms=now - 1_000)
    sent: list[Message] = []
    planned: list[str] = []

    async def deliver(m: Message) -> None:
        sent.append(m)

    async def plan(name: str, events: list[Any]) -> list[Message]:
        planned.extend(e.change.customer_id for e, _ in events)
        return []
    try:
        assert await notifier.digester.flush(now_ms=now, deliver=deliver,
                                             erased=notifier.erased) == 2
        await notifier.summaries.flush(now_ms=now, plan=plan, deliver=deliver,
                                       erased=notifier.erased)
    finally:
        await notifier.redis.aclose()
    assert [m.to for m in sent] == ["olivia@example.com"]  # Oscar's digest had only alice
    assert "bob" in sent[0].text and "alice" not in sent[0].text
    assert planned == ["bob"]
    assert metric(registry, "churnwatch_notifier_suppressed_total", reason="erased") == 3
    keys = Keys(fast.redis_prefix)
    assert not await redis.smembers(keys.digest_base + "batches")  # both batches done


async def test_the_applied_mark_waits_until_the_group_committed_what_was_published(
        settings: Settings) -> None:
    """The instant before which every risk change is applied: it moves only once the group's
    committed offsets reach the end offsets noted at that instant, on every partition. The
    changes are published as one batch a partition, as a backlog is: the broker lists such a
    partition's end at the batch's first record (Tansu), and the mark moved once that first
    one was committed, judging an escalation before the rest was read."""
    topic = settings.topic_risk_changes
    producer = make_producer(settings, linger_ms=500)  # one batch a partition
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, b"{}", key=f"c{i}".encode())
                               for i in range(24)])
    finally:
        await producer.stop()
    consumer = make_consumer(settings, topic, group_id=settings.notifier_group)
    offsets = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    await offsets.start()
    try:
        read: dict[TopicPartition, list[int]] = {}
        while sum(len(v) for v in read.values()) < 24:  # joined and fetched, committed nothing
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                read.setdefault(tp, []).extend(r.offset for r in records)
        assert any(len(v) > 1 for v in read.values())
        mark = AppliedMark(consumer, topic, lambda: end_offsets(offsets, topic),
                           min_interval_s=0)
        first = int(time.time() * 1000)
        assert await mark.refresh(first) == 0
        assert mark.behind_s(first + 1000) >= 1.0
        # each partition's first change applied: the rest of each batch is still to read
        await consumer.commit({tp: v[0] + 1 for tp, v in read.items()})
        assert await mark.refresh(first + 5) == 0
        *some, last = read.items()
        await consumer.commit({tp: v[-1] + 1 for tp, v in some})
        assert await mark.refresh(first + 10) == 0  # one partition still behind
        await consumer.commit({last[0]: last[1][-1] + 1})
        assert await mark.refresh(first + 20) == first  # the instant its offsets were noted
        # published after: the next instant waits for it
        await produce(settings, topic, [(b"c0", b"{}")])
        second = first + 30
        assert await mark.refresh(second) == first
        [(tp, [record])] = (await consumer.getmany(timeout_ms=5000)).items()
        await consumer.commit({tp: record.offset + 1})
        assert await mark.refresh(second + 10) == second
        assert mark.behind_s(second + 10) == pytest.approx(0.01)
    finally:
        await offsets.stop()
        await consumer.stop()
