"""churnwatch on a real Redis Cluster (three primaries on loopback, no replicas) with
``CHURNWATCH_REDIS_CLUSTER=true``: the notifier end to end (settle window, retries, escalation,
digest, go-live summary, rate limits, in-app list), the API routes that do not need the
scorer (profiles, erasure, webhook admin, win-back actions, export, the console's sign-in and
alert list), and proof that the fixture is a cluster that refuses cross-slot scripts.

Every Lua script and MULTI of those services must touch one hash slot: on this cluster a
cross-slot one fails (client side, or CROSSSLOT from the server), so these tests fail too."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import httpx
import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, RedisClusterException, ResponseError

from services.alerting.escalation import UNARMED_TTL_S, Escalations, handed_on
from services.alerting.webhooks import add_subscription
from services.cli.reach import require
from services.common.embedded import free_port
from services.common.exceptions import ConfigError
from services.common.profiles import CustomerProfile, ProfileStore, StaffMember
from services.common.redisconn import Keys, customer_token, is_cluster, make_redis
from services.common.riskchange import TIERS
from services.common.settings import Settings
from services.notifier.channels.base import Message
from services.notifier.channels.in_app import InAppChannel
from services.notifier.signing import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from services.server.app import create_app
from tests.integration.test_alert_scenarios import change
from tests.integration.test_api_queries import ACME, ADMIN, INGEST, KEYS, READ
from tests.integration.test_notifier import Receiver, metric, notifier, produce_changes, wait_until
from tests.integration.test_notifier_policies import Inbox, routing_file, staff_and_stores
from tests.seeding import Seeder

pytestmark = pytest.mark.integration

SECRET = "cluster-webhook-secret-0123456789"
OLGA, MAX = "olga@example.com", "max@example.com"


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@asynccontextmanager
async def cluster_client(settings: Settings) -> AsyncIterator[Redis]:
    redis = make_redis(settings)
    try:
        yield redis
    finally:
        await redis.aclose()


@asynccontextmanager
async def api(settings: Settings, base_url: str = "http://api"
              ) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in process (as tests/integration/test_api_queries.py runs it)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


# (c) the fixture is a real cluster ---------------------------------------------------------


async def test_make_redis_is_a_cluster_client_and_cross_slot_scripts_fail(
        cluster_settings_factory) -> None:
    settings = cluster_settings_factory(create_topics=False)
    keys = Keys(settings.redis_prefix)
    async with cluster_client(settings) as redis:
        assert isinstance(redis, RedisCluster) and is_cluster(redis)
        await redis.initialize()  # the slot map (a cluster client connects lazily)
        assert len(redis.get_primaries()) == 3  # type: ignore[attr-defined]
        a, b = keys.profile("a"), keys.profile("b")
        assert slot(a) != slot(b)
        lua = "return redis.call('MSET', KEYS[1], '1', KEYS[2], '2')"
        script = redis.register_script(lua)
        with pytest.raises(RedisClusterException, match="same key slot"):
            await script(keys=[a, b])  # the client refuses it before sending
        # and so does the server: CROSSSLOT (redis-py raises ClusterCrossSlotError for it)
        with pytest.raises(ClusterCrossSlotError, match="same slot"):
            await redis.execute_command("EVAL", lua, 2, a, b,
                                        target_nodes=redis.get_node_from_key(a))  # type: ignore[attr-defined]
        with pytest.raises((RedisClusterException, ResponseError)):
            async with redis.pipeline(transaction=True) as pipe:
                pipe.set(a, "1")
                pipe.set(b, "2")
                await pipe.execute()
        # one slot is fine, and data is spread over the nodes
        together = [keys.delivery("0" * 32), keys.retry_queue]
        assert await script(keys=together) is not None
        owners = {redis.get_node_from_key(keys.profile(f"c{i}")).name  # type: ignore[attr-defined]
                  for i in range(30)}
        assert len(owners) == 3


def test_a_cluster_node_named_without_redis_cluster_is_refused_at_start(
        cluster_settings_factory) -> None:
    """``churnwatch scorer``/``notifier`` check Redis before starting: a cluster node with
    CHURNWATCH_REDIS_CLUSTER unset is a configuration error, not MOVED errors later."""
    settings = cluster_settings_factory(create_topics=False)
    require(settings, redis=True)  # set: fine
    plain = settings.model_copy(update={"redis_cluster": False})
    with pytest.raises(ConfigError, match="CHURNWATCH_REDIS_CLUSTER=true"):
        require(plain, redis=True)


def test_keys_moved_together_share_a_slot() -> None:
    """What one script or MULTI touches (see services/common/redisconn.py) is one slot."""
    k = Keys("cw")
    groups = [
        [k.delivery("ab" * 16), k.retry_queue, k.retry_payloads],
        [k.settle_queue, k.settle_data],
        [k.escalation_queue, k.escalation_data, k.escalation_handed, k.escalation_prepared,
         k.escalation_done("alert-1")],
        [k.digest_base + s for s in ("b:email|staff:x", "due", "seen:email|staff:x|e1", "seq",
                                     "batch:email|staff:x:1", "batches")],
        [k.summary_base + s for s in ("b:default", "due", "seq", "batch:default:1", "batches")],
        [k.rate_limit("r:staff:x:60:1"), k.rate_limit("c:email:60:1")],
        [*k.customer_all("c-1", "acme"), k.profile("c-1", "acme"), k.actions("c-1", "acme"),
         k.timeline("c-1", "acme"), k.delivery_log("c-1", "acme"), k.episode("c-1", "acme")],
    ]
    for keys in groups:
        assert len({slot(key) for key in keys}) == 1, keys
    assert slot(k.retry_queue) != slot(Keys("other").retry_queue)  # prefixes spread


# (a) the notifier end to end --------------------------------------------------------------


async def test_notifier_on_a_cluster_tells_each_recipient_each_message_once(
        cluster_settings_factory, smtp, tmp_path: Path) -> None:
    """Alerts through the settle window (one reverted inside it), a webhook that fails once
    (retry queue), escalations, a digest, a go-live summary and rate limits, all on the
    cluster; then every record again (a scorer repeating itself): nothing is sent twice."""
    controller, inbox = smtp
    settings = cluster_settings_factory(
        routing_file=routing_file(tmp_path, """
