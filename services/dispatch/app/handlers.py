"""Use cases of the dispatch service: keep the provider directory, turn each grant into a job."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import v1
from services.common.consumer import NotYet
from services.common.ids import derive
from services.common.outbox import Outgoing
from services.dispatch.adapters.repository import DispatchRepository
from services.dispatch.domain.choice import Assignment, JobRequest, choose


class DirectoryCheck(NotYet):
    """No provider is eligible: first make sure dispatch has read the whole provider directory."""


async def on_provider_updated(session: Any, ev: v1.ServiceProviderUpdated) -> Sequence[Outgoing]:
    await DispatchRepository(session).upsert_provider(ev)
    return []


@dataclass(frozen=True)
class DispatchHandlers:
    # True when dispatch has applied every provider update the directory topic holds now.
    directory_current: Callable[[], Awaitable[bool]]
    # Grants whose "no provider" was checked against a whole directory since they were last tried.
    confirmed: set[str] = field(default_factory=set)

    async def on_granted(self, session: Any, ev: v1.SecondOpinionGranted) -> Sequence[Outgoing]:
        repo = DispatchRepository(session)
        if await repo.assignment_exists(ev.case_id):
            return []  # one job (or one unassigned) per grant, even if the grant is replayed
        # Taken once per try, whatever it ends in, so the set holds only grants being waited on.
        directory_read = ev.case_id in self.confirmed
        self.confirmed.discard(ev.case_id)
        chosen = choose(await repo.providers_serving(ev.property_zip), _job_request(ev))
        if chosen is None:
            # The directory and the grants are read by consumers of their own, so a grant can
            # overtake a provider update published before it (after a restart, during a directory
            # reload). "No provider" is final for the customer: say it only from a whole directory.
            # The broker is asked outside this transaction (NotYet.ready), which holds locks.
            if not directory_read:
                message = "no eligible provider; first waiting until the provider directory is read to its end"
                raise DirectoryCheck(message, ready=functools.partial(self._directory_read, ev.case_id))
            await repo.add_assignment(ev.case_id, ev.service_order_id, None, None)
            return [_unassigned(ev)]
        job_id = "SOJ-" + derive("second-opinion-job", ev.case_id)
        await repo.add_assignment(ev.case_id, ev.service_order_id, job_id, chosen)
        return [_job_created(ev, job_id, chosen), _notification(ev)]

    async def _directory_read(self, case_id: str) -> None:
        pause = 0.05
        while not await self.directory_current():
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
        self.confirmed.add(case_id)


def _job_request(ev: v1.SecondOpinionGranted) -> JobRequest:
    return JobRequest(
        trade=ev.trade,
        property_zip=ev.property_zip,
        original_provider_id=ev.original_provider_id,
        original_technician_id=ev.original_technician_id,
        prefer_same_company_different_technician=ev.prefer_same_company_different_technician,
    )


def _envelope(ev: v1.SecondOpinionGranted, topic: str) -> dict[str, Any]:
    return {
        "event_id": derive(ev.case_id, topic),
        "occurred_at": datetime.now(UTC),
        "service_order_id": ev.service_order_id,
        "case_id": ev.case_id,
    }


def _job_created(ev: v1.SecondOpinionGranted, job_id: str, chosen: Assignment) -> Outgoing:
    topic = v1.SERVICE_JOB_CREATED
    event = v1.ServiceJobCreated(
        **_envelope(ev, topic),
        job_id=job_id,
        provider_id=chosen.provider_id,
        technician_id=chosen.technician_id,
        network=chosen.network,
    )
    return Outgoing(topic, ev.service_order_id, event)


def _notification(ev: v1.SecondOpinionGranted) -> Outgoing:
    topic = v1.CUSTOMER_NOTIFICATION_REQUESTED
    event = v1.CustomerNotificationRequested(
        **_envelope(ev, topic),
        customer_id=ev.customer_id,
        template="second_opinion_scheduled",
        reason_code=ev.reason_code,
        disclosures=ev.customer_disclosures,
    )
    return Outgoing(topic, ev.service_order_id, event)


def _unassigned(ev: v1.SecondOpinionGranted) -> Outgoing:
    topic = v1.DISPATCH_UNASSIGNED
    event = v1.DispatchUnassigned(**_envelope(ev, topic), reason="no_eligible_provider")
    return Outgoing(topic, ev.service_order_id, event)
