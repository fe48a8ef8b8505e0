"""Small SQL helpers that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_name(executor: Any) -> str:
    """ "postgresql" or "sqlite": the dialect of an AsyncConnection (what handlers get) or an AsyncSession."""
    dialect = getattr(executor, "dialect", None)
    return str((dialect or executor.bind.dialect).name)


_IGNORING: dict[tuple[str, Table], Insert] = {}


def _ignoring(dialect_name: str, table: Table) -> Insert:
    """INSERT .. ON CONFLICT DO NOTHING of `table` (built once per dialect and table), values bound at execution."""
    key = (dialect_name, table)
    if key not in _IGNORING:
        dialect = postgresql if dialect_name == "postgresql" else sqlite
        _IGNORING[key] = dialect.insert(table).on_conflict_do_nothing()
    return _IGNORING[key]


async def insert_ignore(session: AsyncSession, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row was inserted."""
    result = await session.execute(_ignoring(dialect_name(session), table), values)
    return result.rowcount == 1


async def insert_ignore_many(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of several rows (same keys) in one execution."""
    if not rows:
        return
    await session.execute(_ignoring(dialect_name(session), table), list(rows))
