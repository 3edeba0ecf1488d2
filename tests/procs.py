"""Run churnwatch services as real child processes in tests (the same command users run).

The class lives in :mod:`services.common.embedded`, shared with the bench."""

from services.common.embedded import ServiceProcess

__all__ = ["ServiceProcess"]
