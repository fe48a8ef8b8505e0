"""The PostgreSQL engine has no pre-ping: a pooled connection the server closed fails once, as a transient fault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.common import db
from services.common.consumer import is_transient
from tests.support.stack import fresh_postgres_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def url(infra) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    if infra.postgres_url is None:
        pytest.skip("needs PostgreSQL (TEST_DATABASES includes postgres)")
    yield fresh_postgres_url(infra, "engine")


async def backend_pids(engine: AsyncEngine, n: int) -> set[int]:
    """Check out n connections at once (so the pool holds n), and return their server pids."""
    conns = [await engine.connect() for _ in range(n)]
    try:
        return {await c.scalar(text("SELECT pg_backend_pid()")) for c in conns}
    finally:
        for c in conns:
            await c.close()


async def test_connections_closed_by_the_server_fail_once_as_transient_then_all_reconnect(url: str) -> None:
    engine = db.make_engine(url)
    assert not engine.pool._pre_ping
    killer = create_async_engine(url, poolclass=NullPool)
    try:
        pooled = await backend_pids(engine, 3)
        assert len(pooled) == 3
        async with killer.connect() as conn:  # what a server restart does to every session
            for pid in pooled:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.2)
        sessions = db.make_session_factory(engine)
        with pytest.raises(DBAPIError) as failed:
            async with sessions() as session, session.begin():
                await session.execute(text("SELECT 1"))
        assert failed.value.connection_invalidated and is_transient(failed.value)
        # The disconnect invalidated the whole pool: the other two stale connections are not handed out.
        fresh = await backend_pids(engine, 3)
        assert fresh.isdisjoint(pooled)
    finally:
        await killer.dispose()
        await engine.dispose()
