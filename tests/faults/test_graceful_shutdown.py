"""SIGTERM drains in-flight work within the grace period; work still unfinished then is not committed.

The decision service runs alone with a short grace period. The test holds the per-order
PostgreSQL advisory lock a decision handler takes, so a request's handling is visibly in
flight (its backend waits on the lock), then sends SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiokafka.structs import RecordMetadata, TopicPartition

from schemas import v1
from tests.faults.fleet import SHUTDOWN_GRACE_S, Fleet
from tests.faults.probes import Database, committed, eventually, publish
from tests.support.events import report, request
from tests.support.kafka_client import Tap
from tests.support.stack import RunningService

pytestmark = pytest.mark.integration
GRACE_S = SHUTDOWN_GRACE_S


@dataclass
class Decision:
    """The decision service under test, its database (as the test's own session) and its group."""

    service: RunningService
    db: Database
    bootstrap: str
    group: str
    log_mark: int = 0

    async def send(self, topic: str, value: dict) -> RecordMetadata:  # type: ignore[type-arg]
        return await publish(self.bootstrap, topic, value["service_order_id"], json.dumps(value).encode())

    async def committed_past(self, sent: RecordMetadata) -> bool:
        tp = TopicPartition(sent.topic, sent.partition)
        return await committed(self.bootstrap, self.group, tp) > sent.offset

    async def request_in_flight(self, order: str) -> tuple[RecordMetadata, str]:
        """A granted-to-be request whose handler is stuck on the order's lock (held by the test)."""
        job = f"JOB-{order}"
        rpt = report(order, job)
        await self.send(v1.SERVICE_REPORT_RECEIVED, rpt)
        await eventually(lambda: self.db.in_inbox(rpt["event_id"]), what="the report applied")
        await self.db.lock_order(order)
        event_id = f"evt-req-{order}"
        sent = await self.send(v1.SECOND_OPINION_REQUESTED, request(order, job, event_id))
        await eventually(self.db.waiting_on_advisory_lock, what="the request's handler waiting on the lock")
        return sent, event_id

    def sigterm(self) -> float:
        self.log_mark = self.service.log_file.stat().st_size
        os.kill(self.service.pid() or 0, signal.SIGTERM)
        return time.monotonic()

    async def exited(self, timeout: float) -> None:
        await asyncio.to_thread(self.service.process.wait, timeout)

    def shutdown_log(self) -> str:
        with self.service.log_file.open("rb") as f:
            f.seek(self.log_mark)
            return f.read().decode(errors="replace")


@pytest.fixture
async def decision(fleet: Fleet) -> AsyncIterator[Decision]:
    """The stack's decision service (the package runs it with a short grace period)."""
    service = fleet.stack.services["decision"]
    db = await Database.connect(service.env["DECISION_DATABASE_URL"])
    try:
        yield Decision(service, db, fleet.stack.bootstrap_servers, f"{fleet.stack.group_prefix}-decision")
    finally:
        await db.close()  # the fleet starts the service again if a test left it stopped


def _start_ready(service: RunningService) -> None:
    service.start()
    service.wait_ready()


async def test_sigterm_lets_in_flight_work_finish_and_commit(decision: Decision) -> None:
    order = f"SO-drain-{secrets.token_hex(4)}"
    async with Tap(decision.bootstrap, [v1.SECOND_OPINION_GRANTED]) as tap:
        sent, event_id = await decision.request_in_flight(order)
        stopped_at = decision.sigterm()
        await asyncio.sleep(1.0)
        assert decision.service.process.poll() is None, "exited without waiting for the in-flight record"
        await decision.db.unlock_order(order)
        await decision.exited(timeout=GRACE_S + 10)
        assert time.monotonic() - stopped_at < GRACE_S + 5
        assert await decision.db.in_inbox(event_id)
        assert await decision.committed_past(sent)
        mine = lambda v: v["service_order_id"] == order  # noqa: E731
        assert await tap.wait_for(lambda: tap.distinct(v1.SECOND_OPINION_GRANTED, mine), timeout=10)
    assert "ran out" not in decision.shutdown_log()


async def test_work_unfinished_after_the_grace_period_is_not_committed_and_the_next_start_finishes_it(
    decision: Decision,
) -> None:
    order = f"SO-grace-{secrets.token_hex(4)}"
    async with Tap(decision.bootstrap, [v1.SECOND_OPINION_GRANTED]) as tap:
        sent, event_id = await decision.request_in_flight(order)
        stopped_at = decision.sigterm()
        await decision.exited(timeout=GRACE_S + 20)
        assert time.monotonic() - stopped_at < GRACE_S + 5, "shutdown did not keep to the grace period"
        assert f"shutdown grace of {GRACE_S}s ran out with 1 record(s) in flight" in decision.shutdown_log()
        assert not await decision.db.in_inbox(event_id)
        assert not await decision.committed_past(sent)
        await decision.db.unlock_order(order)
        await asyncio.to_thread(_start_ready, decision.service)
        await eventually(lambda: decision.db.in_inbox(event_id), what="the request handled after the restart")
        await eventually(lambda: decision.committed_past(sent), what="its offset committed after the restart")
        mine = lambda v: v["service_order_id"] == order  # noqa: E731
        assert await tap.wait_for(lambda: tap.distinct(v1.SECOND_OPINION_GRANTED, mine), timeout=10)
        await asyncio.sleep(2)
        assert len(tap.distinct(v1.SECOND_OPINION_GRANTED, mine)) == 1
