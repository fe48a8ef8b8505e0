"""The audit trail: every replay and redrive, dry run or not, is a row of the service's `operator_action`."""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def default_operator() -> str:
    """$USER, else the login name the system knows."""
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no user database entry (some containers)
        return "unknown"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


async def begin(
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    *,
    operator: str,
    command: str,
    dry_run: bool,
    parameters: dict[str, Any],
    plan: Any,
) -> int:
    """Record an action about to run (status running) and return its id."""
    async with sessions() as session, session.begin():
        result = await session.execute(
            insert(table).values(
                operator=operator,
                command=command,
                dry_run=dry_run,
                status="running",
                parameters=_json(parameters),
                plan=_json(plan),
                started_at=datetime.now(UTC),
            )
        )
        return int(result.inserted_primary_key[0])


async def finish(
    sessions: async_sessionmaker[AsyncSession], table: Table, action_id: int, status: str, result: Any
) -> None:
    """Close an action: planned (a dry run), completed or failed, with its result counts."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(table)
            .where(table.c.id == action_id)
            .values(status=status, result=_json(result), finished_at=datetime.now(UTC))
        )
