"""Logs, trace context and metrics of the consumer runtime, on the real handlers and databases (in-memory bus)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from services.common import logs
from services.common.backoff import Backoff
from tests.support.bus import InMemoryBus, ServiceUnderTest
from tests.support.events import provider, report, request

REPORTS, REQUESTS, GRANTED = "service_report.received", "second_opinion.requested", "second_opinion.granted"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
TRACEPARENT_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[13])$")
DURATION = "second_opinion_handler_duration_seconds_count"


def service(bus: InMemoryBus, name: str) -> ServiceUnderTest:
    return next(s for s in bus.services if s.spec.name == name)


async def outbox_headers(svc: ServiceUnderTest, topic: str) -> list[dict[str, str]]:
    table = svc.spec.outbox
    async with svc.sessions() as session:
        rows = (await session.execute(select(table.c.headers).where(table.c.topic == topic))).scalars().all()
    return [json.loads(h) for h in rows if h is not None] + [{} for h in rows if h is None]


def parse(traceparent: str) -> tuple[str, str]:
    match = TRACEPARENT_FORMAT.match(traceparent)
    assert match is not None, traceparent
    assert match[1] != "0" * 32 and match[2] != "0" * 16
    return match[1], match[2]


async def request_granted(bus: InMemoryBus, order: str, headers: dict[str, str] | None = None) -> None:
    """A report and an authorizations request that the decision service grants (nothing delivered further)."""
    await bus.publish(REPORTS, order, report(order, f"{order}-J1"))
    await bus.publish(REQUESTS, order, request(order, f"{order}-J1", f"{order}-R1"), headers)


def flaky(handle: Callable[..., Awaitable[Any]], failures: int = 1) -> Callable[..., Awaitable[Any]]:
    """The real handler, then a transient fault in the same transaction `failures` times (rolled back)."""
    left = [failures]

    async def wrapped(session: Any, event: Any) -> Any:
        out = await handle(session, event)
        if left[0] > 0:
            left[0] -= 1
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        return out

    return wrapped


def make_flaky(svc: ServiceUnderTest, topic: str, failures: int = 1) -> None:
    route = svc.consumer.routes[topic]
    svc.consumer.routes[topic] = replace(route, handle=flaky(route.handle, failures))
    svc.consumer.backoff = Backoff(base_s=0.001, cap_s=0.001)


class TestTraceContext:
    async def test_emitted_events_continue_the_trace_of_the_handled_one(self, bus: InMemoryBus) -> None:
        decision = service(bus, "decision")
        await request_granted(bus, "SO-T1", {"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
        [headers] = await outbox_headers(decision, GRANTED)
        trace_id, span_id = parse(headers["traceparent"])
        assert trace_id == TRACE_ID
        assert span_id != PARENT_SPAN  # the consumer span's own id: a child of the record's span
        assert headers["tracestate"] == "vendor=1"
        # What the relay would send: its own headers, then the trace context.
        [granted] = await decision.drain_outbox()
        assert list(granted.headers) == ["event_id", "content-type", "traceparent", "tracestate"]
        assert granted.headers["event_id"] == granted.value["event_id"]
        assert granted.headers["traceparent"] == headers["traceparent"]

    async def test_the_trace_carries_on_through_every_service(self, bus: InMemoryBus) -> None:
        await bus.publish("service_provider.updated", "P2", provider("P2", "Z1"))
        await request_granted(bus, "SO-T2", {"traceparent": TRACEPARENT})
        await bus.settle()
        downstream = [p for p in bus.log if p.topic != GRANTED]
        assert {p.topic for p in downstream} >= {"service_job.created", "payout.issued"}
        span_ids = set()
        for published in bus.log:
            trace_id, span_id = parse(published.headers["traceparent"])
            assert trace_id == TRACE_ID, published.topic
            span_ids.add(span_id)
        assert PARENT_SPAN not in span_ids and len(span_ids) > 1  # each hop has a span of its own

    @pytest.mark.parametrize("headers", [None, {"traceparent": "00-not-a-trace-01"}])
    async def test_a_record_without_trace_context_starts_a_new_trace(
        self, bus: InMemoryBus, headers: dict[str, str] | None
    ) -> None:
        decision = service(bus, "decision")
        await request_granted(bus, "SO-N1", headers)
        await request_granted(bus, "SO-N2", headers)
        rows = await outbox_headers(decision, GRANTED)
        traces = {parse(h["traceparent"])[0] for h in rows}
        assert len(rows) == 2 and len(traces) == 2 and TRACE_ID not in traces

    async def test_consumer_span(self, bus: InMemoryBus) -> None:
        decision = service(bus, "decision")
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        decision.consumer.tracer = tracer_provider.get_tracer("test")
        await request_granted(bus, "SO-S1", {"traceparent": TRACEPARENT})
        spans = {s.name: s for s in exporter.get_finished_spans()}
        span = spans["second_opinion.requested process"]
        assert span.kind is SpanKind.CONSUMER
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN
        attributes = dict(span.attributes or {})
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.destination.name"] == REQUESTS
        assert attributes["messaging.destination.partition.id"] == "0"
        assert isinstance(attributes["messaging.kafka.offset"], int)
        assert attributes["messaging.message.id"] == "SO-S1-R1"
        assert attributes["second_opinion.service_order_id"] == "SO-S1"
        assert attributes["second_opinion.outcome"] == "applied"
        [headers] = await outbox_headers(decision, GRANTED)
        assert parse(headers["traceparent"])[1] == format(span.context.span_id, "016x")
        # The report had no trace context: a root span of a trace of its own.
        report_span = spans["service_report.received process"]
        assert report_span.parent is None and report_span.context.trace_id != span.context.trace_id


@pytest.fixture
def runtime_log() -> Iterator[io.StringIO]:
    """JSON lines of the consumer runtime's logger."""
    stream = io.StringIO()
    handler = logs.make_handler("decision", "json", stream)
    logger = logging.getLogger("services.common.consumer")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


