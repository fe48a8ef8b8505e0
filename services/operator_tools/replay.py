"""`second-opinion replay`: re-run a service's input records through its own consumer, outside its group.

The records of the planned ranges are read with a group-less consumer (assign/seek), so the live
consumer group's offsets never move. A record whose event the service's inbox already holds is a
duplicate (looked up a batch at a time); every other record goes through the service's own
EventConsumer (decode, DLQ, inbox, one transaction), so what is applied anew publishes through
the outbox exactly what a first delivery would have, under the same deterministic ids.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import db
from services.common.consumer import BadInput, EventConsumer, RouteContext, decode
from services.common.metrics import ServiceMetrics
from services.common.relay import OutboxRelay
from services.common.service_app import ServiceSpec
from services.common.settings import KafkaSettings, ServiceSettings, service_settings
from services.operator_tools import actions
from services.operator_tools.kafka_io import Reader, safe_producer
from services.operator_tools.planning import PartitionRange, PlanError, Start, choose_partitions, plan_ranges
from services.serve import load_spec

Out = Callable[[str], None]
COMMAND = "replay"
DUPLICATE = "duplicate"  # what EventConsumer.process returns for an event its inbox holds


@dataclass(frozen=True)
class ReplayRequest:
    service: str
    start: Start
    topics: tuple[str, ...] | None = None  # None: every input topic of the service
    partitions: tuple[int, ...] | None = None  # None: every partition
    execute: bool = False
    operator: str = field(default_factory=actions.default_operator)

    def parameters(self, topics: Sequence[str]) -> dict[str, Any]:
        return {
            "service": self.service,
            "topics": list(topics),
            "partitions": list(self.partitions) if self.partitions is not None else None,
            "execute": self.execute,
            **self.start.describe(),
        }


@dataclass
class ReplayReport:
    plan: list[PartitionRange]
    keep_outcomes: bool = False  # a long replay would hold every record's outcome in memory
    counts: Counter[str] = field(default_factory=Counter)
    # (topic, partition, offset, key, outcome) per record read, so callers can look at their own.
    outcomes: list[tuple[str, int, int, str | None, str]] = field(default_factory=list)
    stopped_short: list[str] = field(default_factory=list)
    action_id: int | None = None

    def note(self, record: ConsumerRecord, outcome: str) -> None:
        if self.keep_outcomes:
            key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
            self.outcomes.append((record.topic, record.partition, record.offset, key, outcome))
        self.counts["read"] += 1
        self.counts[outcome] += 1

    def result(self) -> dict[str, Any]:
        names = ("read", "applied", "duplicate", "dead_lettered", "published")
        return {n: self.counts[n] for n in names} | (
            {"stopped_short": self.stopped_short} if self.stopped_short else {}
        )


def input_topics(service: str) -> list[str]:
    """The topics the service consumes, as its routes name them."""
    return [r.topic for r in load_spec(service).build_routes(RouteContext(ServiceMetrics(service)))]


def _topics(service: str, wanted: Sequence[str] | None) -> list[str]:
    known = input_topics(service)
    unknown = sorted(set(wanted or ()) - set(known))
    if unknown:
        raise PlanError(f"{service} does not consume {', '.join(unknown)}; its input topics: {', '.join(known)}")
    return [t for t in known if wanted is None or t in wanted]


async def plan_replay(
    reader: Reader, topics: Sequence[str], start: Start, partitions: Sequence[int] | None
) -> list[PartitionRange]:
    """Per partition: from the chosen start to the end offset as it is now."""
    tps = choose_partitions(await reader.partitions(topics), partitions)
    begins, ends = await reader.bounds(tps)
    at_times = await reader.offsets_at(tps, start.timestamp_ms or 0) if start.kind == "timestamp" else None
    return plan_ranges(start, begins, ends, at_times)


def print_plan(service: str, plan: Sequence[PartitionRange], out: Out) -> None:
    out(f"replay {service}: plan (to = end offset when planned)")
    for r in plan:
        out(f"  {r.topic}[{r.partition}] from {r.start} to {r.end}: {r.count} record(s)")
    out(f"total: {sum(r.count for r in plan)} record(s) in {len(plan)} partition(s)")


async def run_replay(
    request: ReplayRequest, kafka: KafkaSettings | None = None, out: Out = print, keep_outcomes: bool = False
) -> ReplayReport:
    """Plan, record the action, and (with execute) replay; returns the plan, the counts (and outcomes)."""
    kafka = kafka or KafkaSettings()
    spec, settings = load_spec(request.service), service_settings(request.service)
    topics = _topics(request.service, request.topics)
    engine = db.make_engine(settings.database_url)
    sessions = db.make_session_factory(engine)
    table = spec.metadata.tables["operator_action"]
    try:
        async with Reader(kafka.bootstrap_servers) as reader:
            plan = await plan_replay(reader, topics, request.start, request.partitions)
            report = ReplayReport(plan, keep_outcomes)
            print_plan(request.service, report.plan, out)
            report.action_id = await actions.begin(
                sessions, table, operator=request.operator, command=COMMAND, dry_run=not request.execute,
                parameters=request.parameters(topics), plan=[r.to_dict() for r in report.plan],
            )  # fmt: skip
            if request.execute:
                await _execute_recorded(spec, settings, sessions, reader, kafka, report)
                _print_result(request.service, report, out)
            else:
                planned = {"records": sum(r.count for r in report.plan)}
                await actions.finish(sessions, table, report.action_id, "planned", planned)
                out(f"dry run: nothing replayed (recorded as operator_action {report.action_id}); add --execute")
            return report
    finally:
        await engine.dispose()


async def _execute_recorded(
    spec: ServiceSpec,
    settings: ServiceSettings,
    sessions: async_sessionmaker[AsyncSession],
    reader: Reader,
    kafka: KafkaSettings,
    report: ReplayReport,
) -> None:
    table = spec.metadata.tables["operator_action"]
    assert report.action_id is not None
    try:
        await _execute(spec, settings, sessions, reader, kafka, report)
    except (Exception, asyncio.CancelledError) as exc:  # Ctrl-C included: say how far it got
        await actions.finish(sessions, table, report.action_id, "failed", report.result() | {"error": repr(exc)})
        raise
    report.stopped_short = reader.stopped_short
    await actions.finish(sessions, table, report.action_id, "completed", report.result())


async def _execute(
    spec: ServiceSpec,
    settings: ServiceSettings,
    sessions: async_sessionmaker[AsyncSession],
    reader: Reader,
    kafka: KafkaSettings,
    report: ReplayReport,
) -> None:
    producer = safe_producer(kafka.bootstrap_servers)
    await producer.start()
    try:
        consumer = build_consumer(spec, settings, sessions, producer)
        for topic in _replay_order(spec, report.plan):
            async for batch in reader.batches([r for r in report.plan if r.topic == topic]):
                known = await already_applied(consumer, batch)
                for record in batch:
                    where = (record.topic, record.partition, record.offset)
                    report.note(record, DUPLICATE if where in known else await consumer.process(record))
        report.counts["published"] = await relay_pass(spec, sessions, producer)
    finally:
        await producer.stop()


def _replay_order(spec: ServiceSpec, plan: Sequence[PartitionRange]) -> list[str]:
    # A topic another one waits for at start-up (the provider directory before grants) goes first.
    watched = set(spec.catch_up_before.values())
    topics = list(dict.fromkeys(r.topic for r in plan))
    return sorted(topics, key=lambda t: t not in watched)


async def already_applied(consumer: EventConsumer, records: Sequence[ConsumerRecord]) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of records whose event the inbox holds: what process() calls duplicates.

    One query per fetched batch instead of one transaction per record, so replaying a long history
    that was applied is quick. A record that does not decode is left to process() and its DLQ.
    """
    event_ids = {}
    for r in records:
        try:
            event_ids[(r.topic, r.partition, r.offset)] = decode(r.value, consumer.routes[r.topic].model).event_id
        except BadInput:
            continue
    inbox, found = consumer.inbox_table, set()
    wanted = sorted(set(event_ids.values()))
    async with consumer.sessions() as session:
        for i in range(0, len(wanted), 500):
            query = select(inbox.c.event_id).where(
                inbox.c.consumer == consumer.name, inbox.c.event_id.in_(wanted[i : i + 500])
            )
            found.update(await session.scalars(query))
    return {where for where, event_id in event_ids.items() if event_id in found}


