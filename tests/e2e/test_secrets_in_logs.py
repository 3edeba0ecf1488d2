"""Secrets never reach a log: the whole stack (`churnwatch up`) runs with a distinctive value in
every secret setting, at DEBUG, through successes and failures (unknown keys, a refused
webhook registration carrying its secret, an SMTP login refused once, an SMS gateway and a
webhook receiver failing once), then every log file and the stack's own output are searched
for each secret, raw and in the encodings it travels in (base64 for HTTP basic and SMTP AUTH,
URL-encoding). Contacts (e-mail addresses, phone numbers) must appear masked only.

No customer ids either (issue 17, item 3; many POS systems use the phone number as the member
id): 100 more customers, with ids that are phone numbers, e-mail-like strings and plain ids and
profiles carrying contacts, are scored and notified (a staff alert and a webhook each); one is
erased, one exported. Then no log names any of them or their contacts: logs carry the
customer's pseudonymous token, and the admin API turns a token back into the customer (but
not an erased one's).

Redis runs with ``requirepass`` (the password in CHURNWATCH_REDIS_URL); the Kafka SASL
password is set although the session broker speaks PLAINTEXT (it must not leak either way).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.common.embedded import (
    Server,
    die_with_parent,
    free_port,
    redis_binary,
    stop_process,
    wait_for_port,
)
from services.common.logs import mask_email, mask_phone
from tests.data import complaint, regular
from tests.peers import LoopbackHttp
from tests.reliability import record

pytestmark = pytest.mark.e2e

REDIS_PASSWORD = "RedisPw-H4t9Qm2Lr7Xe"
SMTP_USER, SMTP_PASSWORD = "cw-mailer", "SmtpPw/Kd83+Ns0Qe1Vz"
SMS_USER, SMS_TOKEN = "cw-sms", "SmsTok-Pz71Xc4Vb9Wq"
SASL_USER, SASL_PASSWORD = "cw-kafka", "SaslPw-Wm52Yt8Rj3Hs"
WEBHOOK_SECRET = "WhSec-Bn64Gf1Ju8Ty5Kp"
API_ADMIN, API_INGEST, API_READ = "ApiAdm-Zq8w3Lk2VxMn", "ApiIng-Tr5y7Ui9OpAs", "ApiRd-Df3g5Hj7KlZx"
SECRETS = {"api admin key": (API_ADMIN, None), "api ingest key": (API_INGEST, None),
           "api read key": (API_READ, None), "redis password": (REDIS_PASSWORD, ""),
           "smtp password": (SMTP_PASSWORD, SMTP_USER), "sms token": (SMS_TOKEN, SMS_USER),
           "kafka sasl password": (SASL_PASSWORD, SASL_USER),
           "webhook secret": (WEBHOOK_SECRET, None)}
STAFF_EMAIL, STAFF_PHONE = "mei.manager@salon-example.com", "+8613800138456"
CUSTOMER_EMAIL, CUSTOMER_PHONE = "vip.customer@client-example.com", "+15550987123"
# 100 customers whose ids are personal data: phone numbers (E.164 and bare digits),
# e-mail-like member ids, and plain ids; each profile carries an e-mail address and a phone.
PRIVATE_IDS = ([f"+8613955{i:05d}" for i in range(25)] + [f"1391234{i:04d}" for i in range(25)]
               + [f"member.{i:03d}@loyalty-example.com" for i in range(25)]
               + [f"pos-member-{i:04d}" for i in range(25)])
PRIVATE_CONTACTS = [(f"private.{i:03d}@client-example.com", f"+4479001{i:05d}")
                    for i in range(len(PRIVATE_IDS))]


def forms(secret: str, user: str | None) -> dict[str, str]:
    """The ways a secret can be written: raw, URL-encoded, base64 (alone, basic-auth, SMTP PLAIN)."""
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    out = {"raw": secret, "url-encoded": quote(secret, safe=""), "base64": b64(secret)}
    if user is not None:
        out["basic-auth base64"] = b64(f"{user}:{secret}")
        out["smtp-plain base64"] = b64(f"\0{user}\0{secret}")
    return out


class FailOnce(LoopbackHttp):
    """Answers 500 to the first request, then ``ok``; remembers what came in."""

    def __init__(self, path: str, ok: int):
        self.path = path
        super().__init__()
        self.ok = ok
        self.seen: list[tuple[int, dict[str, str]]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        status = 500 if not self.seen else self.ok
        self.seen.append((status, dict(request.headers)))
        return web.Response(status=status, text="nope" if status == 500 else "ok")

    def delivered(self) -> int:
        return sum(1 for status, _ in self.seen if status < 300)


class Mailbox:
    def __init__(self) -> None:
        self.logins: list[bool] = []
        self.mail: list[bytes] = []

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER
              and auth_data.password.decode() == SMTP_PASSWORD and len(self.logins) >= 2)
        self.logins.append(ok)  # the first connection's logins (PLAIN, LOGIN) are refused
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append(envelope.content)
        return "250 OK"


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = open(tmp_path / "redis-auth.log", "ab")  # noqa: SIM115 - closed by Server.stop
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--requirepass", REDIS_PASSWORD],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent, start_new_session=True)
    server = Server("redis", proc, port, log)
    try:
        wait_for_port(port, proc=proc)
        yield server
    finally:
        server.stop()


async def test_no_secret_reaches_any_log(broker: Server, redis_with_password: Server,
                                         tmp_path: Path) -> None:
    started = time.monotonic()
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port(),
                      authenticator=mailbox.authenticate, auth_require_tls=False)
    smtp.start()
    sms, hook = FailOnce("/sms", 200), FailOnce("/hook", 204)
    run = uuid.uuid4().hex[:8]
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNWATCH_")}
    env.update({f"CHURNWATCH_{k}": str(v) for k, v in {
        "HOME": home, "LOG_LEVEL": "DEBUG", "KAFKA_BOOTSTRAP": broker.address,
        "KAFKA_IDEMPOTENCE": "false", "KAFKA_SASL_USERNAME": SASL_USER,
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD, "TOPIC_PARTITIONS": 2,
        "TOPIC_EVENTS": f"s{run}.events", "TOPIC_RISK_CHANGES": f"s{run}.risk-changes",
        "TOPIC_EVENTS_DLQ": f"s{run}.events.dlq",
        "TOPIC_NOTIFICATIONS_DLQ": f"s{run}.notifications.dlq",
        "SCORER_GROUP": f"s{run}-scorer", "NOTIFIER_GROUP": f"s{run}-notifier",
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@{redis_with_password.address}/0",
        "REDIS_PREFIX": f"s{run}", "API_PORT": 0, "SCORER_METRICS_PORT": 0,
        "NOTIFIER_METRICS_PORT": 0,
        "API_KEYS": f"{API_ADMIN}:admin,{API_INGEST}:ingest,{API_READ}:read",
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp.port, "SMTP_USERNAME": SMTP_USER,
        "SMTP_PASSWORD": SMTP_PASSWORD, "SMS_GATEWAY_URL": sms.url,
        "SMS_GATEWAY_USERNAME": SMS_USER, "SMS_GATEWAY_TOKEN": SMS_TOKEN,
        "WEBHOOK_ALLOW_PRIVATE": "true", "DELIVERY_BACKOFF_BASE_SECONDS": 0.2,
        "DELIVERY_BACKOFF_MAX_SECONDS": 1.0, "ALERT_SETTLE": 0}.items()})
    out_path = tmp_path / "up.out"
    out = await asyncio.to_thread(out_path.open, "wb")
    proc = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-m", "services.cli.main", "up", "--no-demo"],
        env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        async with sms, hook:
            stack_file = home / "stack.json"
            deadline = time.monotonic() + 90
            while not stack_file.exists():
                assert proc.poll() is None, out_path.read_text()
                assert time.monotonic() < deadline, "stack.json not written within 90 s"
                await asyncio.sleep(0.2)
            info = json.loads(stack_file.read_text())
            stack_json = stack_file.read_text()
            await drive(info["api_url"], hook.url)
            await drive_private_customers(info["api_url"])
            deadline = time.monotonic() + 60
            # every customer's change reached the webhook (vip-s and the 100)
            while not (mailbox.mail and sms.delivered()
                       and hook.delivered() >= len(PRIVATE_IDS) + 1):
                assert time.monotonic() < deadline, (
                    f"deliveries: mail {len(mailbox.mail)} (logins {mailbox.logins}), sms "
                    f"{sms.seen}, webhook {hook.seen}\n" + (home / "logs" / "notifier.log")
                    .read_text(errors="replace")[-3000:])
                await asyncio.sleep(0.2)
            lookups = await check_pseudonym_lookups(info["api_url"])
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        stop_process(proc, 10)
        out.close()
        smtp.stop()
    assert mailbox.logins[:3] == [False, False, True]  # refused once, then accepted
    assert sms.seen[0][1]["Authorization"] == f"Bearer {SMS_TOKEN}"

    logs = sorted((home / "logs").glob("*.log")) + [out_path]
    assert {p.name for p in logs} >= {"api.log", "scorer.log", "notifier.log", "up.out"}
    texts = {p.name: p.read_text(errors="replace") for p in logs}
    texts["stack.json (while up)"] = stack_json
    leaks = [f"{name} ({form}) in {file}"
             for name, (secret, user) in SECRETS.items()
             for form, value in forms(secret, user).items()
             for file, text in texts.items() if value in text]
    contacts = [f"{value} in {file}" for value in (STAFF_EMAIL, STAFF_PHONE, CUSTOMER_EMAIL,
                                                 CUSTOMER_PHONE)
                for file, text in texts.items() if value in text]
    private = [*PRIVATE_IDS, *(c for pair in PRIVATE_CONTACTS for c in pair)]
    ids_in_clear = [f"{value} in {file}" for value in private
                    for file, text in texts.items() if value in text]
    tokens_logged = sum(1 for t in lookups.values() if t in texts["notifier.log"])
    notifier_log = texts["notifier.log"]
    masked = [mask_email(STAFF_EMAIL), mask_phone(STAFF_PHONE.lstrip("+"))]
    record(kind="security", name="secrets-in-logs",
           tried="the whole stack (`churnwatch up`, DEBUG logs) with every secret setting set: "
           "API keys, Redis password (requirepass), SMTP password, SMS token, Kafka SASL "
           "password, a webhook secret; unknown and non-Bearer keys, a refused webhook "
           "registration with its secret, an SMTP login refused once, SMS and webhook 500s; "
           f"{len(PRIVATE_IDS)} customers (ids: phone numbers, e-mail-like, plain; profiles "
           "with contacts) scored, alerted, one exported, one erased",
           load=f"{len(SECRETS)} secrets x {len(texts)} log files and outputs, each secret raw, "
           "URL-encoded and base64 (also as basic-auth and SMTP PLAIN); 4 contact values; "
           f"{len(PRIVATE_IDS)} customer ids and {2 * len(PRIVATE_CONTACTS)} contacts",
           checked="no secret in any form in any log, the stack's output or stack.json; "
           "contacts only masked in the notifier's log; no id or contact of 100 customers "
           "(ids: phone numbers, e-mail-like, plain) in any log, their pseudonymous tokens "
           "resolve through the admin API, an erased one's does not",
           sent=len(SECRETS) * len(texts) + len(private) * len(texts),
           lost=len(leaks) + len(contacts) + len(ids_in_clear), doubled=0,
           test="tests/e2e/test_secrets_in_logs.py::test_no_secret_reaches_any_log",
           measured={"seconds": round(time.monotonic() - started, 2),
                     "log_bytes": sum(len(t) for t in texts.values())})
    assert not leaks, "secrets in logs:\n" + "\n".join(leaks)
    assert not contacts, "contacts in clear:\n" + "\n".join(contacts)
    assert not ids_in_clear, (f"{len(ids_in_clear)} customer ids/contacts in clear:\n"
                              + "\n".join(ids_in_clear[:40]))
    assert tokens_logged >= len(lookups) // 2, (  # the logs name them by token instead
        f"only {tokens_logged} of {len(lookups)} customer tokens in the notifier's log")
    assert all(m in notifier_log for m in masked), f"masked targets {masked} not logged"


async def drive(api: str, hook_url: str) -> None:
    """Successes and failures through the API, as a careless client would make them."""
    admin, ingest = {"Authorization": f"Bearer {API_ADMIN}"}, {"Authorization": f"Bearer {API_INGEST}"}
    async with httpx.AsyncClient(base_url=api, timeout=30) as c:
        for headers in ({}, {"Authorization": "Bearer " + API_ADMIN[::-1]},
                        {"Authorization": "Basic " + base64.b64encode(
                            f"admin:{API_ADMIN}".encode()).decode()},
                        {"Authorization": API_ADMIN}):
            assert (await c.get("/v1/status", headers=headers)).status_code == 401
        assert (await c.get("/v1/status", headers=ingest)).status_code == 403
        assert (await c.get("/v1/webhooks", headers={"Authorization": f"Bearer {API_READ}"})
                ).status_code == 403
        refused = await c.post("/v1/webhooks", headers=admin,
                               json={"url": f"ftp://user:{WEBHOOK_SECRET}@example.com/",
                                     "secret": WEBHOOK_SECRET})
        assert refused.status_code == 422 and WEBHOOK_SECRET not in refused.text
        short = await c.post("/v1/webhooks", headers=admin, json={"url": hook_url,
                                                                  "secret": WEBHOOK_SECRET[:9]})
        assert short.status_code == 422  # (the answer echoes the short value to its sender)
        r = await c.post("/v1/webhooks", headers=admin, json={"url": hook_url,
                                                              "secret": WEBHOOK_SECRET})
        assert r.status_code == 201 and WEBHOOK_SECRET not in r.text
        listed = await c.get("/v1/webhooks", headers=admin)
        assert WEBHOOK_SECRET not in listed.text
        for method, url, body in (
                ("PUT", "/v1/staff/mei", {"staff_id": "mei", "name": "Mei", "role": "manager",
                                          "email": STAFF_EMAIL, "phone": STAFF_PHONE,
                                          "store_id": "salon-downtown"}),
                ("PUT", "/v1/stores/salon-downtown", {"store_id": "salon-downtown",
                                                      "timezone": "UTC",
                                                      "manager_staff_id": "mei"}),
                ("PUT", "/v1/customers/vip-s/profile", {
                    "owner_staff_id": "mei", "store_id": "salon-downtown",
                    "email": CUSTOMER_EMAIL, "phone": CUSTOMER_PHONE, "name": "Vip"})):
            r = await c.request(method, url, json=body, headers=admin)
            assert r.status_code == 200, r.text
        now = datetime.now(UTC)
        events = regular("vip-s", every_days=21, count=16, start=now - timedelta(days=380))
        events.append(complaint("vip-s", now - timedelta(hours=1), 1, severity="high"))
        bad = [dict(events[1], amount="lots")]
        assert (await c.post("/v1/events", json=bad, headers=ingest)).status_code == 422
        assert (await c.post("/v1/events", json=events, headers=ingest)).status_code == 202
        assert (await c.delete("/v1/customers/someone-else", headers=admin)).status_code == 204


async def _bounded(calls: Iterable[Awaitable[httpx.Response]],
                   at_once: int = 16) -> list[httpx.Response]:
    """The calls' answers in order, at most ``at_once`` in flight (the API's Redis pool is
    bounded: a hundred at once would be refused with 503s)."""
    gate = asyncio.Semaphore(at_once)

    async def one(call: Awaitable[httpx.Response]) -> httpx.Response:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def drive_private_customers(api: str) -> None:
    """100 customers whose ids and profiles are personal data, each going high (a regular who
    just filed a high-severity complaint): scored, alerted, sent to the webhook."""
    admin = {"Authorization": f"Bearer {API_ADMIN}"}
    ingest = {"Authorization": f"Bearer {API_INGEST}"}
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=api, timeout=30) as c:
        answers = await _bounded(
            c.put(f"/v1/customers/{quote(cid, safe='@+')}/profile", headers=admin,
                  json={"owner_staff_id": "mei", "store_id": "salon-downtown", "email": email,
                        "phone": phone, "name": f"Private {n}"})
            for n, (cid, (email, phone)) in enumerate(zip(PRIVATE_IDS, PRIVATE_CONTACTS,
                                                          strict=True)))
        assert all(r.status_code == 200 for r in answers), [(r.status_code, r.text[:200]) for r in answers if r.status_code != 200][:3]
        for cid in PRIVATE_IDS:
            events += regular(cid, every_days=21, count=16, start=now - timedelta(days=380))
            events.append(complaint(cid, now - timedelta(hours=1), 1, severity="high"))
        r = await c.post("/v1/events", json=events, headers=ingest)
        assert r.status_code == 202, r.text


async def check_pseudonym_lookups(api: str) -> dict[str, str]:
    """Every customer's token resolves to them through the admin API (and only with an admin
    key); an erased customer's does not. Returns customer id -> token."""
    admin = {"Authorization": f"Bearer {API_ADMIN}"}
    tokens: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=api, timeout=30) as c:
        answers = await _bounded(
            c.get("/v1/admin/pseudonyms", params={"customer_id": cid}, headers=admin)
            for cid in PRIVATE_IDS)
        for cid, r in zip(PRIVATE_IDS, answers, strict=True):
            assert r.status_code == 200, r.text
            tokens[cid] = r.json()["token"]
        assert len(set(tokens.values())) == len(PRIVATE_IDS)
        for cid in PRIVATE_IDS[::11]:  # one of each kind at least, reversed
            r = await c.get(f"/v1/admin/pseudonyms/{tokens[cid]}", headers=admin)
            assert r.status_code == 200, r.text
            assert r.json() == {"token": tokens[cid], "customer_id": cid, "tenant_id": "default"}
        r = await c.get(f"/v1/admin/pseudonyms/{tokens[PRIVATE_IDS[0]]}",
                        headers={"Authorization": f"Bearer {API_READ}"})
        assert r.status_code == 403
        exported, erased = PRIVATE_IDS[1], PRIVATE_IDS[-1]
        r = await c.get(f"/v1/customers/{quote(exported, safe='@+')}/export", headers=admin)
        assert r.status_code == 200 and r.json()["found"], r.text
        r = await c.delete(f"/v1/customers/{quote(erased, safe='@+')}", headers=admin)
        assert r.status_code == 204, r.text
        r = await c.get(f"/v1/admin/pseudonyms/{tokens[erased]}", headers=admin)
        assert r.status_code == 404, r.text  # an erased customer does not resolve
    return tokens
