"""Run the HTTP API with uvicorn (``churnwatch api``)."""

from __future__ import annotations

import uvicorn

from services.common.logs import setup_logging
from services.common.settings import Settings
from services.ingest.app import create_app


def main(settings: Settings) -> int:
    setup_logging("api", settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_config=None,
                            access_log=False, proxy_headers=False, server_header=False)
    uvicorn.Server(config).run()
    return 0
