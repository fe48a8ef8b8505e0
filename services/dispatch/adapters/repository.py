"""Queries of the dispatch service."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.v1 import ServiceProviderUpdated
from services.common.sql import insert_ignore
from services.dispatch.adapters.orm import assignment, provider
from services.dispatch.domain.choice import Assignment, Provider, Technician


class DispatchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert_provider(self, ev: ServiceProviderUpdated) -> None:
        """Keep the latest version of a provider; an older update arriving late changes nothing."""
        row = _provider_row(ev)
        if await insert_ignore(self.session, provider, row):
            return
        await self.session.execute(
            update(provider)
            .where(provider.c.provider_id == ev.provider_id, provider.c.occurred_at <= ev.occurred_at)
            .values(**row)
        )

    async def providers_serving(self, zip_: str) -> list[Provider]:
        """Active providers whose zips may hold `zip_`; the choice itself checks the zip exactly.

        `zips` is a JSON array in a text column: an element equal to `zip_` is stored as
        json.dumps(zip_), so the substring test never misses one (it may let a few others through).
        The directory is not read and parsed whole for every grant.
        """
        query = select(provider).where(
            provider.c.active.is_(True), provider.c.zips.contains(json.dumps(zip_), autoescape=True)
        )
        return [_provider(r) for r in (await self.session.execute(query)).all()]

    async def assignment_exists(self, case_id: str) -> bool:
        query = select(assignment.c.case_id).where(assignment.c.case_id == case_id)
        return (await self.session.execute(query)).first() is not None

    async def add_assignment(self, case_id: str, order_id: str, job_id: str | None, chosen: Assignment | None) -> None:
        await self.session.execute(
            assignment.insert().values(
                case_id=case_id,
                service_order_id=order_id,
                outcome="job_created" if chosen else "unassigned",
                job_id=job_id,
                provider_id=chosen.provider_id if chosen else None,
                technician_id=chosen.technician_id if chosen else None,
                network=chosen.network if chosen else None,
                created_at=datetime.now(UTC),
            )
        )


def _provider_row(ev: ServiceProviderUpdated) -> dict[str, Any]:
    return {
        "provider_id": ev.provider_id,
        "event_id": ev.event_id,
        "company_name": ev.company_name,
        "trades": json.dumps(ev.trades),
        "zips": json.dumps(ev.zips),
        "in_network": ev.in_network,
        "accepts_second_opinions": ev.accepts_second_opinions,
        "rating": ev.rating,
        "active": ev.active,
        "technicians": json.dumps([t.model_dump() for t in ev.technicians]),
        "occurred_at": ev.occurred_at,
    }


def _provider(row: Any) -> Provider:
    return Provider(
        provider_id=row.provider_id,
        trades=tuple(json.loads(row.trades)),
        zips=tuple(json.loads(row.zips)),
        in_network=row.in_network,
        accepts_second_opinions=row.accepts_second_opinions,
        rating=row.rating,
        active=row.active,
        technicians=tuple(Technician(**t) for t in json.loads(row.technicians)),
    )
