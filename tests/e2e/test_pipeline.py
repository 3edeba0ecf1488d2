"""End to end across real processes: POST /v1/events -> scorer -> risk change on Kafka ->
notifier -> a webhook on a real HTTP server, a mail on a real SMTP server (aiosmtpd) and an
SMS on a real HTTP gateway stand-in. The receivers here share no code with churnwatch."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from services.common.embedded import free_port
from tests.data import complaint, iso, regular
from tests.kafkatools import read_all
from tests.procs import ServiceProcess

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": "Bearer admin-secret-1"}
SECRET = "whsec-0123456789abcdef"


class Inbox:
    def __init__(self) -> None:
        self.webhooks: list[tuple[dict[str, str], bytes]] = []
        self.sms: list[Any] = []
        self.mail: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd hook
        self.mail.append(envelope.content)
        return "250 OK"


async def start_http(inbox: Inbox) -> tuple[web.AppRunner, int]:
    async def hook(request: web.Request) -> web.Response:
        inbox.webhooks.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def sms(request: web.Request) -> web.Response:
        inbox.sms.append(await request.json())
        return web.json_response({"status": "queued"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/sms", sms)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def verify_signature(headers: dict[str, str], body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in headers["Churnwatch-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


async def until(check, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_event_to_webhook_mail_and_sms(settings_factory, tmp_path: Path) -> None:
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    runner, http_port = await start_http(inbox)
    settings = settings_factory(
        api_keys="ingest-secret-1:ingest,admin-secret-1:admin", webhook_allow_private=True,
        smtp_host="127.0.0.1", smtp_port=smtp.port, sms_gateway_url=f"http://127.0.0.1:{http_port}/sms",
        delivery_backoff_base_seconds=0.2,
        # The year of history and today's complaint share one POST; should the scorer split it
        # across batches, the tier rises on the history alone (an old cause): staff then hear
        # through the go-live summary instead of a live alert - once either way (issue 14).
        alert_summary_after=1.0,
    )
    api = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    scorer = ServiceProcess("scorer", settings, tmp_path / "scorer.log",
                            health_port_setting="scorer_metrics_port")
    notifier = ServiceProcess("notifier", settings, tmp_path / "notifier.log",
                              health_port_setting="notifier_metrics_port")
    try:
        for p in (api, scorer, notifier):
            p.start(wait_ready=False)
        for p in (api, scorer, notifier):
            await asyncio.to_thread(p.wait_ready)
        async with httpx.AsyncClient(base_url=api.url, headers=ADMIN, timeout=30) as client:
            r = await client.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{http_port}/hook",
                                                        "secret": SECRET})
            assert r.status_code == 201, r.text
            # A regular for a year who filed a serious complaint today and stopped coming.
            now = datetime.now(UTC)
            events = regular("vip-7", every_days=21, count=16, start=now - timedelta(days=380))
            events.append(complaint("vip-7", now - timedelta(hours=1), 1, severity="high"))
            for _ in range(2):  # the same batch twice: nothing is counted or notified twice
                r = await client.post("/v1/events", json=events)
                assert r.status_code == 202 and r.json() == {"accepted": len(events)}

            await until(lambda: inbox.webhooks and inbox.mail and inbox.sms, what="all three channels")
            r = await client.get("/v1/customers/vip-7/risk")
            assert r.status_code == 200
            risk = r.json()
            assert risk["tier"] == "high" and 0 <= risk["score"] <= 1
            assert {x["code"] for x in risk["reasons"]} >= {"open_complaint", "overdue"}
            past = await client.get("/v1/customers/vip-7/risk", params={"as_of": iso(now - timedelta(days=300))})
            assert past.status_code == 200 and past.json()["tier"] == "low"

            status = (await client.get("/v1/status")).json()
            assert status["events_accepted_total"] == 2 * len(events)
            await until(lambda: True)
        await asyncio.sleep(2)  # give any (wrong) duplicate delivery time to show up

        headers, body = inbox.webhooks[0]
        assert verify_signature(headers, body)
        event = json.loads(body)
        assert event["specversion"] == "1.0" and event["data"]["customer_id"] == "vip-7"
        assert event["data"]["tier"] == "high"
        delivery_ids = [h["Churnwatch-Delivery"] for h, _ in inbox.webhooks]
        assert len(delivery_ids) == len(set(delivery_ids)) == len({json.loads(b)["id"] for _, b in inbox.webhooks})
        mail = message_from_bytes(inbox.mail[0])
        assert "vip-7" in mail["Subject"] or "vip-7" in str(mail.get_payload())
        assert "vip-7" in json.dumps(inbox.sms[0])

        changes = await read_all(settings, settings.topic_risk_changes)
        ids = {json.loads(c.value)["id"] for c in changes}
        assert len(inbox.webhooks) == len(ids)  # one delivery per distinct change, none doubled
    finally:
        for p in (notifier, scorer, api):
            p.stop()
        await runner.cleanup()
        smtp.stop()
