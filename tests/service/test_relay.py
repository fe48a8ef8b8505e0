"""The outbox relay on a real (SQLite) database: coalescing of wake-ups, id order, nothing marked sent unacked."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common import db
from services.common.relay import OutboxRelay
from services.common.tables import outbox_table


@dataclass
class Outbox:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    table: Table
    staged: int = 0

    async def stage(self, n: int = 1) -> list[int]:
        """Stage n rows in one transaction each (as n handled events would); their ids."""
        ids = []
        for _ in range(n):
            async with self.sessions() as session, session.begin():
                i, self.staged = self.staged, self.staged + 1
                row = {"event_id": f"e-{i}", "topic": "t", "key": f"k-{i}", "payload": "{}"}
                result = await session.execute(insert(self.table).values(**row, created_at=datetime.now(UTC)))
                ids.append(result.inserted_primary_key[0])
        return ids

    async def unpublished(self) -> list[int]:
        async with self.sessions() as session:
            query = select(self.table.c.id).where(self.table.c.published_at.is_(None)).order_by(self.table.c.id)
            return list((await session.scalars(query)).all())


@dataclass
class Broker:
    """A fake `send`: records batches of keys as the relay queues them; acks after `ack_s`, or fails."""

    ack_s: float = 0.0
    fail_key: str | None = None
    batches: list[list[str]] = field(default_factory=list)
    acks: list[asyncio.Future[None]] = field(default_factory=list)

    def start_batch(self) -> None:
        self.batches.append([])

    async def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.batches[-1].append(key.decode())
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key.decode() == self.fail_key:
            ack.set_exception(RuntimeError("broker refused the record"))
        else:
            asyncio.get_running_loop().call_later(self.ack_s, lambda: ack.done() or ack.set_result(None))
        self.acks.append(ack)
        return ack

    @property
    def keys(self) -> list[str]:
        return [k for batch in self.batches for k in batch]


def relay_on(outbox: Outbox, broker: Broker, **options: Any) -> OutboxRelay:
    """A relay whose passes with rows each start a new batch in `broker` (one batch = one transaction)."""
    relay = OutboxRelay(outbox.sessions, outbox.table, broker.send, **options)
    pending = relay._pending

    async def counted(session: AsyncSession) -> Any:
        rows = await pending(session)
        if rows:
            broker.start_batch()
        return rows

    relay._pending = counted  # type: ignore[method-assign]
    return relay


@contextlib.asynccontextmanager
async def outbox_at(url: str) -> AsyncIterator[Outbox]:
    """An outbox table on a fresh database at `url`, with the services' engine and sessions."""
    metadata = MetaData()
    table = outbox_table(metadata)
    engine = db.make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield Outbox(engine, db.make_session_factory(engine), table)
    finally:
        await engine.dispose()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with outbox_at(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}") as made:
        yield made


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def failed(relay: OutboxRelay) -> bool:
    return not relay.healthy


async def nothing_pending(outbox: Outbox) -> bool:
    return await outbox.unpublished() == []


class TestCoalescing:
    async def test_rows_committed_during_the_linger_go_out_in_one_batch_in_id_order(self, outbox: Outbox) -> None:
        broker, n, linger_s = Broker(ack_s=0.001), 30, 0.5
        relay = relay_on(outbox, broker, linger_s=linger_s, poll_interval_s=30)
        async with running(relay):
            await asyncio.sleep(0.05)  # idle, waiting for a wake-up
            started = time.monotonic()
            for _ in range(n):  # one transaction and one wake-up per event, as the consumer does
                await outbox.stage()
                relay.wake()
            staging_s = time.monotonic() - started
            await until(lambda: nothing_pending(outbox))
        assert broker.keys == [f"k-{i}" for i in range(n)]
        # One batch when staging fits in the linger (it takes milliseconds); a slow machine gets a few more.
        assert len(broker.batches) <= 1 + int(staging_s / linger_s), (staging_s, [len(b) for b in broker.batches])
        assert len(broker.batches) < n

    async def test_no_linger_publishes_each_wake_up_at_once(self, outbox: Outbox) -> None:
        broker = Broker()
        relay = relay_on(outbox, broker, linger_s=0, poll_interval_s=30)
        async with running(relay):
            await asyncio.sleep(0.05)
            for i in range(3):
                await outbox.stage()
                relay.wake()
                await until(lambda: nothing_pending(outbox), 1.0)  # long before the poll interval
                assert len(broker.batches) == i + 1
        assert broker.batches == [["k-0"], ["k-1"], ["k-2"]]

    async def test_without_a_wake_up_the_poll_still_publishes(self, outbox: Outbox) -> None:
        broker = Broker()
        relay = relay_on(outbox, broker, poll_interval_s=0.1)
        async with running(relay):
            await asyncio.sleep(0.05)
            await outbox.stage(3)  # no wake-up: another process staged them
            await until(lambda: nothing_pending(outbox), 2.0)
        assert broker.batches == [["k-0", "k-1", "k-2"]]

    async def test_a_backlog_goes_out_in_full_batches_in_id_order(self, outbox: Outbox) -> None:
        broker = Broker()
        published: list[int] = []
        relay = relay_on(outbox, broker, batch_size=7, poll_interval_s=30, on_published=published.append)
        await outbox.stage(20)
        async with running(relay):
            await until(lambda: nothing_pending(outbox))  # full batches follow each other without a wake-up
        assert [len(b) for b in broker.batches] == [7, 7, 6]
        assert broker.keys == [f"k-{i}" for i in range(20)]
        assert published == [7, 7, 6]


