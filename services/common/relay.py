"""Outbox relay: publishes staged events to Kafka and marks them sent only after the broker acks."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Table, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import logs
from services.common.backoff import Backoff

log = logging.getLogger(__name__)

# send(topic, key, value, headers) -> an awaitable that completes when the broker acked.
Send = Callable[[str, bytes, bytes, list[tuple[str, bytes]]], Awaitable[Awaitable[Any]]]


class OutboxRelay:
    """Publishes pending outbox rows in id order, one batch at a time.

    `wake()` (called after each committed transaction) starts a pass; the pass waits `linger_s`
    first so that rows committed meanwhile go out in the same batch instead of one transaction
    each. 0 publishes as soon as woken. Without a wake-up a pass still runs every `poll_interval_s`.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        send: Send,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 0.5,
        linger_s: float = 0.005,
        on_published: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._sessions = sessions
        self._table = table
        self._send = send
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._linger_s = linger_s
        self._on_published = on_published
        self._wakeup = asyncio.Event()
        self._backoff = Backoff()
        self.healthy = True

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                sent = await self.publish_batch()
                failures, self.healthy = 0, True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures, self.healthy = failures + 1, False
                log.warning("outbox relay: %s (retry %d)", logs.describe(exc), failures)
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            if sent < self._batch_size:
                await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        # asyncio.wait, which never cancels this task: wait_for on 3.11 can swallow a stop's cancel
        # (the event set in the same loop turn), and asyncio.timeout can leave its own cancel pending
        # when it fires just as the event is set, which the run loop would take for a stop.
        waiter = asyncio.ensure_future(self._wakeup.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=self._poll_interval_s)
        finally:
            waiter.cancel()
        if done and self._linger_s > 0:
            await asyncio.sleep(self._linger_s)
        # Cleared only now, before the batch is read: a wake-up during the linger is for a row
        # committed before this point, which the coming SELECT sees; a later one starts another pass.
        self._wakeup.clear()

    async def publish_batch(self) -> int:
        """Send one batch and mark it sent once every record is acknowledged.

        PostgreSQL: the rows are locked (FOR UPDATE SKIP LOCKED) for the whole send, so relays of
        several replicas never share a row; the lock holds those rows only. SQLite: every
        transaction holds the database's write lock (BEGIN IMMEDIATE), so the rows are read in one
        transaction and marked in another, and the broker is waited for between the two: with the
        broker down, the handlers, the case API and the health check keep the database. A crash
        between the two sends the batch again (same event ids; consumers keep one).
        """
        async with self._sessions() as session:
            if session.bind.dialect.name == "postgresql":
                async with session.begin():
                    rows = await self._pending(session)
                    if rows:
                        await self._publish(rows)
                        await self._mark_sent(session, rows)
            else:
                async with session.begin():
                    rows = await self._pending(session)
                if rows:
                    await self._publish(rows)
                    async with session.begin():
                        await self._mark_sent(session, rows)
        if rows:
            self._on_published(len(rows))
        return len(rows)

    async def _mark_sent(self, session: AsyncSession, rows: Sequence[Row[Any]]) -> None:
        ids = [row.id for row in rows]
        await session.execute(
            update(self._table).where(self._ids_in(session, ids)).values(published_at=datetime.now(UTC))
        )

    async def _pending(self, session: AsyncSession) -> Sequence[Row[Any]]:
        query = (
            select(self._table)
            .where(self._table.c.published_at.is_(None))
            .order_by(self._table.c.id)
            .limit(self._batch_size)
        )
        if session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return (await session.execute(query)).all()

    def _ids_in(self, session: AsyncSession, ids: list[int]) -> ColumnElement[bool]:
        # PostgreSQL: one array parameter, so the statement text (and asyncpg's prepared statement)
        # is the same for every batch size; an expanding IN is a new statement per size. SQLite has
        # no arrays and prepares statements locally, so IN costs it nothing extra.
        if session.bind.dialect.name == "postgresql":
            return self._table.c.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
        return self._table.c.id.in_(ids)

    async def _publish(self, rows: Sequence[Row[Any]]) -> None:
        # Pipeline the batch: sends are queued in id order (the idempotent producer keeps
        # per-partition order), then every acknowledgement is awaited before marking sent.
        acks = [await self._send(row.topic, row.key.encode(), row.payload.encode(), headers(row)) for row in rows]
        await asyncio.gather(*acks)


# Headers the relay always sets itself; a stored header of the same name is not sent.
_OWN_HEADERS = ("event_id", "content-type")


def headers(row: Row[Any]) -> list[tuple[str, bytes]]:
    """The Kafka headers of an outbox row: event_id, content-type, then the stored ones (trace context)."""
    out = [("event_id", row.event_id.encode()), ("content-type", b"application/json")]
    stored = getattr(row, "headers", None)
    if not stored:
        return out
    try:
        extra = json.loads(stored)
    except ValueError:
        extra = None
    if not isinstance(extra, dict):
        log.warning("outbox row %s has unreadable headers; sending it without them", row.id)
        return out
    out += [(str(k), str(v).encode()) for k, v in extra.items() if k not in _OWN_HEADERS and v is not None]
    return out
