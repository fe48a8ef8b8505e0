"""Trace context across Kafka (OpenTelemetry): a consumer span per handled record, W3C headers on what it emits.

The consumer runtime extracts `traceparent`/`tracestate` from a record's headers and handles
the record inside a CONSUMER span that is a child of that context (a record without one starts
a new trace). Events the handler stages in the outbox carry the span's context as headers
(`current_headers`), which the relay puts on the Kafka record. By default the provider has no
exporter: spans are made, so context propagates, and nothing is sent anywhere.
`OTEL_EXPORTER=console` prints each finished span as one JSON line on stdout.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any, Literal

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

INSTRUMENTATION_NAME = "second_opinion"

# Span attributes (OpenTelemetry messaging semantic conventions, plus the order id).
SYSTEM = "messaging.system"
OPERATION = "messaging.operation.type"
DESTINATION = "messaging.destination.name"
PARTITION = "messaging.destination.partition.id"
OFFSET = "messaging.kafka.offset"
MESSAGE_ID = "messaging.message.id"  # the event_id
SERVICE_ORDER_ID = "second_opinion.service_order_id"
OUTCOME = "second_opinion.outcome"
ERROR_TYPE = "error.type"

Headers = Sequence[tuple[str, bytes | None]]

_provider: TracerProvider | None = None


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def configure(
    service: str, exporter: Literal["none", "console"] = "none", *, console_out: IO[str] | None = None
) -> TracerProvider:
    """The process's tracer provider (also made the global one), with the chosen exporter (console: stdout)."""
    global _provider
    resource = Resource.create({"service.name": service, "service.namespace": "second-opinion"})
    provider = TracerProvider(resource=resource)
    if exporter == "console":
        console = ConsoleSpanExporter(out=console_out or sys.stdout, formatter=_one_line)
        provider.add_span_processor(SimpleSpanProcessor(console))
    _provider = provider
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    """The runtime's tracer; without `configure`, one of a provider with no exporter."""
    global _provider
    if _provider is None:
        _provider = TracerProvider()
    return _provider.get_tracer(INSTRUMENTATION_NAME)


class _KafkaHeaders(Getter[Headers]):
    """Reads Kafka headers (name, bytes) for a propagator; names compared case-insensitively."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        key = key.lower()
        values = [(value or b"").decode("utf-8", "replace") for name, value in carrier if name.lower() == key]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _KafkaHeaders()


def extract(headers: Headers | None) -> Context:
    """The trace context a record's headers carry; an empty context when they carry none (or a broken one)."""
    return propagate.extract(list(headers or ()), context=Context(), getter=_GETTER)


def current_headers() -> dict[str, str]:
    """The current span's context as W3C headers (`traceparent`, and `tracestate` when set)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def span_headers(span: trace.Span) -> dict[str, str]:
    """`span`'s context as W3C headers, whether or not it is the current span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


@contextlib.contextmanager
def consumer_span(record: Any, tracer_: trace.Tracer | None = None) -> Iterator[trace.Span]:
    """A `<topic> process` CONSUMER span, child of the record's trace context, current inside the block."""
    attributes: dict[str, Any] = {
        SYSTEM: "kafka",
        OPERATION: "process",
        DESTINATION: record.topic,
        PARTITION: str(record.partition),
        OFFSET: record.offset,
    }
    with (tracer_ or tracer()).start_as_current_span(
        f"{record.topic} process",
        context=extract(getattr(record, "headers", None)),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        # Exception texts can carry data: the runtime sets the outcome and the error type instead.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def set_event(span: trace.Span, event_id: str, service_order_id: str | None) -> None:
    span.set_attribute(MESSAGE_ID, event_id)
    if service_order_id is not None:
        span.set_attribute(SERVICE_ORDER_ID, service_order_id)


def set_outcome(span: trace.Span, outcome: str, error_type: str | None = None) -> None:
    span.set_attribute(OUTCOME, outcome)
    if error_type is not None:
        span.set_attribute(ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
