"""Fault-test fixtures: one PostgreSQL stack for the package, back to one ready instance per service after each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import SERVICES
from tests.conftest import _databases
from tests.faults.fleet import SHUTDOWN_GRACE_S, Fleet


@pytest.fixture(scope="package")
def pg_stack(infra, work_dir: Path):  # type: ignore[no-untyped-def]
    if "postgres" not in _databases():
        pytest.skip("TEST_DATABASES does not include postgres")
    from tests.support.stack import running_stack

    with pytest.MonkeyPatch.context() as env:  # the services copy the environment when they are set up
        for service in SERVICES:
            env.setenv(f"{service.upper()}_SHUTDOWN_GRACE_S", str(SHUTDOWN_GRACE_S))
        with running_stack(infra, "postgres", work_dir) as stack:
            yield stack


@pytest.fixture
async def fleet(pg_stack):  # type: ignore[no-untyped-def]
    fleet = Fleet(pg_stack)
    yield fleet
    await fleet.restore()
