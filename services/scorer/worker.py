"""The scorer worker: a Faust app feeding batches of raw records to :class:`Processor`.

The agent runs at concurrency 1 (faust-streaming#606: higher concurrency can commit past a
message still in flight); scale out with partitions and more workers in the same group.
The consumer takes the events topic's records itself and hands them to the processor a batch
at a time (``services/scorer/transport.py``: what arrived while the last batch was applied),
acknowledging them only once that returns; the processor returns only once the batch is
stored, so a crash redelivers rather than loses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from services.common.dirs import ensure_dir
from services.common.httpserver import WorkerHttpServer
from services.common.kafka import faust_credentials, start_producer
from services.common.logs import setup_logging
from services.common.pseudonym import install_key
from services.common.redisconn import make_redis
from services.common.retry import TRANSIENT
from services.common.runtime import tune_gc
from services.common.settings import Settings
from services.scorer.processor import Processor, Record
from services.scorer.quality import QualityMetrics, QualityTracker
from services.scorer.transport import PollConsumer, transport_app
from services.scoring import summary, valuebounds
from services.scoring.engine import Engine
from services.scoring.model import ShadowModel, load_model
from services.state.store import StateStore

logger = logging.getLogger(__name__)
BOUNDS_READ_SECONDS = 60.0  # how often the scorer re-reads (and maybe recomputes) the value boundaries


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    if not raw:
        return ()
    items = raw.items() if hasattr(raw, "items") else raw
    return tuple((str(k), bytes(v or b"")) for k, v in items)


def _record(m: Any) -> Record:
    return Record(m.topic, m.partition, m.offset, m.key, m.value,
                  m.timestamp and int(m.timestamp * 1000), _headers(m.headers))


def faust_broker(settings: Settings) -> list[str]:
    return [f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(",")]


def data_dir(settings: Settings) -> Path:
    """Faust's data directory, under CHURNWATCH_HOME (Faust itself only creates the last part)."""
    return settings.home / "scorer-data"


@contextmanager
def _guarded(what: str) -> Iterator[None]:
    """The guard of a periodic job: its failure must not stop the worker (an exception out of a
    Faust timer or task would). Redis or the broker away (the processor's TRANSIENT errors) is
    a one-line warning; anything else is a bug, logged with its traceback. Either way the next
    interval tries again and scoring goes on."""
    try:
        yield
    except TRANSIENT as exc:
        logger.warning("cannot %s (%s: %s)", what, type(exc).__name__, exc)
    except Exception:  # noqa: BLE001  top-level guard of a periodic job, logged with the traceback
        logger.exception("cannot %s", what)


