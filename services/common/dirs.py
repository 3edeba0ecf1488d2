"""Directories churnwatch writes to: created when missing, or one line saying why they cannot be."""

from __future__ import annotations

from pathlib import Path

from services.common.exceptions import ConfigError


def ensure_dir(path: Path, what: str) -> Path:
    """Create ``path`` (and its parents) if needed; a ConfigError naming the fix otherwise.

    ``what`` says what the directory is for, e.g. "the scorer's data directory".
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {what} {path} ({exc.strerror or exc}): set CHURNWATCH_HOME to a "
            "directory you can write to") from None
    return path
