"""Issue 5 against real peers: recipients from profiles, escalation and acknowledgement,
quiet hours, digests, episodes, inhibition, consent, rate limits (real broker, Redis, aiosmtpd
and aiohttp receivers started here)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from redis.asyncio import Redis

from services.alerting.acks import (
    AckLinks,
    acknowledge,
    get_acknowledgement,
    get_alert,
    is_acknowledged,
)
from services.alerting.escalation import handed_on
from services.common.embedded import free_port
from services.common.profiles import Consent, CustomerProfile, ProfileStore, StaffMember, Store
from services.common.redisconn import Keys
from services.common.riskchange import (
    Cause,
    Reason,
    RiskChange,
    SuggestedAction,
    encode_cloudevent,
    to_cloudevent,
)
from services.common.settings import ApiKey, Settings
from services.records.profiles import give, hand_over, remove_staff
from tests.integration.test_notifier import metric, notifier, produce_changes, wait_until
from tests.peers import LoopbackHttp

pytestmark = pytest.mark.integration

MANAGER = "+15550100000"


def change(customer: str, previous: str, tier: str, *, cause: str = "event", n: int = 1,
           store: str | None = "s1", tenant: str = "default", action: str = "personal_call",
           complaints: float = 0.0) -> tuple[str, bytes]:
    rc = RiskChange(
        customer_id=customer, tenant_id=tenant, store_id=store, previous_tier=previous,  # type: ignore[arg-type]
        tier=tier, score=0.8 if tier == "high" else 0.3, previous_score=0.2,  # type: ignore[arg-type]
        reasons=[Reason(code="overdue", text=f"{customer} is overdue", text_zh="逾期", weight=1.0)],
        suggested_action=SuggestedAction(code=action, text=f"do {action}", text_zh="做"),
        value_tier="high", lifecycle_stage="active", model_version="m1",
        as_of=datetime(2026, 11, 23, 10, tzinfo=UTC),
        cause=Cause(kind=cause, event_id=f"{customer}-e{n}"),  # type: ignore[arg-type]
        features={"open_complaints": complaints})
    event = to_cloudevent(rc)
    return event["id"], encode_cloudevent(event)


class Inbox:
    """aiosmtpd handler collecting (recipients, parsed mail)."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos),
                           message_from_bytes(envelope.content, policy=default_policy)))
        return "250 OK"

    def to(self, address: str) -> list[Any]:
        return [m for rcpts, m in self.mails if address in rcpts]

    def digest_text(self, address: str) -> str:
        """The plain text of the one digest e-mail ``address`` received."""
        [mail] = [m for m in self.to(address) if "risk change" in m["Subject"]]
        return str(mail.get_body(("plain",)).get_content())


class SmsGateway(LoopbackHttp):
    """An HTTP SMS gateway (json style). ``script[phone]`` lists answers for successive
    requests: an int status, ``(status, headers)``, or ``("slow", seconds)``; then 200.
    Accepted messages are deduplicated by Idempotency-Key, as real gateways do."""

    path = "/sms"

    def __init__(self, script: dict[str, list[Any]] | None = None):
        super().__init__()
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.requests: list[dict[str, Any]] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.accept_count: dict[str, int] = {}

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        answers = self.script.get(body["to"], [])
        answer = answers.pop(0) if answers else 200
        if isinstance(answer, tuple) and answer[0] == "slow":
            await asyncio.sleep(answer[1])
            answer = 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        if status < 300:
            key = request.headers["Idempotency-Key"]
            self.accept_count[key] = self.accept_count.get(key, 0) + 1
            self.accepted.setdefault(key, body)
        return web.json_response({"ok": status < 300}, status=status, headers=headers)

    def texts_to(self, phone: str) -> list[str]:
        return [b["text"] for b in self.accepted.values() if b["to"] == phone]


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def routing_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(f"""
recipients:
  fallback: {{name: Fallback, email: fallback@example.com, phone: "{MANAGER}"}}
default_recipient: fallback
{body}
""")
    return path


async def staff_and_stores(redis: Redis, keys: Keys, *, tz: str = "UTC",
                           tenant: str = "default") -> ProfileStore:
    profiles = ProfileStore(redis, keys)
    await profiles.put_staff(StaffMember(staff_id="owner-1", name="Olga", email="olga@example.com",
                                         phone="+15550111111"), tenant)
    await profiles.put_staff(StaffMember(staff_id="mgr-1", name="Max", email="max@example.com",
                                         phone="+15550122222", role="manager"), tenant)
    await profiles.put_store(Store(store_id="s1", timezone=tz, manager_staff_id="mgr-1"), tenant)
    return profiles


async def escalating(base: Any, redis: Redis, port: int, after: float, *, policies: str = ""
                     ) -> tuple[Settings, Keys, ProfileStore]:
    """High-risk alerts by e-mail, escalated to the store's manager ``after`` seconds on
    (``policies``: more of the routing file), with Olga, Max (:func:`staff_and_stores`) and Li,
    another of store s1's staff."""
    settings = base(f"""
routes:
  - {{match: {{to: high}}, channels: [email]}}
escalation: {{after: {after}s, channels: [email]}}
{policies}""", smtp_host="127.0.0.1", smtp_port=port)
    keys = Keys(settings.redis_prefix)
    profiles = await staff_and_stores(redis, keys)
    await profiles.put_staff(LI)
    return settings, keys, profiles


LI = StaffMember(staff_id="li-1", name="Li", email="li@example.com", store_id="s1")


@pytest.fixture
def base(settings_factory, tmp_path: Path):
    def make(routing: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "delivery_backoff_base_seconds": 0.2, "delivery_backoff_max_seconds": 1.0,
            "delivery_max_attempts": 3, "webhook_allow_private": True,
            "webhook_timeout_seconds": 2.0, "routing_file": routing_file(tmp_path, routing)}
        values.update(overrides)
        return settings_factory(**values)
    return make


# recipients, escalation, acknowledgement ------------------------------------------------------


