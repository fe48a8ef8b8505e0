"""The Alembic branches build exactly the tables the code declares (no drift between the two)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from services.common.settings import SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_migrated_schema_matches_the_declared_tables(service: str, sqlite_templates: dict[str, Path]) -> None:
    metadata = importlib.import_module(f"services.{service}.adapters.orm").metadata
    engine = create_engine(f"sqlite:///{sqlite_templates[service]}")
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diff == [], f"{service}: migrations and tables differ: {diff}"
