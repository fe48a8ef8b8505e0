"""`second-opinion dlq list|show|redrive`: what was dead-lettered, one record in full, and sending records back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.v1 import DLQ_SUFFIX, DLQ_TOPICS, dlq_topic
from services.common import db
from services.common.settings import SERVICES, KafkaSettings, service_settings
from services.operator_tools import actions
from services.operator_tools.kafka_io import Reader, safe_producer
from services.operator_tools.planning import (
    REDRIVEN_FROM,
    DlqRecord,
    PartitionRange,
    PlanError,
    RedriveSelection,
    redriven_from,
    select_for_redrive,
    summarize,
)
from services.operator_tools.replay import input_topics
from services.serve import load_spec

Out = Callable[[str], None]
COMMAND = "dlq redrive"


def as_dlq_topic(topic: str) -> str:
    """Either name works for an operator: `x` or `x.dlq` both mean the DLQ of `x`."""
    return topic if topic.endswith(DLQ_SUFFIX) else dlq_topic(topic)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


async def read_dlq(reader: Reader, topics: Sequence[str]) -> list[DlqRecord]:
    """Every record of the DLQ topics, up to their end offsets as they are now."""
    tps = [(t, p) for t, parts in (await reader.partitions(topics)).items() for p in parts]
    begins, ends = await reader.bounds(tps)
    ranges = [PartitionRange(t, p, begins[(t, p)], ends[(t, p)]) for t, p in tps]
    return [
        DlqRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers or ()))
        async for r in reader.read(ranges)
    ]


# ---------------------------------------------------------------- list


async def dlq_list(topic: str | None = None, kafka: KafkaSettings | None = None, out: Out = print) -> int:
    kafka = kafka or KafkaSettings()
    topics = [as_dlq_topic(topic)] if topic else list(DLQ_TOPICS)
    async with Reader(kafka.bootstrap_servers) as reader:
        groups = summarize(await read_dlq(reader, topics))
    if not groups:
        out("no dead-lettered records")
        return 0
    out(f"{'dlq topic':<40} {'error class':<16} {'count':>6}  {'oldest':<25} newest")
    for g in groups:
        out(f"{g.topic:<40} {g.error_class:<16} {g.count:>6}  {_iso(g.oldest_ms):<25} {_iso(g.newest_ms)}")
    return 0


# ---------------------------------------------------------------- show


SHOW_MAX_BYTES = 4096  # a poisoned record can be megabytes; a terminal wants its start


async def dlq_show(
    topic: str,
    partition: int,
    offset: int,
    kafka: KafkaSettings | None = None,
    out: Out = print,
    max_bytes: int = SHOW_MAX_BYTES,
) -> int:
    kafka = kafka or KafkaSettings()
    topic = as_dlq_topic(topic)
    async with Reader(kafka.bootstrap_servers) as reader:
        if partition not in (await reader.partitions([topic]))[topic]:
            out(f"{topic} has no partition {partition}")
            return 1
        begins, ends = await reader.bounds([(topic, partition)])
        if not begins[(topic, partition)] <= offset < ends[(topic, partition)]:
            out(f"no record at {topic}/{partition}/{offset}")
            return 1
        found = [r async for r in reader.read([PartitionRange(topic, partition, offset, offset + 1)])]
    if not found:
        out(f"no record at {topic}/{partition}/{offset} (compacted or deleted)")
        return 1
    r = found[0]
    out(f"{topic}/{partition}/{offset}  timestamp {_iso(r.timestamp)}")
    out(f"key: {_text(r.key)}")
    out("headers:")
    for name, value in r.headers or ():
        out(f"  {name}: {_text(value)}")
    value = r.value or b""
    if r.value is None or max_bytes <= 0 or len(value) <= max_bytes:
        out("value:")
        out(_text(r.value))  # already masked when it was dead-lettered
    else:
        cut = _char_boundary(value, max_bytes)
        out(f"value ({len(value)} bytes, the first {cut} shown; --max-bytes 0 shows all):")
        out(_text(value[:cut]))
    return 0


def _char_boundary(raw: bytes, limit: int) -> int:
    """A cut <= limit (len(raw) > limit) that does not split a UTF-8 character: raw[cut] starts one.

    Bytes that are not UTF-8 (no character starts within 3 bytes back) are cut at the limit."""
    for cut in range(limit, max(limit - 3, 0) - 1, -1):
        if cut > 0 and raw[cut] & 0xC0 != 0x80:  # not a continuation byte
            return cut
    return limit


def _text(raw: bytes | None) -> str:
    return "(none)" if raw is None else raw.decode("utf-8", errors="backslashreplace")


# ---------------------------------------------------------------- redrive


@dataclass(frozen=True)
class RedriveRequest:
    source_topic: str
    error_class: str | None = None
    offsets: frozenset[tuple[int, int]] | None = None  # DLQ partition:offset pairs
    execute: bool = False
    operator: str = field(default_factory=actions.default_operator)

    def parameters(self) -> dict[str, Any]:
        return {
            "topic": self.source_topic,
            "error_class": self.error_class,
            "offsets": [f"{p}:{o}" for p, o in sorted(self.offsets)] if self.offsets is not None else None,
            "execute": self.execute,
        }


@dataclass
class RedriveReport:
    selection: RedriveSelection
    sent_to: list[str] = field(default_factory=list)  # topic/partition/offset of each record sent
    action_ids: dict[str, int] = field(default_factory=dict)  # service -> operator_action id


def consumers_of(topic: str) -> list[str]:
    return [s for s in SERVICES if topic in input_topics(s)]


async def run_redrive(request: RedriveRequest, kafka: KafkaSettings | None = None, out: Out = print) -> RedriveReport:
    """Select DLQ records, record the action in each consuming service's database, send them back."""
    kafka = kafka or KafkaSettings()
    services = consumers_of(request.source_topic)
    if not services:
        raise PlanError(f"no service of this project consumes {request.source_topic}")
    async with Reader(kafka.bootstrap_servers) as reader:
        records = await read_dlq(reader, [dlq_topic(request.source_topic)])
    report = RedriveReport(select_for_redrive(records, request.source_topic, request.error_class, request.offsets))
    if report.selection.missing:
        missing = ", ".join(f"{p}:{o}" for p, o in report.selection.missing)
        raise PlanError(f"not in {dlq_topic(request.source_topic)}: {missing} (see `second-opinion dlq list`)")
    _print_selection(request, report.selection, out)
    audit = _Audit(services, request, report.selection)
    await audit.begin(report)
    if not request.execute:
        await audit.finish(report, "planned", {"selected": len(report.selection.chosen)})
        out(f"dry run: nothing sent (recorded in {_ids(report)}); add --execute to send")
        return report
    try:
        report.sent_to = await _send_back(report.selection.chosen, kafka)
    except (Exception, asyncio.CancelledError) as exc:
        await audit.finish(report, "failed", {"sent": len(report.sent_to), "error": repr(exc)})
        raise
    await audit.finish(report, "completed", {"sent": len(report.sent_to), "sent_to": report.sent_to})
    out(f"redrove {len(report.sent_to)} record(s) to {request.source_topic} (recorded in {_ids(report)})")
    return report


