"""Ceilings: what the broker and the database allow, measured with the same messages and no framework.

Each ceiling is a relay written directly on aiokafka: a consumer in a group of its own reads the
preloaded requests with `getmany`, an idempotent `acks=all` producer writes one output per input
to `bench.ceiling.out`, and the offsets are committed once per fetched batch, after every output
of the batch was acknowledged. The database ceilings add, per event, the decision service's
database work for a request whose report is present, with asyncpg (or the sqlite3 module) and
hand-written SQL on a scratch database migrated to the decision schema:

    BEGIN                                  (SQLite: BEGIN IMMEDIATE, the service's per-order lock)
    SELECT pg_advisory_xact_lock(hashtextextended(order, 0))
    INSERT INTO inbox ... ON CONFLICT DO NOTHING
    SELECT 1 FROM so_case WHERE case_id = ...            (request already seen?)
    SELECT * FROM report WHERE service_job_id = ...      (the report is there)
    SELECT case_id FROM so_case WHERE service_order_id = ... AND status IN (open states)
    INSERT INTO so_case ...                              (awaiting_report, as the handler does)
    UPDATE so_case SET status = 'granted', rules, policy_version, decided_by ...
    INSERT INTO case_event ... x3                        (request in, report in, grant out)
    INSERT INTO outbox ... ON CONFLICT DO NOTHING
    COMMIT
and, per batch after the broker acknowledged, `UPDATE outbox SET published_at`. The batched
variant does the same statements for up to `batch` events in one transaction (array parameters
and executemany), locking the batch's orders in a fixed order. The concurrent variant keeps one
transaction per event but spreads a batch over several connections ("lanes", by order key, so one
order's events stay in order): concurrent commits share the WAL flush (PostgreSQL group commit).
`ceiling-kafka-record-commit` is ceiling-kafka committing the offset after every record, as the
services do (FastStream's `msg.ack()` commits once per message).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from bench import kafkaio
from bench.infra import CEILING_IN, CEILING_OUT, pg_connect, sqlite_path
from bench.workload import Workload
from schemas import v1
from services.decision.app.mapping import case_id_for

OPEN_STATES = ["awaiting_approval", "granted", "dispatched", "unassigned"]
POLICY_VERSION = "second-opinion-policy/1.0.0"
RULES = json.dumps(["reason_valid", "deductible_paid"])
CONSUMER = "decision"

# (key, value, event_id of the staged outbox row or None)
Output = tuple[bytes, bytes, str | None]
Process = Callable[[Sequence[ConsumerRecord]], Awaitable[list[Output]]]
MarkSent = Callable[[list[str]], Awaitable[None]]


@dataclass
class RelayRun:
    events: int
    elapsed_s: float
    batches: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def preload(bootstrap: str, wl: Workload) -> dict[TopicPartition, int]:
    """Publish the run's requests to the ceiling input topic; returns where they start."""
    tps = await kafkaio.partitions(bootstrap, [CEILING_IN])
    starts = await kafkaio.end_offsets(bootstrap, tps)
    prod = kafkaio.producer(bootstrap)
    await prod.start()
    try:
        await kafkaio.publish(prod, CEILING_IN, wl.requests)
    finally:
        await prod.stop()
    return starts


async def relay(
    bootstrap: str,
    group: str,
    starts: dict[TopicPartition, int],
    n: int,
    process: Process,
    mark: MarkSent | None,
    *,
    commit_per_record: bool = False,
) -> RelayRun:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id=kafkaio.CLIENT_ID, group_id=group, enable_auto_commit=False
    )
    producer = kafkaio.producer(bootstrap, linger_ms=2)  # as the services' relay producer
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        # Outside the timer: find the group coordinator and get the idempotent producer's id.
        await consumer.committed(next(iter(starts)))
        await (await producer.send(CEILING_OUT, b"{}", key=b"bench-warm-up"))
        seen = batches = 0
        started = time.perf_counter()
        deadline = time.monotonic() + 120 + n / 50
        while seen < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ceiling relay read {seen} of {n} records")
            fetched = await consumer.getmany(timeout_ms=200)
            records = [r for rs in fetched.values() for r in rs]
            if not records:
                continue
            outputs = await process(records)
            acks = [await producer.send(CEILING_OUT, value, key=key) for key, value, _ in outputs]
            await asyncio.gather(*acks)
            if mark is not None:
                await mark([eid for _, _, eid in outputs if eid is not None])
            if commit_per_record:
                for r in records:
                    await consumer.commit({TopicPartition(r.topic, r.partition): r.offset + 1})
            else:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in fetched.items()})
            seen += len(records)
            batches += 1
        return RelayRun(seen, time.perf_counter() - started, batches)
    finally:
        await producer.stop()
        await consumer.stop()


