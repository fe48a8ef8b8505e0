"""The request-set checks of tests/service/test_request_sets.py, on PostgreSQL (multi-row
statements, RETURNING, the advisory locks of a run)."""

from __future__ import annotations

import asyncio

import pytest

from services.migrate import upgrade
from services.serve import load_spec
from tests.service.test_request_sets import (  # noqa: F401  (collected here with the fixture below)
    test_a_run_costs_the_same_statements_for_two_requests_or_forty,
    test_a_run_of_requests_writes_what_one_at_a_time_writes,
    test_claim_many_returns_only_new_event_ids_across_pages,
    test_each_event_of_a_run_continues_its_own_trace,
)
from tests.support.bus import ServiceUnderTest
from tests.support.stack import fresh_postgres_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def decisions(infra):  # type: ignore[no-untyped-def]
    """Two decision services on fresh PostgreSQL databases of their own."""
    made = []
    for name in ("one", "two"):
        url = fresh_postgres_url(infra, f"sets_{name}")
        await asyncio.to_thread(upgrade, "decision", url)
        svc = ServiceUnderTest(load_spec("decision"), url)
        await svc.start()
        made.append(svc)
    yield made
    for svc in made:
        await svc.stop()


async def test_a_batch_takes_its_orders_locks_once(decisions) -> None:  # type: ignore[no-untyped-def]
    """The runtime locks a batch's orders up front; the handlers' own lock calls then cost nothing."""
    from services.common.consumer import APPLIED
    from tests.service import request_sets as rs

    svc = decisions[0]
    reports, requests = rs.granted_requests("SO-L", 6)
    mixed = [reports[0], reports[1], requests[2], reports[3], requests[4], requests[5]]
    counter = rs.LockCounter(svc)
    try:
        assert await svc.consumer.process_batch(mixed) == [APPLIED] * 6
    finally:
        counter.close()
    assert counter.count == 1
    single = rs.LockCounter(svc)
    try:
        assert await svc.consumer.process(requests[0]) == APPLIED  # one event alone still takes its lock
    finally:
        single.close()
    assert single.count == 1
