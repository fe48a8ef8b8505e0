"""A request and its report applied at the same moment never leave the request waiting (DESIGN §2).

The two handlers run truly concurrently on separate connections, many times, on PostgreSQL
(advisory lock per order) and on SQLite (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.decision.adapters.orm import case, outbox
from services.migrate import upgrade
from services.ops import postgres
from services.serve import load_spec
from tests.support.bus import FakeRecord, ServiceUnderTest
from tests.support.events import report, request

pytestmark = pytest.mark.integration
ROUNDS = 40


@pytest.fixture(params=["postgres", "sqlite"])
async def decision(request: pytest.FixtureRequest, infra, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "postgres":
        name = f"so_test_serialization{os.environ.get('TEST_STACK_ID', '')}_decision"
        postgres.ensure_role_and_databases([])
        postgres.recreate_database(name)
        url = f"{infra.postgres_url}/{name}"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'decision.db'}"
    await asyncio.to_thread(upgrade, "decision", url)
    service = ServiceUnderTest(load_spec("decision"), url)
    await service.start()
    yield service
    await service.stop()


def record(topic: str, value: dict, offset: int) -> FakeRecord:  # type: ignore[type-arg]
    return FakeRecord(topic, 0, offset, 0, value["service_order_id"].encode(), json.dumps(value).encode())


async def test_request_and_report_at_the_same_moment_always_meet(decision: ServiceUnderTest) -> None:
    for i in range(ROUNDS):
        order, job = f"SO-RACE-{i}", f"JOB-RACE-{i}"
        await asyncio.gather(
            decision.consumer.process(record("second_opinion.requested", request(order, job, f"R-{i}"), 2 * i)),
            decision.consumer.process(record("service_report.received", report(order, job), 2 * i + 1)),
        )
    async with decision.sessions() as session:
        waiting = await session.scalar(select(func.count()).select_from(case).where(case.c.status == "awaiting_report"))
        granted = await session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.topic == "second_opinion.granted")
        )
    assert waiting == 0
    assert granted == ROUNDS
