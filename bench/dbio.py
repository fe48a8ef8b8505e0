"""Reads of a service's own database by the bench: when its inbox claimed given events.

The decision-alone timer starts at the first claim of the run's requests (the `processed_at` of its
inbox row), so the service's process start-up and group join are not counted as processing time.
Within a partition records are handled in order, so the first claim is one of the partition heads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.infra import pg_connect, sqlite_path


class InboxReader:
    def __init__(self, url: str, consumer: str) -> None:
        self.url = url
        self.consumer = consumer
        self._pg: Any = None
        self._lite: sqlite3.Connection | None = None
        self.queries = 0  # statements this reader ran (each its own transaction)

    async def __aenter__(self) -> InboxReader:
        if self.url.startswith("postgresql"):
            self._pg = await pg_connect(self.url)
        else:
            self._lite = sqlite3.connect(sqlite_path(self.url), timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._lite is not None:
            self._lite.close()

    async def claim_times(self, event_ids: Sequence[str]) -> list[datetime]:
        """`processed_at` of the inbox rows of those of `event_ids` claimed so far (aware, UTC)."""
        ids = list(event_ids)
        self.queries += 1
        if self._pg is not None:
            rows = await self._pg.fetch(
                "SELECT processed_at FROM inbox WHERE consumer = $1 AND event_id = ANY($2::text[])", self.consumer, ids
            )
            return [r["processed_at"] for r in rows]
        assert self._lite is not None
        marks = ",".join("?" * len(ids))
        rows = self._lite.execute(
            f"SELECT processed_at FROM inbox WHERE consumer = ? AND event_id IN ({marks})", [self.consumer, *ids]
        ).fetchall()
        return [_sqlite_time(r[0]) for r in rows]

    async def wait_first_claim(self, event_ids: Sequence[str], within_s: float, alive: Any = None) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if await self.claim_times(event_ids):
                return True
            if alive is not None and not alive():
                return False
            await asyncio.sleep(0.02)
        return False


STAT_COLUMNS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated")


async def pg_database_stats(url: str) -> dict[str, int] | None:
    """PostgreSQL's cumulative counters of the database at `url` (None on SQLite)."""
    if not url.startswith("postgresql"):
        return None
    conn = await pg_connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            f"SELECT {', '.join(STAT_COLUMNS)} FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return dict(row) if row else None


def per_event(
    before: dict[str, int] | None, after: dict[str, int] | None, n: int, own_queries: int = 0
) -> dict[str, float] | None:
    """Counter deltas per handled event, without the bench's own `own_queries` (the counters are flushed by
    the server within a second or so)."""
    if not before or not after or not n:
        return None
    delta = {k: after[k] - before[k] for k in before}
    delta["xact_commit"] -= own_queries
    return {k: round(v / n, 2) for k, v in delta.items()}


def _sqlite_time(value: str) -> datetime:
    # SQLAlchemy keeps DateTime on SQLite as text without the offset; the services write UTC.
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
