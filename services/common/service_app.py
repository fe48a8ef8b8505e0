"""One process per service: FastStream subscribers on a KafkaBroker plus a FastAPI surface.

The FastAPI lifespan builds everything (engine, producer, relay, broker) so nothing heavy
happens at import time, and tears it down in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import MetaData, Table, func, select

from services.common import db, kafka_offsets, logs
from services.common.committer import Committer
from services.common.consumer import EventConsumer, Route, RouteContext
from services.common.metrics import ServiceMetrics
from services.common.relay import OutboxRelay
from services.common.settings import KafkaSettings, ServiceSettings, group_id

log = logging.getLogger(__name__)
CAUGHT_UP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServiceSpec:
    """What makes one service: its name, tables and the routes built from its container."""

    name: str
    metadata: MetaData
    inbox: Table
    outbox: Table
    build_routes: Callable[[RouteContext], Sequence[Route]]
    routers: Sequence[APIRouter] = field(default=())
    # Topics read by one consumer each; topics not named here share one consumer. Fewer
    # consumers in a group means fewer rebalances when an instance starts or stops.
    separate_consumers: Sequence[Sequence[str]] = field(default=())
    # {gated topic: watched topic}: records of the gated topic wait until the consumer of the
    # watched topic has committed up to the end offsets it found when it got its partitions.
    catch_up_before: dict[str, str] = field(default_factory=dict)
    # Anything else the service adds to its app (exception handlers, static files).
    configure: Callable[[FastAPI], None] | None = None


class Drain:
    """Counts records being handled; on shutdown new records are held and in-flight ones finish."""

    def __init__(self) -> None:
        self.inflight = 0
        self.closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def handling(self) -> AsyncIterator[None]:
        if self.closing:
            await asyncio.Event().wait()  # never start new work while shutting down
        self.inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()

    async def close(self, grace_s: float) -> bool:
        """True when all in-flight work finished within the grace period."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
            return True
        except TimeoutError:
            return False


@dataclass
class Progress:
    """Per-partition committed offsets seen by the lag monitor, and since when they stood still."""

    last: dict[Any, tuple[int, float]] = field(default_factory=dict)
    stalled: dict[str, str] = field(default_factory=dict)


@dataclass
class Runtime:
    """What the lifespan built; exposed on app.state for the HTTP surface."""

    spec: ServiceSpec
    settings: ServiceSettings
    kafka: KafkaSettings
    metrics: ServiceMetrics
    engine: Any = None
    sessions: Any = None
    producer: AIOKafkaProducer | None = None
    broker: KafkaBroker | None = None
    relay: OutboxRelay | None = None
    subscribers: list[Any] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    drain: Drain = field(default_factory=lambda: Drain())
    progress: Progress = field(default_factory=lambda: Progress())
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    committer: Committer = field(default_factory=lambda: Committer(0))
    # True once the process was asked to stop (SIGTERM): start-up stops retrying unreachable dependencies.
    should_stop: Callable[[], bool] = lambda: False


def create_app(spec: ServiceSpec, settings: ServiceSettings, kafka: KafkaSettings | None = None) -> FastAPI:
    runtime = Runtime(spec=spec, settings=settings, kafka=kafka or KafkaSettings(), metrics=ServiceMetrics(spec.name))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(runtime)
        try:
            yield
        finally:
            await _stop(runtime)

    app = FastAPI(title=f"second-opinion {spec.name}", lifespan=lifespan)
    app.state.runtime = runtime
    app.include_router(_health_router(runtime))
    for router in spec.routers:
        app.include_router(router)
    if spec.configure is not None:
        spec.configure(app)
    return app


async def _start(rt: Runtime) -> None:
    rt.engine = db.make_engine(rt.settings.database_url)
    rt.sessions = db.make_session_factory(rt.engine)
    rt.producer = AIOKafkaProducer(
        bootstrap_servers=rt.kafka.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        max_request_size=rt.settings.max_record_bytes,
    )
    await _retry_forever("kafka producer", rt.producer.start, rt.should_stop)
    producer = rt.producer

    async def send(topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        return await producer.send(topic, value, key=key, headers=headers)

    rt.relay = OutboxRelay(rt.sessions, rt.spec.outbox, send, on_published=rt.metrics.published.inc)
    consumer = EventConsumer(
        name=rt.spec.name,
        routes={r.topic: r for r in rt.spec.build_routes(_route_context(rt))},
        sessions=rt.sessions,
        inbox_table=rt.spec.inbox,
        outbox_table=rt.spec.outbox,
        dead_letter=_dead_letter_sink(rt.producer),
        metrics=rt.metrics,
        on_committed=rt.relay.wake,
        max_attempts=rt.settings.max_attempts,
    )
    rt.committer = Committer(rt.settings.commit_interval_ms / 1000)
    if rt.committer.gathering:
        rt.tasks.append(asyncio.create_task(rt.committer.run(), name=f"{rt.spec.name}-commits"))
    rt.broker = _build_broker(rt, consumer)
    for gated, watched in rt.spec.catch_up_before.items():
        consumer.gates[gated] = gate = asyncio.Event()
        rt.tasks.append(asyncio.create_task(_open_when_caught_up(rt, watched, gate), name=f"catch-up-{watched}"))
    rt.gates = consumer.gates
    rt.tasks.append(asyncio.create_task(_watch_lag(rt), name=f"{rt.spec.name}-lag"))
    rt.tasks.append(asyncio.create_task(rt.relay.run(), name=f"{rt.spec.name}-relay"))
    await _retry_forever("kafka consumers", rt.broker.start, rt.should_stop)
    log.info("%s service started (group %s)", rt.spec.name, group_id(rt.spec.name, rt.kafka))


async def _stop(rt: Runtime) -> None:
    # Let in-flight records finish (and commit) within the grace period; what does not finish
    # is not committed, so the next start handles it again (the inbox makes that safe).
    if not await rt.drain.close(rt.settings.shutdown_grace_s):
        log.warning(
            "shutdown grace of %ss ran out with %d record(s) in flight", rt.settings.shutdown_grace_s, rt.drain.inflight
        )
    with contextlib.suppress(Exception):
        await rt.committer.flush()  # what finished within the grace period is committed, nothing else
    if rt.broker is not None:
        await rt.broker.stop()
    for task in rt.tasks:
        task.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    if rt.relay is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rt.relay.publish_batch(), 5)  # flush what committed last
    if rt.producer is not None:
        await rt.producer.stop()
    if rt.engine is not None:
        await rt.engine.dispose()


