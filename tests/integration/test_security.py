"""Security, proven against real processes: every route's key and scope, tenants and stores
kept apart on every route, and webhook targets that cannot reach private addresses.

The routes are taken from the app's own route table (``create_app(...).routes``): a route
added without an entry in ``SCOPE`` or ``PUBLIC`` below fails ``test_every_route_needs_its_key_and_scope``.
The API under test is a real ``churnwatch api`` child process with the session's broker and
Redis; the notifier checks run the real notifier against real loopback receivers.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import json
import re
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web
from fastapi.routing import APIRoute
from redis.asyncio import Redis
from starlette.routing import BaseRoute, Route

from services.alerting.acks import is_acknowledged, record_alert
from services.alerting.escalation import Escalations
from services.alerting.inbound import decode_risk_change
from services.alerting.webhooks import (
    IPAddress,
    add_subscription,
    checked_addresses,
    display_url,
)
from services.common.embedded import Server
from services.common.exceptions import DeliveryError
from services.common.kafka import ensure_topics
from services.common.redisconn import Keys
from services.common.riskchange import encode_cloudevent, to_cloudevent
from services.common.settings import Settings
from services.notifier.channels.base import Message
from services.notifier.channels.webhook import WebhookChannel, checked_transport
from services.server.app import create_app
from tests.conftest import LOG_DIR, make_test_settings
from tests.integration.test_api_queries import Seeder
from tests.integration.test_notifier import notifier, produce_changes, risk_change
from tests.kafkatools import events_in, read_all
from tests.peers import LoopbackHttp
from tests.procs import ServiceProcess
from tests.reliability import record

pytestmark = pytest.mark.integration

# Every key the tests use: default tenant with one scope each, two tenants, a store-bound key.
KEYS = ("sec-admin-0001:admin,sec-read-0001:read,sec-ingest-001:ingest,sec-rdin-0001:read+ingest,"
        "beta-admin-001:admin@beta,alpha-admin-01:admin@alpha,alpha-north-01:admin@alpha/north")
SCOPED_KEY = {"admin": "sec-admin-0001", "read": "sec-read-0001", "ingest": "sec-ingest-001"}
LACKING_KEY = {"admin": "sec-rdin-0001", "read": "sec-ingest-001", "ingest": "sec-read-0001"}
BETA, ALPHA, NORTH = "beta-admin-001", "alpha-admin-01", "alpha-north-01"

# Deliberately public: liveness/readiness, Prometheus scrapes, the API reference.
PUBLIC = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/openapi.json"),
          ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
# The staff console (services/console): pages for browsers, authenticated by a session cookie
# (signed in by e-mailed link or admin key), not by an API key. Without a session every page
# but the sign-in ones redirects to the sign-in page (checked below); tests/e2e/test_console.py
# drives them in a real browser.
# the team pages and the forms that change who is on it and who owns a customer
TEAM = {("GET", "/console/team"), ("GET", "/console/team/new-staff"),
        ("GET", "/console/team/new-store"),
        ("POST", "/console/team/staff"), ("GET", "/console/team/staff/{staff_id:anypath}"),
        ("POST", "/console/team/staff/{staff_id:anypath}"),
        ("GET", "/console/team/remove-staff/{staff_id:anypath}"),
        ("POST", "/console/team/remove-staff/{staff_id:anypath}"),
        ("GET", "/console/team/stores/{store_id:anypath}"),
        ("POST", "/console/team/stores/{store_id:anypath}"),
        ("GET", "/console/team/handover/{staff_id:anypath}"),
        ("POST", "/console/team/handover/{staff_id:anypath}"),
        ("POST", "/console/customers/{customer_id:anypath}/owner")}
CONSOLE = {("GET", "/console"), ("GET", "/console/sign-in"), ("POST", "/console/sign-in/email"),
           ("GET", "/console/sign-in/link"), ("POST", "/console/sign-in/link"),
           ("POST", "/console/sign-in/key"), ("POST", "/console/sign-out"),
           ("POST", "/console/language"), ("GET", "/console/at-risk"),
           ("GET", "/console/customers/{customer_id:anypath}"),
           ("POST", "/console/customers/{customer_id:anypath}/actions"),
           ("GET", "/console/manager"), ("GET", "/console/manager/{report}.csv"),
           ("GET", "/console/alerts"), ("POST", "/console/alerts/{alert_id}/ack"),
           ("GET", "/console/static/console.css"), *TEAM}
CONSOLE_SIGNED_IN = {("GET", "/console"), ("GET", "/console/at-risk"),
                     ("POST", "/console/language"), ("GET", "/console/manager"),
                     ("GET", "/console/customers/{customer_id:anypath}"),
                     ("POST", "/console/customers/{customer_id:anypath}/actions"),
                     ("GET", "/console/manager/{report}.csv"), ("GET", "/console/alerts"),
                     ("POST", "/console/alerts/{alert_id}/ack"), *TEAM}
# Public, protected by their own credential: the signed, expiring, single-use token of a
# one-click acknowledge link (tests/integration/test_ack_links.py). Without a valid token: 404.
SIGNED = {("GET", "/a/{token}"), ("POST", "/a/{token}")}
# Every other route and the scope it needs (docs/api.md, "Keys, scopes, tenants, stores").
SCOPE = {
    ("POST", "/v1/events"): "ingest",
    ("GET", "/v1/status"): "read",
    ("GET", "/v1/customers/at-risk"): "read",
    ("GET", "/v1/customers/{customer_id:anypath}/timeline"): "read",
    ("GET", "/v1/customers/{customer_id:anypath}/risk"): "read",
    ("DELETE", "/v1/customers/{customer_id:anypath}"): "admin",
    ("GET", "/v1/customers/{customer_id:anypath}/export"): "admin",
    ("PUT", "/v1/customers/{customer_id:anypath}/profile"): "ingest",
    ("PATCH", "/v1/customers/{customer_id:anypath}/profile"): "ingest",
    ("GET", "/v1/customers/{customer_id:anypath}/profile"): "read",
    ("PUT", "/v1/staff/{staff_id}"): "admin",
    ("GET", "/v1/staff/{staff_id}"): "read",
    ("DELETE", "/v1/staff/{staff_id}"): "admin",
    ("GET", "/v1/staff/{staff_id}/customers"): "read",
    ("POST", "/v1/staff/{staff_id}/handover"): "admin",
    ("GET", "/v1/team/changes"): "read",
    ("PUT", "/v1/stores/{store_id}"): "admin",
    ("GET", "/v1/stores/{store_id}"): "read",
    ("GET", "/v1/stores"): "read",
    ("POST", "/v1/customers/{customer_id:anypath}/actions"): "ingest",
    ("POST", "/v1/alerts/{alert_id}/ack"): "ingest",
    ("GET", "/v1/analytics/churn"): "read",
    ("GET", "/v1/analytics/features"): "read",
    ("GET", "/v1/analytics/tiers"): "read",
    ("GET", "/v1/analytics/winback"): "read",
    ("POST", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks"): "admin",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "admin",
    ("POST", "/v1/webhooks/{webhook_id}/resume"): "admin",
    ("GET", "/v1/admin/pseudonyms"): "admin",
    ("GET", "/v1/admin/pseudonyms/{token}"): "admin",
}
PUBLIC_IP = "93.184.215.14"  # an IP literal: accepted without DNS, never contacted here


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _flatten(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included routers
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _flatten(inner.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Route):
            yield prefix + route.path, route


def route_table(settings: Settings) -> dict[tuple[str, str], Route]:
    """(method, path template) -> route, from the app itself (HEAD of GET routes left out)."""
    out: dict[tuple[str, str], Route] = {}
    for path, route in _flatten(create_app(settings).routes):
        for method in route.methods or ():
            if method != "HEAD" or "GET" not in (route.methods or ()):
                assert (method, path) not in out, f"{method} {path} is defined twice"
                out[(method, path)] = route
    return out


def required_scopes(route: Route) -> set[str]:
    """The scopes the route's ``require(scope)`` dependencies check (services/web/deps.py)."""
    found: set[str] = set()
    todo = list(route.dependant.dependencies) if isinstance(route, APIRoute) else []
    while todo:
        dep = todo.pop()
        if dep.call is not None and getattr(dep.call, "__qualname__", "") == "require.<locals>.check":
            found.add(inspect.getclosurevars(dep.call).nonlocals["scope"])
        todo += dep.dependencies
    return found


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: ids[m.group(1)], path)