routes:
  - {match: {to: high}, channels: [email, in_app], to: [owner]}
  - {match: {to: medium}, channels: [email], to: store_manager, digest: true}
escalation: {after: 1s, channels: [email]}
digest: {interval: 1s}
rate_limits: {per_recipient: {count: 50, per: 1m}, per_channel: {email: {count: 100, per: 1m}}}
"""), smtp_host="127.0.0.1", smtp_port=controller.port, webhook_allow_private=True,
        delivery_backoff_base_seconds=0.2, delivery_backoff_max_seconds=0.5,
        delivery_max_attempts=5, webhook_timeout_seconds=3.0, alert_settle=0.5,
        alert_summary_after=0.5, notifier_metrics_port=free_port())
    keys = Keys(settings.redis_prefix)
    now = datetime.now(UTC)
    old = now - timedelta(days=30)
    async with cluster_client(settings) as redis, Receiver([500]) as hook:
        profiles = await staff_and_stores(redis, keys)
        for cid in ("hi-1", "hi-2", "flip", "old"):
            await profiles.put_profile(cid, CustomerProfile(owner_staff_id="owner-1"))
        await add_subscription(redis, keys, url=hook.url, secret=SECRET)
        records = [
            ("hi-1", change("hi-1", "low", "high", n=1, at=now, kind="silence")),
            ("hi-2", change("hi-2", "low", "high", n=1, at=now, kind="silence")),
            ("flip", change("flip", "low", "high", n=1, at=now, event_type="complaint")),
            ("flip", change("flip", "high", "low", n=2, at=now, event_type="complaint")),
            *((f"m-{i}", change(f"m-{i}", "low", "medium", n=1, at=now, kind="silence"))
              for i in range(3)),
            ("old", change("old", "low", "high", n=1, at=old, kind="silence", catching_up=True)),
        ]
        alert_ids = {cid: rec[0] for cid, rec in records if cid.startswith("hi-")}
        await produce_changes(settings, *((cid, rec[1]) for cid, rec in records))
        async with notifier(settings) as registry:
            await wait_until(lambda: len(inbox.to(MAX)) >= 3 and len(inbox.to(OLGA)) >= 3
                             and len({h[DELIVERY_HEADER] for h, _ in hook.requests}) == len(records),
                             timeout=30, what="alerts, escalations, digest, summary, webhooks")

            async def drained() -> bool:  # the failed webhook's retry done, nothing held
                return (await redis.zcard(keys.retry_queue) == 0
                        and await redis.zcard(keys.settle_queue) == 0)
            # a slow machine may take a while to run the retry: wait for it, not a fixed time
            await wait_until(drained, timeout=30, what="the retry and settle queues drained")
            await asyncio.sleep(1.5)  # anything extra would show up now
            first = (len(inbox.mails), len(hook.requests))
            await produce_changes(settings, *((cid, rec[1]) for cid, rec in records))
            await wait_until(lambda: metric(registry, "churnwatch_notifier_risk_changes_consumed_total")
                             == 2 * len(records), timeout=20, what="the repeated records consumed")
            await asyncio.sleep(2.0)
            await wait_until(drained, timeout=30, what="the retry and settle queues drained")
            assert (len(inbox.mails), len(hook.requests)) == first
        inbox_raw = await redis.hgetall(keys.inbox("owner-1"))  # type: ignore[misc]
        assert await redis.zcard(keys.retry_queue) == 0
        assert await redis.hlen(keys.retry_payloads) == 0  # type: ignore[misc]
        assert await redis.zcard(keys.settle_queue) == 0
    per = Counter((rcpts[0], m["Subject"]) for rcpts, m in inbox.mails)
    assert all(n == 1 for n in per.values()), per
    olga = [m["Subject"] for m in inbox.to(OLGA)]
    maxs = [m["Subject"] for m in inbox.to(MAX)]
    assert len(olga) == 3 and sum("hi-1" in s for s in olga) == 1 and sum("hi-2" in s for s in olga) == 1
    assert not any("flip" in s for s in olga + maxs)  # reverted inside the settle window
    assert sum("ESCALATED" in s for s in maxs) == 2 and len(maxs) == 3  # + one digest
    [digest] = [m for m in inbox.to(MAX) if "ESCALATED" not in m["Subject"]]
    assert all(f"m-{i}" in digest.get_body(("plain",)).get_content() for i in range(3))
    # webhooks: each change once (the first attempt answered 500 and was retried), signed
    accepted = Counter(h[DELIVERY_HEADER] for h, _ in hook.requests[1:])
    assert len(accepted) == len(records) and set(accepted.values()) == {1}
    assert all(verify(SECRET, h[SIGNATURE_HEADER], body, 60) for h, body in hook.requests)
    # the console's list: each alert once in-app, and once as delivered by e-mail
    entries = [json.loads(v) for v in inbox_raw.values()]
    in_app = Counter(e["alert_id"] for e in entries if e["kind"] == "alert" and "via" not in e)
    assert in_app == Counter(alert_ids.values()), entries
    mailed = Counter(e["alert_id"] for e in entries if e["kind"] == "alert" and "via" in e)
    assert mailed == in_app and all(e["via"] == ["email"] for e in entries if "via" in e)


# (b) the API -------------------------------------------------------------------------------


async def test_api_profiles_erasure_webhooks_actions_and_export_on_a_cluster(
        cluster_settings_factory) -> None:
    settings = cluster_settings_factory(api_keys=KEYS, webhook_allow_private=True)
    async with cluster_client(settings) as redis:
        seed = Seeder(redis, settings)
        keys = seed.keys
        await seed.customer("gone", days_ago=[100, 130], tier="high", store="north")
        await seed.customer("kept", tenant="acme", days_ago=[100, 130], tier="high",
                            store="north")
        async with api(settings) as client:
            # profiles, staff, stores
            r = await client.put("/v1/customers/gone/profile", headers=INGEST,
                                 json={"name": "Gone Girl", "store_id": "north"})
            assert r.status_code == 200, r.text
            assert (await client.get("/v1/customers/gone/profile", headers=READ)).json()["name"] \
                == "Gone Girl"
            staff = {"staff_id": "m-1", "name": "Mia", "email": "mia@example.com"}
            assert (await client.put("/v1/staff/m-1", json=staff, headers=ADMIN)).status_code == 200
            assert (await client.get("/v1/staff/m-1", headers=READ)).json()["name"] == "Mia"
            store = {"store_id": "north", "timezone": "Europe/Berlin", "manager_staff_id": "m-1"}
            assert (await client.put("/v1/stores/north", json=store, headers=ADMIN)).status_code == 200
            assert (await client.delete("/v1/staff/m-1", headers=ADMIN)).status_code == 204
            # a leaver's customers: one written before owners were indexed, found by a SCAN of
            # every node, both handed over (profiles and owner sets in many slots)
            r = await client.put("/v1/customers/owned/profile", headers=INGEST,
                                 json={"owner_staff_id": "m-1", "store_id": "north"})
            assert r.status_code == 200, r.text
            await redis.set(keys.profile("legacy"), json.dumps({"owner_staff_id": "m-1"}))
            await redis.delete(keys.owners_built())
            r = await client.get("/v1/staff/m-1/customers", headers=READ)
            assert [c["customer_id"] for c in r.json()["customers"]] == ["legacy", "owned"], r.text
            r = await client.post("/v1/staff/m-1/handover", headers=ADMIN, json={"to_staff_id": None})
            assert r.json() == {"moved": 2, "kept": [], "alerts_moved": 0, "not_owned": [],
                                "shares": {}}, r.text
            assert (await client.get("/v1/staff/m-1/customers", headers=READ)).json()["count"] == 0
            # a hand-over's marks on the escalations still due (one script, one slot)
            await redis.zadd(keys.escalation_queue, {"a" * 32: 1})
            assert await handed_on(redis, keys, {"a" * 32: True, "b" * 32: False}, now_ms=5) == 1
            assert json.loads(await redis.hget(keys.escalation_handed, "a" * 32)) == {  # type: ignore[misc,arg-type]
                "at_ms": 5, "manager": True}
            # the manager's own alert given to a first owner is queued; one never armed pruned
            parked = json.dumps({"event": "{}", "created_ms": 1, "armers": []})
            await redis.hset(keys.escalation_data, mapping={"c" * 32: parked, "d" * 32: parked})  # type: ignore[misc]
            assert await handed_on(redis, keys, {"c" * 32: False}, now_ms=6, parked=True) == 1
            assert await redis.zscore(keys.escalation_queue, "c" * 32) == 6
            await redis.zadd(keys.escalation_prepared, {"c" * 32: 0, "d" * 32: 0})
            assert await Escalations(redis, keys, after_s=1).prune(
                now_ms=UNARMED_TTL_S * 1000 + 1) == 1
            assert await redis.hkeys(keys.escalation_data) == ["c" * 32]  # type: ignore[misc]
            # the at-risk list reads the scorer's tier index and many customers' keys
            r = await client.get("/v1/customers/at-risk", params={"tier": "high"}, headers=READ)
            assert r.status_code == 200, r.text
            assert [c["customer_id"] for c in r.json()["items"]] == ["gone"], r.text
            # a win-back action (customer keys + the tenant's index) and the timeline
            r = await client.post("/v1/customers/gone/actions", headers=INGEST,
                                  json={"action": "called", "staff_id": "m-1"})
            assert r.status_code == 201, r.text
            r = await client.get("/v1/customers/gone/timeline", headers=READ)
            assert any(e["kind"] == "staff_action" for e in r.json()["entries"]), r.text
            r = await client.get("/v1/analytics/winback", headers=READ)
            assert r.status_code == 200 and r.json()["overall"]["actions"] == 1, r.text
            for report in ("churn", "tiers", "features"):  # the scorer's indexes, many slots
                r = await client.get(f"/v1/analytics/{report}", headers=READ)
                assert r.status_code == 200, (report, r.text)
            # the export reads acknowledgements of many alerts (many slots)
            for n in range(5):
                alert = {"kind": "tier_change", "at": "2026-11-01T10:00:00Z", "id": f"{n}" * 32,
                         "from": "low", "to": "high"}
                await redis.lpush(keys.timeline("kept", "acme"), json.dumps(alert))  # type: ignore[misc]
                if n % 2:
                    await redis.set(keys.ack(f"{n}" * 32, "acme"), json.dumps({"by": "x", "at": 1.0}))
            r = await client.get("/v1/customers/kept/export", headers=ACME)
            assert r.status_code == 200, r.text
            assert sorted(r.json()["acknowledgements"]) == ["1" * 32, "3" * 32], r.json()
            # erasure of a customer whose keys (and the notifier's episode) are seeded
            await redis.set(keys.episode("gone"), "{}")
            for _ in range(2):
                assert (await client.delete("/v1/customers/gone", headers=ADMIN)).status_code == 204
            assert (await client.get("/v1/customers/gone/risk", headers=READ)).status_code == 404
            # webhook subscription admin
            r = await client.post("/v1/webhooks", headers=ADMIN,
                                  json={"url": f"http://127.0.0.1:{free_port()}/hook",
                                        "secret": SECRET})
            assert r.status_code == 201, r.text
            hook_id = r.json()["id"]
            r = await client.post(f"/v1/webhooks/{hook_id}/resume", headers=ADMIN)
            assert r.status_code == 200 and r.json()["id"] == hook_id, r.text
            assert [w["id"] for w in (await client.get("/v1/webhooks", headers=ADMIN)).json()] \
                == [hook_id]
            assert (await client.delete(f"/v1/webhooks/{hook_id}", headers=ADMIN)).status_code == 204
            assert (await client.get("/v1/webhooks", headers=ADMIN)).json() == []
        for key in keys.customer_all("gone"):
            assert await redis.exists(key) == 0, key
        for tier in TIERS:
            assert await redis.zscore(keys.tier_index(tier), customer_token("gone")) is None
        assert await redis.zcard(keys.winback_index()) == 0
        audit = cast(list[tuple[str, dict[str, str]]], await redis.xrange(keys.audit()))
        assert [r[1]["action"] for r in audit] == ["erase_customer"] * 2  # each request
        assert "gone" not in json.dumps(audit)


async def test_console_sign_in_by_mail_and_alert_list_on_a_cluster(
        cluster_settings_factory, smtp) -> None:
    """A staff member signs in with the e-mailed link (one-time link, session in Redis) and
    sees the in-app alerts the notifier's channel wrote, acknowledged ones marked."""
    controller, mails = smtp
    settings = cluster_settings_factory(api_keys=KEYS, smtp_host="127.0.0.1",
                                        smtp_port=controller.port, create_topics=False)
    keys = Keys(settings.redis_prefix)
    async with cluster_client(settings) as redis:
        await ProfileStore(redis, keys).put_staff(StaffMember(
            staff_id="s-1", name="Sam", email="sam@example.com"))
        channel = InAppChannel(redis, keys)
        for n in range(4):
            await channel.send(Message(
                delivery_id=f"{n}" * 32, channel="in_app", event_id=f"alert-{n}",
                customer_id=f"c-{n}", to="s-1", event=b"{}", recipient_name="Sam",
                subject=f"c-{n} is at high churn risk", text="call them",
                tenant="default", created_ms=int(time.time() * 1000) + n, recipient_key="staff:s-1",
                timezone="Asia/Shanghai" if n == 0 else "UTC", kind="alert"))
        await redis.set(keys.ack("alert-2"), json.dumps({"by": "s-1", "at": 1.0}))
        async with api(settings, base_url="http://127.0.0.1") as client:  # loopback: links
            page = await client.get("/console/sign-in")
            csrf = page.cookies["cw_csrf"]
            r = await client.post("/console/sign-in/email",
                                  data={"email": "sam@example.com", "csrf": csrf})
            assert r.status_code == 200, r.text
            await wait_until(lambda: mails.mails, timeout=10, what="the sign-in mail")
            text = mails.mails[0][1].get_body(("plain",)).get_content()
            token = re.search(r"token=([A-Za-z0-9_\-%]+)", text).group(1)  # type: ignore[union-attr]
            assert (await client.get("/console/sign-in/link", params={"token": token})).status_code == 200
            r = await client.post("/console/sign-in/link",
                                  data={"token": httpx.QueryParams(f"t={token}")["t"],
                                        "csrf": client.cookies["cw_csrf"]})
            assert r.status_code == 303, r.text
            r = await client.get("/console/alerts")
            assert r.status_code == 200, r.text
            assert all(f"c-{n} is at high churn risk" in r.text for n in range(4)), r.text
            # Sam has no clock of his own: each alert is dated on the clock its message kept
            # to (its customer's store's), as the message dated it
            zones = re.findall(r'<span class="zone">([^<]*)</span>', r.text)
            assert sorted(zones) == ["UTC", "UTC", "UTC", "UTC+08:00"], zones
            await ProfileStore(redis, keys).put_staff(StaffMember(
                staff_id="s-1", name="Sam", email="sam@example.com", timezone="America/New_York"))
            r = await client.get("/console/alerts")  # with one, all on his own
            zones = re.findall(r'<span class="zone">([^<]*)</span>', r.text)
            assert len(zones) == 4 and all(re.fullmatch(r"UTC-0[45]:00", z) for z in zones), zones
            # the link works once
            r = await client.get("/console/sign-in/link", params={"token": token})
            assert r.status_code == 400


