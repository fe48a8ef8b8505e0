"""Alembic environment shared by the three services; each service is a branch with its own database."""

from __future__ import annotations

import asyncio
import importlib

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.common.db import make_engine

config = context.config
SERVICE = config.attributes.get("service") or config.get_main_option("service")
target_metadata = importlib.import_module(f"services.{SERVICE}.adapters.orm").metadata
# Replicas starting together against one database migrate once: the first takes this lock.
MIGRATION_LOCK_KEY = 7_246_013


def _configure(connection: Connection | None = None, **kw: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTER
        compare_type=True,
        **kw,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