async def test_owner_then_store_manager_then_routing_file_and_escalation(base, redis: Redis, smtp) -> None:
    controller, inbox = smtp
    settings = base("""
routes:
  - {match: {to: high}, channels: [email]}
escalation: {after: 1.5s, channels: [email]}
""", smtp_host="127.0.0.1", smtp_port=controller.port)
    keys = Keys(settings.redis_prefix)
    profiles = await staff_and_stores(redis, keys)
    await profiles.put_profile("owned", CustomerProfile(owner_staff_id="owner-1", name="Mei Chen",
                                                        phone="+8613800138000"))
    await profiles.put_profile("acked", CustomerProfile(owner_staff_id="owner-1"))
    await profiles.put_profile("ghost-owner", CustomerProfile(owner_staff_id="nobody"))
    # Another tenant with the same ids: its own staff, not ours.
    await profiles.put_profile("owned", CustomerProfile(owner_staff_id="owner-1"), "acme")
    await profiles.put_staff(StaffMember(staff_id="owner-1", email="acme-olga@example.com"), "acme")

    owned_id, owned = change("owned", "low", "high")
    acked_id, acked = change("acked", "low", "high")
    _, ghost = change("ghost-owner", "low", "high")
    _, nostore = change("no-profile", "low", "high", store="elsewhere")
    _, acme = change("owned", "low", "high", tenant="acme")
    assert await acknowledge(redis, keys, acked_id, "olga")  # acknowledged before it is due
    assert not await acknowledge(redis, keys, acked_id, "someone-else")
    assert (await get_acknowledgement(redis, keys, acked_id) or {})["by"] == "olga"
    await produce_changes(settings, ("owned", owned), ("acked", acked), ("ghost-owner", ghost),
                          ("no-profile", nostore), ("owned", acme))
    async with notifier(settings) as registry:
        await wait_until(lambda: len(inbox.mails) >= 7, what="5 alerts and 2 escalations")
        await asyncio.sleep(2.5)  # the acknowledged alert's escalation falls due: nothing
        assert metric(registry, "churnwatch_notifier_deliveries_total", channel="email",
                      outcome="delivered") == 7
    olga = inbox.to("olga@example.com")
    assert sorted(m["Subject"] for m in olga) == sorted(  # the profile name, else the id
        [f"[churnwatch] {c} is now high churn risk (was low)" for c in ("Mei Chen",
                                                                       "Customer acked")])
    [escalated] = [m for m in inbox.to("max@example.com") if "ESCALATED" in m["Subject"]]
    assert "Mei Chen" in escalated["Subject"]
    assert owned_id in escalated.get_body(("plain",)).get_content()
    assert [m["Subject"] for m in inbox.to("max@example.com") if "ESCALATED" not in m["Subject"]] \
        == ["[churnwatch] Customer ghost-owner is now high churn risk (was low)"]  # owner unknown
    # Unknown store (and acme's store s1 is unknown in acme): the routing file's recipient.
    assert sorted("ESCALATED" in m["Subject"] for m in inbox.to("fallback@example.com")) == [
        False, True]
    assert len(inbox.to("acme-olga@example.com")) == 1
    assert await is_acknowledged(redis, keys, acked_id) and not await is_acknowledged(redis, keys, owned_id)
    # the alert is recorded as sent, and Olga's mail acknowledges it with one click
    assert (await get_alert(redis, keys, owned_id) or {}).get("customer_id") == "owned"
    assert await get_alert(redis, keys, "made-up-id") is None
    [mei] = [m.get_body(("plain",)).get_content() for m in olga if "Mei Chen" in m["Subject"]]
    assert "Customer: Mei Chen (owned)" in mei and "+8613800138000" not in mei  # no consent
    link = re.search(r"Acknowledge \(one click, no login\): (\S+)", mei)
    assert link and link.group(1).startswith(settings.api_public_url + "/a/")
    links = AckLinks(redis, keys, secret=settings.ack_link_key, public_url=settings.api_public_url,
                     ttl_s=settings.ack_link_ttl_seconds)
    used, new, first = await links.use(link.group(1).rsplit("/", 1)[1])
    assert used.alert_id == owned_id and new and first["by"] == "Olga"
    log = [json.loads(x) for x in await redis.lrange(keys.delivery_log("owned", "acme"), 0, -1)]
    assert sorted((e["kind"], e["status"], e["target"]) for e in log) == [
        ("alert", "delivered", "a***@example.com"), ("escalation", "delivered", "f***@example.com")]


async def test_a_hand_over_gives_the_new_owner_their_own_window_before_the_manager_is_paged(
        base, redis: Redis, smtp) -> None:
    """Olga's three high-risk alerts are delivered, unacknowledged; before their escalation
    falls due she leaves, and two of her customers are handed over: one to Li, one to nobody
    (the manager, Max, holds its alert). Max is paged about the customer nobody handed over
    when its window ends, about Li's ``after`` from the hand-over (not from Olga's delivery),
    and never about the one he holds himself."""
    controller, inbox = smtp
    after = 2.5
    settings, keys, profiles = await escalating(base, redis, controller.port, after)
    for cid, name in (("to-li", "Ann Lee"), ("to-max", "Bo Yang"), ("stays", "Cy Diaz")):
        await profiles.put_profile(cid, CustomerProfile(owner_staff_id="owner-1", name=name,
                                                        store_id="s1"))
    ids = {}
    for cid in ("to-li", "to-max", "stays"):
        ids[cid], raw = change(cid, "low", "high")
        await produce_changes(settings, (cid, raw))
    admin = ApiKey(name="admin", secret=SecretStr("x" * 16), scopes=frozenset({"admin"}))
    escalated: dict[str, float] = {}  # customer name -> when Max's escalation arrived

    def escalations() -> dict[str, float]:
        for _, mail in inbox.mails:
            for name in ("Ann Lee", "Bo Yang", "Cy Diaz"):
                if "ESCALATED" in mail["Subject"] and name in mail["Subject"]:
                    escalated.setdefault(name, time.time())
        return escalated

    async with notifier(settings):
        await wait_until(lambda: len(inbox.to("olga@example.com")) == 3, what="Olga's alerts")
        await wait_until(lambda: redis.hlen(keys.inbox("owner-1", "default")),  # type: ignore[misc]
                         what="her console list")
        delivered = time.time()
        await asyncio.sleep(after / 2)  # she leaves halfway through their windows
        to_li = await hand_over(redis, keys, profiles, "default", "owner-1", LI, reach=admin,
                                by="test", only=["to-li"])
        to_max = await hand_over(redis, keys, profiles, "default", "owner-1", None, reach=admin,
                                 by="test", only=["to-max"])
        handed = time.time()
        assert (to_li.moved, to_li.alerts, to_max.moved, to_max.alerts) == (
            ["to-li"], 1, ["to-max"], 1)
        assert handed - delivered < after * 0.8, "the hand-over came too late to tell them apart"
        await wait_until(lambda: "Cy Diaz" in escalations(), timeout=15, what="Cy's escalation")
        assert set(escalations()) == {"Cy Diaz"}  # Ann's and Bo's windows were not Olga's
        await wait_until(lambda: "Ann Lee" in escalations(), timeout=15, what="Ann's escalation")
        assert escalated["Ann Lee"] >= handed + after - 0.2
        # Ann's window is not Olga's: her page comes the hand-over's distance after Cy's (~1.25 s;
        # were it Olga's window, ~0). Each page is seen up to a retry tick (0.1 s) and a poll
        # (0.05 s) late, Cy's as much as Ann's is not: 1.05 s was read against 1.26 s on a
        # loaded CI run, failing a margin of 0.2 s.
        assert escalated["Ann Lee"] - escalated["Cy Diaz"] >= (handed - delivered) - 0.5

        async def settled() -> bool:
            return await redis.zcard(keys.escalation_queue) == 0

        await wait_until(settled, what="the queue empty")
    assert "Bo Yang" not in escalations()  # Max holds Bo's alert: no page about his own
    assert len([m for m in inbox.to("max@example.com") if "ESCALATED" in m["Subject"]]) == 2
    assert inbox.to("li@example.com") == []  # a hand-over sends nobody anything
    assert await redis.exists(keys.escalation_done(ids["to-max"]))  # a replay prepares it not
    assert await redis.hlen(keys.escalation_handed) == 0  # type: ignore[misc]
    # an escalation no longer due is not marked by a later hand-over (nothing left behind)
    assert await handed_on(redis, keys, {ids["stays"]: False}, now_ms=int(time.time() * 1000)) == 0
    assert await redis.hlen(keys.escalation_handed) == 0  # type: ignore[misc]