@pytest.mark.parametrize("on_cluster", [False, True])
async def test_commands_packed_by_hiredis_mean_what_redis_py_packs(
        on_cluster: bool, settings_factory, cluster_settings_factory) -> None:
    """make_redis's clients pack commands with hiredis (redis-py's asyncio packer is pure
    Python): the same bytes, the same replies, multi-word commands split, and an argument
    hiredis cannot pack gets redis-py's own error."""
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from services.common.redisconn import _FastConnection
    s = (cluster_settings_factory if on_cluster else settings_factory)(create_topics=False)
    redis = make_redis(s)
    try:
        key = Keys(s.redis_prefix).tagged("pack", "k")
        for args in (("SET", key, "é ü 中"), ("HSET", key, b"\x00\xff", 12, 0.30000000000000004),
                     ("EVALSHA", "ab" * 20, 2, key, key, -5, 10**20), ("MEMORY USAGE", key)):
            assert b"".join(_FastConnection().pack_command(*args)) == \
                b"".join(Connection().pack_command(*args))
        assert await redis.set(key, "é ü 中") and await redis.get(key) == "é ü 中"
        await redis.delete(key)
        await redis.hset(key, mapping={"a": 1, "b": 0.30000000000000004, "c": b"x"})
        assert await redis.hgetall(key) == {"a": "1", "b": "0.30000000000000004", "c": "x"}
        assert (await redis.execute_command("MEMORY USAGE", key, "SAMPLES", "0")) > 0
        with pytest.raises(DataError):
            await redis.set(key, None)  # type: ignore[arg-type]
        pipe = redis.pipeline(transaction=False)
        pipe.hget(key, "a")
        pipe.hlen(key)
        assert await pipe.execute() == ["1", 3]
        classes = ({n.connection_class for n in redis.get_nodes()} if on_cluster  # type: ignore[attr-defined]
                   else {redis.connection_pool.connection_class})
        assert classes == {_FastConnection}
        await redis.delete(key)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("on_cluster", [False, True])