def body_for(method: str, path: str, ids: dict[str, str], store: str,
             tenant: str | None = None) -> Any:
    """A valid body for each write route (``store``: the store the body claims)."""
    if (method, path) == ("POST", "/v1/events"):
        event: dict[str, Any] = {"event_id": f"sec-{ids['customer_id']}-1", "type": "visit",
                                 "customer_id": ids["customer_id"],
                                 "occurred_at": "2026-01-05T10:00:00Z", "store_id": store}
        if tenant:
            event["tenant_id"] = tenant
        return [event]
    if path.endswith("/profile"):
        return {"store_id": store, "name": "Attacker", "owner_staff_id": "attacker-1"}
    if path.startswith("/v1/staff/"):
        return {"staff_id": ids["staff_id"], "name": "Attacker", "store_id": store}
    if path.startswith("/v1/stores/"):
        return {"store_id": ids["store_id"], "timezone": "UTC", "manager_staff_id": "attacker-1"}
    if path.endswith("/actions"):
        return {"action": "called", "staff_id": "attacker-1", "note": "attacker"}
    if path.endswith("/ack"):
        return {"by": "attacker", "customer_id": ids["customer_id"]}
    if path == "/v1/webhooks":
        return {"url": f"https://{PUBLIC_IP}/attacker-hook", "secret": "attacker-secret-0123456"}
    return None


