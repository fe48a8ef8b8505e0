"""Process logs: one JSON object a line (or plain text), with the handled event's ids, secrets masked.

While a Kafka record is handled, the consumer runtime binds its topic, partition, offset,
`event_id` and `service_order_id` with `event_fields`; every line logged meanwhile (by any
logger, in that task) carries them, and the current trace and span ids. A masking filter on
the handler rewrites each message and traceback before it is formatted, as a defence in depth:
card numbers, passwords in URLs and DSNs, bearer tokens and JWTs, SQL bound parameters and
pydantic input values never reach the output.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO

from opentelemetry import trace
from pydantic import ValidationError
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.exc import StatementError

from services.common.pan import mask_card_numbers

LogFormat = Literal["json", "text"]

# In the order they are shown in text lines.
EVENT_FIELDS = ("service_order_id", "event_id", "topic", "partition", "offset")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_fields: ContextVar[Mapping[str, Any]] = ContextVar("second_opinion_log_fields", default=_EMPTY)


@contextlib.contextmanager
def event_fields(**fields: Any) -> Iterator[None]:
    """Add fields (None ones are left out) to every line logged inside the block."""
    merged = {**_fields.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _fields.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _fields.reset(token)


def current_fields() -> Mapping[str, Any]:
    return _fields.get()


class EventContextFilter(logging.Filter):
    """Copies the bound event fields and the current trace/span ids onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _fields.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = trace.format_trace_id(span.trace_id)
            record.span_id = trace.format_span_id(span.span_id)
        return True


# scheme://user:PASSWORD@ (the password may not hold '/', '@' or spaces: URLs percent-encode them)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^@/\s]+(?=@)")
# password=... in DSNs and key/value text
_KEY_PASSWORD = re.compile(r"(?i)(\b(?:password|passwd|pwd)\s*[=:]\s*)[^\s&;,'\"]+")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# SQLAlchemy's "[parameters: (...)]" line and pydantic's "input_value=..., input_type=" carry data.
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=)")


def mask_secrets(text: str) -> str:
    """The text with card numbers, passwords, tokens, bound parameters and input values masked."""
    text = _URL_PASSWORD.sub(r"\1***", text)
    text = _KEY_PASSWORD.sub(r"\1***", text)
    text = _BEARER.sub(r"\1***", text)
    text = _JWT.sub("***", text)
    text = _SQL_PARAMETERS.sub("[parameters: ***]", text)
    text = _INPUT_VALUE.sub("input_value=***", text)
    if any(c.isdigit() for c in text):
        text = mask_card_numbers(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
    return text


class SecretsFilter(logging.Filter):
    """Renders each record's message and traceback once, masked; formatters then use the masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        record.msg, record.args = mask_secrets(message), None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _PLAIN.formatException(record.exc_info)
            record.exc_info = None  # formatters fall back to exc_text, which is masked below
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


_PLAIN = logging.Formatter()


def describe(exc: BaseException) -> str:
    """A one-line account of an exception that leaves out the data it was about."""
    if isinstance(exc, StatementError) and exc.orig is not None:
        return mask_secrets(f"{type(exc).__name__}: {type(exc.orig).__name__}: {exc.orig}")
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors[:5]]
        return f"ValidationError: {'; '.join(parts)}"
    return mask_secrets(f"{type(exc).__name__}: {exc}")


class _JsonLines(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def json_formatter(service: str) -> logging.Formatter:
    """time, level, service, logger, message, then the bound event fields and any extras."""
    return _JsonLines(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
        defaults={"service": service},
        json_ensure_ascii=False,
    )


class _TextLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        bound = [f"{name}={getattr(record, name)}" for name in EVENT_FIELDS if hasattr(record, name)]
        if not bound:
            return line
        head, newline, rest = line.partition("\n")
        return f"{head} [{' '.join(bound)}]{newline}{rest}"


def text_formatter(service: str) -> logging.Formatter:
    return _TextLines(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")


# Libraries that log through handlers of their own and do not propagate: their lines go through ours.
_ADOPTED = ("faststream",)


def make_handler(service: str, fmt: LogFormat = "json", stream: TextIO | None = None) -> logging.Handler:
    """A handler on stderr (or `stream`) that adds the event fields, masks secrets and writes `fmt` lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(EventContextFilter())
    handler.addFilter(SecretsFilter())
    handler.setFormatter(json_formatter(service) if fmt == "json" else text_formatter(service))
    return handler


def configure(
    service: str, *, level: str = "INFO", fmt: LogFormat = "json", stream: TextIO | None = None
) -> logging.Handler:
    """Route every logger of the process to one such handler."""
    handler = make_handler(service, fmt, stream)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in _ADOPTED:
        adopted = logging.getLogger(name)
        for own in list(adopted.handlers):
            adopted.removeHandler(own)
        adopted.propagate = True
    return handler