async def test_an_alert_the_manager_gives_to_a_first_owner_escalates_after_their_window(
        base, redis: Redis, smtp) -> None:
    """Dee, Eve and Fay have no owner: their high-risk alerts go to the store's manager, Max.
    He gives Dee and Eve to Li; Li acknowledges Eve's. Max is paged about Dee once Li's own
    window (``after`` from the give) has passed, never about Eve (acknowledged) nor Fay (he
    holds her alert himself). No escalation followed an alert to a first owner before."""
    controller, inbox = smtp
    after = 2.0
    settings, keys, profiles = await escalating(base, redis, controller.port, after)
    ids = {}
    for cid, name in (("dee", "Dee Park"), ("eve", "Eve Ross"), ("fay", "Fay Wu")):
        await profiles.put_profile(cid, CustomerProfile(name=name, store_id="s1"))
        ids[cid], raw = change(cid, "low", "high")
        await produce_changes(settings, (cid, raw))

    def paged() -> list[str]:
        return [m["Subject"] for m in inbox.to("max@example.com") if "ESCALATED" in m["Subject"]]

    async with notifier(settings):
        await wait_until(lambda: len(inbox.to("max@example.com")) == 3, what="Max's alerts")
        await wait_until(lambda: redis.hlen(keys.inbox("mgr-1", "default")),  # type: ignore[misc]
                         what="his console list")
        assert await redis.hlen(keys.escalation_data) == 3  # type: ignore[misc]
        assert await redis.zcard(keys.escalation_queue) == 0  # none armed: he holds them
        assert await give(redis, keys, "default", ["dee", "eve"], "li-1", by="max") == [
            "dee", "eve"]
        given = time.time()
        assert await acknowledge(redis, keys, ids["eve"], "li-1")
        listed = {json.loads(v)["alert_id"] for v in (await redis.hgetall(  # type: ignore[misc]
            keys.inbox("li-1", "default"))).values()}
        assert listed == {ids["dee"], ids["eve"]}
        await wait_until(lambda: paged(), timeout=15, what="Max paged about Dee")
        assert time.time() >= given + after - 0.2  # not before Li's own window ran out
        assert len(paged()) == 1 and "Dee Park" in paged()[0], paged()

        async def settled() -> bool:
            return await redis.zcard(keys.escalation_queue) == 0

        await wait_until(settled, what="the queue empty")
        await asyncio.sleep(after)  # nothing more falls due
    assert len(paged()) == 1, paged()
    assert inbox.to("li@example.com") == []  # a give sends nobody anything
    assert await redis.exists(keys.escalation_done(ids["dee"]))
    assert await redis.exists(keys.escalation_done(ids["eve"]))  # dropped as acknowledged
    # Fay's stays prepared, unarmed, until it is pruned a week on
    assert await redis.hkeys(keys.escalation_data) == [ids["fay"]]  # type: ignore[misc]


async def test_an_alert_held_for_the_manager_goes_to_a_first_owner_with_its_escalation(
        base, redis: Redis, smtp) -> None:
    """Gus has no owner: his high-risk alert to Max waits out the quiet hours. Meanwhile Max
    gives Gus to Li, so the alert goes to Li when they end; unacknowledged, Max is paged
    ``after`` later. (It was sent to Li with no escalation: prepared for no one to arm.)"""
    controller, inbox = smtp
    after = 1.5
    local = datetime.now(UTC)
    start = (local - timedelta(minutes=5)).strftime("%H:%M:%S")
    end_at = local + timedelta(seconds=10)  # start-up (group join) takes a few seconds
    settings, keys, profiles = await escalating(base, redis, controller.port, after, policies=(
        f'quiet_hours: {{start: "{start}", end: "{end_at:%H:%M:%S}", channels: [email]}}'))
    await profiles.put_profile("gus", CustomerProfile(name="Gus Hale", store_id="s1"))
    gus, raw = change("gus", "low", "high")
    await produce_changes(settings, ("gus", raw))
    async with notifier(settings) as registry:
        await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                        reason="quiet_hours_delayed") == 1, what="held")
        assert await give(redis, keys, "default", ["gus"], "li-1", by="mgr-1") == ["gus"]
        await wait_until(lambda: inbox.to("li@example.com"), timeout=25, what="Li's alert")
        sent = time.time()
        await wait_until(lambda: [m for m in inbox.to("max@example.com")
                                  if "ESCALATED" in m["Subject"]], timeout=15,
                         what="Max paged about Gus")
        assert time.time() >= sent + after - 0.3
    assert [m["Subject"] for m in inbox.to("li@example.com")] == [
        "[churnwatch] Gus Hale is now high churn risk (was low)"]
    assert [m["Subject"] for m in inbox.to("max@example.com")] == [
        "[churnwatch] ESCALATED: Gus Hale is high churn risk, not acknowledged"]
    assert await redis.exists(keys.escalation_done(gus))


# quiet hours -------------------------------------------------------------------------------


@pytest.mark.parametrize("store_tz, manager_tz", [("Asia/Shanghai", None),
                                                  ("UTC", "Asia/Shanghai")])
async def test_quiet_hours_delay_then_deliver(base, redis: Redis, store_tz: str,
                                              manager_tz: str | None) -> None:
    """Quiet hours on the store's clock, or on the manager's own when her staff record has a
    time zone (a UTC store's 5-minute window here is hours away from Shanghai's)."""
    tz = "Asia/Shanghai"
    local = datetime.now(ZoneInfo(tz))
    start = (local - timedelta(minutes=5)).strftime("%H:%M:%S")
    end_at = local + timedelta(seconds=10)  # start-up (group join) takes a few seconds
    end = end_at.strftime("%H:%M:%S")
    async with SmsGateway() as gateway:
        settings = base(f"""
routes:
  - {{match: {{to: high}}, channels: [sms]}}
quiet_hours: {{start: "{start}", end: "{end}", channels: [sms]}}
""", sms_gateway_url=gateway.url)
        profiles = await staff_and_stores(redis, Keys(settings.redis_prefix), tz=store_tz)
        if manager_tz:
            await profiles.put_staff(StaffMember(
                staff_id="mgr-1", name="Max", email="max@example.com", phone="+15550122222",
                role="manager", timezone=manager_tz))
        _, raw = change("night-owl", "low", "high")
        await produce_changes(settings, ("night-owl", raw))
        async with notifier(settings) as registry:
            await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                            reason="quiet_hours_delayed") == 1, what="delayed")
            assert gateway.requests == []
            await wait_until(lambda: gateway.accepted, timeout=15, what="delivered after the window")
            delivered_at = datetime.now(ZoneInfo(tz))
        assert delivered_at >= end_at.replace(microsecond=0)
        [text] = gateway.texts_to("+15550122222")  # no profile: store s1's manager
        assert "night-owl" in text and len(gateway.requests) == 1