@pytest.fixture(scope="module")
def api(broker: Server, redis_server: Server, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[ServiceProcess, Settings]]:
    settings = make_test_settings(broker, redis_server, tmp_path_factory.mktemp("security"),
                                  api_keys=KEYS, api_rate_limit_per_second=0)
    asyncio.run(ensure_topics(settings))
    with ServiceProcess("api", settings, LOG_DIR / f"security-api-{settings.redis_prefix}.log",
                        health_port_setting="api_port") as proc:
        yield proc, settings


# 1. every route: its key and its scope -------------------------------------------------------


def test_every_route_needs_its_key_and_scope(api) -> None:
    proc, settings = api
    started = time.monotonic()
    table = route_table(settings)
    assert set(table) == PUBLIC | SIGNED | CONSOLE | set(SCOPE), (
        "the route table changed: routes without an entry here "
        f"{sorted(set(table) - PUBLIC - SIGNED - CONSOLE - set(SCOPE))}, entries without a route "
        f"{sorted((PUBLIC | SIGNED | CONSOLE | set(SCOPE)) - set(table))}; add the new route to "
        "SCOPE with its scope (or, if it is deliberately public, to PUBLIC; a console page to "
        "CONSOLE)")
    assert not (PUBLIC | SIGNED) & set(SCOPE) and not CONSOLE & (PUBLIC | SIGNED | set(SCOPE))
    for method, path in SIGNED:
        assert not required_scopes(table[(method, path)]), (method, path)
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        for method, path in sorted(CONSOLE_SIGNED_IN):  # no session: to the sign-in page,
            # which returns to the page asked for once signed in
            url = fill(path, {"customer_id": "sec-c-1", "report": "churn", "alert_id": "a1",
                              "staff_id": "sec-s-1", "store_id": "sec-store-1"})
            r = client.request(method, url, headers=bearer(SCOPED_KEY["admin"]))
            back = url.removesuffix("/actions")  # an action's form: its customer's page
            to = ("/console/sign-in" if method == "POST" and back == url or url == "/console"
                  else f"/console/sign-in?{urlencode({'next': back})}")
            assert (r.status_code, r.headers.get("location")) == (303, to), path
    for (method, path), scope in SCOPE.items():  # what the code checks is what we expect
        assert required_scopes(table[(method, path)]) == {scope}, (method, path)
    for method, path in PUBLIC:
        assert not required_scopes(table[(method, path)]), (method, path)

    ids = {"customer_id": "sec-c-1", "staff_id": "sec-s-1", "store_id": "sec-store-1",
           "webhook_id": "wh_0000000000000000", "alert_id": "sec-alert-1",
           "token": "cust_0000000000000000"}
    problems: list[str] = []
    checked = 0
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        spec = client.get("/openapi.json").json()
        for (method, path), scope in sorted(SCOPE.items()):
            url = fill(path, ids)
            body = body_for(method, path, ids, "sec-store-1")
            kw: dict[str, Any] = {"json": body} if body is not None else {}
            cases = [("no key", {}, 401), ("unknown key", bearer("not-a-key-0000"), 401),
                     ("not bearer", {"Authorization": "Basic c2VjLWFkbWluLTAwMDE="}, 401),
                     (f"lacks {scope}", bearer(LACKING_KEY[scope]), 403)]
            for what, headers, want in cases:
                r = client.request(method, url, headers=headers, **kw)
                checked += 1
                if r.status_code != want:
                    problems.append(f"{method} {path} {what}: {r.status_code} (want {want})")
                elif want == 401 and "www-authenticate" not in r.headers:
                    problems.append(f"{method} {path} {what}: 401 without WWW-Authenticate")
                elif want == 403 and f"'{scope}'" not in r.json()["detail"]:
                    problems.append(f"{method} {path} {what}: 403 not naming '{scope}': {r.text}")
            r = client.request(method, url, headers=bearer(SCOPED_KEY[scope]), **kw)
            checked += 1
            if r.status_code in (401, 403) or r.status_code >= 500:
                problems.append(f"{method} {path} with a {scope} key: {r.status_code} {r.text[:200]}")
            documented = spec["paths"][re.sub(r":\w+\}", "}", path)][method.lower()]["responses"]
            if not {"401", "403"} <= set(documented):
                problems.append(f"{method} {path}: the OpenAPI document lacks 401/403")
        for method, path in sorted(PUBLIC):
            r = client.request(method, path)
            if r.status_code != 200:
                problems.append(f"public {method} {path}: {r.status_code}")
        for method, path in sorted(SIGNED):  # a made-up or forged token opens nothing
            for token in ("AAAAAAAAAAAAAAAAAAAAAA", "not-a-token"):
                r = client.request(method, fill(path, {"token": token}))
                checked += 1
                if r.status_code != 404:
                    problems.append(f"signed {method} {path} with a made-up token: "
                                    f"{r.status_code}")
    unprotected = len({p.split(":")[0] for p in problems})
    record(kind="security", name="route-auth-scopes",
           tried="every route of the API's own route table called without a key, with an unknown "
           "key, with a non-Bearer header, with a key lacking its scope and with the right scope",
           load=f"{len(SCOPE)} protected routes x 5 cases, {len(PUBLIC)} public routes, "
           f"{len(SIGNED)} signed-link routes x 2 made-up tokens",
           checked="401 + WWW-Authenticate without a valid key, 403 naming the missing scope, "
           "never 401/403/5xx with the right scope; the public set is exactly "
           + ", ".join(sorted(p for _, p in PUBLIC))
           + "; the one-click acknowledge links (/a/{token}) answer 404 to a made-up token",
           sent=len(SCOPE) * 5, lost=unprotected, doubled=0,
           test="tests/integration/test_security.py::test_every_route_needs_its_key_and_scope",
           measured={"requests": checked + len(PUBLIC), "seconds": round(time.monotonic() - started, 2)})
    assert not problems, "\n".join(problems)
    assert checked == len(SCOPE) * 5 + len(SIGNED) * 2


