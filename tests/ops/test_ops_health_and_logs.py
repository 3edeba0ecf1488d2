"""The workers' HTTP server (liveness vs readiness with real dependency probes, process
metrics) and the JSON log format with personal data masked."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from services.common.embedded import free_port
from services.common.httpserver import WorkerHttpServer
from services.common.logs import JsonFormatter, scrub, set_pseudonym_key
from services.common.pseudonym import UNKEYED, pseudonym


async def test_ready_follows_the_callback_and_the_dependency_probes(redis: Redis) -> None:
    registry = CollectorRegistry()
    Counter("churnwatch_test_things_total", "Things.", registry=registry).inc()
    state: dict[str, Any] = {"ready": False}

    async def assigned() -> dict[str, Any]:
        return {"ready": state["ready"], "assigned_partitions": [0, 1]}

    dead = Redis(host="127.0.0.1", port=free_port(0), socket_connect_timeout=0.5)
    servers = [
        WorkerHttpServer(host="127.0.0.1", port=0, registry=registry, ready=assigned,
                         probes={"redis": redis.ping}),
        WorkerHttpServer(host="127.0.0.1", port=0, registry=registry,
                         ready=lambda: {"ready": True}, probes={"redis": dead.ping}),
    ]
    good, bad = [f"http://127.0.0.1:{await s.start()}" for s in servers]
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{good}/live")).status_code == 200
            r = await client.get(f"{good}/ready")
            assert r.status_code == 503 and r.json()["redis"] == "ok"
            state["ready"] = True
            r = await client.get(f"{good}/ready")
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "ok", "ready": True, "assigned_partitions": [0, 1],
                                "redis": "ok"}
            assert (await client.get(f"{good}/health")).status_code == 200

            assert (await client.get(f"{bad}/live")).status_code == 200
            r = await client.get(f"{bad}/ready")
            assert r.status_code == 503
            assert r.json()["redis"].startswith("unavailable")

            metrics = (await client.get(f"{good}/metrics")).text
            assert "# TYPE process_resident_memory_bytes gauge" in metrics
            assert "# TYPE process_cpu_seconds_total counter" in metrics
            assert "churnwatch_test_things_total 1.0" in metrics
    finally:
        for s in servers:
            await s.stop()
        await dead.aclose()


async def test_a_ready_callback_that_raises_means_not_ready() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("consumer crashed")

    server = WorkerHttpServer(host="127.0.0.1", port=0, registry=CollectorRegistry(), ready=broken)
    url = f"http://127.0.0.1:{await server.start()}"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"{url}/ready")
            assert r.status_code == 503 and "consumer crashed" in r.json()["error"]
            assert (await client.get(f"{url}/live")).status_code == 200
    finally:
        await server.stop()


def test_json_lines_carry_the_fields_and_mask_personal_data() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("notifier"))
    log = logging.getLogger("tests.ops.logs")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    key = b"k" * 32
    set_pseudonym_key(key)
    try:
        log.info("delivered to %s and %s", "jane.roe@example.com", "+44 20 7946 0958",
                 extra={"event_id": "ev-1", "customer_id": "jane.roe@example.com",
                        "delivery_id": "dlv-9", "channel": "email"})
        try:
            raise ValueError("bad recipient 4917012345678")
        except ValueError:
            log.exception("failed", extra={"customer_id": "4917012345678", "tenant": "acme"})
        log.info("other contact %s", "mary.major@example.com")
    finally:
        set_pseudonym_key(None)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first, second, third = lines
    jane = pseudonym(key, "default", "jane.roe@example.com")
    phone_id = pseudonym(key, "acme", "4917012345678")
    assert first["service"] == "notifier" and first["level"] == "INFO"
    assert first["timestamp"].endswith("Z") and first["timestamp"][10] == "T"
    assert first["event_id"] == "ev-1" and first["delivery_id"] == "dlv-9"
    assert first["customer_id"] == jane  # the customer's token, never the id
    assert first["channel"] == "email"
    assert first["msg"] == f"delivered to {jane} and *********958"
    assert second["level"] == "ERROR" and second["customer_id"] == phone_id
    assert phone_id in second["exc"]  # the id in the traceback became the token too
    assert third["msg"] == "other contact m***@example.com"  # other contacts stay masked
    text = stream.getvalue()
    assert "jane.roe@" not in text and "7946" not in text and "4917012345678" not in text


def test_a_quoted_customer_id_in_a_text_is_redacted_when_the_line_has_no_customer_field(
        ) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("scorer"))
    log = logging.getLogger("tests.ops.logs.quoted")
    log.handlers[:] = [handler]
    log.propagate = False
    # the dead-letter reason of an envelope event on the wrong partition (envelope.py)
    log.warning("dead-lettered record: %s", "event 2 of the envelope: customer_id "
                "'13912340007' belongs to partition 1, this envelope is on partition 0")
    set_pseudonym_key(b"k" * 32)
    try:
        log.warning("retrying customer 'member-0042'", extra={"customer_id": "member-0042"})
    finally:
        set_pseudonym_key(None)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "13912340007" not in first["msg"] and "customer_id cust_redacted belongs" in first["msg"]
    token = pseudonym(b"k" * 32, "default", "member-0042")
    assert second["msg"] == f"retrying customer '{token}'"  # its own token is kept


def test_log_lines_never_show_a_customer_id_before_the_key_is_known() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("scorer"))
    log = logging.getLogger("tests.ops.logs.unkeyed")
    log.handlers[:] = [handler]
    log.propagate = False
    log.info("scoring member-0042 failed", extra={"customer_id": "member-0042"})
    line = json.loads(stream.getvalue())
    assert line["customer_id"] == UNKEYED and "member-0042" not in stream.getvalue()


def test_scrub_leaves_timestamps_offsets_and_amounts_alone() -> None:
    text = "at 2026-06-01T10:00:00+02:00 offset 1234567890123 amount +12.50 tz +0100"
    assert scrub(text) == text