async def test_nothing_held_for_someone_who_left_reaches_them(base, redis: Redis, smtp) -> None:
    """Olga's two high-risk alerts (e-mail and in-app) wait out the settle window, the
    e-mails then the night's quiet hours, and her digest of two medium ones waits for its
    interval; she leaves the team meanwhile, and one customer of each kind is handed to Li.
    Nothing reaches Olga: each alert goes, on each channel, to whoever receives that
    customer's alerts now (Li for the customers handed to her, the store's manager Max for
    the others), and each digest item likewise, in a digest to that person; Li's own alert
    goes out as held."""
    controller, inbox = smtp
    tz = "UTC"
    local = datetime.now(ZoneInfo(tz))
    start = (local - timedelta(minutes=5)).strftime("%H:%M:%S")
    end_at = local + timedelta(seconds=10)  # start-up (group join) takes a few seconds
    settings = base(f"""
routes:
  - {{match: {{to: high}}, channels: [email, in_app]}}
  - {{match: {{to: medium}}, channels: [email], digest: true}}
digest: {{interval: 2s}}
quiet_hours: {{start: "{start}", end: "{end_at.strftime('%H:%M:%S')}", channels: [email]}}
escalation: {{after: 2s, channels: [email]}}
""", smtp_host="127.0.0.1", smtp_port=controller.port, alert_settle=3.0)
    keys = Keys(settings.redis_prefix)
    profiles = await staff_and_stores(redis, keys, tz=tz)
    await profiles.put_staff(LI)
    customers = (("mei", "Mei Chen", "owner-1", "high"), ("ron", "Ron Ito", "owner-1", "high"),
                 ("kai", "Kai Berg", "owner-1", "medium"), ("ida", "Ida Lund", "owner-1", "medium"),
                 ("zoe", "Zoe Park", "li-1", "high"))
    for cid, name, owner, _ in customers:
        await profiles.put_profile(cid, CustomerProfile(owner_staff_id=owner, name=name,
                                                        store_id="s1"))
    await produce_changes(settings, *[(cid, change(cid, "low", tier)[1])
                                      for cid, _, _, tier in customers])
    admin = ApiKey(name="admin", secret=SecretStr("x" * 16), scopes=frozenset({"admin"}))
    async with notifier(settings) as registry:
        await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                        reason="digested") == 2, what="the records planned")
        olga = await profiles.get_staff("owner-1")
        assert olga is not None
        await remove_staff(redis, keys, profiles, "default", olga, by="mgr-1")
        handed = await hand_over(redis, keys, profiles, "default", "owner-1", LI, reach=admin,
                                 by="mgr-1", only=["mei", "ida"])
        assert sorted(handed.moved) == ["ida", "mei"]
        # Li's two unacknowledged, Max pages follow (none for Ron's: Max holds it)
        await wait_until(lambda: len(inbox.mails) == 7, timeout=25,
                         what="the held e-mails, the digests and the escalations of Li's two")
        await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                        reason="recipient_left") == 5,
                         what="Olga's two e-mails, two in-app entries and digest")
        assert datetime.now(ZoneInfo(tz)) >= end_at.replace(microsecond=0)
    assert inbox.to("olga@example.com") == []
    assert sorted(m["Subject"] for m in inbox.to("max@example.com")) == [
        "[churnwatch] 1 customer risk change",
        "[churnwatch] ESCALATED: Mei Chen is high churn risk, not acknowledged",
        "[churnwatch] ESCALATED: Zoe Park is high churn risk, not acknowledged",
        "[churnwatch] Ron Ito is now high churn risk (was low)"]
    assert sorted(m["Subject"] for m in inbox.to("li@example.com")) == [
        "[churnwatch] 1 customer risk change",
        "[churnwatch] Mei Chen is now high churn risk (was low)",
        "[churnwatch] Zoe Park is now high churn risk (was low)"]

    # each item to whoever took the customer, with that person's own acknowledge link
    for address, reader, name, cid, other in (
            ("max@example.com", "Max", "Kai Berg", "kai", "Ida Lund"),
            ("li@example.com", "Li", "Ida Lund", "ida", "Kai Berg")):
        text = inbox.digest_text(address)
        assert f"- {name} (s1)" in text and f"{cid} is overdue" in text and other not in text
        [link] = re.findall(r"Acknowledge: (\S+)", text)
        stored = await redis.get(keys.ack_link(link.rsplit("/", 1)[1]))
        assert stored is not None and json.loads(stored)["by"] == reader

    async def listed(staff_id: str) -> list[str]:  # the customers of their console's Alerts
        raw = await redis.hvals(keys.inbox(staff_id, "default"))  # type: ignore[misc]
        return sorted({json.loads(v)["customer_id"] for v in raw})

    assert (await listed("owner-1"), await listed("li-1"), await listed("mgr-1")) == (
        [], ["mei", "zoe"], ["mei", "ron", "zoe"])  # Max's: Ron's alert, two escalations
    log = [json.loads(x) for x in await redis.lrange(keys.delivery_log("mei"), 0, -1)]
    assert sorted((e["kind"], e["channel"], e["status"], e["target"], e.get("reason"))
                  for e in log if e["status"] != "delayed") == [
        ("alert", "email", "delivered", "l***@example.com", None),
        ("alert", "email", "not_sent", "o***@example.com", "the recipient left the team"),
        ("alert", "in_app", "delivered", "console:li-1", None),
        ("alert", "in_app", "not_sent", "console:owner-1", "the recipient left the team"),
        ("escalation", "email", "delivered", "m***@example.com", None)]
    log = [json.loads(x) for x in await redis.lrange(keys.delivery_log("ida"), 0, -1)]
    assert sorted((e["kind"], e["status"], e["target"], e.get("reason"))
                  for e in log if e["status"] != "delayed") == [
        ("digest", "delivered", "l***@example.com", None),
        ("digest", "digested", "l***@example.com", None),
        ("digest", "digested", "o***@example.com", None),
        ("digest", "not_sent", "o***@example.com", "the recipient left the team")]


