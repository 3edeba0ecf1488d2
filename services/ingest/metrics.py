"""Prometheus metrics of ingestion, registered in the app's registry (served at /metrics).

Label sets are bounded: ``type`` and ``reason`` are closed sets, and ``store`` (per-store ingest
counts, for the "store went silent" alert) is capped at :data:`MAX_STORES` distinct values —
later ones are counted as ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.web.metrics import LATENCY_BUCKETS

MAX_STORES = 500
NO_STORE = "none"
OTHER_STORES = "other"
EVENT_TYPES = ("transaction", "visit", "complaint")
REJECT_REASONS = ("malformed_json", "batch_too_large", "invalid", "broker_unavailable")


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


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.accepted = Counter("churnwatch_ingest_events_accepted_total",
                                "Events acknowledged by the broker, by type.", ["type"],
                                registry=registry)
        self.rejected = Counter("churnwatch_ingest_events_rejected_total",
                                "Events refused at the edge, by reason.", ["reason"],
                                registry=registry)
        self.by_store = Counter("churnwatch_ingest_events_by_store_total",
                                "Events acknowledged by the broker, by store_id ('none' without "
                                f"one, 'other' beyond the first {MAX_STORES} stores).", ["store"],
                                registry=registry)
        self.produce_seconds = Histogram("churnwatch_ingest_produce_seconds",
                                         "Time for the broker to acknowledge one request's events.",
                                         buckets=LATENCY_BUCKETS, registry=registry)
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
