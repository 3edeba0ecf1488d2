"""Plain http:// receivers: the alerts carry customer ids, names and reasons, so a webhook
target or the SMS gateway off this machine must be https:// unless
CHURNWATCH_WEBHOOK_ALLOW_HTTP=true.

Checked where a target enters: the API (a real ``churnwatch api`` process: 422 saying what to
fix, nothing stored), the configuration (real ``churnwatch`` processes refusing to start,
naming the setting) and the delivery (the real webhook channel, against receivers on
loopback). Nothing here ever connects beyond loopback: the public and private targets are IP
literals (no DNS lookup), refused before any connection; where a test needs a delivery to get
past the check, the channel's resolver stops it at the connection (``_loopback_only``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from services.alerting.webhooks import IPAddress, checked_addresses
from services.common.exceptions import DeliveryError
from services.common.settings import Settings
from services.notifier.channels.base import Message
from services.notifier.channels.webhook import WebhookChannel
from tests.peers import LoopbackHttp
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration

PUBLIC_IP = "93.184.215.14"  # an IP literal: no DNS lookup; refused before any connection
KEYS = "https-admin-0001:admin"
ADMIN = {"Authorization": "Bearer https-admin-0001"}
ALLOW_HTTP = "CHURNWATCH_WEBHOOK_ALLOW_HTTP"


class Hook(LoopbackHttp):
    path = "/hook"

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=204)


def _api(settings: Settings, log: Path) -> ServiceProcess:
    return ServiceProcess("api", settings, log, health_port_setting="api_port")


@pytest.fixture
def api(settings_factory, tmp_path: Path) -> Iterator[ServiceProcess]:
    """The API as a local test deploys it: loopback receivers allowed, plain http not opted in."""
    with _api(settings_factory(api_keys=KEYS, webhook_allow_private=True),
              tmp_path / "api.log") as proc:
        yield proc


def test_plain_http_off_this_machine_is_refused_at_registration(api) -> None:
    url = f"{api.url}/v1/webhooks"
    for target, fix in ((f"http://{PUBLIC_IP}/crm/hook", f"Use https://{PUBLIC_IP}/crm/hook,"),
                        (f"http://{PUBLIC_IP}:8080/hook", "Use an https:// URL,"),
                        ("http://10.1.2.3/hook", "Use https://10.1.2.3/hook,")):
        r = httpx.post(url, json={"url": target, "secret": "s" * 16}, headers=ADMIN)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail.startswith(f"url: the webhook url {target!r} uses plain http://"), detail
        assert "customer ids, names, risk reasons" in detail and fix in detail, detail
        assert f"{ALLOW_HTTP}=true" in detail, detail
    assert httpx.get(url, headers=ADMIN).json() == []  # nothing was stored

    # https:// to the same public address is what the refusal asks for: accepted
    r = httpx.post(url, json={"url": f"https://{PUBLIC_IP}/crm/hook", "secret": "s" * 16},
                   headers=ADMIN)
    assert r.status_code == 201, r.text
    assert httpx.delete(f"{url}/{r.json()['id']}", headers=ADMIN).status_code == 204


def test_plain_http_to_this_machine_is_accepted_at_registration(api) -> None:
    url = f"{api.url}/v1/webhooks"
    for target in ("http://127.0.0.1:9/hook", "http://127.0.0.2:9/hook",
                   "http://localhost:9/hook", "http://[::1]:9/hook"):
        r = httpx.post(url, json={"url": target, "secret": "s" * 16}, headers=ADMIN)
        assert r.status_code == 201, f"{target}: {r.text}"
        assert httpx.delete(f"{url}/{r.json()['id']}", headers=ADMIN).status_code == 204


def test_the_opt_out_accepts_plain_http_on_a_private_network(settings_factory,
                                                             tmp_path: Path) -> None:
    settings = settings_factory(api_keys=KEYS, webhook_allow_private=True, webhook_allow_http=True)
    with _api(settings, tmp_path / "api.log") as proc:
        url = f"{proc.url}/v1/webhooks"
        r = httpx.post(url, json={"url": "http://10.1.2.3:8080/hook", "secret": "s" * 16},
                       headers=ADMIN)
        assert r.status_code == 201, r.text
        assert r.json()["url"] == "http://10.1.2.3:8080/hook"
        # no notifier runs here: deleted before anything could be delivered to it
        assert httpx.delete(f"{url}/{r.json()['id']}", headers=ADMIN).status_code == 204
        # the opt-out opens plain http, not private addresses: that stays its own setting
    strict = settings_factory(api_keys=KEYS, webhook_allow_private=False, webhook_allow_http=True)
    with _api(strict, tmp_path / "api-strict.log") as proc:
        r = httpx.post(f"{proc.url}/v1/webhooks", headers=ADMIN,
                       json={"url": "http://10.1.2.3:8080/hook", "secret": "s" * 16})
        assert r.status_code == 422 and "CHURNWATCH_WEBHOOK_ALLOW_PRIVATE" in r.text, r.text


@pytest.mark.parametrize("command", ["notifier", "api", "up"])
def test_a_plain_http_sms_gateway_stops_the_start_naming_the_setting(command: str,
                                                                     tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNWATCH_")}
    env |= {"CHURNWATCH_HOME": str(tmp_path), "CHURNWATCH_SMS_GATEWAY_URL":
            "http://gw-user:gw-t0ken@sms.example.com/send"}
    done = subprocess.run([sys.executable, "-m", "services.cli.main", command], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "CHURNWATCH_SMS_GATEWAY_URL 'http://***@sms.example.com/send' uses plain http://" \
        in out, out
    assert "Use https://***@sms.example.com/send" in out and f"{ALLOW_HTTP}=true" in out, out
    assert "Traceback" not in out and "gw-t0ken" not in out, out


# Delivery: the real webhook channel ---------------------------------------------------------


def _loopback_only(host: str, port: int) -> list[IPAddress]:
    """The shipped address check, and then this test's own guard: the channel may connect to
    loopback only, where this test's receivers are. A delivery that got past the https check
    to any other address stops here, at the connection, with this message."""
    addresses = checked_addresses(host, port, allow_private=True)
    stray = [ip for ip in addresses if not ip.is_loopback]
    if stray:
        raise ValueError(f"test guard: not connecting to {stray} (only loopback is ours)")
    return addresses


def _message(to: str) -> Message:
    return Message(delivery_id="d-https", channel="webhook", event_id="e-1", customer_id="c-1",
                   to=to, event=b'{"customer_id": "c-1"}', secret="s" * 16)


async def test_delivery_refuses_a_stored_plain_http_target_for_good() -> None:
    """A subscription stored before plain http was refused (or written into Redis) gets
    nothing: the delivery fails for good (dead-lettered by the notifier) with the fix."""
    channel = WebhookChannel(timeout_s=5.0, allow_private=True, resolve=_loopback_only)
    try:
        for target in (f"http://{PUBLIC_IP}/hook", "http://10.1.2.3:8080/hook"):
            with pytest.raises(DeliveryError) as info:
                await channel.send(_message(target))
            assert info.value.permanent, info.value
            assert "refused" in str(info.value) and f"{ALLOW_HTTP}=true" in str(info.value)
            assert "test guard" not in str(info.value)  # refused before any connection
    finally:
        await channel.aclose()


async def test_delivery_over_http_to_this_machine_and_with_the_opt_out() -> None:
    async with Hook() as hook:
        channel = WebhookChannel(timeout_s=5.0, allow_private=True, resolve=_loopback_only)
        opted = WebhookChannel(timeout_s=5.0, allow_private=True, allow_http=True,
                               resolve=_loopback_only)
        try:
            await channel.send(_message(hook.url))
            await channel.send(_message(f"http://localhost:{hook.port}{hook.path}"))
            assert len(hook.bodies) == 2
            # With the opt-out a private http target passes the check and goes on to the
            # connection, which only this test's guard stops (nothing of ours is there).
            with pytest.raises(DeliveryError) as info:
                await opted.send(_message("http://10.1.2.3:8080/hook"))
            assert "test guard" in str(info.value) and not info.value.permanent, info.value
        finally:
            await channel.aclose()
            await opted.aclose()
