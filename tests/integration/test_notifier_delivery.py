"""Never lost, never doubled: gateways and receivers that fail on purpose, SMTP over real TLS,
and a notifier SIGKILLed mid-retry (a real child process)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from services.alerting.webhooks import add_subscription
from services.common.embedded import free_port
from services.common.exceptions import DeliveryError
from services.common.profiles import CustomerProfile, ProfileStore, StaffMember
from services.common.redisconn import Keys
from services.notifier.channels.base import Message, delivery_id
from services.notifier.channels.email import EmailChannel
from tests.integration.test_notifier import metric, notifier, produce_changes, wait_until
from tests.integration.test_notifier_policies import Inbox, SmsGateway, change, routing_file
from tests.kafkatools import read_all
from tests.peers import LoopbackHttp
from tests.procs import ServiceProcess
from tests.reliability import record

pytestmark = pytest.mark.integration

SECRET = "test-webhook-secret-0123456789"


class Hook(LoopbackHttp):
    """A webhook receiver on a fixed port that can be down (not listening), failing (503) or
    healthy; records every request and the most requests it saw at once."""

    path = "/hook"

    def __init__(self, port: int):
        super().__init__(port)
        self.failing = False
        self.requests: list[tuple[float, str, int]] = []  # (time, delivery id, status)
        self.in_flight = 0
        self.max_in_flight = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await request.read()
            await asyncio.sleep(0.05)
            status = 503 if self.failing else 200
            self.requests.append((time.monotonic(), request.headers["Churnwatch-Delivery"], status))
            return web.Response(status=status)
        finally:
            self.in_flight -= 1

    def ok(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, did, status in self.requests:
            if status < 300:
                out[did] = out.get(did, 0) + 1
        return out


async def test_failing_gateway_and_receiver_every_alert_once_or_dead_lettered(
        settings_factory, redis: Redis, tmp_path: Path) -> None:
    phones = {f"f{n}": f"+1555020000{n}" for n in range(1, 6)}
    script: dict[str, list[Any]] = {
        phones["f1"]: [500],                                   # then fine
        phones["f2"]: [(429, {"Retry-After": "1"})],           # asks for a pause
        phones["f3"]: [("slow", 2.5)],                         # times out once
        phones["f4"]: [400],                                   # permanent
        phones["f5"]: [503] * 20,                              # never recovers
    }
    hook = Hook(free_port())  # down (nothing listening) for the first seconds
    async with SmsGateway(script) as gateway:
        settings = settings_factory(
            delivery_backoff_base_seconds=0.2, delivery_backoff_max_seconds=1.0,
            delivery_max_attempts=5, webhook_allow_private=True, webhook_timeout_seconds=1.5,
            sms_gateway_url=gateway.url, notifier_metrics_port=free_port(),
            routing_file=routing_file(tmp_path, "routes: [{match: {to: high}, channels: [sms]}]"))
        keys = Keys(settings.redis_prefix)
        profiles = ProfileStore(redis, keys)
        for staff, phone in phones.items():
            await profiles.put_staff(StaffMember(staff_id=staff, phone=phone))
            await profiles.put_profile(f"c-{staff}", CustomerProfile(owner_staff_id=staff))
        sub = await add_subscription(redis, keys, url=hook.url, secret=SECRET)
        events = {staff: change(f"c-{staff}", "low", "high") for staff in phones}
        await produce_changes(settings, *[(f"c-{s}", raw) for s, (_, raw) in events.items()])
        async with notifier(settings) as registry:
            await wait_until(lambda: metric(registry, "churnwatch_notifier_retries_total",
                                            channel="webhook") >= 2, what="the receiver failing")
            await hook.up()
            await wait_until(lambda: metric(registry, "churnwatch_notifier_dead_letters_total",
                                            channel="sms") == 2 and len(gateway.accepted) == 3
                             and len(hook.ok()) + metric(registry, "churnwatch_notifier_dead_letters_total",
                                                         channel="webhook") == 5,
                             timeout=40, what="every alert delivered or dead-lettered")
            # The gateway counts a message when it accepts it, the notifier when the answer
            # arrives: a timed-out attempt the gateway accepted late (f3) still has its retry
            # queued, to be deduplicated by its Idempotency-Key. Wait for the queue to drain.
            async def drained() -> bool:
                return await redis.zcard(keys.retry_queue) == 0

            await wait_until(drained, timeout=30, what="the retry queue to drain")
            await asyncio.sleep(1.0)
            assert metric(registry, "churnwatch_notifier_retries_total", channel="sms") >= 3
        await hook.down()

    # SMS: delivered once per message (deduplicated by Idempotency-Key), or dead-lettered.
    sms_ids = {s: delivery_id(events[s][0], "sms", phones[s]) for s in phones}
    assert set(gateway.accepted) == {sms_ids[s] for s in ("f1", "f2", "f3")}
    assert gateway.accept_count[sms_ids["f1"]] == 1 and gateway.accept_count[sms_ids["f2"]] == 1
    by_phone = [b["to"] for b in gateway.requests]
    assert by_phone.count(phones["f4"]) == 1 and by_phone.count(phones["f5"]) == 5
    letters = {json.loads(r.value)["delivery_id"]: json.loads(r.value) for r in await read_all(
        settings, settings.topic_notifications_dlq, expect=2, idle_ms=300)}
    webhook_dead = {d for d, x in letters.items() if x["channel"] == "webhook"}
    sms_dead = {d: x for d, x in letters.items() if x["channel"] == "sms"}
    assert set(sms_dead) == {sms_ids["f4"], sms_ids["f5"]}
    assert "HTTP 400" in sms_dead[sms_ids["f4"]]["reason"] and sms_dead[sms_ids["f4"]]["attempts"] == 1
    assert sms_dead[sms_ids["f5"]]["attempts"] == 5
    assert all("+1555" not in json.dumps(x) for x in sms_dead.values())  # masked
    # Webhooks: every change to the receiver exactly once, unless dead-lettered - never both.
    hook_ids = {delivery_id(eid, "webhook", sub["id"]) for eid, _ in events.values()}
    delivered = hook.ok()
    assert set(delivered) | webhook_dead == hook_ids and not set(delivered) & webhook_dead
    assert all(n == 1 for n in delivered.values())
    # a dead-lettered webhook delivery names its subscription and tenant
    assert all(letters[d]["subscription_id"] == sub["id"] and letters[d]["tenant"] == "default"
               for d in webhook_dead)
    assert all("subscription_id" not in x for x in sms_dead.values())
    assert await redis.zcard(keys.retry_queue) == 0


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_over_tls_verified_with_the_configured_ca(tmp_path: Path, security: str) -> None:
    cert, key = _certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    port = free_port()
    if security == "tls":
        controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=server_ctx)
    else:
        controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=server_ctx,
                                require_starttls=True)
    controller.start()
    message = Message(delivery_id="d-tls", channel="email", event_id="e-1", customer_id="c-1",
                      to="olga@example.com", event=b"{}", subject="Risk", text="plain part",
                      html="<p>html part</p>", recipient_name="Olga")
    try:
        trusted = EmailChannel(host="127.0.0.1", port=port, security=security,  # type: ignore[arg-type]
                               sender="cw@example.com", ca_file=str(cert), timeout_s=5)
        await trusted.send(message)
        untrusted = EmailChannel(host="127.0.0.1", port=port, security=security,  # type: ignore[arg-type]
                                 sender="cw@example.com", timeout_s=5)
        with pytest.raises(DeliveryError) as err:
            await untrusted.send(message)
        assert not err.value.permanent and "olga@example.com" not in str(err.value)
    finally:
        await asyncio.to_thread(controller.stop)
    [(rcpts, mail)] = inbox.mails
    assert rcpts == ["olga@example.com"] and mail["Message-ID"] == "<d-tls@example.com>"
    assert mail.get_body(("plain",)).get_content().strip() == "plain part"
    assert mail.get_body(("html",)).get_content().strip() == "<p>html part</p>"


async def test_notifier_killed_mid_retry_resumes_without_loss_or_duplicate(
        settings_factory, redis: Redis, tmp_path: Path) -> None:
    hook = Hook(free_port())
    hook.failing = True
    await hook.up()
    settings = settings_factory(
        delivery_backoff_base_seconds=0.5, delivery_backoff_max_seconds=2.0,
        delivery_max_attempts=30, webhook_allow_private=True, webhook_timeout_seconds=2.0,
        notifier_max_in_flight=3, notifier_retry_max_per_second=20)
    keys = Keys(settings.redis_prefix)
    sub = await add_subscription(redis, keys, url=hook.url, secret=SECRET)
    events = [change(f"k-{n}", "low", "high", cause="silence") for n in range(12)]
    await produce_changes(settings, *[(f"k-{n}", raw) for n, (_, raw) in enumerate(events)])
    first = ServiceProcess("notifier", settings, tmp_path / "notifier-1.log",
                           health_port_setting="notifier_metrics_port")
    second = ServiceProcess("notifier", settings, tmp_path / "notifier-2.log",
                            health_port_setting="notifier_metrics_port")
    try:
        first.start(wait_ready=False)
        await asyncio.to_thread(first.wait_ready)
        await wait_until(lambda: redis.zcard(keys.retry_queue), timeout=30, what="retries queued")
        await wait_until(lambda: _all_queued(redis, keys, events, sub["id"]), timeout=30,
                         what="every delivery durably queued")
        await asyncio.sleep(0.5)
        first.kill()  # SIGKILL, mid-retry
        hook.failing = False
        second.start(wait_ready=False)
        await asyncio.to_thread(second.wait_ready)
        await wait_until(lambda: len(hook.ok()) == len(events), timeout=40,
                         what=f"all delivered after the restart:\n{second.tail()}")
        await asyncio.sleep(1.5)  # any duplicate would show up now
    finally:
        second.stop()
        first.stop()
        await hook.down()
    expected = {delivery_id(eid, "webhook", sub["id"]) for eid, _ in events}
    got = hook.ok()
    record(kind="fault", name="notifier-sigkill-mid-retry",
           tried="SIGKILL of the notifier while every webhook delivery waits in its retry queue; "
                 "a new notifier takes over",
           load=f"{len(events)} risk changes to a webhook that fails until the kill",
           checked="each delivery id accepted by the receiver exactly once; retry queue empty",
           sent=len(events), lost=len(expected - set(got)),
           doubled=sum(n - 1 for n in got.values() if n > 1) + len(set(got) - expected),
           test="tests/integration/test_notifier_delivery.py::"
                "test_notifier_killed_mid_retry_resumes_without_loss_or_duplicate")
    assert got == dict.fromkeys(expected, 1)
    assert hook.max_in_flight <= 3  # notifier_max_in_flight: no resend storm
    assert await redis.zcard(keys.retry_queue) == 0
    assert {await redis.get(keys.delivery(d)) for d in expected} == {"delivered"}


async def _all_queued(redis: Redis, keys: Keys, events: list[tuple[str, bytes]], sub_id: str) -> bool:
    states = [await redis.get(keys.delivery(delivery_id(eid, "webhook", sub_id))) for eid, _ in events]
    return all(s == "queued" for s in states)


# upgrade: the hash-tagged key layout (Redis Cluster support) ----------------------------------


async def test_a_notifier_adopts_state_kept_under_the_untagged_key_names(settings, redis: Redis) -> None:
    """Queues, ledger, escalations, digests and episodes written by a notifier before the
    hash tags are renamed once, batch sets pointed at the renamed batches."""
    from services.notifier.migrate import adopt_untagged_keys

    keys, p = Keys(settings.redis_prefix), settings.redis_prefix
    did = "ab" * 16
    old: dict[str, tuple[str, Any]] = {  # key -> (type, value in that type's shape)
        f"{p}:dlv:{did}": ("string", "queued"),
        f"{p}:retry": ("zset", {did: 1.0}),
        f"{p}:retry:data": ("hash", {did: "{}"}),
        f"{p}:ntf:settle": ("zset", {"alert-1": 2.0}),
        f"{p}:ntf:settle:data": ("hash", {"alert-1": "{}"}),
        f"{p}:ntf:esc": ("zset", {"alert-2": 3.0}),
        f"{p}:ntf:esc:data": ("hash", {"alert-2": "{}"}),
        f"{p}:ntf:esc:done:alert-3": ("string", "1"),
        f"{p}:ntf:dg:b:email|staff:x": ("hash", {"e1": "{}"}),
        f"{p}:ntf:dg:due": ("zset", {"email|staff:x": 4.0}),
        f"{p}:ntf:dg:batch:email|staff:y:7": ("hash", {"e2": "{}"}),
        f"{p}:ntf:dg:batches": ("set", [f"{p}:ntf:dg:batch:email|staff:y:7"]),
        f"{p}:ntf:sum:b:default": ("hash", {"c1": "{}"}),
        f"{p}:ntf:ep:acme/c%2F1": ("string", '{"open": true}'),
    }
    for key, (kind, value) in old.items():
        if kind == "string":
            await redis.set(key, value)
        elif kind == "zset":
            await redis.zadd(key, value)
        elif kind == "hash":
            await redis.hset(key, mapping=value)
        else:
            await redis.sadd(key, *value)
    assert await adopt_untagged_keys(redis, keys) == len(old)
    assert await redis.exists(*old) == 0
    assert await redis.get(keys.delivery(did)) == "queued"
    assert await redis.zscore(keys.retry_queue, did) == 1.0
    assert await redis.hget(keys.retry_payloads, did) == "{}"  # type: ignore[misc]
    assert await redis.zscore(keys.settle_queue, "alert-1") == 2.0
    assert await redis.hexists(keys.settle_data, "alert-1")  # type: ignore[misc]
    assert await redis.zscore(keys.escalation_queue, "alert-2") == 3.0
    assert await redis.hexists(keys.escalation_data, "alert-2")  # type: ignore[misc]
    assert await redis.get(keys.escalation_done("alert-3")) == "1"
    assert await redis.hexists(keys.digest_base + "b:email|staff:x", "e1")  # type: ignore[misc]
    assert await redis.zscore(keys.digest_base + "due", "email|staff:x") == 4.0
    batch = keys.digest_base + "batch:email|staff:y:7"
    assert await redis.smembers(keys.digest_base + "batches") == {batch}  # type: ignore[misc]
    assert await redis.hexists(batch, "e2")  # type: ignore[misc]
    assert await redis.hexists(keys.summary_base + "b:default", "c1")  # type: ignore[misc]
    assert await redis.get(keys.episode("c/1", "acme")) == '{"open": true}'
    await redis.set(f"{p}:retry:data", "written by an old notifier after the upgrade")
    assert await adopt_untagged_keys(redis, keys) == 0  # once: later starts only read a marker
