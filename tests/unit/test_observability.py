"""Structured logs, secret masking and trace-context helpers, without a database or a broker."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from services.common import logs, tracing
from services.common.relay import headers as relay_headers
from services.common.settings import TracingSettings, service_settings

CARD = "4111 1111 1111 1111"  # a test Visa number: passes Luhn
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
# version 00, trace id, span id, flags (sampled; the SDK also sets the "random trace id" bit)
TRACEPARENT_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[13])$")


class Capture:
    def __init__(self, fmt: logs.LogFormat) -> None:
        self.stream = io.StringIO()
        self.handler = logs.make_handler("decision", fmt, self.stream)
        self.log = logging.getLogger(f"tests.observability.{fmt}")

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


def _attached(fmt: logs.LogFormat) -> Iterator[Capture]:
    cap = Capture(fmt)
    cap.log.addHandler(cap.handler)
    cap.log.setLevel(logging.DEBUG)
    cap.log.propagate = False
    yield cap
    cap.log.removeHandler(cap.handler)


@pytest.fixture
def capture() -> Iterator[Capture]:
    yield from _attached("json")


@pytest.fixture
def text_capture() -> Iterator[Capture]:
    yield from _attached("text")


class TestJsonLines:
    def test_one_object_a_line_with_the_standard_fields(self, capture: Capture) -> None:
        capture.log.warning("relay %s", "waiting")
        [line] = capture.lines()
        record = json.loads(line)
        assert record["level"] == "WARNING"
        assert record["service"] == "decision"
        assert record["logger"] == "tests.observability.json"
        assert record["message"] == "relay waiting"
        assert datetime.fromisoformat(record["time"]).utcoffset() is not None

    def test_event_ids_inside_handling_and_not_outside(self, capture: Capture) -> None:
        capture.log.info("before")
        with logs.event_fields(topic="second_opinion.requested", partition=2, offset=41):
            capture.log.info("decoding")
            with logs.event_fields(event_id="evt-9", service_order_id="SO-9"):
                capture.log.info("inside")
            capture.log.info("after the event")
        capture.log.info("after")
        before, decoding, inside, after_event, after = capture.records()
        assert (inside["service_order_id"], inside["event_id"]) == ("SO-9", "evt-9")
        assert (inside["topic"], inside["partition"], inside["offset"]) == ("second_opinion.requested", 2, 41)
        assert decoding["offset"] == 41 and "event_id" not in decoding
        for outside in (before, after_event, after):
            assert "event_id" not in outside and "service_order_id" not in outside
        assert "topic" not in before and "topic" not in after

    async def test_concurrent_records_keep_their_own_ids(self, capture: Capture) -> None:
        async def handle(order: str) -> None:
            with logs.event_fields(event_id=f"evt-{order}", service_order_id=order):
                await asyncio.sleep(0)
                capture.log.info("handling %s", order)

        await asyncio.gather(*(handle(f"SO-{i}") for i in range(5)))
        for record in capture.records():
            assert record["message"] == f"handling {record['service_order_id']}"
            assert record["event_id"] == f"evt-{record['service_order_id']}"

    def test_trace_and_span_ids_of_the_current_span(self, capture: Capture) -> None:
        record = SimpleNamespace(topic="t", partition=0, offset=1, headers=[("traceparent", TRACEPARENT.encode())])
        with tracing.consumer_span(record) as span:
            capture.log.info("in a span")
        capture.log.info("outside")
        inside, outside = capture.records()
        assert inside["trace_id"] == TRACE_ID
        assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
        assert "trace_id" not in outside

    def test_text_format_names_the_event(self, text_capture: Capture) -> None:
        with logs.event_fields(event_id="evt-9", service_order_id="SO-9"):
            text_capture.log.warning("retrying x after y")
        [line] = text_capture.lines()
        assert re.match(r"^\S+ \S+ WARNING decision tests\.observability\.text: retrying x after y ", line)
        assert line.endswith("[service_order_id=SO-9 event_id=evt-9]")


class TestMasking:
    def test_card_number_in_a_message_is_masked(self, capture: Capture) -> None:
        capture.log.warning("value was %s", f'{{"notes": "card {CARD}"}}')
        [record] = capture.records()
        assert "4111 1111 1111" not in record["message"]
        assert "**** **** **** 1111" in record["message"]

    def test_database_password_is_masked(self, capture: Capture) -> None:
        url = "postgresql+asyncpg://second_opinion:s3cr3t-pw@db.internal:5432/second_opinion_decision"
        capture.log.error("cannot connect to %s", url)
        capture.log.error("dsn host=db user=so password=hunter2 dbname=x")
        first, second = capture.records()
        assert "s3cr3t-pw" not in first["message"] and "hunter2" not in second["message"]
        assert "postgresql+asyncpg://second_opinion:***@db.internal:5432/second_opinion_decision" in first["message"]
        assert "password=***" in second["message"]

    def test_tokens_are_masked(self, capture: Capture) -> None:
        jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdXBlcnZpc29yLTcifQ.c2lnbmF0dXJl"
        capture.log.info("Authorization: Bearer abc.DEF-123_xyz~")
        capture.log.info("token %s", jwt)
        first, second = capture.records()
        assert "abc.DEF" not in first["message"] and first["message"].endswith("Bearer ***")
        assert "eyJ" not in second["message"]

    def test_traceback_is_masked(self, capture: Capture) -> None:
        try:
            raise ConnectionError(f"postgresql://u:topsecret@h/db refused; card {CARD}")
        except ConnectionError:
            capture.log.exception("failed")
        [record] = capture.records()
        assert "ConnectionError" in record["exception"] and "Traceback" in record["exception"]
        assert "topsecret" not in record["exception"] and "4111 1111 1111" not in record["exception"]

    def test_sql_parameters_and_validation_inputs_are_left_out(self, capture: Capture) -> None:
        class Fee(BaseModel):
            cents: int

        with pytest.raises(ValidationError) as invalid:
            Fee.model_validate({"cents": "CUST-SECRET-NAME"})
        statement = IntegrityError("INSERT INTO payout VALUES (?)", ("CUST-SECRET-NAME",), Exception("UNIQUE failed"))
        capture.log.warning("handler failed: %s", invalid.value)
        capture.log.warning("handler failed: %s", statement)
        for record in capture.records():
            assert "CUST-SECRET-NAME" not in record["message"], record["message"]
        for exc in (invalid.value, statement):
            assert "CUST-SECRET-NAME" not in logs.describe(exc)
        assert logs.describe(statement) == "IntegrityError: Exception: UNIQUE failed"
        assert logs.describe(invalid.value).startswith("ValidationError: cents: ")


class TestTraceContext:
    def test_extract_reads_a_w3c_traceparent(self) -> None:
        from opentelemetry import trace

        context = tracing.extract([("event_id", b"e1"), ("traceparent", TRACEPARENT.encode())])
        span = trace.get_current_span(context).get_span_context()
        assert span.is_valid and span.is_remote
        assert format(span.trace_id, "032x") == TRACE_ID and format(span.span_id, "016x") == PARENT_SPAN

    @pytest.mark.parametrize("headers", [[], None, [("traceparent", b"00-zz-yy-01")], [("traceparent", None)]])
    def test_no_or_broken_context_extracts_nothing(self, headers: Any) -> None:
        from opentelemetry import trace

        assert not trace.get_current_span(tracing.extract(headers)).get_span_context().is_valid

    def test_current_headers_name_the_current_span(self) -> None:
        assert tracing.current_headers() == {}
        record = SimpleNamespace(topic="t", partition=0, offset=1, headers=[])
        with tracing.consumer_span(record) as span:
            headers = tracing.current_headers()
        match = TRACEPARENT_FORMAT.match(headers["traceparent"])
        assert match is not None
        assert match[1] == format(span.get_span_context().trace_id, "032x")
        assert match[2] == format(span.get_span_context().span_id, "016x")

    def test_relay_adds_stored_headers_after_its_own(self) -> None:
        def row(headers: str | None) -> Any:
            return SimpleNamespace(id=1, event_id="evt-1", headers=headers)

        own = [("event_id", b"evt-1"), ("content-type", b"application/json")]
        stored = json.dumps({"traceparent": TRACEPARENT, "tracestate": "k=v", "event_id": "forged"})
        assert relay_headers(row(stored)) == [*own, ("traceparent", TRACEPARENT.encode()), ("tracestate", b"k=v")]
        assert relay_headers(row(None)) == own
        assert relay_headers(row("not json")) == own
        assert relay_headers(row("[1, 2]")) == own

    def test_console_exporter_prints_one_line_a_span(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tracing, "_provider", None)
        out = io.StringIO()
        tracing.configure("payout", "console", console_out=out)
        with tracing.tracer().start_as_current_span("payout.issued process"):
            pass
        [line] = out.getvalue().splitlines()
        span = json.loads(line)
        assert span["name"] == "payout.issued process"
        assert span["resource"]["attributes"]["service.name"] == "payout"


class TestSettings:
    def test_log_format_defaults_to_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("DISPATCH_LOG_FORMAT", raising=False)
        assert service_settings("dispatch").log_format == "json"
        monkeypatch.setenv("DISPATCH_LOG_FORMAT", "text")
        assert service_settings("dispatch").log_format == "text"
        monkeypatch.setenv("DISPATCH_LOG_FORMAT", "xml")
        with pytest.raises(ValidationError):
            service_settings("dispatch")

    def test_exporter_defaults_to_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("OTEL_EXPORTER", raising=False)
        assert TracingSettings().exporter == "none"
        monkeypatch.setenv("OTEL_EXPORTER", "console")
        assert TracingSettings().exporter == "console"
