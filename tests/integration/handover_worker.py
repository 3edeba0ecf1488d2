"""A Faust worker on the scorer's transport (services/scorer/transport.py) whose batch handler
prints each record's offset and value, and raises on a record whose value is
``boom`` when CRASH_ON_BOOM=1: a bug in the handler, which nothing in the scorer's processor
would raise (it retries what fails). Run by tests/integration/test_scorer_handover.py:

    python -m tests.integration.handover_worker BROKER TOPIC GROUP DATA_DIR
"""

from __future__ import annotations

import os
import sys
from typing import Any

import faust

from services.scorer.transport import transport_app


def main(broker: str, topic: str, group: str, datadir: str) -> None:
    crash = os.environ.get("CRASH_ON_BOOM") == "1"

    async def handle(messages: list[Any]) -> None:
        for m in messages:
            if crash and m.value == b"boom":
                raise RuntimeError("a bug in the batch handler")
            sys.stdout.write(f"handled {m.offset} {m.value.decode()}\n")

    app_class = transport_app(100, batch_handlers={topic: handle})
    app = app_class(group, broker=f"kafka://{broker}", value_serializer="raw",
                    key_serializer="raw", store="memory://", autodiscover=False,
                    web_enabled=False, topic_partitions=1, datadir=datadir,
                    consumer_auto_offset_reset="earliest", broker_rebalance_timeout=4,
                    broker_session_timeout=6, broker_heartbeat_interval=1,
                    broker_commit_interval=0.2, broker_max_poll_records=100)
    topic_ = app.topic(topic, key_type=bytes, value_type=bytes, partitions=1)

    @app.agent(topic_)
    async def subscribe(stream: Any) -> None:  # Faust fetches only what a stream subscribes
        async for _ in stream:
            pass

    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(*sys.argv[1:5])