async def test_what_is_held_for_a_customers_owner_goes_to_their_owner_of_the_day(
        base, redis: Redis, smtp) -> None:
    """Olga's high-risk alerts wait out the night's quiet hours and her digest of two medium
    customers waits for its interval; Max stands in for Zed, who has no owner, and the routing
    file's front desk for Ava, of a store with no record. Meanwhile the manager gives Mei and
    Ida to Li and Zed and Ava their first owner, Li; Olga stays on the team. What was held for
    Olga, Max or the desk as those customers' owner goes to Li instead: Mei's, Zed's and Ava's
    alerts, and Ida's item of the morning digest, in Li's own digest of that morning beside
    Lea, her customer; Olga gets Ron's alert and a digest of Kai alone, and each customer's
    log tells who was not sent what, and why."""
    controller, inbox = smtp
    local = datetime.now(UTC)
    start = (local - timedelta(minutes=5)).strftime("%H:%M:%S")
    end_at = local + timedelta(seconds=12)  # start-up (group join) takes a few seconds
    settings = base(f"""
recipients:
  desk: {{name: "Front desk", email: desk@example.com}}
default_recipient: desk
routes:
  - {{match: {{to: high}}, channels: [email]}}
  - {{match: {{to: medium}}, channels: [email], digest: {{at: "{end_at.strftime('%H:%M:%S')}"}}}}
quiet_hours: {{start: "{start}", end: "{end_at.strftime('%H:%M:%S')}", channels: [email]}}
""", smtp_host="127.0.0.1", smtp_port=controller.port)
    keys = Keys(settings.redis_prefix)
    profiles = await staff_and_stores(redis, keys)
    await profiles.put_staff(LI)
    customers = (("mei", "Mei Chen", "owner-1", "high"), ("ron", "Ron Ito", "owner-1", "high"),
                 ("zed", "Zed Ray", None, "high"), ("kai", "Kai Berg", "owner-1", "medium"),
                 ("ida", "Ida Lund", "owner-1", "medium"), ("ava", "Ava Roy", None, "high"),
                 ("lea", "Lea Moe", "li-1", "medium"))
    for cid, name, owner, _ in customers:
        await profiles.put_profile(cid, CustomerProfile(
            owner_staff_id=owner, name=name, store_id="s9" if cid == "ava" else "s1"))
    await produce_changes(settings, *[(cid, change(cid, "low", tier)[1])
                                      for cid, _, _, tier in customers])
    async with notifier(settings) as registry:
        await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                        reason="quiet_hours_delayed") == 4
                         and metric(registry, "churnwatch_notifier_suppressed_total",
                                    reason="digested") == 3, what="the records held")
        assert await give(redis, keys, "default", ["mei", "ida", "zed", "ava"], "li-1",
                          by="mgr-1") == ["mei", "ida", "zed", "ava"]
        await wait_until(lambda: len(inbox.mails) == 6, timeout=25,
                         what="four alerts after the quiet hours, two digests")
        await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                        reason="owner_changed") == 4,
                         what="Mei's, Zed's and Ava's alerts, Ida's item")
        assert datetime.now(UTC) >= end_at.replace(microsecond=0)
    assert sorted(m["Subject"] for m in inbox.to("li@example.com")) == [
        "[churnwatch] 2 customer risk changes",
        "[churnwatch] Ava Roy is now high churn risk (was low)",
        "[churnwatch] Mei Chen is now high churn risk (was low)",
        "[churnwatch] Zed Ray is now high churn risk (was low)"]
    assert sorted(m["Subject"] for m in inbox.to("olga@example.com")) == [
        "[churnwatch] 1 customer risk change",
        "[churnwatch] Ron Ito is now high churn risk (was low)"]
    assert inbox.to("max@example.com") == inbox.to("desk@example.com") == []

    olga, li = inbox.digest_text("olga@example.com"), inbox.digest_text("li@example.com")
    assert "Kai Berg" in olga and "Ida Lund" not in olga
    assert "Ida Lund" in li and "Lea Moe" in li and "Kai" not in li  # one e-mail, both

    async def log(cid: str) -> list[tuple[str, str, str | None]]:
        raw = await redis.lrange(keys.delivery_log(cid), 0, -1)  # type: ignore[misc]
        return sorted((e["status"], e["target"], e.get("reason")) for e in map(json.loads, raw)
                      if e["status"] not in ("delayed", "digested"))

    moved = "the customer has another owner now"
    assert await log("mei") == [("delivered", "l***@example.com", None),
                                ("not_sent", "o***@example.com", moved)]
    assert await log("zed") == [("delivered", "l***@example.com", None),
                                ("not_sent", "m***@example.com", moved)]
    assert await log("ida") == [("delivered", "l***@example.com", None),
                                ("not_sent", "o***@example.com", moved)]
    assert await log("ava") == [("delivered", "l***@example.com", None),
                                ("not_sent", "d***@example.com", moved)]
    assert await log("ron") == [("delivered", "o***@example.com", None)]


# digests ---------------------------------------------------------------------------------------


async def test_digest_groups_many_alerts_into_one_message(base, redis: Redis, smtp) -> None:
    controller, inbox = smtp
    settings = base("""
routes:
  - {match: {to: [medium, high]}, channels: [email], to: store_manager, digest: true}
digest: {interval: 2s}
""", smtp_host="127.0.0.1", smtp_port=controller.port)
    profiles = await staff_and_stores(redis, Keys(settings.redis_prefix))
    await profiles.put_profile("d-0", CustomerProfile(name="Dora Digest"))
    changes = [change(f"d-{n}", "low", "medium") for n in range(5)]
    records = [(f"d-{n}", raw) for n, (_, raw) in enumerate(changes)]
    await produce_changes(settings, *records)
    async with notifier(settings) as registry:
        await wait_until(lambda: inbox.mails, timeout=15, what="the digest")
        await asyncio.sleep(1.0)
        assert metric(registry, "churnwatch_notifier_suppressed_total", reason="digested") == 5
    [(rcpts, mail)] = inbox.mails
    assert rcpts == ["max@example.com"] and mail["Subject"] == "[churnwatch] 5 customer risk changes"
    text = mail.get_body(("plain",)).get_content()
    assert all(f"d-{n} is overdue" in text for n in range(5))
    assert "- Dora Digest (s1)" in text and "- d-1 (s1)" in text  # profile name, else the id
    assert text.count(f"Acknowledge: {settings.api_public_url}/a/") == 5  # one link per alert
    # and the customer's page in the console, as alerts and the go-live summary have
    assert f"Details: {settings.api_public_url}/console/customers/d-1\r\n" in text
    html = mail.get_body(("html",)).get_content()
    assert f'<a href="{settings.api_public_url}/console/customers/d-0"' in html
    # each customer's delivery log says the digest listing them went out, not only that
    # they were put in one
    raw = await redis.lrange(Keys(settings.redis_prefix).delivery_log("d-1"), 0, -1)  # type: ignore[misc]
    log = [json.loads(x) for x in raw]
    assert [(e["kind"], e["status"], e["target"]) for e in log] == [
        ("digest", "delivered", "m***@example.com"), ("digest", "digested", "m***@example.com")]
    assert log[0]["event_id"] == log[1]["event_id"] == changes[1][0] and log[0]["delivery_id"]
    # Read again from the start by a new group: buffered once, so no second digest.
    again = settings.model_copy(update={"notifier_group": settings.notifier_group + "-again"})
    async with notifier(again) as registry:
        await wait_until(lambda: metric(registry, "churnwatch_notifier_risk_changes_consumed_total") == 5,
                         what="the replay consumed")
        await asyncio.sleep(2.5)
    assert len(inbox.mails) == 1


