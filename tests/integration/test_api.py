"""The HTTP API as users run it (``churnwatch api``), over real HTTP, with the real broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.embedded import free_port
from services.common.envelope import is_envelope, partition_for
from tests.data import T0, iso, regular
from tests.kafkatools import events_in, read_all
from tests.procs import ServiceProcess

pytestmark = pytest.mark.integration

KEYS = "ingest-secret-1:ingest,reader-secret-1:read,admin-secret-1:admin"
INGEST = {"Authorization": "Bearer ingest-secret-1"}
READ = {"Authorization": "Bearer reader-secret-1"}
ADMIN = {"Authorization": "Bearer admin-secret-1"}


@pytest.fixture
def api(settings_factory, tmp_path: Path) -> Iterator[tuple[ServiceProcess, object]]:
    settings = settings_factory(api_keys=KEYS, max_body_bytes=200_000)
    proc = ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port")
    with proc:
        yield proc, settings


def test_ingest_publishes_keyed_by_customer_after_ack(api) -> None:
    proc, settings = api
    events = regular("c-1", every_days=7, count=3) + regular("c-2", every_days=7, count=2)
    r = httpx.post(f"{proc.url}/v1/events", json=events, headers=INGEST)
    assert r.status_code == 202 and r.json() == {"accepted": len(events)}
    single = httpx.post(f"{proc.url}/v1/events", json=events[0], headers=INGEST)
    assert single.status_code == 202 and single.json() == {"accepted": 1}
    import asyncio

    records = asyncio.run(read_all(settings, settings.topic_events, idle_ms=800))
    assert sorted(e["event_id"] for e in events_in(records)) == \
        sorted([e["event_id"] for e in events] + [events[0]["event_id"]])
    for rec in records:  # keyed by the customer, or an envelope on its customers' partition
        for e in events_in([rec]):
            assert rec.partition == partition_for(e["customer_id"], settings.topic_partitions)
            assert is_envelope(rec.headers) or rec.key.decode() == e["customer_id"]
    status = httpx.get(f"{proc.url}/v1/status", headers=READ).json()
    assert status["events_accepted_total"] == len(events) + 1
    assert {"events_scored_total", "scorer_lag"} <= status.keys()
    assert status["scorer_lag"] == len(records)  # no scorer is running in this test


def test_invalid_event_rejects_the_whole_batch(api) -> None:
    proc, settings = api
    good = regular("c-3", every_days=7, count=2)
    bad = {"event_id": "b1", "type": "transaction", "customer_id": "c-3",
           "occurred_at": "2026-01-01 10:00", "amount": "12"}
    r = httpx.post(f"{proc.url}/v1/events", json=[*good, bad], headers=INGEST)
    assert r.status_code == 422
    body = r.json()
    assert "nothing was published" in body["detail"]
    fields = {(e["index"], e["field"]) for e in body["errors"]}
    assert fields == {(4, "occurred_at"), (4, "amount")}
    import asyncio

    assert asyncio.run(read_all(settings, settings.topic_events, idle_ms=800)) == []


@pytest.mark.parametrize("payload,status", [
    (b"{not json", 400),
    (b'{"event_id": "a", "event_id": "b"}', 400),  # duplicate keys
    (b"[]", 422),
    (b'{"event_id":"n","type":"transaction","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z","amount":NaN}', 400),
])
def test_malformed_bodies_get_clear_4xx(api, payload: bytes, status: int) -> None:
    proc, _ = api
    r = httpx.post(f"{proc.url}/v1/events", content=payload, headers=INGEST)
    assert r.status_code == status and r.json()["detail"]


def test_limits(api) -> None:
    proc, _ = api
    too_many = b"[" + b",".join([b'{"type":"visit"}'] * 10_001) + b"]"  # under the byte limit
    r = httpx.post(f"{proc.url}/v1/events", content=too_many, headers=INGEST)
    assert r.status_code == 413 and "10000" in r.json()["detail"]
    big = [{"event_id": "e", "type": "visit", "customer_id": "c" * 100, "occurred_at": iso(T0)}] * 2500
    r = httpx.post(f"{proc.url}/v1/events", json=big, headers=INGEST)
    assert r.status_code == 413 and "bytes" in r.json()["detail"]


def test_keys_and_scopes(api) -> None:
    proc, _ = api
    event = regular("c-4", every_days=7, count=1)[0]
    url = f"{proc.url}/v1/events"
    assert httpx.post(url, json=event).status_code == 401
    assert httpx.post(url, json=event, headers={"Authorization": "Bearer wrong-key-123"}).status_code == 401
    assert httpx.post(url, json=event, headers=READ).status_code == 403
    assert httpx.post(url, json=event, headers=ADMIN).status_code == 202
    assert httpx.get(f"{proc.url}/v1/status", headers=INGEST).status_code == 403
    assert httpx.get(f"{proc.url}/v1/customers/c-4/risk", headers=READ).status_code == 404
    assert httpx.delete(f"{proc.url}/v1/customers/c-4", headers=READ).status_code == 403
    assert httpx.get(f"{proc.url}/health").status_code == 200
    metrics = httpx.get(f"{proc.url}/metrics")
    assert metrics.status_code == 200 and "churnwatch_ingest_events_accepted_total" in metrics.text


def test_webhook_subscriptions(api) -> None:
    proc, _ = api
    url = f"{proc.url}/v1/webhooks"
    refused = httpx.post(url, json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 16}, headers=ADMIN)
    assert refused.status_code == 422 and "url" in refused.json()["detail"]
    short = httpx.post(url, json={"url": "https://example.com/hook", "secret": "sh0rt"}, headers=ADMIN)
    assert short.status_code == 422 and short.json()["detail"][0]["loc"] == ["body", "secret"]
    assert "sh0rt" not in short.text  # the rejected value is not echoed back
    assert httpx.post(url, json={"url": "ftp://example.com/x", "secret": "s" * 16},
                      headers=ADMIN).status_code == 422
    assert httpx.get(url, headers=READ).status_code == 403
    assert httpx.get(url, headers=ADMIN).json() == []


def test_webhooks_allowed_on_loopback_when_configured(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(api_keys=KEYS, webhook_allow_private=True)
    with ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port") as proc:
        url = f"{proc.url}/v1/webhooks"
        r = httpx.post(url, json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 16}, headers=ADMIN)
        assert r.status_code == 201 and "secret" not in r.json()
        hook_id = r.json()["id"]
        assert [w["id"] for w in httpx.get(url, headers=ADMIN).json()] == [hook_id]
        assert httpx.delete(f"{url}/{hook_id}", headers=ADMIN).status_code == 204
        assert httpx.delete(f"{url}/{hook_id}", headers=ADMIN).status_code == 404


def test_erasure_is_idempotent_and_leaves_a_tombstone(api) -> None:
    proc, settings = api
    for _ in range(2):
        assert httpx.delete(f"{proc.url}/v1/customers/c-9", headers=ADMIN).status_code == 204
    import asyncio

    records = asyncio.run(read_all(settings, settings.topic_events, expect=2))
    assert [(r.key, r.value) for r in records] == [(b"c-9", None), (b"c-9", None)]


def test_503_while_the_broker_is_unreachable(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(create_topics=False, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                                kafka_request_timeout_ms=1000)
    with ServiceProcess("api", settings, tmp_path / "api.log", health_port_setting="api_port") as proc:
        event = regular("c-5", every_days=7, count=1)[0]
        r = httpx.post(f"{proc.url}/v1/events", json=event, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"]
        status = httpx.get(f"{proc.url}/v1/status", timeout=30)
        assert status.status_code == 200 and status.json()["scorer_lag"] is None


def test_openapi_documents_the_ingest_body(api) -> None:
    proc, _ = api
    spec = httpx.get(f"{proc.url}/openapi.json").json()
    post = spec["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "403", "413", "422", "503"} <= set(post["responses"])
    assert "requestBody" in post
    assert {"TransactionEvent", "VisitEvent", "ComplaintEvent"} <= set(spec["components"]["schemas"])
    assert httpx.get(f"{proc.url}/docs").status_code == 200


def test_an_id_with_a_control_character_is_a_422_naming_it_not_a_bare_404(api) -> None:
    proc, _ = api
    for method, path in (("GET", "/v1/customers/a%0Ab/risk"), ("DELETE", "/v1/customers/a%0Ab")):
        r = httpx.request(method, f"{proc.url}{path}", headers=ADMIN)
        assert r.status_code == 422, (method, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"] == ["path", "customer_id"]
