"""Orders of one test run (unique ids; the events that put a case where a test wants it), and a bounded wait."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from schemas import v1
from services.decision.app.mapping import case_id_for
from tests.support.events import provider, report, request
from tests.support.kafka_client import Tap
from tests.support.stack import TestStack

REASON_DETAIL = "the second technician disagrees"
SETTLE_S = 30  # every wait on the stack is bounded by this


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = SETTLE_S, every: float = 0.25) -> bool:
    """Awaits `check` until it is true or `timeout` seconds passed; returns its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()


class Order:
    """One service order of this run: unique ids, its directory entry, report and customer request."""

    def __init__(self, tag: str) -> None:
        run = f"{tag}-{secrets.token_hex(4)}"
        self.order, self.job, self.zip = f"SO-e2e-{run}", f"SO-e2e-{run}-J1", f"Z-e2e-{run}"
        self.second_provider = f"P-e2e-{run}"
        self.request_id = f"evt-req-e2e-{run}"
        self.case_id = case_id_for(self.request_id)

    def mine(self, value: dict[str, Any]) -> bool:
        return value.get("service_order_id") == self.order

    async def publish_directory_entry(self, tap: Tap, stack: TestStack) -> None:
        """The order's second provider, applied by dispatch before anything is granted (see TestStack.applied)."""
        entry = provider(self.second_provider, self.zip)
        await stack.applied(
            "dispatch",
            v1.SERVICE_PROVIDER_UPDATED,
            await tap.publish(v1.SERVICE_PROVIDER_UPDATED, self.second_provider, entry),
        )

    async def publish_pending_customer_request(self, tap: Tap, stack: TestStack) -> None:
        await self.publish_directory_entry(tap, stack)
        await tap.publish(
            v1.SERVICE_REPORT_RECEIVED, self.order, report(self.order, self.job, provider_id="P-orig", zip_=self.zip)
        )
        customer = request(
            self.order,
            self.job,
            self.request_id,
            source="customer",
            soft_no_delivered=True,
            reason_detail=REASON_DETAIL,
        )
        await tap.publish(v1.SECOND_OPINION_REQUESTED, self.order, customer)

    async def publish_denied_request(self, tap: Tap) -> None:
        """A report and an authorizations request the policy denies at once (an invalid reason)."""
        await tap.publish(v1.SERVICE_REPORT_RECEIVED, self.order, report(self.order, self.job, zip_=self.zip))
        denied = request(self.order, self.job, self.request_id, reason="high_pricing")
        await tap.publish(v1.SECOND_OPINION_REQUESTED, self.order, denied)

    async def publish_granted_request(self, tap: Tap, stack: TestStack) -> None:
        """A directory entry, a report and an authorizations request the policy grants (then dispatched)."""
        await self.publish_directory_entry(tap, stack)
        await tap.publish(v1.SERVICE_REPORT_RECEIVED, self.order, report(self.order, self.job, zip_=self.zip))
        await tap.publish(v1.SECOND_OPINION_REQUESTED, self.order, request(self.order, self.job, self.request_id))
