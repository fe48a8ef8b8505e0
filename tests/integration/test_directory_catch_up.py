"""A grant that reaches dispatch before the provider directory ends as in the tidy order.

Dispatch is stopped while a large directory and a grant are published; when it starts, its
grant consumer and its directory consumer start together. Grants are held until the
directory has caught up, so the job goes to the best provider, not to `dispatch.unassigned`.
While it runs, a grant that finds no provider waits while the directory is behind (a reload).
"""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest

from schemas import v1
from tests.outages.probes import metric
from tests.support.events import grant, provider
from tests.support.kafka_client import Tap

pytestmark = pytest.mark.integration
PROVIDERS = 300


async def test_grant_waits_for_the_directory_after_a_restart(stack) -> None:  # type: ignore[no-untyped-def]
    run = "d" + secrets.token_hex(4)
    zip_, order = f"Z-{run}", f"SO-{run}"
    dispatch = stack.services["dispatch"]
    dispatch.stop()
    async with Tap(stack.bootstrap_servers, [v1.SERVICE_JOB_CREATED, v1.DISPATCH_UNASSIGNED]) as tap:
        for i in range(PROVIDERS):
            pid = f"P{i:03d}-{run}"
            update = provider(pid, zip_, rating=round(3.0 + i / 1000, 3), event_id=f"evt-{pid}")
            await tap.publish(v1.SERVICE_PROVIDER_UPDATED, pid, update)
        await tap.publish(v1.SECOND_OPINION_GRANTED, order, grant(order, zip_, run))
        dispatch.start()
        dispatch.wait_ready()
        mine = lambda v: v["service_order_id"] == order  # noqa: E731
        assert await tap.wait_for(
            lambda: tap.values(v1.SERVICE_JOB_CREATED, mine) or tap.values(v1.DISPATCH_UNASSIGNED, mine)
        )
        assert tap.values(v1.DISPATCH_UNASSIGNED, mine) == []
        [job] = tap.values(v1.SERVICE_JOB_CREATED, mine)
        assert job["provider_id"] == f"P{PROVIDERS - 1:03d}-{run}"


RELOAD = 2000  # provider updates published at once, as a nightly directory load does
ATTEMPTS = 3  # whether the grant overtakes the reload is a race; each attempt reloads twice as many


async def test_a_grant_during_a_directory_reload_waits_for_its_provider(stack) -> None:  # type: ignore[no-untyped-def]
    """The grant is published after its provider, at the end of a large reload, and overtakes it.

    Its consumer is idle and reads it at once, while the directory's consumer is still applying
    the reload: it finds no provider, and since the directory is behind it waits (retries) rather
    than telling the customer nobody is available. Every attempt must end in the job; the grant
    must have been seen waiting in one of them, or the test proved nothing.
    """
    dispatch = stack.services["dispatch"]
    retries = "second_opinion_event_retries_total"
    waited = 0.0
    for attempt in range(ATTEMPTS):
        reload = RELOAD * 2**attempt
        waited_before = await metric(dispatch, retries, topic=v1.SECOND_OPINION_GRANTED, error="DirectoryCheck")
        await _reload_then_grant(stack, reload)
        waited = await metric(dispatch, retries, topic=v1.SECOND_OPINION_GRANTED, error="DirectoryCheck")
        if waited > waited_before:
            break
    assert waited > waited_before, f"the grant did not overtake a reload of up to {reload} providers"


async def _reload_then_grant(stack, reload: int) -> None:  # type: ignore[no-untyped-def]
    run = "r" + secrets.token_hex(4)
    zip_, order = f"Z-{run}", f"SO-{run}"
    async with Tap(stack.bootstrap_servers, [v1.SERVICE_JOB_CREATED, v1.DISPATCH_UNASSIGNED]) as tap:
        sent = []
        for i in range(reload):  # providers elsewhere; the order's own provider comes last
            pid = f"P{i:05d}-{run}"
            update = provider(pid, zip_ if i == reload - 1 else f"Z-{run}-{i % 50}", event_id=f"evt-{pid}")
            sent.append(
                await tap.producer.send(v1.SERVICE_PROVIDER_UPDATED, json.dumps(update).encode(), key=pid.encode())
            )
        await asyncio.gather(*sent)
        await tap.publish(v1.SECOND_OPINION_GRANTED, order, grant(order, zip_, run))
        mine = lambda v: v["service_order_id"] == order  # noqa: E731
        assert await tap.wait_for(
            lambda: tap.values(v1.SERVICE_JOB_CREATED, mine) or tap.values(v1.DISPATCH_UNASSIGNED, mine), 60
        )
        assert tap.values(v1.DISPATCH_UNASSIGNED, mine) == []
        [job] = tap.values(v1.SERVICE_JOB_CREATED, mine)
        assert job["provider_id"] == f"P{reload - 1:05d}-{run}"
