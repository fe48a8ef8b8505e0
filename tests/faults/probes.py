"""Looking inside a running service from a test: its PostgreSQL locks and inbox, its group's committed offsets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata, TopicPartition

from services.common.settings import KafkaSettings
from services.ops import kafka
from services.simulate import kafka_io


def dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://")


class Database:
    """A plain connection to a service's PostgreSQL database (the test's own session)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, sqlalchemy_url: str) -> Database:
        return cls(await asyncpg.connect(dsn(sqlalchemy_url)))

    async def close(self) -> None:
        await self.conn.close()

    async def lock_order(self, order: str) -> None:
        # The same key the decision handlers take with pg_advisory_xact_lock: they wait for us.
        await self.conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", order)

    async def unlock_order(self, order: str) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", order)

    async def waiting_on_advisory_lock(self) -> int:
        return await self.conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )

    async def in_inbox(self, event_id: str) -> bool:
        return bool(await self.conn.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event_id))


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    """The group's committed offset on one partition (-1 when it has none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    return found[tp].offset if tp in found else -1


async def publish(bootstrap: str, topic: str, key: str, value: bytes) -> RecordMetadata:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        return await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll a (sync or async) check until it returns something truthy; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


async def skip_history(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit the group's offsets at the current ends, so a fresh group does not replay every topic."""
    # On a fresh broker the topics may not exist yet (nothing has started a stack): create them first.
    await asyncio.to_thread(kafka.create_topics, KafkaSettings(bootstrap_servers=bootstrap), topics)
    found = await kafka_io.partitions(bootstrap, topics)
    parts = [TopicPartition(t, p) for t, ps in found.items() for p in ps]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.commit(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()
