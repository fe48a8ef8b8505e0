"""A grant that reaches dispatch before the provider directory ends as in the tidy order.

Dispatch is stopped while a large directory and a grant are published; when it starts, its
grant consumer and its directory consumer start together. Grants are held until the
directory has caught up, so the job goes to the best provider, not to `dispatch.unassigned`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from schemas import v1
from tests.support.events import provider
from tests.support.kafka_client import Tap

pytestmark = pytest.mark.integration
PROVIDERS = 300


def grant(order: str, zip_: str, run: str) -> dict:  # type: ignore[type-arg]
    return v1.SecondOpinionGranted(
        event_id=f"evt-grant-{run}",
        occurred_at=datetime.now(UTC),
        service_order_id=order,
        case_id=f"case-{run}",
        original_job_id=f"JOB-{run}",
        original_provider_id="P-orig",
        original_technician_id="T-orig",
        customer_id=f"C-{run}",
        trade="hvac",
        property_zip=zip_,
        source="authorizations",
        reason_code="conflicting_reports",
        decided_by=v1.Actor(id="policy", role="system"),
        policy_version="test",
        rules=[],
        diagnostic_charges="company",
        customer_disclosures=[],
        prefer_same_company_different_technician=False,
        original_charges=v1.Charges(service_call_fee="89.00", diagnosis_fee="45.00", currency="USD"),
    ).model_dump(mode="json")


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
