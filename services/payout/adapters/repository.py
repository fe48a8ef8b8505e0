"""Queries of the payout service."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.sql import insert_ignore
from services.payout.adapters.orm import claim, customer_charge, payout


class PayoutRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def complete_claim(self, claim_id: str, job_id: str, case_id: str, order_id: str) -> None:
        now = datetime.now(UTC)
        await insert_ignore(
            self.session,
            claim,
            {
                "claim_id": claim_id,
                "job_id": job_id,
                "case_id": case_id,
                "service_order_id": order_id,
                "status": "completed",
                "opened_at": now,
                "completed_at": now,
            },
        )

    async def add_payout(self, **row: object) -> bool:
        """False when this (job, fee type) was already paid: the unique key refuses a second row."""
        return await insert_ignore(self.session, payout, {**row, "issued_at": datetime.now(UTC)})

    async def add_charge(self, **row: object) -> bool:
        return await insert_ignore(self.session, customer_charge, {**row, "assessed_at": datetime.now(UTC)})
