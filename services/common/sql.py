"""Small SQL helpers that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_ignore(session: AsyncSession, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row was inserted."""
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
    result = await session.execute(statement)
    return result.rowcount == 1


async def insert_ignore_many(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of several rows (same keys) in one execution."""
    if not rows:
        return
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    await session.execute(dialect.insert(table).on_conflict_do_nothing(), list(rows))
