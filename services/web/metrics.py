"""Prometheus metrics of the HTTP API (a registry of its own, served at /metrics).

Label sets are bounded: ``route`` is the route *template* (``/v1/customers/{customer_id}/risk``,
never the raw path; ``unmatched`` for 404s), ``type`` and ``reason`` are closed sets, and
``store`` (per-store ingest counts, for the "store went silent" alert) is capped at
:data:`MAX_STORES` distinct values — later ones are counted as ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from services.records.winback import ACTION_TYPES

MAX_STORES = 500
NO_STORE = "none"
OTHER_STORES = "other"
EVENT_TYPES = ("transaction", "visit", "complaint")
REJECT_REASONS = ("malformed_json", "batch_too_large", "invalid", "broker_unavailable")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StoreLabels:
    """Maps ``store_id`` values to a bounded label set (first :data:`MAX_STORES` seen)."""

    def __init__(self, limit: int = MAX_STORES):
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, store_id: str | None) -> str:
        if not store_id:
            return NO_STORE
        if store_id in self._seen:
            return store_id
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(store_id)
                return store_id
        return OTHER_STORES


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
        self.by_store = Counter("churnwatch_ingest_events_by_store_total",
                                "Events acknowledged by the broker, by store_id ('none' without "
                                f"one, 'other' beyond the first {MAX_STORES} stores).", ["store"],
                                registry=self.registry)
        self.produce_seconds = Histogram("churnwatch_ingest_produce_seconds",
                                         "Time for the broker to acknowledge one request's events.",
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
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
        self.stores = StoreLabels()
        for t in EVENT_TYPES:
            self.accepted.labels(t)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)

    def count_stores(self, store_ids: Iterable[str | None]) -> None:
        """Count accepted events per store (call once per acknowledged batch)."""
        counts: dict[str, int] = {}
        for store_id in store_ids:
            label = self.stores.label(store_id)
            counts[label] = counts.get(label, 0) + 1
        for label, n in counts.items():
            self.by_store.labels(label).inc(n)
