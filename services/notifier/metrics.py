"""The notifier's Prometheus metrics, registered in the registry it is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.notifier.channels import registry as channels

OUTCOMES = ("delivered", "retry", "failed", "skipped_duplicate")
SUPPRESS_REASONS = ("dedupe", "quiet_hours_delayed", "rate_limited", "inhibited", "no_consent",
                    "no_contact", "stale", "digested", "holdout", "moved_on", "recipient_left",
                    "owner_changed")


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
            "churnwatch_notifier_delivery_seconds",
            "Delivery latency: from the risk change being published to delivered (includes "
            "retries, quiet hours and digest waits).",
            ["channel"], registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
                     4 * 3600, 12 * 3600, 86400))
        self.retries = Counter(
            "churnwatch_notifier_retries_total",
            "Deliveries queued for another attempt after a failure (or a failing endpoint).",
            ["channel"], registry=registry)
        self.suppressed = Counter(
            "churnwatch_notifier_suppressed_total",
            "Staff messages not sent right away, by reason.", ["reason"], registry=registry)
        self.decisions_behind = Gauge(
            "churnwatch_notifier_decisions_behind_seconds",
            "How far the timed decisions (settle windows, escalations, digests, summaries) lag "
            "the clock: they wait until every risk change published before they came due is "
            "applied (about the check interval when caught up; grows while reading a backlog).",
            registry=registry)
        self.consumed = Counter(
            "churnwatch_notifier_risk_changes_consumed_total",
            "Risk-change events consumed (valid ones).", registry=registry)
        self.unexpected = Counter(
            "churnwatch_notifier_unexpected_errors_total",
            "Errors that are neither bad input nor Redis/Kafka being away (a bug), by step; "
            "the record is retried, then dead-lettered.", ["step"], registry=registry)
        self.unexpected.labels(step="plan")
        for channel in channels.names():
            for outcome in OUTCOMES:
                self.deliveries.labels(channel=channel, outcome=outcome)
            self.dead_letters.labels(channel=channel)
            self.retries.labels(channel=channel)
        self.dead_letters.labels(channel="input")
        for reason in SUPPRESS_REASONS:
            self.suppressed.labels(reason=reason)
