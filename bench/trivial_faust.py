"""The ceiling for the scorer: a Faust agent that only counts (same broker, same settings)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import faust

from services.common.settings import load_settings
from services.scorer.transport import transport_app
from services.scorer.worker import faust_broker


def main() -> None:
    settings = load_settings()
    target = int(os.environ["BENCH_TARGET"])
    out = Path(os.environ["BENCH_OUT"])
    # stock: Faust's own delivery (a task set per message) to an agent's take_events;
    # handover: the scorer's transport, records taken by the consumer and handed over in
    # batches (services/scorer/transport.py)
    delivery = os.environ.get("BENCH_TRIVIAL_DELIVERY", "stock")
    state = {"n": 0, "first": 0.0, "first_n": 0}

    async def counted(n: int) -> None:
        """Timed from the first batch counted to the last, over the records after the first
        batch (those had arrived before the clock started): "0 0" if one batch held all."""
        if not state["n"]:
            state["first"], state["first_n"] = time.monotonic(), n
        state["n"] += n
        if state["n"] >= target:
            result = f"{state['n'] - state['first_n']} {time.monotonic() - state['first']}"
            await asyncio.to_thread(out.write_text, result)
            os._exit(0)

    async def handle(messages: list[Any]) -> None:
        await counted(len(messages))

    app_class = (transport_app(settings.scorer_fetch_max_wait_ms,
                               max_unacked_bytes=int(settings.scorer_inflight_max_mb * 2**20),
                               batch_handlers={settings.topic_events: handle})
                 if delivery == "handover" else
                 transport_app(settings.scorer_fetch_max_wait_ms, poll_delivery=False))
    app = app_class(f"{settings.scorer_group}-trivial-{delivery}",
                    broker=faust_broker(settings),
                    value_serializer="raw", key_serializer="raw", store="memory://",
                    datadir=str(out.parent / f"trivial-faust-data-{delivery}"),
                    autodiscover=False, web_enabled=False, consumer_auto_offset_reset="earliest",
                    broker_rebalance_timeout=4, broker_session_timeout=6,
                    broker_heartbeat_interval=1, broker_commit_interval=1.0,
                    broker_max_poll_records=settings.scorer_batch_max,
                    stream_buffer_maxsize=max(4096, settings.scorer_batch_max * 2))
    topic = app.topic(settings.topic_events, key_type=bytes, value_type=bytes)

    @app.agent(topic)
    async def count(stream: Any) -> None:  # under handover it only subscribes the topic
        async for batch in stream.take_events(settings.scorer_batch_max, within=0.05):
            await counted(len(batch))

    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
