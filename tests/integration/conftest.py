"""Integration tests run on the real broker (and database) the project starts."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _real_infrastructure(infra):  # type: ignore[no-untyped-def]
    """Starts the broker (and PostgreSQL) once and points KAFKA_BOOTSTRAP_SERVERS at it."""
    return infra