async def test_a_routes_daily_digest_lists_only_who_is_still_at_that_tier(base, redis: Redis,
                                                                          smtp) -> None:
    """A route's digest of its own (``digest: 2s`` here, ``1d`` in the packaged routing) beside
    the file's interval: sent when it is due, to the owner, listing only the customers still
    at medium in the same episode. One who came back by a visit, fell back to low or rose to
    high (and was alerted then) is left out, each counted as ``moved_on``."""
    controller, inbox = smtp
    settings = base("""
routes:
  - {match: {to: high}, channels: [email]}
  - {match: {to: medium}, channels: [email], digest: 2s}
digest: {interval: 1h}
""", smtp_host="127.0.0.1", smtp_port=controller.port)
    profiles = await staff_and_stores(redis, Keys(settings.redis_prefix))
    for who in ("stays", "returned", "fell", "rose"):
        await profiles.put_profile(who, CustomerProfile(owner_staff_id="owner-1",
                                                        name=who.title()))
    await produce_changes(
        settings,
        ("stays", change("stays", "low", "medium", cause="silence")[1]),
        ("returned", change("returned", "low", "medium", cause="silence")[1]),
        ("returned", change("returned", "medium", "low", cause="event", n=2)[1]),  # a visit
        ("fell", change("fell", "low", "medium", cause="silence")[1]),
        ("fell", change("fell", "medium", "low", cause="model", n=2)[1]),  # no return
        ("rose", change("rose", "low", "medium", cause="silence")[1]),
        ("rose", change("rose", "medium", "high", cause="silence", n=2)[1]),
    )
    async with notifier(settings) as registry:
        await wait_until(lambda: len(inbox.mails) == 2, timeout=15,
                         what="the high alert and the digest")
        await asyncio.sleep(0.5)
        assert metric(registry, "churnwatch_notifier_suppressed_total", reason="digested") == 4
        assert metric(registry, "churnwatch_notifier_suppressed_total", reason="moved_on") == 3
    assert all(rcpts == ["olga@example.com"] for rcpts, _ in inbox.mails)
    [alert] = [m for _, m in inbox.mails if "1 customer" not in m["Subject"]]
    assert "Rose" in alert["Subject"] or "Rose" in alert.get_body(("plain",)).get_content()
    [digest] = [m for _, m in inbox.mails if m["Subject"] == "[churnwatch] 1 customer risk change"]
    text = digest.get_body(("plain",)).get_content()
    assert "- Stays (s1): low → medium" in text
    assert not any(name in text for name in ("Returned", "Fell", "Rose"))


async def test_the_packaged_routing_puts_a_rise_to_medium_in_the_owners_daily_digest(
        settings_factory, redis: Redis, smtp) -> None:
    """The 4-weekly regular unseen for nine weeks is at medium: with the packaged routing
    (no routing file) their owner hears of it in the next morning's digest (08:00 store
    time), where they used to hear nothing until high. A rise to high still goes out at once
    (e-mail here: this stack has no SMS gateway). An owner whose customers sit in stores of
    two time zones gets each store's list at 08:00 there."""
    controller, inbox = smtp
    settings = settings_factory(smtp_host="127.0.0.1", smtp_port=controller.port,
                                routing_file=None)
    keys = Keys(settings.redis_prefix)
    profiles = await staff_and_stores(redis, keys)
    await profiles.put_store(Store(store_id="sh", timezone="Asia/Shanghai"))
    await profiles.put_profile("ana", CustomerProfile(owner_staff_id="owner-1", name="Ana"))
    await profiles.put_profile("bo", CustomerProfile(owner_staff_id="owner-1", name="Bo"))
    await profiles.put_profile("cy", CustomerProfile(owner_staff_id="owner-1", name="Cy",
                                                     store_id="sh"))
    await produce_changes(settings,
                          ("ana", change("ana", "low", "medium", cause="silence")[1]),
                          ("bo", change("bo", "low", "high", cause="silence")[1]),
                          ("cy", change("cy", "low", "medium", cause="silence")[1]))
    async with notifier(settings) as registry:
        await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                        reason="digested") == 2, what="ana and cy digested")
        await wait_until(lambda: inbox.mails, what="bo's alert")
        due: list[tuple[str, float]] = await redis.zrange(  # type: ignore[assignment]
            keys.digest_base + "due", 0, -1, withscores=True)
    [(rcpts, mail)] = inbox.mails
    assert rcpts == ["olga@example.com"] and "Bo" in mail["Subject"]
    # ana's and cy's, in the owner's morning e-mail digests: one per store time zone
    by_zone = {buffer.rsplit("|", 1)[1]: (buffer, at_ms) for buffer, at_ms in due}
    assert sorted(by_zone) == ["Asia/Shanghai", "UTC"]
    for zone_name, (buffer, at_ms) in by_zone.items():
        assert buffer.startswith("email|") and "|at 08:00:00|" in buffer and "owner-1" in buffer
        at = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(zone_name))
        assert (at.hour, at.minute, at.second) == (8, 0, 0)
        assert timedelta(0) < at - datetime.now(UTC) <= timedelta(days=1)


async def test_a_regional_manager_with_a_time_zone_gets_one_morning_digest_on_her_clock(
        settings_factory, redis: Redis, smtp) -> None:
    """The owner above, with her own time zone on her staff record (she works from Berlin):
    one morning digest at 08:00 Berlin time lists her customers of both stores, where she had
    one per store time zone."""
    from services.notifier.channels.base import Message
    from services.notifier.digests import Digester
    from services.notifier.templates import Templates

    controller, _ = smtp
    settings = settings_factory(smtp_host="127.0.0.1", smtp_port=controller.port,
                                routing_file=None)
    keys = Keys(settings.redis_prefix)
    profiles = await staff_and_stores(redis, keys)
    await profiles.put_staff(StaffMember(staff_id="owner-1", name="Olga", email="olga@example.com",
                                         phone="+15550111111", timezone="Europe/Berlin"))
    await profiles.put_store(Store(store_id="sh", timezone="Asia/Shanghai"))
    await profiles.put_profile("ana", CustomerProfile(owner_staff_id="owner-1", name="Ana"))
    await profiles.put_profile("cy", CustomerProfile(owner_staff_id="owner-1", name="Cy",
                                                     store_id="sh"))
    await produce_changes(settings,
                          ("ana", change("ana", "low", "medium", cause="silence")[1]),
                          ("cy", change("cy", "low", "medium", cause="silence")[1]))
    async with notifier(settings) as registry:
        await wait_until(lambda: metric(registry, "churnwatch_notifier_suppressed_total",
                                        reason="digested") == 2, what="ana and cy digested")
        due: list[tuple[str, float]] = await redis.zrange(  # type: ignore[assignment]
            keys.digest_base + "due", 0, -1, withscores=True)
    [(buffer, at_ms)] = due
    assert buffer.endswith("|at 08:00:00|Europe/Berlin") and "owner-1" in buffer
    at = datetime.fromtimestamp(at_ms / 1000, ZoneInfo("Europe/Berlin"))
    assert (at.hour, at.minute, at.second) == (8, 0, 0)
    sent: list[Message] = []

    async def deliver(message: Message) -> None:
        sent.append(message)

    digester = Digester(redis, keys, templates=Templates(None), interval_s=60)
    assert await digester.flush(now_ms=int(at_ms), deliver=deliver) == 1
    [mail] = sent
    assert mail.to == "olga@example.com" and mail.timezone == "Europe/Berlin"
    assert mail.subject == "[churnwatch] 2 customer risk changes"
    assert "- Ana (s1): low → medium" in mail.text and "- Cy (" in mail.text


