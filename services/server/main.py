"""Run the HTTP API with uvicorn (``churnwatch api``)."""

from __future__ import annotations

import socket
import sys

import uvicorn

from services.common.logs import setup_logging
from services.common.runtime import tune_gc
from services.common.settings import Settings
from services.server.app import create_app
from services.server.slowclients import guarded_protocol


def main(settings: Settings) -> int:
    setup_logging("api", settings.log_level)
    # Big ingest batches are validated in a worker thread; a short GIL switch interval (5 ms by
    # default) lets the event loop answer risk reads in between (bench/api_bench.py).
    sys.setswitchinterval(0.001)
    app = create_app(settings)
    tune_gc()
    protocol = guarded_protocol(header_timeout=settings.api_header_timeout_seconds,
                                body_timeout=settings.api_body_timeout_seconds,
                                max_slow_per_client=settings.api_max_slow_connections_per_client)
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_config=None,
                            access_log=False, proxy_headers=False, server_header=False,
                            http=protocol)
    server = uvicorn.Server(config)
    if settings.api_socket_fd is not None:  # bound by `churnwatch up` (services/cli/stack.py)
        server.run(sockets=[socket.socket(fileno=settings.api_socket_fd)])
    else:
        server.run()
    return 0
