"""Queries of the decision service; the only module that speaks SQL to its tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.v1 import ApprovalRecorded, ServiceReportReceived
from services.common.money import to_cents
from services.common.sql import insert_ignore, insert_ignore_many
from services.decision.adapters.orm import approval, case, case_event, report

OPEN_STATES = ("awaiting_approval", "granted", "dispatched", "unassigned")
# Columns a new case may leave unset; every row of one multi-row insert names all of them.
_DECISION_COLUMNS = ("denial_code", "decided_by_id", "decided_by_role", "rules", "policy_version")


# The request path's reads, built once (statements made per call cost more than running them).
_REPORTS_OF = select(report).where(report.c.service_job_id.in_(bindparam("jobs", expanding=True)))
_CASES_OF_ORDERS = (
    select(case.c.case_id, case.c.service_order_id, case.c.status)
    .where(case.c.service_order_id.in_(bindparam("orders", expanding=True)))
    .order_by(case.c.id)
)
_UNUSED_APPROVALS_OF = (
    select(approval)
    .where(approval.c.service_job_id.in_(bindparam("jobs", expanding=True)))
    .where(approval.c.used_by_case_id.is_(None))
    .order_by(approval.c.id)
)
_INSERT_CASES = case.insert()


class DecisionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_report(self, ev: ServiceReportReceived) -> bool:
        """Keep the first report of a job; a later one for the same job changes nothing."""
        return await insert_ignore(self.session, report, _report_row(ev))

    async def get_report(self, service_job_id: str) -> Row[Any] | None:
        query = select(report).where(report.c.service_job_id == service_job_id)
        return (await self.session.execute(query)).first()

    async def reports_of(self, job_ids: Sequence[str]) -> dict[str, Row[Any]]:
        """The stored reports of these jobs, by job id."""
        rows = (await self.session.execute(_REPORTS_OF, {"jobs": sorted(set(job_ids))})).all()
        return {row.service_job_id: row for row in rows}

    async def cases_of_orders(self, order_ids: Sequence[str]) -> Sequence[Row[Any]]:
        """Every case of these orders (id, status), oldest first."""
        return (await self.session.execute(_CASES_OF_ORDERS, {"orders": sorted(set(order_ids))})).all()

    async def add_cases(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new cases, in the given (arrival) order, each with the status it was decided to."""
        if not rows:
            return
        filled = []
        for row in rows:
            full = {column: None for column in _DECISION_COLUMNS} | row
            if full["rules"] is not None:
                full["rules"] = json.dumps(list(full["rules"]))
            filled.append(full)
        await self.session.execute(_INSERT_CASES, filled)

    async def get_case(self, case_id: str) -> Row[Any] | None:
        return (await self.session.execute(select(case).where(case.c.case_id == case_id))).first()

    async def cases_in(self, order_id: str, job_id: str, status: str) -> Sequence[Row[Any]]:
        query = (
            select(case)
            .where(case.c.service_order_id == order_id, case.c.original_job_id == job_id)
            .where(case.c.status == status)
            .order_by(case.c.id)
        )
        return (await self.session.execute(query)).all()

    async def open_case_id(self, order_id: str, *, besides: str) -> str | None:
        query = (
            select(case.c.case_id)
            .where(case.c.service_order_id == order_id, case.c.status.in_(OPEN_STATES))
            .where(case.c.case_id != besides)
            .order_by(case.c.id)
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def case_for_second_job(self, order_id: str, job_id: str) -> Row[Any] | None:
        query = select(case).where(case.c.service_order_id == order_id, case.c.second_job_id == job_id)
        return (await self.session.execute(query)).first()

    async def update_case(self, case_id: str, **values: Any) -> None:
        if "rules" in values:
            values["rules"] = json.dumps(list(values["rules"]))
        values["updated_at"] = datetime.now(UTC)
        await self.session.execute(update(case).where(case.c.case_id == case_id).values(**values))

    async def add_approval(self, ev: ApprovalRecorded) -> bool:
        return await insert_ignore(self.session, approval, _approval_row(ev))

    async def unused_approvals(self, order_id: str, job_id: str, case_id: str) -> Sequence[Row[Any]]:
        """Approvals that may decide `case_id`: the job's unused ones given for no case or for this one."""
        query = (
            select(approval)
            .where(approval.c.service_order_id == order_id, approval.c.service_job_id == job_id)
            .where(approval.c.used_by_case_id.is_(None))
            .where((approval.c.case_id.is_(None)) | (approval.c.case_id == case_id))
            .order_by(approval.c.id)
        )
        return (await self.session.execute(query)).all()

    async def unused_approvals_of(self, job_ids: Sequence[str]) -> Sequence[Row[Any]]:
        """Unused approvals of these jobs, oldest first (the caller picks those that may decide each case)."""
        return (await self.session.execute(_UNUSED_APPROVALS_OF, {"jobs": sorted(set(job_ids))})).all()

    @staticmethod
    def event_row(
        case_id: str,
        direction: str,
        topic: str,
        event_id: str,
        occurred_at: datetime,
        summary: dict[str, Any],
        recorded_at: datetime | None = None,
    ) -> dict[str, Any]:
        """A timeline row: an event that came in for the case or went out for it."""
        return {
            "case_id": case_id,
            "direction": direction,
            "topic": topic,
            "event_id": event_id,
            "occurred_at": occurred_at,
            "recorded_at": recorded_at or datetime.now(UTC),
            "summary": json.dumps(summary, sort_keys=True, default=str),
        }

    async def record_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append timeline rows (see event_row) in one statement; rows already there are left as they are."""
        await insert_ignore_many(self.session, case_event, rows)

    async def use_approval(self, event_id: str, case_id: str) -> None:
        await self.session.execute(
            update(approval).where(approval.c.event_id == event_id).values(used_by_case_id=case_id)
        )


def _report_row(ev: ServiceReportReceived) -> dict[str, Any]:
    return {
        "service_job_id": ev.service_job_id,
        "service_order_id": ev.service_order_id,
        "event_id": ev.event_id,
        "provider_id": ev.provider_id,
        "technician_id": ev.technician_id,
        "customer_id": ev.customer_id,
        "trade": ev.trade,
        "property_zip": ev.property_zip,
        "failure_found": ev.diagnosis.failure_found,
        "component": ev.diagnosis.component,
        "cause": ev.diagnosis.cause,
        "covered": ev.diagnosis.covered,
        "service_call_fee_cents": to_cents(ev.charges.service_call_fee),
        "diagnosis_fee_cents": to_cents(ev.charges.diagnosis_fee),
        "currency": ev.charges.currency,
        "deductible_cents": to_cents(ev.deductible.amount),
        "deductible_paid_in_full": ev.deductible.paid_in_full,
        "occurred_at": ev.occurred_at,
    }


def _approval_row(ev: ApprovalRecorded) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "service_order_id": ev.service_order_id,
        "service_job_id": ev.service_job_id,
        "decision": ev.decision,
        "approver_id": ev.approver.id,
        "approver_role": ev.approver.role,
        "note": ev.note,
        "occurred_at": ev.occurred_at,
        "case_id": ev.case_id,
    }