# ---------------------------------------------------------------- kafka only


async def forward(records: Sequence[ConsumerRecord]) -> list[Output]:
    return [(r.key, r.value, None) for r in records]


# ---------------------------------------------------------------- shared decision pieces


@dataclass(frozen=True)
class Req:
    event_id: str
    order: str
    job: str
    source: str
    reason: str
    occurred_at: datetime
    raw: str
    topic: str
    partition: int
    offset: int


def parse(record: ConsumerRecord) -> Req:
    value = record.value.decode()
    data = json.loads(value)
    return Req(
        data["event_id"],
        data["service_order_id"],
        data["service_job_id"],
        data["source"],
        data["reason_code"],
        datetime.fromisoformat(data["occurred_at"]),
        value,
        v1.SECOND_OPINION_REQUESTED,
        record.partition,
        record.offset,
    )


def grant_payload(case_id: str, req: Req, report: Any, now: datetime) -> tuple[str, str]:
    event_id = f"grant-{case_id}"
    payload = {
        "event_id": event_id,
        "occurred_at": now.isoformat(),
        "service_order_id": req.order,
        "case_id": case_id,
        "original_job_id": req.job,
        "original_provider_id": report["provider_id"],
        "original_technician_id": report["technician_id"],
        "customer_id": report["customer_id"],
        "trade": report["trade"],
        "property_zip": report["property_zip"],
        "source": req.source,
        "reason_code": req.reason,
        "decided_by": {"id": "policy", "role": "system"},
        "policy_version": POLICY_VERSION,
        "rules": json.loads(RULES),
        "deductible_waived": True,
        "diagnostic_charges": "company",
        "customer_disclosures": [],
        "prefer_same_company_different_technician": False,
        "original_charges": {
            "service_call_fee": f"{report['service_call_fee_cents'] / 100:.2f}",
            "diagnosis_fee": f"{report['diagnosis_fee_cents'] / 100:.2f}",
            "currency": report["currency"],
        },
    }
    return event_id, json.dumps(payload, separators=(",", ":"))


def _summary(**fields: Any) -> str:
    return json.dumps(fields, sort_keys=True, default=str)


def report_rows(wl: Workload) -> list[tuple[Any, ...]]:
    rows = []
    for _key, value in wl.reports:
        r = json.loads(value)
        rows.append(
            (
                r["service_job_id"],
                r["service_order_id"],
                r["event_id"],
                r["provider_id"],
                r["technician_id"],
                r["customer_id"],
                r["trade"],
                r["property_zip"],
                r["diagnosis"]["failure_found"],
                r["diagnosis"]["component"],
                r["diagnosis"]["cause"],
                r["diagnosis"]["covered"],
                round(float(r["charges"]["service_call_fee"]) * 100),
                round(float(r["charges"]["diagnosis_fee"]) * 100),
                r["charges"]["currency"],
                round(float(r["deductible"]["amount"]) * 100),
                r["deductible"]["paid_in_full"],
                datetime.fromisoformat(r["occurred_at"]),
            )
        )
    return rows


REPORT_COLUMNS = (
    "service_job_id, service_order_id, event_id, provider_id, technician_id, customer_id, trade, property_zip, "
    "failure_found, component, cause, covered, service_call_fee_cents, diagnosis_fee_cents, currency, "
    "deductible_cents, deductible_paid_in_full, occurred_at"
)


# ---------------------------------------------------------------- PostgreSQL (asyncpg)

