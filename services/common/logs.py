"""Logging set-up: one JSON object per line, with the service name on every record."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_EXTRA_FIELDS = ("event_id", "customer_id", "delivery_id", "topic", "partition", "offset")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in _EXTRA_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "faust", "mode", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def mask_email(value: str) -> str:
    name, at, domain = value.partition("@")
    if not at:
        return mask_phone(value)
    return (name[:1] + "***@" + domain) if name else "***@" + domain


def mask_phone(value: str) -> str:
    digits = value.strip()
    return ("*" * max(len(digits) - 3, 0)) + digits[-3:] if len(digits) > 3 else "***"