# 2. tenants and stores, on every route -----------------------------------------------------


def _text(reply: object) -> str:
    """A reply of make_redis's client, which decodes (decode_responses=True): a str."""
    assert isinstance(reply, str), reply
    return reply


async def snapshot(redis: Redis, prefix: str) -> dict[tuple[str, str], str]:
    """Every key under ``prefix`` as (key, field or member) -> value."""
    out: dict[tuple[str, str], str] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        kind = await redis.type(key)
        if kind == "string":
            out[(key, "")] = _text(await redis.get(key) or "")
        elif kind == "hash":
            out.update({(key, _text(f)): _text(v) for f, v in (await redis.hgetall(key)).items()})
        elif kind == "zset":
            scored = cast(list[tuple[str, float]], await redis.zrange(key, 0, -1, withscores=True))
            out.update({(key, m): str(s) for m, s in scored})
        elif kind == "set":
            out.update({(key, _text(m)): "1" for m in await redis.smembers(key)})
        elif kind == "list":
            out[(key, "")] = json.dumps(await redis.lrange(key, 0, -1))
        elif kind == "stream":
            out[(key, "")] = json.dumps(await redis.xrange(key))
    return out


def changed(before: dict[tuple[str, str], str], after: dict[tuple[str, str], str]
            ) -> set[tuple[str, str]]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


