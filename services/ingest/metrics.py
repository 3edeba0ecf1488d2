"""Prometheus metrics of the HTTP API (a registry of its own, served at /metrics)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.accepted = Counter("churnwatch_ingest_events_accepted_total",
                                "Events acknowledged by the broker, by type.", ["type"],
                                registry=self.registry)
        self.rejected = Counter("churnwatch_ingest_events_rejected_total",
                                "Events refused at the edge, by reason.", ["reason"],
                                registry=self.registry)
        self.produce_seconds = Histogram("churnwatch_ingest_produce_seconds",
                                         "Time for the broker to acknowledge one request's events.",
                                         registry=self.registry)
        self.requests = Counter("churnwatch_api_requests_total", "HTTP requests by route and status.",
                                ["route", "status"], registry=self.registry)