PG_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
PG_INBOX = (
    'INSERT INTO inbox (consumer, event_id, topic, "partition", "offset", processed_at) '
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
)
PG_CASE_EXISTS = "SELECT 1 FROM so_case WHERE case_id = $1"
PG_REPORT = "SELECT * FROM report WHERE service_job_id = $1"
PG_OPEN_CASE = (
    "SELECT case_id FROM so_case WHERE service_order_id = $1 AND status = ANY($2::text[]) AND case_id <> $3 "
    "ORDER BY id LIMIT 1"
)
PG_CASE_INSERT = (
    "INSERT INTO so_case (case_id, request_event_id, service_order_id, original_job_id, source, reason_code, "
    "status, request, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'awaiting_report', $7, $8, $8)"
)
PG_CASE_GRANT = (
    "UPDATE so_case SET status = 'granted', rules = $2, policy_version = $3, decided_by_id = 'policy', "
    "decided_by_role = 'system', updated_at = $4 WHERE case_id = $1"
)
PG_CASE_EVENT = (
    "INSERT INTO case_event (case_id, direction, topic, event_id, occurred_at, recorded_at, summary) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
)
PG_CASE_EVENTS_3 = (
    "INSERT INTO case_event (case_id, direction, topic, event_id, occurred_at, recorded_at, summary) VALUES "
    "($1, 'in', $2, $3, $4, $5, $6), ($1, 'in', $7, $8, $9, $5, $10), ($1, 'out', $11, $12, $5, $5, $13) "
    "ON CONFLICT DO NOTHING"
)
PG_OUTBOX = (
    "INSERT INTO outbox (event_id, topic, key, payload, headers, created_at) VALUES ($1, $2, $3, $4, NULL, $5) "
    "ON CONFLICT DO NOTHING"
)
PG_MARK = "UPDATE outbox SET published_at = $2 WHERE event_id = ANY($1::text[])"