class TestLogs:
    async def test_lines_logged_while_handling_name_the_event(self, bus: InMemoryBus, runtime_log: io.StringIO) -> None:
        decision = service(bus, "decision")
        make_flaky(decision, REQUESTS)
        await request_granted(bus, "SO-L1", {"traceparent": TRACEPARENT})
        logging.getLogger("services.common.consumer").warning("after handling")
        records = [json.loads(line) for line in runtime_log.getvalue().splitlines()]
        [retry] = [r for r in records if r["message"].startswith("retrying")]
        assert (retry["service_order_id"], retry["event_id"]) == ("SO-L1", "SO-L1-R1")
        assert (retry["topic"], retry["partition"]) == (REQUESTS, 0) and isinstance(retry["offset"], int)
        assert retry["trace_id"] == TRACE_ID
        assert retry["message"].endswith(" after OperationalError: Exception: database is locked")  # the class once
        after = records[-1]
        assert after["message"] == "after handling"
        assert not {"service_order_id", "event_id", "topic", "trace_id"} & after.keys()

    async def test_dead_letter_line_has_no_record_value(self, bus: InMemoryBus, runtime_log: io.StringIO) -> None:
        value = b'{"event_id": "e1", "notes": "customer Jane Roe, card 4111 1111 1111 1111"'  # not JSON
        await bus.publish(REQUESTS, "SO-L2", value)
        text = runtime_log.getvalue()
        assert "dead-lettered" in text
        assert "Jane Roe" not in text and "4111" not in text


class TestMetrics:
    def sample(self, svc: ServiceUnderTest, name: str, **labels: str) -> float:
        return svc.metrics.registry.get_sample_value(name, labels) or 0.0

    async def test_handler_duration_by_topic_and_outcome(self, bus: InMemoryBus) -> None:
        decision = service(bus, "decision")
        make_flaky(decision, REQUESTS)
        await request_granted(bus, "SO-M1")
        await bus.publish(REPORTS, "SO-M1", report("SO-M1", "SO-M1-J1"))  # the same event again
        await bus.publish(REPORTS, "SO-M1", b"{not json")
        assert self.sample(decision, DURATION, topic=REPORTS, outcome="applied") == 1
        assert self.sample(decision, DURATION, topic=REPORTS, outcome="duplicate") == 1
        assert self.sample(decision, DURATION, topic=REPORTS, outcome="dead_lettered") == 1
        assert self.sample(decision, DURATION, topic=REQUESTS, outcome="retry") == 1
        assert self.sample(decision, DURATION, topic=REQUESTS, outcome="applied") == 1
        total = self.sample(decision, "second_opinion_handler_duration_seconds_sum", topic=REPORTS, outcome="applied")
        assert total > 0
        assert self.sample(decision, "second_opinion_dead_lettered_total", topic=REPORTS, error_class="not_json") == 1

    async def test_business_counters_count_committed_work_once(self, bus: InMemoryBus) -> None:
        decision, payout = service(bus, "decision"), service(bus, "payout")
        make_flaky(decision, REQUESTS, failures=2)  # the handler runs three times, its transaction commits once
        make_flaky(payout, GRANTED, failures=2)
        await request_granted(bus, "SO-M2")
        await bus.settle()
        labels = {"source": "authorizations", "reason": "conflicting_reports", "result": "granted"}
        assert self.sample(decision, "second_opinion_decisions_total", **labels) == 1
        retries = {"topic": REQUESTS, "error": "OperationalError"}
        assert self.sample(decision, "second_opinion_event_retries_total", **retries) == 2
        for fee_type, cents in (("original_service_call", 8900), ("original_diagnosis", 4500)):
            assert self.sample(payout, "second_opinion_payouts_total", fee_type=fee_type) == 1
            assert self.sample(payout, "second_opinion_payout_cents_total", fee_type=fee_type) == cents

    async def test_denials_are_counted_by_reason(self, bus: InMemoryBus) -> None:
        decision = service(bus, "decision")
        await bus.publish(REPORTS, "SO-M3", report("SO-M3", "SO-M3-J1"))
        await bus.publish(REQUESTS, "SO-M3", request("SO-M3", "SO-M3-J1", "SO-M3-R1", reason="high_pricing"))
        labels = {"source": "authorizations", "reason": "high_pricing", "result": "denied"}
        assert self.sample(decision, "second_opinion_decisions_total", **labels) == 1