async def test_a_morning_digest_item_is_buffered_once_whatever_its_zone(
        settings: Settings, redis: Redis) -> None:
    """Buffers of a morning digest are per time zone; an item's mark is not: a record replayed
    after the zone joined the buffer's name (an upgrade) is not listed a second time."""
    from datetime import time as dtime

    from services.notifier.digests import Digester
    from services.notifier.routing import Recipient
    from services.notifier.templates import Templates

    keys = Keys(settings.redis_prefix)
    digester = Digester(redis, keys, templates=Templates(None), interval_s=60)
    olga = Recipient(key="staff:default:owner-1", name="Olga", email="olga@example.com")
    now_ms = int(datetime(2026, 11, 24, 6, 30, tzinfo=UTC).timestamp() * 1000)

    async def add(event_id: str, timezone: str) -> bool:
        return await digester.add(channel="email", recipient=olga, tenant="default",
                                  event_id=event_id, item={"customer_id": event_id},
                                  now_ms=now_ms, at=dtime(8, 0), timezone=timezone)

    assert await add("e1", "Europe/Berlin") and await add("e2", "America/New_York")
    assert not await add("e1", "Europe/Berlin") and not await add("e1", "UTC")
    due: list[tuple[str, float]] = await redis.zrange(  # type: ignore[assignment]
        keys.digest_base + "due", 0, -1, withscores=True)
    when = {b.rsplit("|", 1)[1]: datetime.fromtimestamp(ms / 1000, UTC) for b, ms in due}
    # 06:30 UTC: 07:30 in Berlin (08:00 there is 07:00 UTC), 01:30 in New York (13:00 UTC)
    assert when == {"Europe/Berlin": datetime(2026, 11, 24, 7, 0, tzinfo=UTC),
                    "America/New_York": datetime(2026, 11, 24, 13, 0, tzinfo=UTC)}


async def test_an_item_re_addressed_from_a_leaver_is_listed_once_and_at_once(
        settings: Settings, redis: Redis) -> None:
    """A leaver's digest item goes to whoever took the customer in a digest due now; not to
    someone who has it in a digest of their own already (a route to the owner and the
    store's manager alike), and once however often the leaver's digest is re-addressed (a
    notifier killed in between)."""
    from datetime import time as dtime

    from services.notifier.digests import Digester
    from services.notifier.routing import Recipient
    from services.notifier.templates import Templates

    keys = Keys(settings.redis_prefix)
    digester = Digester(redis, keys, templates=Templates(None), interval_s=60)
    max_ = Recipient(key="staff:default:mgr-1", name="Max", email="max@example.com")
    li = Recipient(key="staff:default:li-1", name="Li", email="li@example.com")
    now_ms = int(datetime(2026, 11, 24, 6, 30, tzinfo=UTC).timestamp() * 1000)

    async def add(who: Recipient, event_id: str, **how: Any) -> bool:
        return await digester.add(channel="email", recipient=who, tenant="default",
                                  event_id=event_id, item={"customer_id": event_id},
                                  now_ms=now_ms, **how)

    assert await add(max_, "e1", at=dtime(8, 0), timezone="UTC")  # Max's own morning list
    assert not await add(max_, "e1", readdressed=True)  # he has it: not listed twice
    assert await add(max_, "e2", readdressed=True)
    assert await add(li, "e1", readdressed=True)
    assert not await add(li, "e1", readdressed=True)  # re-addressed again after a crash
    due: list[tuple[str, float]] = await redis.zrange(  # type: ignore[assignment]
        keys.digest_base + "due", 0, -1, withscores=True)
    assert sorted((b, int(ms)) for b, ms in due) == [
        ("email|staff:default:li-1|readdressed", now_ms),
        ("email|staff:default:mgr-1|at 08:00:00|UTC", now_ms + 90 * 60_000),
        ("email|staff:default:mgr-1|readdressed", now_ms)]


@pytest.mark.parametrize("reader_id, taker_id", [("owner-1", "li-1"), ("li-1", "owner-1")])
async def test_an_item_taken_during_a_flush_joins_the_new_readers_digest_of_that_flush(
        settings: Settings, redis: Redis, reader_id: str, taker_id: str) -> None:
    """Both digests due in the same flush: the item the first reader no longer has joins the
    second's own digest (one e-mail), whichever of the two is sent first, and a customer the
    second lists already is listed once (their newer item); a flush that stops half way (a
    notifier killed) sends it once all the same."""
    from datetime import time as dtime

    from services.notifier.channels.base import Message
    from services.notifier.digests import Digester
    from services.notifier.routing import Recipient
    from services.notifier.templates import Templates

    keys = Keys(settings.redis_prefix)
    digester = Digester(redis, keys, templates=Templates(None), interval_s=60)
    reader, taker = (Recipient(key=f"staff:default:{i}", name=i, email=f"{i}@example.com")
                     for i in (reader_id, taker_id))
    now_ms = int(datetime(2026, 11, 24, 6, 30, tzinfo=UTC).timestamp() * 1000)

    def item(cid: str, event_id: str, at_ms: int = now_ms) -> dict[str, Any]:
        return {"customer_id": cid, "event_id": event_id, "customer": f"Guest {cid}",
                "store": "s1", "previous_tier": "low", "tier": "medium", "tier_id": "medium",
                "score": "0.5", "reasons": ["late"], "action": "call", "at_ms": at_ms}

    for who, cid, eid in ((reader, "kai", "e-kai"), (reader, "ida", "e-ida"),
                          (reader, "lea", "e-lea-0"), (taker, "lea", "e-lea")):
        assert await digester.add(channel="email", recipient=who, tenant="default",
                                  event_id=eid, item=item(cid, eid, now_ms + len(eid)),
                                  now_ms=now_ms, at=dtime(8, 0), timezone="UTC")

    async def taken(who: Recipient, channel: str, tenant: str,
                    items: list[tuple[str, dict[str, Any]]]) -> set[str]:
        if who.key != reader.key:
            return set()
        for cid, eid in (("ida", "e-ida"), ("lea", "e-lea-0")):  # Lea's older item
            await digester.add(channel=channel, recipient=taker, tenant=tenant, event_id=eid,
                               item=item(cid, eid), now_ms=now_ms, readdressed=True)
        return {"e-ida", "e-lea-0"}

    async def standing(items: list[tuple[str, str, str]]) -> list[bool]:
        return [True] * len(items)

    sent: dict[str, Message] = {}  # by delivery id, as the ledger claims them

    async def killed(message: Message) -> None:  # killed right after the first one went out
        sent.setdefault(message.delivery_id, message)
        raise RuntimeError("SIGKILL")

    async def deliver(message: Message) -> None:
        sent.setdefault(message.delivery_id, message)

    with pytest.raises(RuntimeError):
        await digester.flush(now_ms=now_ms + 86_400_000, deliver=killed, taken=taken,
                             standing=standing)
    assert await digester.flush(now_ms=now_ms + 86_400_000, deliver=deliver, taken=taken,
                                standing=standing) == 2
    got = {m.to: sorted(json.loads(m.event)["digest"]) for m in sent.values()}
    assert got == {f"{reader_id}@example.com": ["e-kai"],
                   f"{taker_id}@example.com": ["e-ida", "e-lea"]}
    # nothing left for a later flush: the item joined the taker's digest, not a buffer
    assert await digester.flush(now_ms=now_ms + 86_400_000, deliver=deliver, taken=taken) == 0
    assert len(sent) == 2