class _Jobs:
    """What the scorer's Faust app runs besides the agent: the processor it builds on first use
    and the periodic jobs (timers and tasks), each behind its own guard (:func:`_guarded`)."""

    def __init__(self, app: faust.App, settings: Settings, engine: Engine) -> None:
        self.app = app
        self.settings = settings
        self.engine = engine
        self.registry = CollectorRegistry()
        self.quality_metrics = QualityMetrics(self.registry)  # exported from the start
        self.ready_flag = False
        self.assigned: list[int] = []
        self.parts: dict[str, Any] = {}
        self._waits_counted = 0  # the consumer's in-flight waits already in the counter

    @property
    def started(self) -> Processor | None:
        """The processor once built (by start_http or the agent), else None."""
        return self.parts.get("processor")

    async def processor(self) -> Processor:
        if "processor" not in self.parts:
            settings, parts = self.settings, self.parts
            redis = make_redis(settings)
            # customer tokens in the logs (services/common/pseudonym.py), before scoring
            key_task = asyncio.create_task(install_key(settings, redis), name="pseudonym-key")
            await asyncio.wait({key_task}, timeout=5.0)
            parts["key_task"] = key_task
            producer = await start_producer(settings)
            store = StateStore.from_settings(redis, settings)
            parts["processor"] = Processor(settings=settings, store=store, producer=producer,
                                           engine=self.engine,
                                           registry=self.registry)
            logger.info("customer summary: %s", "compiled (mypyc)" if summary.NATIVE else
                        "pure Python (not compiled here: `make native`; about half as fast)")
            # the boundaries a previous run computed, before the first batch if we can (if
            # Redis is away, the timer tries again)
            with _guarded("read the value-tier boundaries"):
                await parts["processor"].engine.refresh_value_bounds(redis, parts["processor"].keys)
            tune_gc()  # the processor, producer and connections live as long as the worker
        return self.parts["processor"]

    def ready(self) -> dict[str, Any]:
        proc = self.started
        version = proc.engine.model.version if proc is not None else self.engine.model.version
        stuck = dict(proc.stuck) if proc is not None else {}
        # not ready while a step waits on an error retrying does not fix: say which, and why
        return {"ready": self.ready_flag and not stuck, "model_version": version,
                "assigned_partitions": self.assigned, **({"stuck": stuck} if stuck else {})}

    def partitions(self) -> list[int]:
        """The partitions of the events topic this worker holds now."""
        return [tp.partition for tp in self.app.consumer.assignment()
                if tp.topic == self.settings.topic_events]

    async def start_http(self) -> None:
        setup_logging("scorer", self.settings.log_level)
        proc = await self.processor()
        server = WorkerHttpServer(host=self.settings.api_host,
                                  port=self.settings.scorer_metrics_port,
                                  registry=self.registry, ready=self.ready,
                                  probes={"redis": proc.store.redis.ping})
        self.parts["http"] = server
        await server.start()

    async def gauges(self) -> None:
        if not self.ready_flag:
            return
        proc = await self.processor()
        highwater = {}
        for tp in self.app.consumer.assignment():
            if tp.topic == self.settings.topic_events:
                hw = self.app.consumer.highwater(tp)
                if hw is not None:
                    highwater[tp.partition] = hw
        with _guarded("refresh gauges"):  # gauges are best effort
            consumer = self.app.consumer
            if isinstance(consumer, PollConsumer):
                proc.metrics.inflight.set(consumer.unacked_bytes())
                proc.metrics.inflight_waits.inc(consumer.waits - self._waits_counted)
                self._waits_counted = consumer.waits
            await proc.refresh_gauges(highwater)

    async def sweep(self) -> None:
        if not self.ready_flag:
            return
        proc = await self.processor()
        partitions = self.partitions()
        if partitions:
            async with proc.lock:
                await proc.sweep(partitions)

    async def model_quality(self) -> None:
        """Drift and live quality per model version (services/scorer/quality.py)."""
        if not self.ready_flag:
            return
        proc = await self.processor()
        if "quality" not in self.parts:
            self.parts["quality"] = QualityTracker(proc.store, self.settings,
                                                   proc.engine.active.known,
                                                   metrics=self.quality_metrics)
        with _guarded("run the model quality pass; trying again next interval"):
            await self.parts["quality"].run()

    async def rescore(self) -> None:
        """After a model switch, re-score every customer of the assigned partitions, a step
        at a time, event batches in between (the lock is fair); idle, one comparison per
        tenth of a second. (A task, not a timer: a step outlasts a short interval.)"""
        while True:
            busy = 0
            proc = self.started
            if proc is not None and self.ready_flag:
                busy = await self._rescore_step(proc)
            await asyncio.sleep(0 if busy else 0.1)

    async def _rescore_step(self, proc: Processor) -> int:
        with _guarded("re-score after a model switch"):  # a bug must not stop scoring
            async with proc.lock:
                return await proc.rescore_step(self.partitions(),
                                               budget=self.settings.model_rescore_batch)
        return 0

    async def refresh_value_bounds(self) -> None:
        """Value tiers relative within each tenant: recompute stale boundaries, serve them."""
        proc = self.started
        if proc is None or not self.ready_flag:
            return
        with _guarded("refresh the value-tier boundaries"):  # keep the boundaries we have
            proc.engine.value_bounds = await valuebounds.refresh_stale(
                proc.store.redis, proc.keys, int(time.time() * 1000),
                int(self.settings.value_bounds_refresh_seconds * 1000))

    async def refresh_model(self) -> None:
        """Follow `churnwatch model activate`: swap the served model without a restart."""
        proc = self.started
        if proc is None:  # not started yet (start_http builds it)
            return
        old = proc.engine.model.version
        checked = changed = False
        with _guarded(f"check the active model; still serving {old}"):
            changed = await proc.engine.refresh(proc.store.redis, proc.keys)
            checked = True
        if not checked:
            return
        if proc.engine.shadow is not None:
            with _guarded("check the shadow model"):
                await proc.engine.shadow.refresh(proc.store.redis, proc.keys)
        if changed:
            new = proc.engine.model.version
            try:
                proc.metrics.model_info.remove(old)
            except KeyError:
                pass
            proc.metrics.model_info.labels(new).set(1)
            logger.info("now serving model %s (was %s)", new, old)