async def _raw_bytes(msg: Any) -> bytes:
    # The runtime decodes and validates itself so that bad input reaches the DLQ intact.
    return msg.body


async def _tolerant_parser(record: Any, parse: Callable[[Any], Any]) -> Any:
    # FastStream decodes every header value as UTF-8; one that is not (or a null one) makes it log
    # the error and drop the record, whose offset a later commit then passes: silently skipped.
    # The runtime reads no headers, so undecodable bytes become U+FFFD and the record is handled.
    try:
        return await parse(record)
    except (UnicodeDecodeError, AttributeError):
        if isinstance(record, tuple):  # a batch
            return await parse(tuple(_readable_headers(r) for r in record))
        return await parse(_readable_headers(record))


def _readable_headers(record: Any) -> Any:
    headers = [(k, (v or b"").decode("utf-8", "replace").encode()) for k, v in record.headers]
    return replace(record, headers=headers)


def _build_broker(rt: Runtime, consumer: EventConsumer) -> KafkaBroker:
    broker_log = logging.getLogger(f"faststream.{rt.spec.name}")
    broker_log.setLevel(logging.WARNING)  # one line per message is noise; errors still show
    # graceful_timeout=None: Drain already waited the configured grace. FastStream's own wait
    # (15 s by default) would add to it, hang on records Drain holds, and let work still in
    # flight after the grace period finish and commit.
    broker = KafkaBroker(rt.kafka.bootstrap_servers, logger=broker_log, graceful_timeout=None)
    batched = rt.settings.batch_max > 1
    # FastStream's batch poll sleeps as long as it waited after an empty fetch (200 ms by default):
    # a record arriving meanwhile waited that long at each hop, and a directory entry could lose
    # the race against a grant published after it.
    batching: dict[str, Any] = (
        {"batch": True, "max_records": rt.settings.batch_max, "batch_timeout_ms": rt.settings.batch_wait_ms}
        if batched
        else {}
    )
    make_handler = _batch_handler if batched else _handler
    for topics in _consumer_topics(rt.spec, list(consumer.routes)):
        subscriber = broker.subscriber(
            *topics,
            group_id=group_id(rt.spec.name, rt.kafka),
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=_raw_bytes,
            parser=_tolerant_parser,
            max_poll_interval_ms=rt.settings.max_poll_interval_ms,
            # A record up to the topics' limit comes whole in any fetch, not only when its partition
            # happens to lead the response (the broker's one-oversized-batch allowance); the 50 MiB
            # default fetch_max_bytes already exceeds it.
            max_partition_fetch_bytes=rt.settings.max_record_bytes,
            **batching,
        )
        subscriber(make_handler(consumer, rt.drain, rt.committer))
        rt.subscribers.append(subscriber)
    return broker


async def _open_when_caught_up(rt: Runtime, topic: str, gate: asyncio.Event) -> None:
    """Set `gate` once this service's group has committed everything `topic` held at start-up.

    Offsets are read for the whole group and every partition (not from one consumer's
    assignment), so a rebalance while catching up cannot open the gate early.
    """
    group, bootstrap = group_id(rt.spec.name, rt.kafka), rt.kafka.bootstrap_servers
    target: dict[int, int] | None = None
    while not gate.is_set():
        try:
            target = target if target is not None else await kafka_offsets.end_offsets(bootstrap, topic)
            committed = await kafka_offsets.committed_offsets(bootstrap, group, topic)
        except Exception as exc:  # broker hiccup: keep waiting
            log.debug("catch-up check failed: %s", exc)
        else:
            if all(committed.get(p, 0) >= end for p, end in target.items()):
                log.info("caught up with %s; releasing held records", topic)
                gate.set()
                return
        await asyncio.sleep(0.5)