class TestGuarantees:
    async def test_rows_are_marked_sent_only_after_every_ack(self, outbox: Outbox) -> None:
        broker = Broker(ack_s=0.05)
        unacked_at_update: list[int] = []

        @event.listens_for(outbox.engine.sync_engine, "before_cursor_execute")
        def _seen(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("UPDATE OUTBOX"):
                unacked_at_update.append(sum(not ack.done() for ack in broker.acks))

        await outbox.stage(5)
        relay = relay_on(outbox, broker)
        assert await relay.publish_batch() == 5
        assert unacked_at_update == [0]
        assert await outbox.unpublished() == []

    async def test_a_batch_waiting_for_the_broker_leaves_the_database_free(self, outbox: Outbox) -> None:
        """SQLite: a transaction holds the write lock; waiting for acks inside one stalled every
        other transaction of the service (handlers, case API, health check) for up to the
        producer's timeout while the broker was down."""
        broker = Broker(ack_s=3600)  # a broker that does not answer
        await outbox.stage(3)
        relay = relay_on(outbox, broker)
        sending = asyncio.create_task(relay.publish_batch())
        await until(lambda: _sent(broker, 3))
        started = time.monotonic()
        assert await asyncio.wait_for(outbox.stage(1), 2)  # BEGIN IMMEDIATE, an insert, a commit
        assert time.monotonic() - started < 1.0
        assert len(await outbox.unpublished()) == 4 and not sending.done()
        for ack in broker.acks:
            ack.set_result(None)
        assert await asyncio.wait_for(sending, 2) == 3
        assert len(await outbox.unpublished()) == 1  # the row staged meanwhile waits for the next pass

    async def test_a_failed_send_marks_nothing_sent_and_is_retried_in_order(self, outbox: Outbox) -> None:
        broker = Broker(fail_key="k-2")
        relay = relay_on(outbox, broker, poll_interval_s=30)
        ids = await outbox.stage(5)
        async with running(relay):
            await until(lambda: failed(relay))
            assert await outbox.unpublished() == ids  # k-0 and k-1 were acked, but their batch failed
            broker.fail_key = None
            await until(lambda: nothing_pending(outbox))  # the back-off retries without a wake-up
            assert relay.healthy
        assert broker.batches[-1] == [f"k-{i}" for i in range(5)]

    async def test_publish_batch_alone_flushes_what_is_pending(self, outbox: Outbox) -> None:
        # What a stopping service does after cancelling the relay's loop.
        broker = Broker()
        relay = relay_on(outbox, broker, linger_s=10)
        await outbox.stage(3)
        assert await asyncio.wait_for(relay.publish_batch(), 2) == 3  # no linger outside run()
        assert await relay.publish_batch() == 0
        assert broker.batches == [["k-0", "k-1", "k-2"]]

    async def test_cancel_in_the_same_turn_as_a_wake_up_stops_the_relay(self, outbox: Outbox) -> None:
        # asyncio.wait_for on Python 3.11 swallowed this cancellation: a stopping service waited forever.
        relay = relay_on(outbox, Broker(), poll_interval_s=30)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.05)
        relay.wake()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done and task.cancelled()


async def _sent(broker: Broker, n: int) -> bool:
    return len(broker.acks) >= n
