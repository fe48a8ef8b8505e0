"""The consuming side of every service: decode, dead-letter bad input, apply once, retry transient faults.

One commit point per handled event: the inbox row, the state change and the outbox rows are
written in one transaction. The Kafka offset is committed only after that transaction (or
after the record reached its DLQ), so a crash at any point leaves work a restart finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from schemas.v1 import Event, dlq_topic
from services.common import dlq_headers, inbox, logs, outbox, tracing
from services.common.backoff import Backoff
from services.common.db import lock_orders, orders_held
from services.common.metrics import APPLIED, DEAD_LETTERED, DUPLICATE, RETRY, ServiceMetrics, staged_increments
from services.common.pan import contains_card_number, mask_card_numbers

log = logging.getLogger(__name__)

Handler = Callable[[AsyncConnection, Any], Awaitable[Sequence[outbox.Outgoing]]]
# Several events of one topic and distinct service orders -> what each one emits, in their order.
ManyHandler = Callable[[AsyncConnection, Sequence[Any]], Awaitable[Sequence[Sequence[outbox.Outgoing]]]]


class Record(Protocol):
    """The parts of an aiokafka ConsumerRecord the runtime uses."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    # headers: Sequence[tuple[str, bytes | None]] is read when present (trace context).


class BadInput(Exception):
    """A record that can never be processed: it goes to the DLQ, not to a retry."""

    def __init__(self, error_class: str, message: str, dlq_value: bytes | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.dlq_value = dlq_value  # what the DLQ gets instead of the masked original bytes


@dataclass(frozen=True)
class Route:
    topic: str
    model: type[Event]
    handle: Handler
    # Set-based form of `handle`, used for runs of a batch (see EventConsumer.process_batch).
    handle_many: ManyHandler | None = None


async def _always_caught_up(topic: str) -> bool:
    return True


@dataclass(frozen=True)
class RouteContext:
    """What a service's routes get from the process that runs them."""

    metrics: ServiceMetrics
    # True when this service has applied everything `topic` holds now (its group committed up to
    # the topic's end). Processes that read no live topic (tests on an in-memory bus, the replay
    # tool) answer True.
    caught_up: Callable[[str], Awaitable[bool]] = _always_caught_up


def decode(raw: bytes | None, model: type[Event], key: bytes | None = None) -> Event:
    """Bytes to a contract model, or BadInput naming why. Card numbers are looked for first, in the key too."""
    if key and contains_card_number(key):  # a key is kept by the topic as long as the value
        raise BadInput("card_number", "record key carries a card number")
    if raw is None or raw == b"":
        raise BadInput("empty_value", "record has no value")
    if contains_card_number(raw):
        raise BadInput("card_number", "record carries a card number")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("not_utf8", f"value is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput("not_json", f"value is not JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:  # an array or object nested past the parser's depth: never an event
        raise BadInput("not_json", "value is not JSON the runtime can read: nested too deeply") from exc
    # A card number written with JSON escapes ("\u0034111...") hides from the scan of the bytes.
    unescaped = json.dumps(data, ensure_ascii=False).encode()
    if contains_card_number(unescaped):
        raise BadInput("card_number", "record carries a card number (JSON-escaped)", mask_card_numbers(unescaped))
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise BadInput("schema_invalid", _summarize(exc, data)) from exc


def _summarize(exc: ValidationError, data: Any) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class NotYet(Exception):
    """A handler cannot answer yet: what its answer depends on may not have reached this service.

    The runtime rolls the event's transaction back, awaits `ready()` outside any transaction (so
    no lock is held while it waits, e.g. on the broker) and applies the event again.
    """

    def __init__(self, message: str, ready: Callable[[], Awaitable[None]]) -> None:
        super().__init__(message)
        self.ready = ready


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    SAInterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
)


# SQLSTATE classes that say "the database is not there right now", not "this event is bad":
# connection exceptions, operator intervention (shutdown, starting up), insufficient
# resources, and serialization failures / deadlocks that a retry resolves.
TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P", "53", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(state, str) and state.startswith(TRANSIENT_SQLSTATE_PREFIXES):
            return True
        if "database is locked" in str(exc.orig):  # SQLite busy beyond its timeout
            return True
    return isinstance(exc, TRANSIENT_ERRORS)


# `EventConsumer.process` returns what it did with a record: APPLIED, DUPLICATE or DEAD_LETTERED.


class DeadLetterSink(Protocol):
    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None: ...


@dataclass
class EventConsumer:
    """Applies records of several topics for one service (one consumer name in the inbox)."""

    name: str
    routes: dict[str, Route]
    sessions: async_sessionmaker[AsyncSession]
    inbox_table: Table
    outbox_table: Table
    dead_letter: DeadLetterSink
    metrics: ServiceMetrics
    on_committed: Callable[[], None] = lambda: None
    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    # Topics whose records wait until an event is set (e.g. grants until the directory caught up).
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    tracer: trace.Tracer = field(default_factory=tracing.tracer)

    async def process(self, record: Record) -> str:
        """Returns when the record is applied, was a duplicate, or is in its DLQ: which one.

        Lines logged meanwhile carry the record's topic, partition, offset and, once decoded, its
        event_id and service_order_id; the work runs in a consumer span continuing the record's trace.
        """
        route = self.routes[record.topic]
        with logs.event_fields(topic=record.topic, partition=record.partition, offset=record.offset):
            gate = self.gates.get(record.topic)
            if gate is not None and not gate.is_set():
                log.info("holding %s until its prerequisite topic has caught up", _where(record))
                await gate.wait()
            with tracing.consumer_span(record, self.tracer) as span:
                started = time.perf_counter()
                try:
                    event = decode(record.value, route.model, record.key)
                except BadInput as exc:
                    self._observe(record.topic, DEAD_LETTERED, started)
                    tracing.set_outcome(span, DEAD_LETTERED, exc.error_class)
                    await self._to_dlq(record, exc.error_class, str(exc), value=exc.dlq_value)
                    return DEAD_LETTERED
                order = getattr(event, "service_order_id", None)
                tracing.set_event(span, event.event_id, order)
                with logs.event_fields(event_id=event.event_id, service_order_id=order):
                    outcome = await self._apply_with_retry(route, event, record, span, started)
                    if outcome != DEAD_LETTERED:
                        tracing.set_outcome(span, outcome)
                    return outcome

    async def process_batch(self, records: Sequence[Record]) -> list[str]:
        """Apply records in one transaction, in order: one commit point for the whole batch.

        Bad input is dead-lettered first. If any event of the batch fails, the transaction is
        rolled back and every record is processed on its own (with its retries), so one failing
        event holds back none of the others and the order of each service order's events is kept.
        """
        for topic in dict.fromkeys(r.topic for r in records):
            gate = self.gates.get(topic)
            if gate is not None and not gate.is_set():
                log.info("holding a batch with %s until its prerequisite topic has caught up", topic)
                await gate.wait()
        started = time.perf_counter()
        outcomes: dict[int, str] = {}
        decoded: list[tuple[int, Record, Route, Event]] = []
        for i, record in enumerate(records):
            route = self.routes[record.topic]
            try:
                decoded.append((i, record, route, decode(record.value, route.model, record.key)))
            except BadInput as exc:
                with logs.event_fields(topic=record.topic, partition=record.partition, offset=record.offset):
                    await self._to_dlq(record, exc.error_class, str(exc), value=exc.dlq_value)
                outcomes[i] = DEAD_LETTERED
        try:
            outcomes |= await self._apply_all(decoded)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            level = logging.INFO if isinstance(exc, NotYet) else logging.WARNING
            log.log(
                level, "a batch of %d failed (%s); applying its records one by one", len(decoded), logs.describe(exc)
            )
            for i, record, _, _ in decoded:
                outcomes[i] = await self.process(record)
            return [outcomes[i] for i in range(len(records))]
        for i, record, _, _ in decoded:
            self._observe(record.topic, outcomes[i], started)
            self.metrics.handled.labels(record.topic, outcomes[i]).inc()
        return [outcomes[i] for i in range(len(records))]

    async def _apply_all(self, decoded: Sequence[tuple[int, Record, Route, Event]]) -> dict[int, str]:
        outcomes: dict[int, str] = {}
        with staged_increments() as increments:
            async with self.sessions() as session, session.begin():
                conn = await session.connection()  # handlers run Core statements: no ORM layer per statement
                # Per-order locks in one sorted pass, so two batches never wait on each other in a cycle.
                orders = sorted({o for *_, ev in decoded if (o := getattr(ev, "service_order_id", None))})
                await lock_orders(conn, orders)
                with orders_held(orders):
                    outcomes |= await self._apply_runs(conn, decoded)
        increments.apply()
        self.on_committed()
        return outcomes

    async def _apply_runs(
        self, conn: AsyncConnection, decoded: Sequence[tuple[int, Record, Route, Event]]
    ) -> dict[int, str]:
        outcomes: dict[int, str] = {}
        for run in _runs(decoded):
            if len(run) > 1:
                outcomes |= await self._apply_run(conn, run)
                continue
            [(i, record, route, event)] = run
            # Each event keeps its own span (so its outbox rows continue its trace) and log fields.
            order = getattr(event, "service_order_id", None)
            with (
                tracing.consumer_span(record, self.tracer) as span,
                logs.event_fields(event_id=event.event_id, service_order_id=order),
            ):
                tracing.set_event(span, event.event_id, order)
                outcomes[i] = await self._apply_in(conn, route, event, record)
                tracing.set_outcome(span, outcomes[i])
        return outcomes

    async def _apply_run(
        self, session: AsyncConnection, run: Sequence[tuple[int, Record, Route, Event]]
    ) -> dict[int, str]:
        """Events of one topic and distinct orders through the route's set-based handler.

        Inbox claims, the handler's work and the outbox rows are a few statements for the whole
        run; each event still gets its span, and its outbox rows carry that span's context.
        """
        route = run[0][2]
        assert route.handle_many is not None
        with contextlib.ExitStack() as spans_open:
            spans = []
            for _, record, _, event in run:
                span = spans_open.enter_context(tracing.consumer_span(record, self.tracer))
                tracing.set_event(span, event.event_id, getattr(event, "service_order_id", None))
                spans.append(span)
            claims = [(ev.event_id, rec.topic, rec.partition, rec.offset) for _, rec, _, ev in run]
            fresh = await inbox.claim_many(session, self.inbox_table, consumer=self.name, records=claims)
            todo = [pos for pos, (*_, ev) in enumerate(run) if ev.event_id in fresh]
            emitted = await route.handle_many(session, [run[pos][3] for pos in todo])
            staged = [
                (o, outbox.trace_headers(spans[pos]))
                for pos, outgoing in zip(todo, emitted, strict=True)
                for o in outgoing
            ]
            await outbox.stage_many(session, self.outbox_table, staged)
            outcomes = {}
            for pos, (i, *_, ev) in enumerate(run):
                outcomes[i] = APPLIED if ev.event_id in fresh else DUPLICATE
                tracing.set_outcome(spans[pos], outcomes[i])
        return outcomes

    def _observe(self, topic: str, outcome: str, started: float) -> None:
        self.metrics.handler_duration.labels(topic, outcome).observe(time.perf_counter() - started)

    async def _apply_with_retry(
        self, route: Route, event: Event, record: Record, span: trace.Span, started: float
    ) -> str:
        failures = 0
        while True:
            try:
                outcome = await self._apply(route, event, record)
                self._observe(record.topic, outcome, started)
                self.metrics.handled.labels(record.topic, outcome).inc()
                return outcome
            except asyncio.CancelledError:
                raise
            except NotYet as exc:
                await self._wait_until_ready(exc, record, span)
                started = time.perf_counter()
            except Exception as exc:
                failures += 1
                error = type(exc).__name__
                if not is_transient(exc) and failures >= self.max_attempts:
                    self._observe(record.topic, DEAD_LETTERED, started)
                    tracing.set_outcome(span, DEAD_LETTERED, error)
                    log.exception("handler failed %d times on %s; dead-lettering", failures, _where(record))
                    await self._to_dlq(record, "handler_error", f"{error}: {exc}", logs.describe(exc))
                    return DEAD_LETTERED
                self._observe(record.topic, RETRY, started)
                span.add_event("retry", {"attempt": failures, tracing.ERROR_TYPE: error})
                self.metrics.retries.labels(record.topic, error).inc()
                log.warning("retrying %s after %s", _where(record), logs.describe(exc))
                await asyncio.sleep(self.backoff.delay(failures))
                started = time.perf_counter()

    async def _wait_until_ready(self, exc: NotYet, record: Record, span: trace.Span) -> None:
        error = type(exc).__name__
        span.add_event("retry", {tracing.ERROR_TYPE: error})
        self.metrics.retries.labels(record.topic, error).inc()
        log.info("holding %s: %s", _where(record), exc)
        try:
            await exc.ready()
        except asyncio.CancelledError:
            raise
        except Exception as failed:  # the wait itself broke: try the event again a little later
            log.warning("waiting for %s failed: %s", _where(record), logs.describe(failed))
            await asyncio.sleep(self.backoff.delay(1))

    async def _apply(self, route: Route, event: Event, record: Record) -> str:
        # Counter increments a handler makes count only if this transaction commits (not once per try).
        with staged_increments() as increments:
            async with self.sessions() as session, session.begin():
                outcome = await self._apply_in(await session.connection(), route, event, record)
        increments.apply()
        self.on_committed()
        return outcome

    async def _apply_in(self, session: AsyncConnection, route: Route, event: Event, record: Record) -> str:
        """Inbox claim, state change and outbox rows of one event, in the caller's transaction."""
        fresh = await inbox.claim(
            session,
            self.inbox_table,
            consumer=self.name,
            event_id=event.event_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        if not fresh:
            return DUPLICATE
        for outgoing in await route.handle(session, event):
            await outbox.stage(session, self.outbox_table, outgoing)
        return APPLIED

    async def _to_dlq(
        self, record: Record, error_class: str, message: str, detail: str | None = None, value: bytes | None = None
    ) -> None:
        """Publish the record (card numbers masked, in the key too) to its DLQ; `detail` is what the log says."""
        value = value if value is not None else mask_card_numbers(record.value or b"")
        key = mask_card_numbers(record.key) if record.key else record.key
        headers = [
            (dlq_headers.ORIGINAL_TOPIC, record.topic.encode()),
            (dlq_headers.ORIGINAL_PARTITION, str(record.partition).encode()),
            (dlq_headers.ORIGINAL_OFFSET, str(record.offset).encode()),
            (dlq_headers.ORIGINAL_TIMESTAMP, str(record.timestamp).encode()),
            (dlq_headers.ERROR_CLASS, error_class.encode()),
            (dlq_headers.ERROR_MESSAGE, mask_card_numbers(message.encode())[:1000]),
            (dlq_headers.DEAD_LETTERED_BY, self.name.encode()),
        ]
        failures = 0
        while True:
            try:
                await self.dead_letter(dlq_topic(record.topic), key, value, headers)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker unavailable: transient, keep the offset
                failures += 1
                log.warning("DLQ publish for %s failed: %s", _where(record), logs.describe(exc))
                await asyncio.sleep(self.backoff.delay(failures))
        self.metrics.dead_lettered.labels(record.topic, error_class).inc()
        log.warning("dead-lettered %s: %s (%s)", _where(record), error_class, (detail or message)[:200])


def _runs(decoded: Sequence[tuple[int, Record, Route, Event]]) -> list[list[tuple[int, Record, Route, Event]]]:
    """Split a batch, keeping its order, into runs a set-based handler may take at once.

    A run is consecutive events of one topic whose route has `handle_many`, each of a different
    service order (two events of one order depend on each other); anything else is a run of one.
    """
    runs: list[list[tuple[int, Record, Route, Event]]] = []
    orders: set[str] = set()
    for item in decoded:
        route, event = item[2], item[3]
        order = getattr(event, "service_order_id", None)
        last = runs[-1] if runs else None
        joins = (
            last is not None
            and route.handle_many is not None
            and last[0][2] is route
            and order is not None
            and order not in orders
        )
        if joins:
            last.append(item)  # type: ignore[union-attr]
        else:
            runs.append([item])
            orders = set()
        if order is not None:
            orders.add(order)
    return runs


def _where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
