"""Engines and sessions for PostgreSQL (asyncpg) and the embedded SQLite default (aiosqlite)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.common.sql import dialect_name


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str) -> AsyncEngine:
    if is_sqlite(url):
        return _sqlite_engine(url)
    # No pool_pre_ping: it cost every checkout a round trip (and a rollback). A pooled connection the
    # server closed (a restart) fails its first statement instead; SQLAlchemy sees the closed asyncpg
    # connection as a disconnect (connection_invalidated), drops the whole pool's connections, and
    # the consumer and the relay retry that error like any transient one.
    return create_async_engine(url, pool_size=10, max_overflow=5, connect_args=_pg_args(url))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _pg_args(url: str) -> dict[str, object]:
    """asyncpg tries TLS first ("prefer"); on loopback that only costs CPU on every statement.

    A URL that says `ssl=` (or `sslmode=`) keeps its own choice; any other host keeps the default.
    """
    parsed = make_url(url)
    if parsed.host in LOOPBACK and not {"ssl", "sslmode"} & set(parsed.query):
        return {"ssl": False}
    return {}


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Take over transaction control from pysqlite so that every transaction starts
        # with BEGIN IMMEDIATE: the write lock is taken up front, which serializes
        # handlers across subscribers the way a per-order lock does on PostgreSQL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# Orders whose lock the current transaction already holds (set by the consumer runtime for a batch,
# which locks all of its orders up front): taking them again would be a round trip for nothing.
_HELD: ContextVar[frozenset[str]] = ContextVar("held_order_locks", default=frozenset())


@contextlib.contextmanager
def orders_held(service_order_ids: Iterable[str]) -> Iterator[None]:
    """Inside the block, lock_order(s) skip these orders: the caller's transaction holds their locks."""
    token = _HELD.set(_HELD.get() | frozenset(service_order_ids))
    try:
        yield
    finally:
        _HELD.reset(token)


async def lock_order(session: AsyncSession, service_order_id: str) -> None:
    """Serialize work on one service order inside the current transaction.

    PostgreSQL: a transaction-scoped advisory lock on the order. SQLite: BEGIN IMMEDIATE
    already holds the database write lock for the whole transaction.
    """
    if service_order_id in _HELD.get():
        return
    if dialect_name(session) == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": service_order_id},
        )


async def lock_orders(session: AsyncSession, service_order_ids: list[str]) -> None:
    """Take the per-order locks of several orders, in the given (sorted) order; see lock_order."""
    held = _HELD.get()
    service_order_ids = [o for o in service_order_ids if o not in held]
    if dialect_name(session) == "postgresql" and service_order_ids:
        await session.execute(
            text(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                "FROM (SELECT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS sorted"
            ),
            {"keys": service_order_ids},
        )


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
