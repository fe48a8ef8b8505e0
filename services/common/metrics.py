"""Prometheus metrics of one service, on a registry of its own (no global state shared by tests).

Business counters (decisions, payouts, payout amounts) are incremented by handlers inside the
event's transaction. A transaction that rolls back and is retried runs the handler again, so
those increments are held while the consumer runtime applies an event (`staged_increments`) and
count only once its transaction committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Outcomes of one attempt at a record, as the duration histogram labels them.
APPLIED, DUPLICATE, DEAD_LETTERED, RETRY = "applied", "duplicate", "dead_lettered", "retry"

# Handlers take milliseconds on SQLite and PostgreSQL; a slow lock wait or a commit under load, seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_staged: ContextVar[list[Callable[[], None]] | None] = ContextVar("second_opinion_staged_increments", default=None)


class StagedIncrements:
    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def apply(self) -> None:
        for increment in self.pending:
            increment()
        self.pending.clear()


@contextlib.contextmanager
def staged_increments() -> Iterator[StagedIncrements]:
    """Inside the block, increments of transactional counters wait for `apply()` (call it after commit)."""
    staged = StagedIncrements()
    token = _staged.set(staged.pending)
    try:
        yield staged
    finally:
        _staged.reset(token)


class _Increments:
    """`inc` of a counter (or one of its labelled children) that waits for the commit when staged."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def inc(self, amount: float = 1) -> None:
        pending = _staged.get()
        if pending is None:
            self._target.inc(amount)
        else:
            pending.append(lambda: self._target.inc(amount))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class TransactionalCounter(_Increments):
    """A Counter whose increments made while an event is applied count only if its transaction commits."""

    def labels(self, *values: str, **labels: str) -> _Increments:
        return _Increments(self._target.labels(*values, **labels))


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
        self.handler_duration = Histogram(
            "handler_duration_seconds",
            "Time of one attempt at a record (decode, transaction, handler), by topic and outcome"
            " (applied|duplicate|dead_lettered|retry)",
            ["topic", "outcome"],
            buckets=DURATION_BUCKETS,
            **labels,
        )
        self.decisions = TransactionalCounter(
            Counter(
                "decisions",
                "Second-opinion decisions by source, reason and result",
                ["source", "reason", "result"],
                **labels,
            )
        )
        self.payouts = TransactionalCounter(Counter("payouts", "Payouts issued by fee type", ["fee_type"], **labels))
        self.payout_cents = TransactionalCounter(
            Counter(
                "payout_cents",
                "Payout amount issued, in cents, by fee type",
                ["fee_type"],
                **labels,
            )
        )
        self.lag = Gauge(
            "consumer_lag",
            "Records behind: end offset minus committed offset",
            ["group", "topic", "partition"],
            **labels,
        )
        self.service = service