def build_app(settings: Settings) -> faust.App:
    # fail at start-up, not on the first batch: a model or rules file that cannot be read
    engine = Engine.from_settings(load_model(settings.model), settings, shadow=ShadowModel())

    async def handle(messages: list[Any]) -> None:
        """A batch of the events topic's records, straight from the consumer (transport.py)."""
        proc = await jobs.processor()
        records = [_record(m) for m in messages]
        async with proc.lock:
            await proc.process(records)

    app_class = transport_app(settings.scorer_fetch_max_wait_ms,
                              max_unacked_bytes=int(settings.scorer_inflight_max_mb * 2**20),
                              batch_handlers={settings.topic_events: handle})
    app = app_class(
        settings.scorer_group,
        broker=faust_broker(settings),
        broker_credentials=faust_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(data_dir(settings)),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_rebalance_timeout=4,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.scorer_batch_max,
        stream_buffer_maxsize=max(4096, settings.scorer_batch_max * 2),
        worker_redirect_stdouts=False,
    )
    topic = app.topic(settings.topic_events, key_type=bytes, value_type=bytes,
                      partitions=settings.topic_partitions)
    jobs = _Jobs(app, settings, engine)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        jobs.assigned = sorted(tp.partition for tp in assigned
                               if tp.topic == settings.topic_events)
        jobs.ready_flag = True

    @app.agent(topic, concurrency=1)
    async def score(stream: Any) -> None:
        """Subscribes the events topic (Faust fetches only what a stream subscribes). Its
        records reach ``handle`` in batches without passing the streams; any that came this way
        would be scored the same."""
        proc = await jobs.processor()
        within = settings.scorer_batch_within_ms / 1000
        async for events in stream.take_events(settings.scorer_batch_max, within=within):
            records = [_record(e.message) for e in events]
            async with proc.lock:
                await proc.process(records)

    app.task(jobs.start_http)
    app.task(jobs.rescore)
    app.timer(interval=settings.scorer_gauges_interval_seconds)(jobs.gauges)
    app.timer(interval=settings.sweep_interval_seconds)(jobs.sweep)
    app.timer(interval=settings.quality_interval_seconds)(jobs.model_quality)
    app.timer(interval=min(BOUNDS_READ_SECONDS, settings.value_bounds_refresh_seconds))(
        jobs.refresh_value_bounds)
    app.timer(interval=settings.model_refresh_seconds)(jobs.refresh_model)
    return app


def _exit_later(seconds: float) -> None:
    """Exit hard if a clean stop takes longer than ``seconds``. Stopping commits offsets
    and leaves the group: when the broker is already gone (the stack stopping around us, a
    supervisor that died and sent its PDEATHSIG) Faust retries that forever and the scorer
    lives on as an orphan. Nothing is lost by exiting: the processor acknowledges a batch
    only once it is stored, and what was not committed is redelivered."""
    def watchdog() -> None:
        time.sleep(seconds)
        logger.warning("still stopping after %.0f s; exiting", seconds)
        logging.shutdown()
        os._exit(1)
    threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True).start()


class _Worker(faust.Worker):  # type: ignore[misc]
    grace = 30.0  # CHURNWATCH_SCORER_SHUTDOWN_GRACE_SECONDS

    def _on_sigterm(self) -> None:
        _exit_later(self.grace)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _exit_later(self.grace)
        super()._on_sigint()


def main(settings: Settings) -> int:
    setup_logging("scorer", settings.log_level)
    ensure_dir(data_dir(settings), "the scorer's data directory")
    app = build_app(settings)
    tune_gc()
    worker = _Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                     redirect_stdouts=False)
    worker.grace = settings.scorer_shutdown_grace_seconds
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


__all__ = ["build_app", "main"]
