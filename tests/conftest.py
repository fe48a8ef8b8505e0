"""Shared fixtures: migrated databases per service, the in-memory bus, the real stack."""

from __future__ import annotations

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
