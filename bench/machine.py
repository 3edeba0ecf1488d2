"""The machine a bench or soak ran on: CPU, cores, RAM, OS, Python, broker, Redis, libraries."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from services.common.embedded import broker_binary, redis_binary


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def _version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def summary_kind() -> str:
    """Whether this checkout runs the compiled customer summary (scripts/native.py)."""
    from services.scoring import summary

    return "compiled (mypyc)" if summary.NATIVE else "pure Python"


def describe() -> dict[str, Any]:
    uname = platform.uname()
    redis_line = _version_of([redis_binary(), "--version"])
    redis_version = next((p.split("=", 1)[1] for p in redis_line.split() if p.startswith("v=")),
                         redis_line)
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "ram_gib": _ram_gib(),
        "os": f"{uname.system} {uname.release}", "platform": platform.platform(),
        "python": platform.python_version(),
        "broker": _version_of([broker_binary(), "--version"]) + " (memory storage)",
        "redis_server": redis_version,
        # the scorer's per-event work, compiled by `make install` where a C compiler is
        "summary": summary_kind(),
        "packages": {name: _package(name) for name in
                     ("aiokafka", "faust-streaming", "redis", "fastapi", "uvicorn")},
    }


def one_line(m: dict[str, Any]) -> str:
    """``Intel Xeon ... , 2 cores, 24 GiB, Linux 6.1, Python 3.11.7``."""
    return (f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
            f"Python {m['python']}, {m['broker']}, redis-server {m['redis_server']}"
            + (f", customer summary {m['summary']}" if m.get("summary") else ""))


if __name__ == "__main__":
    import json

    print(json.dumps(describe(), indent=2))