def _route_context(rt: Runtime) -> RouteContext:
    group, bootstrap = group_id(rt.spec.name, rt.kafka), rt.kafka.bootstrap_servers

    async def caught_up(topic: str) -> bool:
        # Bounded, and "cannot tell" (broker away) is "not yet": a handler holding an event on it retries.
        try:
            async with asyncio.timeout(CAUGHT_UP_TIMEOUT_S):
                return await kafka_offsets.caught_up(bootstrap, group, topic)
        except Exception as exc:
            log.info("cannot tell whether %s is caught up with %s: %s", group, topic, logs.describe(exc))
            return False

    return RouteContext(rt.metrics, caught_up)


def _consumer_topics(spec: ServiceSpec, topics: list[str]) -> list[list[str]]:
    separate = [list(group) for group in spec.separate_consumers]
    named = {t for group in separate for t in group}
    shared = [t for t in topics if t not in named]
    return [*separate, shared] if shared else separate


def _handler(consumer: EventConsumer, drain: Drain, committer: Committer) -> Callable[..., Any]:
    async def handle(body: bytes, msg: KafkaMessage) -> None:
        async with drain.handling():
            await consumer.process(msg.raw_message)
            await committer.done(msg.consumer, (msg.raw_message,))

    return handle


def _batch_handler(consumer: EventConsumer, drain: Drain, committer: Committer) -> Callable[..., Any]:
    async def handle(body: list[bytes], msg: KafkaMessage) -> None:
        async with drain.handling():
            records = msg.raw_message
            await consumer.process_batch(records)
            await committer.done(msg.consumer, records)

    return handle


def _dead_letter_sink(producer: AIOKafkaProducer) -> Callable[..., Any]:
    async def send(topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        ack = await producer.send(topic, value, key=key, headers=headers)
        await ack

    return send


class StartupAborted(Exception):
    """Asked to stop while a dependency was still unreachable at start-up."""


async def _retry_forever(what: str, start: Callable[[], Any], should_stop: Callable[[], bool]) -> None:
    delay = 0.5
    while True:
        if should_stop():
            raise StartupAborted(f"stopping before {what} was reachable")
        try:
            await start()
            return
        except Exception as exc:
            log.warning("%s not reachable yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _health_router(rt: Runtime) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live", "service": rt.spec.name}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        checks = await _readiness(rt)
        ok = all(c == "ok" for c in checks.values())
        return JSONResponse({"ready": ok, "service": rt.spec.name, "checks": checks}, status_code=200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        await _refresh_gauges(rt)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def _readiness(rt: Runtime) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(db.ping(rt.engine), 3)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    broker_ok = rt.broker is not None and await _quiet(rt.broker.ping(timeout=3))
    checks["broker"] = "ok" if broker_ok else "down"
    assigned = [bool(getattr(s, "consumer", None) and s.consumer.assignment()) for s in rt.subscribers]
    checks["partitions"] = "ok" if assigned and all(assigned) else "not assigned"
    checks["relay"] = "ok" if rt.relay is not None and rt.relay.healthy else "failing"
    for topic, gate in rt.gates.items():
        checks[f"catch_up:{topic}"] = "ok" if gate.is_set() else "waiting"
    checks["progress"] = "ok" if not rt.progress.stalled else "; ".join(rt.progress.stalled.values())
    return checks


async def _quiet(awaitable: Any) -> bool:
    try:
        return bool(await awaitable)
    except Exception:
        return False


async def _watch_lag(rt: Runtime) -> None:
    """Publish per-partition lag and flag partitions whose lag does not move for too long."""
    while True:
        await asyncio.sleep(rt.settings.lag_interval_s)
        try:
            await _measure_lag(rt, time.monotonic())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker away: readiness already says so
            log.debug("lag check failed: %s", exc)


async def _measure_lag(rt: Runtime, now: float) -> None:
    group = group_id(rt.spec.name, rt.kafka)
    stalled: dict[str, str] = {}
    for subscriber in rt.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        assigned = list(consumer.assignment()) if consumer is not None else []
        if not assigned:
            continue
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            committed = (await consumer.committed(tp)) or 0
            lag = max(ends.get(tp, 0) - committed, 0)
            rt.metrics.lag.labels(group, tp.topic, str(tp.partition)).set(lag)
            previous, since = rt.progress.last.get(tp, (committed, now))
            since = now if committed != previous or lag == 0 else since
            rt.progress.last[tp] = (committed, since)
            if lag > 0 and now - since >= rt.settings.stall_after_s:
                stalled[f"{tp.topic}[{tp.partition}]"] = (
                    f"{tp.topic}[{tp.partition}] stalled: lag {lag}, no progress for {now - since:.0f}s"
                )
    rt.progress.stalled = stalled


async def _refresh_gauges(rt: Runtime) -> None:
    with contextlib.suppress(Exception):
        async with rt.sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(rt.spec.outbox).where(rt.spec.outbox.c.published_at.is_(None))
            )
        rt.metrics.outbox_pending.set(pending or 0)