def build_consumer(
    spec: ServiceSpec,
    settings: ServiceSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: AIOKafkaProducer,
) -> EventConsumer:
    """The service's own EventConsumer (same inbox name, routes, DLQ), as the service builds it."""
    metrics = ServiceMetrics(spec.name)
    return EventConsumer(
        name=spec.name,
        routes={r.topic: r for r in spec.build_routes(RouteContext(metrics))},
        sessions=sessions,
        inbox_table=spec.inbox,
        outbox_table=spec.outbox,
        dead_letter=dead_letter_sink(producer),
        metrics=metrics,
        max_attempts=settings.max_attempts,
    )


def dead_letter_sink(producer: AIOKafkaProducer) -> Callable[..., Any]:
    async def send(topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await (await producer.send(topic, value, key=key, headers=headers))

    return send


async def relay_pass(spec: ServiceSpec, sessions: async_sessionmaker[AsyncSession], producer: AIOKafkaProducer) -> int:
    """Publish staged outbox rows until none is left; the live relay may publish some of them first.

    PostgreSQL: rows are locked (SKIP LOCKED) while sent, and published_at is set in that
    transaction, so two relays never send the same row. SQLite: BEGIN IMMEDIATE serializes them.
    """

    async def send(topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        return await producer.send(topic, value, key=key, headers=headers)

    relay = OutboxRelay(sessions, spec.outbox, send)
    total = 0
    while sent := await relay.publish_batch():
        total += sent
    return total


def _print_result(service: str, report: ReplayReport, out: Out) -> None:
    c = report.counts
    out(
        f"replayed {service}: read {c['read']}, applied {c['applied']}, duplicates {c['duplicate']}, "
        f"dead-lettered {c['dead_lettered']}; relay published {c['published']} "
        f"(recorded as operator_action {report.action_id})"
    )
    for note in report.stopped_short:
        out(f"warning: {note}")
