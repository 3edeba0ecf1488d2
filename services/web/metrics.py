"""Prometheus metrics of the HTTP app: one registry (served at /metrics) that the process
collectors, the request counters and the win-back counters live in; ingestion adds its own
(``services/ingest/metrics.py``).

Label sets are bounded: ``route`` is the route *template* (``/v1/customers/{customer_id}/risk``,
never the raw path; ``unmatched`` for 404s) and ``action`` a closed set.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from services.records.winback import ACTION_TYPES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter("churnwatch_api_requests_total", "HTTP requests by route and status.",
                                ["route", "status"], registry=self.registry)
        self.request_seconds = Histogram("churnwatch_api_request_seconds",
                                         "HTTP request duration by route template.", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        # Win-back loop (issue 6); dashboards use these exact names. ``action`` is a closed set.
        self.winback_actions = Counter("churnwatch_winback_actions_total",
                                       "Staff actions recorded on at-risk customers, by type.",
                                       ["action"], registry=self.registry)
        self.winback_returned = Counter("churnwatch_winback_returned_total",
                                        "Actions whose customer came back within the attribution "
                                        "window (counted once, when first seen), by type.",
                                        ["action"], registry=self.registry)
        for action in ACTION_TYPES:
            self.winback_actions.labels(action)
            self.winback_returned.labels(action)
