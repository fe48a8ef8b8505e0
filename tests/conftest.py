"""Shared fixtures: migrated databases per service, the in-memory bus, the real stack."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from services.common.settings import SERVICES
from services.migrate import upgrade
from services.serve import load_spec
from tests.support.bus import InMemoryBus, ServiceUnderTest


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each service's SQLite database migrated once by Alembic; tests get copies."""
    folder = tmp_path_factory.mktemp("templates")
    templates = {}
    for service in SERVICES:
        path = folder / f"{service}.db"
        upgrade(service, f"sqlite+aiosqlite:///{path}")
        templates[service] = path
    return templates


@pytest.fixture
async def bus(sqlite_templates: dict[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    services = []
    for service in SERVICES:
        path = tmp_path / f"{service}.db"
        shutil.copy(sqlite_templates[service], path)
        services.append(ServiceUnderTest(load_spec(service), f"sqlite+aiosqlite:///{path}"))
    for s in services:
        await s.start()
    yield InMemoryBus(services)
    for s in services:
        await s.stop()


def _databases() -> list[str]:
    """Which databases the stack tests run the services on (TEST_DATABASES, comma-separated)."""
    return [d.strip() for d in os.environ.get("TEST_DATABASES", "postgres,sqlite").split(",") if d.strip()]


@pytest.fixture(scope="session")
def infra():  # type: ignore[no-untyped-def]
    from tests.support.stack import start_infra

    started = start_infra(need_postgres="postgres" in _databases())
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = started.bootstrap_servers
    yield started
    started.close()


@pytest.fixture(scope="session")
def work_dir() -> Path:
    path = Path(".run/test").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module", params=_databases())
def stack(request: pytest.FixtureRequest, infra, work_dir: Path):  # type: ignore[no-untyped-def]
    """The three services running as processes on the real broker and the chosen database."""
    from tests.support.stack import running_stack

    with running_stack(infra, request.param, work_dir) as running:
        yield running
