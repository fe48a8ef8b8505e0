"""Three replicas started at once with --migrate on an empty PostgreSQL database: one migration, all ready.

The test holds the migration lock (the advisory lock migrations/env.py takes) until all three
replicas wait on it, so they really do try to migrate at the same moment; then lets them go.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from schemas import v1
from services.decision.adapters.orm import metadata
from services.migrate import alembic_config
from services.ops import postgres, procs
from tests.conftest import _databases
from tests.faults.probes import dsn, eventually, skip_history
from tests.support.stack import PORT_BASE, ROOT, STACK_ID, _create_database_remote

pytestmark = pytest.mark.integration
REPLICAS = 3
PORTS = [PORT_BASE + 20 + i for i in range(REPLICAS)]  # clear of the stack (+0..2) and the fleet (+10..)
MIGRATION_LOCK_KEY = 7_246_013  # the key migrations/env.py locks
GROUP_PREFIX = f"second-opinion-test-migrate{STACK_ID}"


@pytest.fixture
def empty_database(infra) -> str:  # type: ignore[no-untyped-def]
    if "postgres" not in _databases():
        pytest.skip("TEST_DATABASES does not include postgres")
    name = f"so_test_migrate{STACK_ID}_decision"
    if os.environ.get("TEST_INFRA", "local") == "local":
        postgres.ensure_role_and_databases([])
        postgres.recreate_database(name)
    else:
        _create_database_remote(infra.postgres_url, name)
    return f"{infra.postgres_url}/{name}"


@pytest.fixture
async def migration_lock(empty_database: str) -> AsyncIterator[asyncpg.Connection]:
    """The test's session holding the migration lock; `release` lets the replicas in."""
    conn = await asyncpg.connect(dsn(empty_database))
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def replicas(migration_lock, empty_database: str, infra, work_dir: Path) -> AsyncIterator[list[subprocess.Popen]]:  # type: ignore[no-untyped-def,type-arg]
    """`second-opinion serve decision --migrate` three times at once; stopped afterwards."""
    await skip_history(infra.bootstrap_servers, f"{GROUP_PREFIX}-decision", list(v1.TOPICS))
    started = [_start(port, empty_database, infra.bootstrap_servers, work_dir) for port in PORTS]
    try:
        yield [process for process, _ in started]
    finally:
        for port, (_, pid_file) in zip(PORTS, started, strict=True):
            procs.stop_pid_file(pid_file, f"decision@{port}")


def _start(port: int, url: str, bootstrap: str, work_dir: Path) -> tuple[subprocess.Popen, Path]:  # type: ignore[type-arg]
    pid_file, log_file = work_dir / f"migrate{STACK_ID}-{port}.pid", work_dir / f"migrate{STACK_ID}-{port}.log"
    log_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_GROUP_PREFIX": GROUP_PREFIX,
        "DECISION_DATABASE_URL": url,
        "DECISION_HTTP_PORT": str(port),
    }
    cmd = [sys.executable, "-m", "services.cli", "serve", "decision", "--migrate"]
    return procs.start_detached(cmd, pid_file=pid_file, log_file=log_file, env=env, cwd=ROOT), pid_file


def _ready(port: int, process: subprocess.Popen) -> bool:  # type: ignore[type-arg]
    return procs.wait_http_ok(f"http://127.0.0.1:{port}/health/ready", 90, alive=lambda: process.poll() is None)


async def _waiting_on_lock(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1",
        MIGRATION_LOCK_KEY,
    )
    return waiting == REPLICAS


async def _schema(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
    versions = [r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
    tables = [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return versions, tables


async def test_replicas_starting_together_migrate_once_and_all_become_ready(
    replicas: list[subprocess.Popen],
    migration_lock: asyncpg.Connection,
    empty_database: str,  # type: ignore[type-arg]
) -> None:
    await eventually(lambda: _waiting_on_lock(migration_lock), 45, "all replicas waiting to migrate at once")
    await migration_lock.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    ready = await asyncio.gather(*(asyncio.to_thread(_ready, p, r) for p, r in zip(PORTS, replicas, strict=True)))
    assert all(ready), f"replicas ready: {dict(zip(PORTS, ready, strict=True))}"
    versions, tables = await _schema(migration_lock)
    head = ScriptDirectory.from_config(alembic_config("decision", empty_database)).get_revisions("decision@head")
    assert versions == [head[0].revision]
    assert sorted(tables) == sorted([*metadata.tables, "alembic_version"])
