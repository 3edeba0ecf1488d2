"""Root exceptions of churnwatch. Messages name the bad value and say how to fix it."""

from __future__ import annotations


class ChurnwatchError(Exception):
    """Base class of every error churnwatch raises on purpose."""


class ConfigError(ChurnwatchError):
    """A setting is missing or has a value churnwatch cannot use."""


class BrokerUnavailable(ChurnwatchError):
    """The Kafka broker could not take or acknowledge records in time."""


class ModelError(ChurnwatchError):
    """A model artifact cannot be loaded or is incompatible with this version."""


class DeliveryError(ChurnwatchError):
    """A notification could not be delivered.

    ``permanent`` failures (e.g. HTTP 4xx other than 408/429) are not retried;
    ``retry_after`` carries a receiver's Retry-After hint in seconds.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
