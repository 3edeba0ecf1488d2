"""Errors of ``churnwatch train``: each message says what to change (data, --until, --horizon-days)."""

from __future__ import annotations

from services.common.exceptions import ChurnwatchError


class TrainingError(ChurnwatchError):
    """The model cannot be trained from these inputs; the message says what to fix."""
