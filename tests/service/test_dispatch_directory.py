"""A grant that finds no eligible provider is answered only from a whole provider directory.

The directory and the grants are read by consumers of their own; "no provider" is final for the
customer, so dispatch says it only once its group has applied the directory topic to its end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

from services.common.backoff import Backoff
from services.common.consumer import APPLIED, EventConsumer, RouteContext
from services.dispatch.entrypoints.consumers import build_routes
from tests.service.test_flows import directory
from tests.support.bus import FakeRecord
from tests.support.events import grant, provider

GRANTED, DIRECTORY = "second_opinion.granted", "service_provider.updated"


def dispatch_with(bus, answers: list[bool], asked: list[str]) -> tuple[EventConsumer, object]:  # type: ignore[no-untyped-def]
    """Dispatch's consumer whose "directory caught up?" gives `answers` in turn, noting each topic asked."""
    dispatch = next(s for s in bus.services if s.spec.name == "dispatch")
    replies = iter(answers)

    async def caught_up(topic: str) -> bool:
        asked.append(topic)
        return next(replies)

    routes = build_routes(RouteContext(dispatch.metrics, caught_up))
    consumer = dataclasses.replace(
        dispatch.consumer, routes={r.topic: r for r in routes}, backoff=Backoff(base_s=0.001, cap_s=0.001)
    )
    return consumer, dispatch


def grant_record(order: str, zip_: str) -> FakeRecord:
    return FakeRecord(GRANTED, 0, 0, 0, order.encode(), json.dumps(grant(order, zip_, order)).encode())


async def test_no_provider_is_retried_until_the_directory_is_current_then_unassigned(bus) -> None:  # type: ignore[no-untyped-def]
    asked: list[str] = []
    consumer, dispatch = dispatch_with(bus, [False, False, True], asked)
    assert await consumer.process(grant_record("SO-N1", "Z-nobody")) == APPLIED
    assert asked == [DIRECTORY] * 3  # asked until it said yes, outside the grant's transaction
    waits = dispatch.metrics.retries.labels(GRANTED, "DirectoryCheck")._value.get()  # type: ignore[attr-defined]
    assert waits == 1
    [unassigned] = await dispatch.drain_outbox()  # the try that waited wrote nothing
    assert (unassigned.topic, unassigned.value["reason"]) == ("dispatch.unassigned", "no_eligible_provider")


async def test_a_grant_with_a_provider_never_asks_about_the_directory(bus) -> None:  # type: ignore[no-untyped-def]
    await directory(bus, zip_="Z1")
    await bus.settle()
    asked: list[str] = []
    consumer, dispatch = dispatch_with(bus, [], asked)
    assert await consumer.process(grant_record("SO-N2", "Z1")) == APPLIED
    assert asked == []
    assert [p.topic for p in await dispatch.drain_outbox()] == [
        "service_job.created",
        "customer_notification.requested",
    ]


async def test_a_batch_with_a_waiting_grant_applies_the_others(bus) -> None:  # type: ignore[no-untyped-def]
    await directory(bus, zip_="Z1")
    await bus.settle()
    asked: list[str] = []
    consumer, dispatch = dispatch_with(bus, [False, True], asked)
    batch = [grant_record("SO-N3", "Z-nobody"), dataclasses.replace(grant_record("SO-N4", "Z1"), offset=1)]
    assert await consumer.process_batch(batch) == [APPLIED, APPLIED]
    topics = sorted(p.topic for p in await dispatch.drain_outbox())
    assert topics == ["customer_notification.requested", "dispatch.unassigned", "service_job.created"]


async def test_the_wait_holds_no_lock_and_a_provider_applied_meanwhile_gets_the_job(bus) -> None:  # type: ignore[no-untyped-def]
    # On SQLite a transaction holds the database's write lock: had the grant's transaction stayed
    # open while the broker was asked, the directory's update below could not be applied.
    dispatch = next(s for s in bus.services if s.spec.name == "dispatch")
    entry = provider("P-LATE", "Z-late")
    late = FakeRecord(DIRECTORY, 0, 0, 0, b"P-LATE", json.dumps(entry).encode())

    async def caught_up(topic: str) -> bool:
        assert await asyncio.wait_for(dispatch.consumer.process(late), 5) == APPLIED
        return True

    routes = build_routes(RouteContext(dispatch.metrics, caught_up))
    consumer = dataclasses.replace(dispatch.consumer, routes={r.topic: r for r in routes})
    assert await asyncio.wait_for(consumer.process(grant_record("SO-N5", "Z-late")), 10) == APPLIED
    [job, _] = await dispatch.drain_outbox()
    assert (job.topic, job.value["provider_id"]) == ("service_job.created", "P-LATE")