async def test_replies_taken_from_the_buffer_are_what_redis_py_reads(
        on_cluster: bool, settings_factory, cluster_settings_factory) -> None:
    """make_redis's connections return a reply already whole in hiredis's buffer at once
    (redis-py's path costs ~8 µs per reply): the same values in order, errors raised or
    returned as redis-py does, a reply larger than one socket read, and the connection
    usable afterwards."""
    from redis.exceptions import ResponseError

    s = (cluster_settings_factory if on_cluster else settings_factory)(create_topics=False)
    redis = make_redis(s)
    try:
        keys = Keys(s.redis_prefix)
        key, text, big = (keys.tagged("buf", n) for n in ("n", "t", "big"))
        pipe = redis.pipeline(transaction=False)
        for i in range(300):  # many replies in one round trip: most already buffered
            pipe.set(key, i)
            pipe.incr(key)
        replies = await pipe.execute()
        assert replies == [x for i in range(300) for x in (True, i + 1)]
        await redis.set(text, "not a number")
        pipe = redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.incr(text)  # an error reply between two good ones
        pipe.get(text)
        with pytest.raises(ResponseError, match="not an integer"):
            await pipe.execute()
        pipe = redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.incr(text)
        pipe.get(text)
        got = await pipe.execute(raise_on_error=False)
        assert got[0] == "300" and isinstance(got[1], ResponseError) and got[2] == "not a number"
        with pytest.raises(ResponseError):
            await redis.incr(text)
        value = "é" * 400_000  # 800 KB: several socket reads
        pipe = redis.pipeline(transaction=False)
        pipe.set(big, value)
        pipe.get(big)
        pipe.strlen(big)
        assert await pipe.execute() == [True, value, 800_000]
        assert await redis.get(key) == "300"
        await redis.delete(key, text, big)  # one group tag: one slot
    finally:
        await redis.aclose()


async def test_a_burst_beyond_the_pool_waits_for_a_connection(settings_factory) -> None:
    """More concurrent commands than the pool has connections wait for one (the API under a
    burst of requests answered 503 "Redis unavailable" once 64 were busy)."""
    from services.common.redisconn import make_redis

    s = settings_factory(create_topics=False)
    redis = make_redis(s, max_connections=4)
    try:
        key = Keys(s.redis_prefix).tagged("burst", "k")
        await redis.set(key, "v")
        # BLPOP on an empty list holds its connection: 12 of them for 4 connections
        empty = Keys(s.redis_prefix).tagged("burst", "empty")
        replies = await asyncio.gather(*(redis.blpop([empty], timeout=0.05) for _ in range(12)),
                                       *(redis.get(key) for _ in range(100)))
        assert replies[12:] == ["v"] * 100 and replies[:12] == [None] * 12
    finally:
        await redis.aclose()