async def pending_alert(redis: Redis, keys: Keys, *, tenant: str, customer: str, store: str) -> str:
    change = risk_change(customer).model_copy(update={"tenant_id": tenant, "store_id": store})
    event = decode_risk_change(encode_cloudevent(to_cloudevent(change)))
    await Escalations(redis, keys, after_s=3600).schedule(event, created_ms=0,
                                                          now_ms=int(time.time() * 1000))
    await record_alert(redis, keys, event.id, tenant=tenant, customer_id=customer,
                       store_id=store)  # as the notifier does when it sends the alert
    return event.id


async def test_tenants_and_stores_are_kept_apart_on_every_route(api) -> None:
    proc, settings = api
    started = time.monotonic()
    keys = Keys(settings.redis_prefix)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    seed = Seeder(redis, settings)
    # Tenant beta: a scored customer with a profile, staff, a store, an action, a webhook and an
    # alert awaiting escalation - every kind of thing a key can read, list, write or act on.
    await seed.customer("c-shared", tenant="beta", store="b-store", tier="high", days_ago=[90, 130])
    # Tenant alpha: its own customers in north and south (the store-bound key is north's);
    # a-south2 has no profile yet, p-south has only a profile.
    for cid, store in (("a-north", "north"), ("a-south", "south"), ("a-south2", "south")):
        await seed.customer(cid, tenant="alpha", store=store, tier="high", days_ago=[90, 130])
    beta_marks = ["beta.owner@example.com", "Beta Marker Name", "Beta Staff Marker",
                  "Pacific/Chatham", "beta-note-marker", "beta-hook-marker"]
    south_marks = ["alpha.south@example.com", "South Marker Name", "South Staff Marker",
                   "Asia/Kathmandu", "south-note-marker"]
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
        async def ok(method: str, url: str, key: str, body: Any) -> httpx.Response:
            r = await client.request(method, url, json=body, headers=bearer(key))
            assert r.status_code < 300, (method, url, r.status_code, r.text)
            return r

        for key, cid, store, staff, marks in (
                (BETA, "c-shared", "b-store", "st-shared", beta_marks),
                (ALPHA, "a-south", "south", "s-south", south_marks)):
            await ok("PUT", f"/v1/customers/{cid}/profile", key,
                     {"name": marks[1], "email": marks[0], "store_id": store,
                      "owner_staff_id": staff, "phone": "+15550123456"})
            await ok("PUT", f"/v1/staff/{staff}", key,
                     {"staff_id": staff, "name": marks[2], "store_id": store})
            await ok("PUT", f"/v1/stores/{store}", key,
                     {"store_id": store, "timezone": marks[3], "manager_staff_id": staff})
            await ok("POST", f"/v1/customers/{cid}/actions", key,
                     {"action": "called", "staff_id": staff, "note": marks[4]})
        await ok("PUT", "/v1/customers/p-south/profile", ALPHA,
                 {"store_id": "south", "email": "alpha.south@example.com"})
        beta_hook = (await ok("POST", "/v1/webhooks", BETA,
                              {"url": f"https://{PUBLIC_IP}/beta-hook-marker",
                               "secret": "beta-webhook-secret-01"})).json()["id"]
        beta_alert = await pending_alert(redis, keys, tenant="beta", customer="c-shared",
                                         store="b-store")
        south_alert = await pending_alert(redis, keys, tenant="alpha", customer="a-south",
                                          store="south")

        table = sorted(SCOPE)
        rounds = [
            # alpha's tenant-wide admin key (every scope) against beta's ids
            ("tenant", ALPHA, "north", "beta", beta_marks, ["c-shared"],
             {"staff_id": "st-shared", "store_id": "b-store", "webhook_id": beta_hook,
              "alert_id": beta_alert},
             lambda k, f: ("beta" in k or (k == keys.webhooks and f == beta_hook)
                           or f == beta_alert), ["c-shared"], 3),
            # alpha's north-bound admin key against alpha's south data
            ("store", NORTH, "north", None, south_marks, ["a-south", "a-south2", "p-south"],
             {"staff_id": "s-south", "store_id": "south", "webhook_id": beta_hook,
              "alert_id": south_alert},
             lambda k, f: (any(f"{{alpha/{c}}}" in k for c in ("a-south", "a-south2", "p-south"))
                           or ":s:south:" in k or "a-south" in f or "p-south" in f
                           or (k.endswith(":staff") and f == "s-south")
                           or (k.endswith(":stores") and f == "south")
                           or f == south_alert or k == keys.ack(south_alert, "alpha")),
             ["a-south", "a-south2", "p-south"], 1),
        ]
        leaks: list[str] = []
        sent = 0
        for (name, key, own_store, victim_tenant, marks, customers, ids, victim, hidden,
             own_count) in rounds:
            before = await snapshot(redis, settings.redis_prefix)
            for method, path in table:
                variants = customers if "{customer_id" in path else customers[:1]
                for cid in variants:
                    url = fill(path, {**ids, "customer_id": cid, "token": "cust_0000000000000000"})
                    body = body_for(method, path, {**ids, "customer_id": cid}, own_store,
                                    tenant=victim_tenant)
                    params = [{}, {"store": ids["store_id"]}] if method == "GET" else [{}]
                    for query in params:
                        r = await client.request(method, url, params=query, headers=bearer(key),
                                                 **({"json": body} if body is not None else {}))
                        sent += 1
                        where = f"{name}: {method} {url} {query or ''} -> {r.status_code}"
                        if r.status_code >= 500:
                            leaks.append(f"{where}: server error {r.text[:200]}")
                        leaks += [f"{where}: shows {m!r}" for m in marks if m in r.text]
                        if "{" not in path and method == "GET":  # lists and analytics
                            leaks += [f"{where}: lists {c!r}" for c in hidden if c in r.text]
                        if path == "/v1/analytics/churn" and not query \
                                and r.json()["customers"] != own_count:
                            leaks.append(f"{where}: counts {r.json()['customers']} customers")
            after = await snapshot(redis, settings.redis_prefix)
            leaks += [f"{name}: changed {k} {f}" for k, f in sorted(changed(before, after))
                      if victim(k, f)]
        # the notifier's view: neither alert counts as acknowledged, both still escalate
        for tenant, alert in (("beta", beta_alert), ("alpha", south_alert)):
            if await is_acknowledged(redis, keys, alert, tenant):
                leaks.append(f"the {tenant} alert {alert} was acknowledged by another tenant/store")
        pending = await redis.hkeys(keys.escalation_data)
        leaks += [f"escalation of {a} was dropped" for a in (beta_alert, south_alert) if a not in pending]
        beta_list = (await client.get("/v1/webhooks", headers=bearer(BETA))).json()
        if [w["id"] for w in beta_list] != [beta_hook]:
            leaks.append(f"beta's webhooks changed: {beta_list}")
    # nothing published on alpha's keys in the name of tenant beta or store south
    for value in events_in(await read_all(settings, settings.topic_events, idle_ms=500,
                                          timeout=10)):  # single events and envelopes alike
        if value.get("tenant_id") == "beta" or value.get("store_id") == "south":
            leaks.append(f"published {value}")
    await redis.aclose()
    record(kind="security", name="tenant-isolation",
           tried="a tenant-wide admin key of tenant A, then a store-bound admin key, call every "
           "route of the route table with the ids of tenant B's (other store's) customers, "
           "profiles, staff, stores, webhooks and alerts, with and without ?store=",
           load=f"{len(SCOPE)} routes x 2 keys over 1 + 3 victim customers (GET: 2 variants)",
           checked="no answer shows the victim's data or lists its customers, analytics count "
           "only the key's own customers, no victim Redis key or field changes, no alert of "
           "the victim counts as acknowledged, nothing is published for the victim",
           sent=sent, lost=len(leaks), doubled=0,
           test="tests/integration/test_security.py::test_tenants_and_stores_are_kept_apart_on_every_route",
           measured={"seconds": round(time.monotonic() - started, 2)})
    assert not leaks, "\n".join(leaks)


