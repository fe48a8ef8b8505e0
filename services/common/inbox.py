"""Inbox: a consumed event is recorded in the same transaction as its effect, so a redelivery is a no-op."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.sql import dialect_name, insert_ignore


async def claim(
    session: AsyncSession,
    table: Table,
    *,
    consumer: str,
    event_id: str,
    topic: str,
    partition: int,
    offset: int,
) -> bool:
    """Record (consumer, event_id); False when it was already processed (a duplicate)."""
    return await insert_ignore(
        session,
        table,
        {
            "consumer": consumer,
            "event_id": event_id,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "processed_at": datetime.now(UTC),
        },
    )


async def claim_many(
    session: AsyncSession, table: Table, *, consumer: str, records: Sequence[tuple[str, str, int, int]]
) -> set[str]:
    """Record several (event_id, topic, partition, offset) at once; the event ids that were new.

    One executemany with RETURNING: SQLAlchemy sends it as multi-row INSERTs ("insertmanyvalues",
    pages of at most 1000 rows) compiled once, whatever the number of records.
    """
    if not records:
        return set()
    dialect = postgresql if dialect_name(session) == "postgresql" else sqlite
    now = datetime.now(UTC)
    rows = [
        {"consumer": consumer, "event_id": e, "topic": t, "partition": p, "offset": o, "processed_at": now}
        for e, t, p, o in records
    ]
    statement = dialect.insert(table).on_conflict_do_nothing().returning(table.c.event_id)
    return set((await session.execute(statement, rows)).scalars())
