"""The notifier's Prometheus metrics, registered in the registry it is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("delivered", "retry", "failed", "skipped_duplicate")


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.deliveries = Counter(
            "churnwatch_notifier_deliveries_total", "Delivery attempts by channel and outcome.",
            ["channel", "outcome"], registry=registry)
        self.retry_queue_depth = Gauge(
            "churnwatch_notifier_retry_queue_depth", "Deliveries waiting in the retry queue.",
            registry=registry)
        self.dead_letters = Counter(
            "churnwatch_notifier_dead_letters_total",
            "Records sent to the notifications DLQ, by channel ('input' = unreadable record).",
            ["channel"], registry=registry)
        self.delivery_seconds = Histogram(
            "churnwatch_notifier_delivery_seconds", "Duration of one delivery attempt.",
            ["channel"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.consumed = Counter(
            "churnwatch_notifier_risk_changes_consumed_total",
            "Risk-change events consumed (valid ones).", registry=registry)
        for channel in ("email", "sms", "webhook"):
            for outcome in OUTCOMES:
                self.deliveries.labels(channel=channel, outcome=outcome)
            self.dead_letters.labels(channel=channel)
        self.dead_letters.labels(channel="input")