# 3. webhook targets: no server-side request forgery ------------------------------------------

PRIVATE_TARGETS = [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook", "http://2130706433/hook", "http://0177.0.0.1/hook",
    "http://0/hook", "http://[::]/hook", "https://10.1.2.3/hook", "https://172.16.5.4/hook",
    "https://192.168.0.10/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook", "http://100.64.0.1/hook", "http://224.0.0.1/hook",
    "http://[2002:7f00:1::]/hook", "http://[64:ff9b::7f00:1]/hook",  # 6to4, NAT64 of loopback
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",          # Teredo of loopback
    "http://{host}/hook",  # this machine's name: a host name that resolves to a private address
]
BAD_SCHEMES = ["ftp://example.com/hook", "file:///etc/passwd", "gopher://127.0.0.1:6379/_PING",
               "javascript:alert(1)", "dict://127.0.0.1:6379/info", "//example.com/hook",
               "http:///hook", f"https://user:pw@{PUBLIC_IP}/hook"]


class Hook(LoopbackHttp):
    path = "/hook"

    def __init__(self, status: int = 200, location: str | None = None):
        super().__init__()
        self.status = status
        self.location = location
        self.hits = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        await request.read()
        headers = {"Location": self.location} if self.location else {}
        return web.Response(status=self.status, headers=headers)


