"""What the outage and poison tests look at from outside: readiness, metrics, topics, databases."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.stack import RunningService

BIG = 12 * 1024 * 1024  # client limits above the topics' 10 MiB, so a 5 MB record goes in and out


async def readiness(svc: RunningService) -> tuple[int, dict[str, Any]]:
    """Status and body of /health/ready; (0, {}) when the HTTP server does not answer."""
    try:
        # The check itself waits up to 3 s for the database and 3 s for the broker.
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{svc.url}/health/ready")
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json()


async def wait_status(svc: RunningService, status: int, timeout: float) -> dict[str, Any]:
    """Poll readiness until it answers `status`; returns the body (fails with the last one)."""
    deadline = time.monotonic() + timeout
    code, body = await readiness(svc)
    while code != status and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        code, body = await readiness(svc)
    assert code == status, f"{svc.name} readiness {code} (wanted {status}): {body}"
    return body


async def scrape(svc: RunningService) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of /metrics as (name, labels, value)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{svc.url}/metrics")
    response.raise_for_status()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


async def metric(svc: RunningService, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    return sum(v for n, lab, v in await scrape(svc) if n == name and labels.items() <= lab.items())


async def read_all(bootstrap: str, topics: Iterable[str], since: dict[TopicPartition, int] | None = None) -> list[Any]:
    """Every record now in `topics`, from the beginning (or the offsets `since`) to the current end."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,  # no group: this consumer takes every partition itself
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=BIG,
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(await _assignment(consumer))
        for tp, offset in (since or {}).items():
            if tp in ends:
                consumer.seek(tp, offset)
        records: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)])
        return records
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """Where `topics` end now: pass it to read_all(since=...) to read only what comes after."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(await _assignment(consumer))
    finally:
        await consumer.stop()


async def _assignment(consumer: AIOKafkaConsumer, timeout_s: float = 30) -> list[TopicPartition]:
    """The partitions a group-less consumer took (it takes them once it has the metadata)."""
    for _ in range(int(timeout_s * 10)):
        if consumer.assignment():
            return list(consumer.assignment())
        await asyncio.sleep(0.1)
    raise TimeoutError("the consumer got no partitions")


class RawProducer:
    """Sends any key, value (None, empty, 5 MB, not UTF-8) and headers; returns where it landed."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", max_request_size=BIG
        )

    async def __aenter__(self) -> RawProducer:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(
        self, topic: str, key: str | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> RecordMetadata:
        return await self.producer.send_and_wait(
            topic, value, key=key.encode() if key is not None else None, headers=headers or []
        )


async def query(url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one statement on a service's database (a fresh connection: the server may have restarted)."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def table_locked(url: str, table: str) -> AsyncIterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on `table` (every handler touching it waits) until the block ends."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE'))  # autobegun
            try:
                yield
            finally:
                await conn.rollback()
    finally:
        await engine.dispose()


async def waiting_on(url: str, table: str) -> int:
    """How many sessions wait for a lock on `table`."""
    sql = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = :t AND NOT l.granted"
    return (await query(url, sql, t=table))[0][0]


async def eventually(check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Await `check()` until it returns something truthy; returns it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() >= deadline:
            return result
        await asyncio.sleep(interval)


def header(record: Any, name: str) -> bytes | None:
    return next((v for k, v in record.headers if k == name), None)


def database_url(svc: RunningService) -> str:
    return svc.env[f"{svc.name.upper()}_DATABASE_URL"]