class PgDecisionWork:
    """The decision's database work with asyncpg: per event, per batch, or per event on several lanes."""

    def __init__(self, url: str, batch: int = 1, lanes: int = 1) -> None:
        self.url = url
        self.batch = batch
        self.lanes = lanes

    async def open(self) -> None:
        self.conns = [await pg_connect(self.url) for _ in range(self.lanes)]
        self.conn = self.conns[0]

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()

    async def load_reports(self, wl: Workload) -> None:
        marks = ", ".join(f"${i}" for i in range(1, 19))
        await self.conn.executemany(f"INSERT INTO report ({REPORT_COLUMNS}) VALUES ({marks})", report_rows(wl))

    async def mark(self, event_ids: list[str]) -> None:
        await self.conn.execute(PG_MARK, event_ids, datetime.now(UTC))

    async def process(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        if self.batch > 1:
            out: list[Output] = []
            for i in range(0, len(records), self.batch):
                out += await self._many([parse(r) for r in records[i : i + self.batch]])
            return out
        if self.lanes > 1:
            lanes: list[list[Req]] = [[] for _ in self.conns]
            for r in records:
                lanes[zlib.crc32(r.key or b"") % self.lanes].append(parse(r))
            done = await asyncio.gather(*(self._lane(conn, reqs) for conn, reqs in zip(self.conns, lanes, strict=True)))
            return [o for lane in done for o in lane]
        return await self._lane(self.conn, [parse(r) for r in records])

    async def _lane(self, conn: Any, reqs: list[Req]) -> list[Output]:
        return [o for req in reqs for o in await self._one(conn, req)]

    async def _one(self, conn: Any, req: Req) -> list[Output]:
        case_id, now = case_id_for(req.event_id), datetime.now(UTC)
        async with conn.transaction():
            await conn.execute(PG_LOCK, req.order)
            status = await conn.execute(PG_INBOX, CONSUMER, req.event_id, req.topic, req.partition, req.offset, now)
            if status != "INSERT 0 1":
                return []  # a duplicate
            if await conn.fetchval(PG_CASE_EXISTS, case_id):
                return []
            report = await conn.fetchrow(PG_REPORT, req.job)
            open_case = await conn.fetchval(PG_OPEN_CASE, req.order, OPEN_STATES, case_id)
            await conn.execute(
                PG_CASE_INSERT, case_id, req.event_id, req.order, req.job, req.source, req.reason, req.raw, now
            )
            if report is None or open_case is not None or not report["deductible_paid_in_full"]:
                return []  # never in this workload: every request is granted
            await conn.execute(PG_CASE_GRANT, case_id, RULES, POLICY_VERSION, now)
            event_id, payload = grant_payload(case_id, req, report, now)
            await conn.execute(
                PG_CASE_EVENTS_3,
                case_id,
                v1.SECOND_OPINION_REQUESTED,
                req.event_id,
                req.occurred_at,
                now,
                _summary(source=req.source, reason_code=req.reason),
                v1.SERVICE_REPORT_RECEIVED,
                report["event_id"],
                report["occurred_at"],
                _summary(provider_id=report["provider_id"]),
                v1.SECOND_OPINION_GRANTED,
                event_id,
                _summary(source=req.source),
            )
            await conn.execute(PG_OUTBOX, event_id, v1.SECOND_OPINION_GRANTED, req.order, payload, now)
        return [(req.order.encode(), payload.encode(), event_id)]

    async def _many(self, reqs: list[Req]) -> list[Output]:
        conn, now = self.conn, datetime.now(UTC)
        out: list[Output] = []
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (SELECT DISTINCT unnest($1::text[]) AS k) s "
                "ORDER BY k",
                [r.order for r in reqs],
            )
            fresh = {
                row[0]
                for row in await conn.fetch(
                    'INSERT INTO inbox (consumer, event_id, topic, "partition", "offset", processed_at) '
                    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], "
                    "$6::timestamptz[]) "
                    "ON CONFLICT DO NOTHING RETURNING event_id",
                    [CONSUMER] * len(reqs),
                    [r.event_id for r in reqs],
                    [r.topic for r in reqs],
                    [r.partition for r in reqs],
                    [r.offset for r in reqs],
                    [now] * len(reqs),
                )
            }
            todo = [(r, case_id_for(r.event_id)) for r in reqs if r.event_id in fresh]
            existing = {
                row[0]
                for row in await conn.fetch(
                    "SELECT case_id FROM so_case WHERE case_id = ANY($1::text[])", [c for _, c in todo]
                )
            }
            todo = [(r, c) for r, c in todo if c not in existing]
            reports = {
                row["service_job_id"]: row
                for row in await conn.fetch(
                    "SELECT * FROM report WHERE service_job_id = ANY($1::text[])", [r.job for r, _ in todo]
                )
            }
            open_orders = {
                row[0]
                for row in await conn.fetch(
                    "SELECT service_order_id FROM so_case WHERE service_order_id = ANY($1::text[]) "
                    "AND status = ANY($2::text[])",
                    [r.order for r, _ in todo],
                    OPEN_STATES,
                )
            }
            await conn.executemany(
                PG_CASE_INSERT,
                [(c, r.event_id, r.order, r.job, r.source, r.reason, r.raw, now) for r, c in todo],
            )
            granted = [
                (r, c, reports[r.job])
                for r, c in todo
                if r.job in reports and r.order not in open_orders and reports[r.job]["deductible_paid_in_full"]
            ]
            await conn.executemany(PG_CASE_GRANT, [(c, RULES, POLICY_VERSION, now) for _, c, _ in granted])
            events, staged = [], []
            for r, c, rep in granted:
                event_id, payload = grant_payload(c, r, rep, now)
                summary = _summary(source=r.source)
                events += [
                    (c, "in", r.topic, r.event_id, r.occurred_at, now, _summary(source=r.source, reason_code=r.reason)),
                    (
                        c,
                        "in",
                        v1.SERVICE_REPORT_RECEIVED,
                        rep["event_id"],
                        rep["occurred_at"],
                        now,
                        _summary(provider_id=rep["provider_id"]),
                    ),
                    (c, "out", v1.SECOND_OPINION_GRANTED, event_id, now, now, summary),
                ]
                staged.append((event_id, v1.SECOND_OPINION_GRANTED, r.order, payload, now))
                out.append((r.order.encode(), payload.encode(), event_id))
            await conn.executemany(PG_CASE_EVENT, events)
            await conn.executemany(PG_OUTBOX, staged)
        return out


# ---------------------------------------------------------------- SQLite (sqlite3)


def _t(value: datetime) -> str:
    # How SQLAlchemy keeps a DateTime on SQLite: text, UTC, no offset.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