async def test_webhook_targets_are_public_http_only(api, settings_factory) -> None:
    proc, settings = api
    host = socket.gethostname()
    host = host if not _resolves_public(host) else "localhost"
    targets = [t.format(host=host) for t in PRIVATE_TARGETS]
    started = time.monotonic()
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=proc.url, headers=bearer(SCOPED_KEY["admin"]),
                                 timeout=30) as client:
        before = (await client.get("/v1/webhooks")).json()
        for url in targets + BAD_SCHEMES:
            r = await client.post("/v1/webhooks", json={"url": url, "secret": "s" * 16})
            detail = r.json().get("detail", "") if r.status_code < 500 else r.text
            if r.status_code != 422:
                problems.append(f"{url}: {r.status_code} {detail}")
            elif url in targets and "CHURNWATCH_WEBHOOK_ALLOW_PRIVATE" not in str(detail):
                problems.append(f"{url}: refused without naming the setting: {detail}")
            elif url in BAD_SCHEMES and not str(detail).startswith("url: "):
                problems.append(f"{url}: unclear refusal: {detail}")
        if (await client.get("/v1/webhooks")).json() != before:
            problems.append("a refused target was stored")
        ok = await client.post("/v1/webhooks", json={"url": f"https://{PUBLIC_IP}/ok",
                                                     "secret": "s" * 16})
        assert ok.status_code == 201, ok.text
        await client.delete(f"/v1/webhooks/{ok.json()['id']}")

    # With CHURNWATCH_WEBHOOK_ALLOW_PRIVATE=true a local receiver may be registered.
    open_settings = settings_factory(api_keys=KEYS, webhook_allow_private=True)
    app = create_app(open_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            r = await client.post("/v1/webhooks", headers=bearer(SCOPED_KEY["admin"]),
                                  json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 16})
            assert r.status_code == 201, r.text
            r = await client.post("/v1/webhooks", headers=bearer(SCOPED_KEY["admin"]),
                                  json={"url": "gopher://127.0.0.1:9/", "secret": "s" * 16})
            assert r.status_code == 422  # the flag opens private addresses, not other schemes
            for metadata in ("http://169.254.169.254/latest/meta-data/",
                             "http://[2002:a9fe:a9fe::]/", "http://[fd00:ec2::254]/"):
                r = await client.post("/v1/webhooks", headers=bearer(SCOPED_KEY["admin"]),
                                      json={"url": metadata, "secret": "s" * 16})
                if r.status_code != 422 or "metadata" not in r.text:
                    problems.append(f"{metadata} with the flag: {r.status_code} {r.text[:120]}")

    # Delivery time: a subscription that reached Redis pointing at loopback (written directly,
    # or its DNS changed since) is refused by the notifier - dead-lettered once, never retried.
    # A subscription of another tenant is not even planned for this tenant's changes.
    strict = settings_factory(webhook_allow_private=False, delivery_backoff_base_seconds=0.2,
                              delivery_max_attempts=3)
    redis = Redis.from_url(strict.redis_url, decode_responses=True)
    keys = Keys(strict.redis_prefix)
    async with Hook() as target, Hook() as other_tenant:
        await add_subscription(redis, keys, url=target.url, secret="s" * 16)
        await add_subscription(redis, keys, url=other_tenant.url, secret="s" * 16, tenant="gamma")
        async with notifier(strict):
            await produce_changes(strict, *[(f"ssrf-{i}", encode_cloudevent(to_cloudevent(
                risk_change(f"ssrf-{i}", previous="high", tier="medium")))) for i in range(2)])
            dlq = await read_all(strict, strict.topic_notifications_dlq, expect=2, idle_ms=1000)
            await asyncio.sleep(0.5)  # any (wrong) retry would reach the receiver by now
        if target.hits or other_tenant.hits:
            problems.append(f"the notifier sent {target.hits + other_tenant.hits} request(s) "
                            "to loopback")
    reasons = [dict(r.headers).get("reason", b"").decode() for r in dlq]
    targets_hit = {json.loads(r.value)["target"] for r in dlq}
    if len(dlq) != 2 or not all("CHURNWATCH_WEBHOOK_ALLOW_PRIVATE" in x for x in reasons) \
            or targets_hit != {display_url(target.url)}:
        problems.append(f"delivery-time refusals not dead-lettered once each with the reason "
                        f"(or another tenant's subscription planned): {targets_hit} {reasons}")
    if await redis.zcard(keys.retry_queue):
        problems.append("a refused delivery was queued for a retry")

    # Redirects are never followed, not even to a private address that is allowed.
    channel = WebhookChannel(timeout_s=5.0, allow_private=True)
    async with Hook() as inner:
        async with Hook(status=302, location=inner.url) as outer:
            message = Message(delivery_id="d-redirect", channel="webhook", event_id="e-1",
                              customer_id="c-1", to=outer.url, event=b"{}", secret="s" * 16)
            try:
                await channel.send(message)
                problems.append("a redirect answer counted as delivered")
            except DeliveryError as exc:
                if not exc.permanent or "redirects are not followed" not in str(exc):
                    problems.append(f"redirect not refused for good: {exc}")
            if outer.hits != 1 or inner.hits:
                problems.append(f"redirect followed: {outer.hits} then {inner.hits} request(s)")
    await channel.aclose()
    await redis.aclose()
    problems += await _dns_rebinding_problems()
    record(kind="security", name="webhook-ssrf",
           tried="register loopback, private, link-local, metadata, IPv6, integer/octal-encoded "
           "and non-http webhook targets through the API; deliver to loopback subscriptions "
           "written straight into Redis (this tenant's and another's); a receiver redirecting "
           "to another local receiver; a host name whose DNS answer turns private after the "
           "check (DNS rebinding)",
           load=f"{len(PRIVATE_TARGETS)} private + {len(BAD_SCHEMES)} malformed targets, "
           "2 deliveries refused at delivery time, 1 redirect, 2 connections by a rebinding name",
           checked="422 naming CHURNWATCH_WEBHOOK_ALLOW_PRIVATE (or the scheme), nothing stored; "
           "no request reaches a private address; refusals dead-lettered once with the reason, "
           "never retried; redirects not followed; other tenants' subscriptions get nothing; "
           "the connection goes to the address that was checked, never to a second lookup's",
           sent=len(PRIVATE_TARGETS) + len(BAD_SCHEMES) + 5, lost=len(problems), doubled=0,
           test="tests/integration/test_security.py::test_webhook_targets_are_public_http_only",
           measured={"seconds": round(time.monotonic() - started, 2)})
    assert not problems, "\n".join(problems)


