"""Inbox: a consumed event is recorded in the same transaction as its effect, so a redelivery is a no-op."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.sql import insert_ignore


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


# Rows per INSERT of claim_many: well under PostgreSQL's 32,767 bind parameters (6 per row).
CLAIM_CHUNK = 1000


async def claim_many(
    session: AsyncSession, table: Table, *, consumer: str, records: Sequence[tuple[str, str, int, int]]
) -> set[str]:
    """Record several (event_id, topic, partition, offset) at once; the event ids that were new."""
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    now = datetime.now(UTC)
    fresh: set[str] = set()
    for start in range(0, len(records), CLAIM_CHUNK):
        rows = [
            {"consumer": consumer, "event_id": e, "topic": t, "partition": p, "offset": o, "processed_at": now}
            for e, t, p, o in records[start : start + CLAIM_CHUNK]
        ]
        statement = dialect.insert(table).values(rows).on_conflict_do_nothing().returning(table.c.event_id)
        fresh.update((await session.execute(statement)).scalars())
    return fresh
