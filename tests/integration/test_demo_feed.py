"""The demo feed against a small real HTTP receiver that implements ``POST /v1/events`` the
way docs/contract.md says (strict JSON, schema validation, 202 ``{"accepted": n}``, 422 with
per-event errors), and answers 503 to the very first request to prove the retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from services.common.events import parse_json, validate_event
from services.demo.feed import MAX_BATCH, build_story, run_feed

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

HISTORY_DAYS, LIVE_DAYS, LIVE_SECONDS, CUSTOMERS = 60, 10, 3.0, 30


@dataclass
class Request:
    phase: int
    received: datetime       # wall clock when the request arrived
    mono: float              # time.monotonic() then
    status: int
    events: list[dict[str, Any]]
    auth: str | None


@dataclass
class Receiver:
    phase: int = 0
    requests: list[Request] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    phase_started: dict[int, float] = field(default_factory=dict)
    trickle_seen: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set after each request

    def accepted(self, phase: int | None = None) -> list[Request]:
        return [r for r in self.requests
                if r.status == 202 and (phase is None or r.phase == phase)]


class _PhaseWatch(logging.Handler):
    """Learns the feed's phase from the ``demo_phase`` attribute of its log records."""

    def __init__(self, receiver: Receiver):
        super().__init__(logging.DEBUG)
        self.receiver = receiver

    def emit(self, record: logging.LogRecord) -> None:
        phase = getattr(record, "demo_phase", None)
        if isinstance(phase, int):
            self.receiver.phase = phase
            self.receiver.phase_started[phase] = time.monotonic()