async def _dns_rebinding_problems() -> list[str]:
    """The webhook client resolves and checks the host when it opens the connection and
    connects to exactly the address it checked. A fake DNS (the only one this test controls)
    answers for a name the system cannot resolve: the request arrives only because no second
    lookup happened; when the answer is private and private targets are not allowed, nothing
    arrives."""
    problems: list[str] = []
    loopback = [ipaddress.ip_address("127.0.0.1")]

    def fake_dns(host: str, port: int) -> list[IPAddress]:
        return loopback if host == "rebind.invalid" else []

    async with Hook() as hook:
        url = f"http://rebind.invalid:{hook.port}{hook.path}"
        for allow_private in (True, False):
            transport = checked_transport(functools.partial(
                checked_addresses, allow_private=allow_private, lookup=fake_dns))
            async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
                try:
                    r = await client.post(url, content=b"{}")
                    outcome = f"HTTP {r.status_code}"
                except httpx.ConnectError as exc:
                    outcome = f"refused: {exc}"
            if allow_private and outcome != "HTTP 200":
                problems.append(f"the checked address was not used for the connection: {outcome}")
            if not allow_private and "loopback" not in outcome:
                problems.append(f"a name resolving to loopback was connected to: {outcome}")
        if hook.hits != 1:
            problems.append(f"the receiver got {hook.hits} requests, expected exactly 1")
    return problems


def _resolves_public(host: str) -> bool:
    try:
        return any(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_global
                   for info in socket.getaddrinfo(host, 80))
    except OSError:
        return True  # does not resolve: not a private-address case either
