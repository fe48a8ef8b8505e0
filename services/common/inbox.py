"""Inbox: a consumed event is recorded in the same transaction as its effect, so a redelivery is a no-op."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Table
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
