"""Webhook hygiene (issue 14, item 6): a subscription failing for longer than
CHURNWATCH_WEBHOOK_PAUSE_AFTER_SECONDS is paused, its tenant's admin is e-mailed once, its
dead letters name it, and POST /v1/webhooks/{id}/resume (a real API process) resumes it.
Real parts: the broker, Redis, an aiosmtpd inbox, a loopback receiver."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from services.alerting.webhooks import add_subscription, get_subscription_with_secret
from services.common.embedded import free_port
from services.common.profiles import ProfileStore, StaffMember
from services.common.redisconn import Keys
from tests.integration.test_notifier import notifier, produce_changes, wait_until
from tests.integration.test_notifier_policies import Inbox, change, routing_file
from tests.kafkatools import read_all
from tests.peers import LoopbackHttp
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration
SECRET = "pause-test-secret-0123456789"


class Receiver(LoopbackHttp):
    path = "/hook"

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.seen: list[tuple[str, int]] = []  # (event id, status)

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        status = 500 if self.failing else 200
        self.seen.append((body["id"], status))
        return web.Response(status=status)


async def test_a_failing_subscription_is_paused_told_once_and_resumed(
        settings_factory, tmp_path: Path) -> None:
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    settings = settings_factory(
        routing_file=routing_file(tmp_path, "routes:\n  - {match: {}, channels: [webhook]}\n"),
        smtp_host="127.0.0.1", smtp_port=smtp.port, webhook_allow_private=True,
        webhook_timeout_seconds=2.0, webhook_pause_after_seconds=1.0,
        delivery_backoff_base_seconds=0.1, delivery_backoff_max_seconds=0.3,
        delivery_max_attempts=100, notifier_escalate_after_seconds=None)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.redis_prefix)
    await ProfileStore(redis, keys).put_staff(StaffMember(
        staff_id="boss", name="Bea", email="bea@example.com", role="manager"))
    try:
        async with Receiver() as hook:
            sub = await add_subscription(redis, keys, url=hook.url, secret=SECRET)
            first_id, first = change("p1", "low", "high")
            await produce_changes(settings, ("p1", first))
            async with notifier(settings):
                async def paused() -> bool:
                    stored = await get_subscription_with_secret(redis, keys, sub["id"])
                    return bool(stored and stored.get("paused_at"))
                await wait_until(paused, timeout=30, what="the failing subscription paused")
                await wait_until(lambda: inbox.to("bea@example.com"), timeout=20,
                                 what="the tenant's manager told")
                tries = len(hook.seen)
                assert tries >= 2 and all(s == 500 for _, s in hook.seen)
                # while paused: nothing new is sent to it
                second_id, second = change("p2", "low", "high")
                await produce_changes(settings, ("p2", second))
                dead = await read_all(settings, settings.topic_notifications_dlq, expect=1,
                                      idle_ms=500, timeout=20)
                letter = json.loads(dead[0].value)
                assert letter["subscription_id"] == sub["id"] and "paused" in letter["reason"]
                assert letter["event_id"] == first_id
                # resumed through the API; the next change is delivered
                hook.failing = False
                with ServiceProcess("api", settings, tmp_path / "api.log",
                                    health_port_setting="api_port") as api:
                    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
                        listed = (await client.get("/v1/webhooks")).json()
                        assert listed[0]["status"] == "paused" and listed[0]["failing_since"]
                        r = await client.post(f"/v1/webhooks/{sub['id']}/resume")
                        assert r.status_code == 200 and r.json()["status"] == "active"
                        again = await client.post(f"/v1/webhooks/{sub['id']}/resume")
                        assert again.status_code == 200  # idempotent
                        missing = await client.post("/v1/webhooks/wh_nope/resume")
                        assert missing.status_code == 404
                third_id, third = change("p3", "low", "high")
                await produce_changes(settings, ("p3", third))
                await wait_until(lambda: (third_id, 200) in hook.seen, timeout=20,
                                 what="the resumed subscription delivered to")
                assert second_id not in {e for e, _ in hook.seen}  # not sent while paused
        mails = inbox.to("bea@example.com")
        assert len(mails) == 1, [m["Subject"] for m in mails]  # told once
        assert sub["id"] in mails[0]["Subject"] and "paused" in mails[0]["Subject"]
        body = mails[0].get_body(("plain",)).get_content()
        assert f"/v1/webhooks/{sub['id']}/resume" in body and "HTTP 500" in body
    finally:
        await redis.aclose()
        smtp.stop()