def _ids(report: RedriveReport) -> str:
    return ", ".join(f"{svc} operator_action {i}" for svc, i in report.action_ids.items())


def _print_selection(request: RedriveRequest, selection: RedriveSelection, out: Out) -> None:
    verb = "sending" if request.execute else "would send"
    out(
        f"redrive {dlq_topic(request.source_topic)} -> {request.source_topic}: {verb} {len(selection.chosen)} record(s)"
    )
    for r in selection.chosen:
        out(f"  {r.where} key={_text(r.key)} error_class={r.error_class}")
    for r, why in selection.skipped:
        out(f"  skipped {r.where}: {why}")


def _plan(selection: RedriveSelection) -> list[dict[str, Any]]:
    return [
        {"dlq": r.where, "key": _text(r.key), "error_class": r.error_class, "to": r.original_topic}
        for r in selection.chosen
    ]


class _Audit:
    """The same action recorded in the database of every service that consumes the source topic."""

    def __init__(self, services: Sequence[str], request: RedriveRequest, selection: RedriveSelection) -> None:
        self.services = services
        self.request = request
        self.plan = _plan(selection)

    async def begin(self, report: RedriveReport) -> None:
        for svc in self.services:
            async with _service_db(svc) as (sessions, table):
                report.action_ids[svc] = await actions.begin(
                    sessions, table, operator=self.request.operator, command=COMMAND,
                    dry_run=not self.request.execute, parameters=self.request.parameters(), plan=self.plan,
                )  # fmt: skip

    async def finish(self, report: RedriveReport, status: str, result: dict[str, Any]) -> None:
        for svc, action_id in report.action_ids.items():
            async with _service_db(svc) as (sessions, table):
                await actions.finish(sessions, table, action_id, status, result)


@contextlib.asynccontextmanager
async def _service_db(service: str) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], Table]]:
    """A short-lived engine on a service's own database, with its operator_action table."""
    engine = db.make_engine(service_settings(service).database_url)
    try:
        yield db.make_session_factory(engine), load_spec(service).metadata.tables["operator_action"]
    finally:
        await engine.dispose()


async def _send_back(records: Sequence[DlqRecord], kafka: KafkaSettings) -> list[str]:
    """Each record's value, unchanged, with its original key, to its original topic."""
    producer: AIOKafkaProducer = safe_producer(kafka.bootstrap_servers)
    await producer.start()
    try:
        sent = []
        for r in records:  # one at a time: per-key order stays the DLQ's order
            meta = await producer.send_and_wait(
                r.original_topic or "", r.value, key=r.key, headers=[(REDRIVEN_FROM, redriven_from(r))]
            )
            sent.append(f"{meta.topic}/{meta.partition}/{meta.offset}")
        return sent
    finally:
        await producer.stop()
