"""Prometheus metrics of one service, on a registry of its own (no global state shared by tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        ns = "second_opinion"
        labels = {"registry": self.registry, "namespace": ns}
        self.handled = Counter(
            "events_handled",
            "Consumed events by topic and outcome (applied|duplicate)",
            ["topic", "outcome"],
            **labels,
        )
        self.retries = Counter(
            "event_retries",
            "Retries of an event after a failure, by topic and error",
            ["topic", "error"],
            **labels,
        )
        self.dead_lettered = Counter(
            "dead_lettered",
            "Records sent to a DLQ, by source topic and error class",
            ["topic", "error_class"],
            **labels,
        )
        self.published = Counter("outbox_published", "Events the relay published", **labels)
        self.outbox_pending = Gauge("outbox_pending", "Staged events not yet published", **labels)
        self.decisions = Counter(
            "decisions",
            "Second-opinion decisions by source, reason and result",
            ["source", "reason", "result"],
            **labels,
        )
        self.payouts = Counter("payouts", "Payouts issued by fee type", ["fee_type"], **labels)
        self.payout_cents = Counter(
            "payout_cents",
            "Payout amount issued, in cents, by fee type",
            ["fee_type"],
            **labels,
        )
        self.lag = Gauge(
            "consumer_lag",
            "Records behind: end offset minus committed offset",
            ["group", "topic", "partition"],
            **labels,
        )
        self.service = service