async def test_a_long_digest_lists_the_most_valuable_fifty_and_links_the_rest(
        settings: Settings, redis: Redis) -> None:
    """A large online shop's morning digest can hold a hundred customers: the e-mail names the
    50 most valuable (score x a year's spend, as the at-risk list) and counts and links the
    rest, as the go-live summary does, well under the 102 KB at which Gmail clips a message."""
    from datetime import time as dtime

    from services.notifier.channels.base import Message
    from services.notifier.digests import Digester
    from services.notifier.routing import Recipient
    from services.notifier.templates import DIGEST_LISTED, Templates

    keys = Keys(settings.redis_prefix)
    digester = Digester(redis, keys, templates=Templates(None), interval_s=60,
                        link_base="https://console.test")
    olga = Recipient(key="staff:default:owner-1", name="Olga", email="olga@example.com")
    now_ms = int(datetime(2026, 11, 24, 6, 30, tzinfo=UTC).timestamp() * 1000)
    for n in range(120):
        await digester.add(
            channel="email", recipient=olga, tenant="default", event_id=f"e{n}", now_ms=now_ms,
            at=dtime(8, 0), timezone="UTC",
            item={"customer_id": f"c{n:03d}", "customer": f"Guest c{n:03d}", "store": "s1",
                  "previous_tier": "low", "tier": "medium", "tier_id": "medium", "score": "0.52",
                  "reasons": ["Came on 1 day in the last 90; usually about 3"],
                  "action": "Call or message the customer personally", "at_ms": now_ms + n,
                  "link": f"https://console.test/console/customers/c{n:03d}",
                  "priority": float(n % 7 * 100 + n)})
    sent: list[Message] = []

    async def deliver(message: Message) -> None:
        sent.append(message)

    assert await digester.flush(now_ms=now_ms + 86_400_000, deliver=deliver) == 1
    [mail] = sent
    assert mail.subject == "[churnwatch] 120 customer risk changes"
    text = mail.text
    named = [n for n in range(120) if f"- Guest c{n:03d} (" in text]
    best = sorted(range(120), key=lambda n: -(n % 7 * 100 + n))[:DIGEST_LISTED]
    assert sorted(named) == sorted(best) and len(named) == DIGEST_LISTED == 50
    assert text.index(f"Guest c{best[0]:03d}") < text.index(f"Guest c{best[1]:03d}")
    assert ("- … and 70 more, in the console: "
            "https://console.test/console/at-risk?tier=medium") in text
    assert "see them in the console" in mail.html and len(mail.html.encode()) < 60_000


# episodes, won back, inhibition, consent, rate limits ----------------------------------------


async def test_episode_dedupe_won_back_inhibition_consent_and_rate_limit(base, redis: Redis) -> None:
    async with SmsGateway() as gateway:
        settings = base("""
routes:
  - {match: {to: [medium, high]}, channels: [sms]}
inhibit:
  - {name: complaint_first, feature: open_complaints, above: 0, actions: [win_back_offer], then: suppress}
won_back: {channels: [sms], to: [owner, customer]}
rate_limits: {per_recipient: {count: 1, per: 3s}}
""", sms_gateway_url=gateway.url)
        keys = Keys(settings.redis_prefix)
        profiles = await staff_and_stores(redis, keys)
        await profiles.put_profile("ep", CustomerProfile(
            owner_staff_id="owner-1", phone="+15550133333",
            consent=Consent(sms=True, sms_opt_out=False)))
        await profiles.put_profile("optout", CustomerProfile(
            owner_staff_id="owner-1", phone="+15550144444",
            consent=Consent(sms=True, sms_opt_out=True)))
        # an owner with no phone: the SMS route cannot reach them, and the metric says so
        await profiles.put_staff(StaffMember(staff_id="owner-2", name="Ema",
                                             email="ema@example.com"), "default")
        await profiles.put_profile("mailonly", CustomerProfile(owner_staff_id="owner-2"))
        await produce_changes(
            settings,
            ("ep", change("ep", "low", "medium", cause="silence", n=1)[1]),     # alert
            ("ep", change("ep", "medium", "high", cause="silence", n=2)[1]),    # alert, but the
            # owner already heard by SMS in this episode: once per recipient and channel
            ("ep", change("ep", "high", "medium", cause="silence", n=3)[1]),    # dedupe
            ("ep", change("ep", "medium", "high", cause="silence", n=4)[1]),    # dedupe
            ("ep", change("ep", "high", "low", cause="event", n=5)[1]),         # won back
            ("optout", change("optout", "low", "high", cause="silence")[1]),    # alert
            ("optout", change("optout", "high", "low", cause="event", n=2)[1]),  # won back
            ("offer", change("offer", "low", "high", action="win_back_offer", complaints=1)[1]),
            ("mailonly", change("mailonly", "low", "high", cause="silence")[1]),  # no phone
        )
        async with notifier(settings) as registry:
            def suppressed(reason: str) -> float:
                return metric(registry, "churnwatch_notifier_suppressed_total", reason=reason)
            await wait_until(lambda: len(gateway.accepted) == 5, timeout=40, what="5 SMS")
            await asyncio.sleep(0.5)
            assert suppressed("dedupe") == 3 and suppressed("inhibited") == 1
            assert suppressed("no_consent") == 1  # optout's own won-back SMS
            assert suppressed("no_contact") == 1  # mailonly's owner has no phone
            # the owner's messages arrive together, one per 3 s window: at least one waits
            # (1 per window rather than 2, so a slow machine cannot spread them out)
            assert suppressed("rate_limited") >= 1
        owner = gateway.texts_to("+15550111111")
        assert len(owner) == 4 and sum("WON BACK" in t for t in owner) == 2
        [customer_sms] = gateway.texts_to("+15550133333")  # consent given: their won-back
        assert "WON BACK" in customer_sms
        assert gateway.texts_to("+15550144444") == []
        assert all(n == 1 for n in gateway.accept_count.values())