def _app(receiver: Receiver) -> web.Application:
    async def post_events(request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        raw = await request.read()
        try:
            body = parse_json(raw)
        except ValueError as exc:
            receiver.invalid.append(f"bad JSON: {exc}")
            return web.json_response({"errors": [{"index": 0, "field": "", "message": str(exc)}]},
                                     status=422)
        items = body if isinstance(body, list) else [body]
        if not 1 <= len(items) <= 10_000:
            return web.json_response({"errors": [{"index": 0, "field": "",
                                                  "message": "1 to 10000 events"}]}, status=422)
        errors: list[dict[str, Any]] = []
        for i, obj in enumerate(items):
            # max_future=0: an event stamped after its arrival is refused outright.
            _, errs = validate_event(obj, i, now=now, max_future=timedelta(0))
            errors.extend(e.model_dump() for e in errs)
        status = 202
        if errors:
            receiver.invalid.extend(f"{e['index']}.{e['field']}: {e['message']}" for e in errors)
            status = 422
        elif not receiver.requests:
            status = 503  # the broker "cannot take them" the first time
        receiver.requests.append(Request(receiver.phase, now, time.monotonic(), status, items,
                                         request.headers.get("Authorization")))
        receiver.arrived.set()
        if receiver.phase == 3 and status == 202:
            receiver.trickle_seen.set()
        if status == 422:
            return web.json_response({"errors": errors}, status=422)
        if status == 503:
            return web.json_response({"error": "broker unavailable"}, status=503)
        return web.json_response({"accepted": len(items)}, status=202)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/events", post_events)
    return app


async def _serve(receiver: Receiver) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(_app(receiver))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_demo_feed_tells_the_story_through_a_real_http_api() -> None:
    receiver = Receiver()
    runner, port = await _serve(receiver)

    log = logging.getLogger("test.demo_feed")
    log.setLevel(logging.DEBUG)
    watch = _PhaseWatch(receiver)
    log.addHandler(watch)
    stop = asyncio.Event()
    started = datetime.now(UTC)
    try:
        feed = asyncio.create_task(run_feed(
            api_url=f"http://127.0.0.1:{port}", api_key="demo-ingest-key", stop=stop,
            customers=CUSTOMERS, seed=7, history_days=HISTORY_DAYS, live_days=LIVE_DAYS,
            live_seconds=LIVE_SECONDS, log=log))
        await asyncio.wait_for(receiver.trickle_seen.wait(), timeout=15)
        stop.set()
        stats = await asyncio.wait_for(feed, timeout=5)
    finally:
        log.removeHandler(watch)
        await runner.cleanup()

    assert receiver.invalid == [], receiver.invalid[:10]
    assert stats.rejected == 0 and stats.error is None
    assert {r.auth for r in receiver.requests} == {"Bearer demo-ingest-key"}

    # The 503 was retried with the very same events, and they were stored once.
    first = receiver.requests[0]
    assert first.status == 503 and first.phase == 1
    assert stats.retries >= 1
    retried = receiver.requests[1]
    assert retried.status == 202
    assert [e["event_id"] for e in retried.events] == [e["event_id"] for e in first.events]

    accepted = [e for r in receiver.accepted() for e in r.events]
    ids = [e["event_id"] for e in accepted]
    assert len(ids) == len(set(ids)), "an event_id was accepted twice"
    assert stats.events_posted == len(accepted)
    assert stats.batches == len(receiver.accepted())

    # Never a timestamp from the future (also enforced by the receiver with max_future=0).
    for r in receiver.accepted():
        for e in r.events:
            assert datetime.fromisoformat(e["occurred_at"]) <= r.received

    live_start = started - timedelta(days=LIVE_DAYS)
    slack = timedelta(minutes=5)

    # Phase 1: history only, time-ordered batches of at most 2,000.
    backfill = receiver.accepted(1)
    assert backfill
    assert all(len(r.events) <= MAX_BATCH for r in backfill)
    times1 = [datetime.fromisoformat(e["occurred_at"]) for r in backfill for e in r.events]
    assert times1 == sorted(times1)
    assert times1[-1] < live_start + slack
    assert times1[0] < live_start - timedelta(days=HISTORY_DAYS - 10)

    # Phase 2: the live window, in simulated-time order, spread over the replay's wall time,
    # and never ahead of the simulated clock.
    live = receiver.accepted(2)
    assert len(live) >= 4, f"only {len(live)} live batches"
    times2 = [datetime.fromisoformat(e["occurred_at"]) for r in live for e in r.events]
    assert times2 == sorted(times2)
    span = timedelta(days=LIVE_DAYS)
    assert live_start - slack <= times2[0] < live_start + span * 0.3
    assert live_start + span * 0.7 < times2[-1] <= started
    t0 = receiver.phase_started[2]
    assert live[-1].mono - t0 >= LIVE_SECONDS * 0.6
    for r in live:
        simulated = live_start + span * min((r.mono - t0) / LIVE_SECONDS, 1.0)
        newest = max(datetime.fromisoformat(e["occurred_at"]) for e in r.events)
        assert newest <= simulated + timedelta(hours=12), (newest, simulated)

    # Phase 3: real-time events.
    trickle = [e for r in receiver.accepted(3) for e in r.events]
    assert trickle
    for e in trickle:
        assert datetime.fromisoformat(e["occurred_at"]) >= started - timedelta(seconds=1)


def test_story_has_drama_in_the_live_window() -> None:
    anchor = datetime(2026, 6, 1, 12, tzinfo=UTC)
    story = build_story(customers=120, seed=7, history_days=240, live_days=60, anchor=anchor)
    assert len(story.drifters) >= 0.1 * story.customers
    assert story.high_complaints_live >= 3
    ids = [e["event_id"] for e in story.backfill] + [e["event_id"] for _, e in story.live]
    assert len(ids) == len(set(ids))
    last_seen: dict[str, datetime] = {}
    for ts, e in story.live:
        last_seen[e["customer_id"]] = ts
    # Drifters stop or thin out: none of those who stop is seen in the last third.
    stopped = [c for c in story.drifters if last_seen.get(c, story.live_start)
               < story.live_start + timedelta(days=40)]
    assert len(stopped) >= 0.06 * story.customers
    active = {c.customer_id for c in story.active}
    assert active and not active & set(story.drifters)
    for _, e in story.live:
        _, errs = validate_event(e)
        assert errs == []
    # the README's scripted customers go by the names their ids give (the walkthrough met
    # `demo-ana-regular` as "Kenji Ito")
    from services.demo.people import customer_name
    assert customer_name("demo-ana-regular", 7) == "Ana Silva"
    assert customer_name("demo-li-bigspender", 3) == "Li Wei"


async def test_main_posts_until_sigterm_then_exits_0() -> None:
    """The process entry point ``churnwatch up`` runs: SIGTERM mid-replay is a clean stop."""
    receiver = Receiver()
    runner, port = await _serve(receiver)
    code = ("import sys; from services.demo.feed import main; "
            "sys.exit(main(api_url=sys.argv[1], api_key=None, customers=20, seed=3))")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, f"http://127.0.0.1:{port}",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while len(receiver.accepted()) < 3:
                    receiver.arrived.clear()
                    await receiver.arrived.wait()
        assert len(receiver.accepted()) >= 3, "the feed did not get going"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await runner.cleanup()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"demo feed stopped" in err
    assert b"HTTP Request" not in err  # httpx's per-request lines are kept out of the log
    assert receiver.invalid == []
    assert all(r.auth is None for r in receiver.requests)
    ids = [e["event_id"] for r in receiver.accepted() for e in r.events]
    assert len(ids) == len(set(ids))