class SqliteDecisionWork:
    """The same statements on SQLite, the way the service runs them: WAL, synchronous=NORMAL, BEGIN IMMEDIATE."""

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)

    async def open(self) -> None:
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL"):
            self.db.execute(f"PRAGMA {pragma}")

    async def close(self) -> None:
        self.db.close()

    async def load_reports(self, wl: Workload) -> None:
        rows = [tuple(_t(v) if isinstance(v, datetime) else v for v in row) for row in report_rows(wl)]
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(f"INSERT INTO report ({REPORT_COLUMNS}) VALUES ({', '.join('?' * 18)})", rows)
        self.db.execute("COMMIT")

    async def mark(self, event_ids: list[str]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            f"UPDATE outbox SET published_at = ? WHERE event_id IN ({','.join('?' * len(event_ids))})",
            [_t(datetime.now(UTC)), *event_ids],
        )
        self.db.execute("COMMIT")

    async def process(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        return [o for r in records for o in self._one(parse(r))]

    def _one(self, req: Req) -> list[Output]:
        db, case_id, now = self.db, case_id_for(req.event_id), datetime.now(UTC)
        db.execute("BEGIN IMMEDIATE")
        try:
            out = self._work(db, req, case_id, now)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    def _work(self, db: sqlite3.Connection, req: Req, case_id: str, now: datetime) -> list[Output]:
        cur = db.execute(
            'INSERT INTO inbox (consumer, event_id, topic, "partition", "offset", processed_at) '
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (CONSUMER, req.event_id, req.topic, req.partition, req.offset, _t(now)),
        )
        if cur.rowcount != 1:
            return []
        if db.execute("SELECT 1 FROM so_case WHERE case_id = ?", (case_id,)).fetchone():
            return []
        report = db.execute("SELECT * FROM report WHERE service_job_id = ?", (req.job,)).fetchone()
        open_case = db.execute(
            "SELECT case_id FROM so_case WHERE service_order_id = ? AND status IN (?, ?, ?, ?) AND case_id <> ? "
            "ORDER BY id LIMIT 1",
            (req.order, *OPEN_STATES, case_id),
        ).fetchone()
        db.execute(
            "INSERT INTO so_case (case_id, request_event_id, service_order_id, original_job_id, source, reason_code, "
            "status, request, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'awaiting_report', ?, ?, ?)",
            (case_id, req.event_id, req.order, req.job, req.source, req.reason, req.raw, _t(now), _t(now)),
        )
        if report is None or open_case is not None or not report["deductible_paid_in_full"]:
            return []
        db.execute(
            "UPDATE so_case SET status = 'granted', rules = ?, policy_version = ?, decided_by_id = 'policy', "
            "decided_by_role = 'system', updated_at = ? WHERE case_id = ?",
            (RULES, POLICY_VERSION, _t(now), case_id),
        )
        event_id, payload = grant_payload(case_id, req, report, now)
        db.executemany(
            "INSERT INTO case_event (case_id, direction, topic, event_id, occurred_at, recorded_at, summary) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (
                    case_id,
                    "in",
                    req.topic,
                    req.event_id,
                    _t(req.occurred_at),
                    _t(now),
                    _summary(source=req.source, reason_code=req.reason),
                ),
                (
                    case_id,
                    "in",
                    v1.SERVICE_REPORT_RECEIVED,
                    report["event_id"],
                    report["occurred_at"],
                    _t(now),
                    _summary(provider_id=report["provider_id"]),
                ),
                (case_id, "out", v1.SECOND_OPINION_GRANTED, event_id, _t(now), _t(now), _summary(source=req.source)),
            ],
        )
        db.execute(
            "INSERT INTO outbox (event_id, topic, key, payload, headers, created_at) VALUES (?, ?, ?, ?, NULL, ?) "
            "ON CONFLICT DO NOTHING",
            (event_id, v1.SECOND_OPINION_GRANTED, req.order, payload, _t(now)),
        )
        return [(req.order.encode(), payload.encode(), event_id)]


async def granted_count(url: str, wl: Workload) -> tuple[int, int]:
    """(granted cases, published outbox rows) of the run's requests in a ceiling's scratch database."""
    case_ids = [case_id_for(e) for e in wl.request_ids.values()]
    if url.startswith("postgresql"):
        conn = await pg_connect(url)
        try:
            granted = await conn.fetchval(
                "SELECT count(*) FROM so_case WHERE status = 'granted' AND case_id = ANY($1::text[])", case_ids
            )
            sent = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND event_id = ANY($1::text[])",
                [f"grant-{c}" for c in case_ids],
            )
        finally:
            await conn.close()
        return granted, sent
    db = sqlite3.connect(sqlite_path(url), timeout=30)
    try:
        marks = ",".join("?" * len(case_ids))
        granted = db.execute(
            f"SELECT count(*) FROM so_case WHERE status = 'granted' AND case_id IN ({marks})", case_ids
        ).fetchone()[0]
        sent = db.execute(
            f"SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND event_id IN ({marks})",
            [f"grant-{c}" for c in case_ids],
        ).fetchone()[0]
    finally:
        db.close()
    return granted, sent
