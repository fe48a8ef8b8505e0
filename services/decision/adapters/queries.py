"""Read side of the decision database for the case API and the console (no writes here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.decision.adapters.orm import approval_audit, case, case_event, report


@dataclass(frozen=True)
class CaseFilter:
    status: str | None = None
    source: str | None = None
    reason_code: str | None = None
    service_order_id: str | None = None
    created_before: datetime | None = None  # "older than": the age filter, resolved by the caller's clock
    created_after: datetime | None = None
    limit: int = 50
    offset: int = 0


def _where(query: Any, f: CaseFilter) -> Any:
    for column, value in (
        (case.c.status, f.status),
        (case.c.source, f.source),
        (case.c.reason_code, f.reason_code),
        (case.c.service_order_id, f.service_order_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if f.created_before is not None:
        query = query.where(case.c.created_at <= f.created_before)
    if f.created_after is not None:
        query = query.where(case.c.created_at >= f.created_after)
    return query


async def list_cases(session: AsyncSession, f: CaseFilter) -> tuple[int, list[dict[str, Any]]]:
    total = await session.scalar(_where(select(func.count()).select_from(case), f))
    query = _where(select(case), f).order_by(case.c.id.desc()).limit(f.limit).offset(f.offset)
    rows = (await session.execute(query)).all()
    return int(total or 0), [case_view(r) for r in rows]


async def get_case(session: AsyncSession, case_id: str) -> dict[str, Any] | None:
    row = (await session.execute(select(case).where(case.c.case_id == case_id))).first()
    return case_view(row) if row is not None else None


async def timeline(session: AsyncSession, case_id: str) -> list[dict[str, Any]]:
    query = select(case_event).where(case_event.c.case_id == case_id).order_by(case_event.c.id)
    return [
        {
            "direction": r.direction,
            "topic": r.topic,
            "event_id": r.event_id,
            "occurred_at": utc(r.occurred_at),
            "recorded_at": utc(r.recorded_at),
            "summary": json.loads(r.summary),
        }
        for r in (await session.execute(query)).all()
    ]


async def approval_queue(session: AsyncSession, limit: int = 200) -> list[dict[str, Any]]:
    """Customer requests waiting for a supervisor or manager, oldest first, with the original report."""
    query = (
        select(
            case,
            report.c.service_job_id.label("report_job_id"),
            report.c.failure_found,
            report.c.component,
            report.c.cause,
            report.c.covered,
        )
        .join(report, report.c.service_job_id == case.c.original_job_id, isouter=True)
        .where(case.c.status == "awaiting_approval")
        .order_by(case.c.id)
        .limit(limit)
    )
    out = []
    for r in (await session.execute(query)).all():
        item = case_view(r)
        item["diagnosis"] = (
            {"failure_found": r.failure_found, "component": r.component, "cause": r.cause, "covered": r.covered}
            if r.report_job_id is not None
            else None
        )
        out.append(item)
    return out


async def recent_decisions(session: AsyncSession, limit: int = 20) -> list[dict[str, Any]]:
    query = (
        select(case)
        .where(case.c.status.not_in(("awaiting_report", "awaiting_approval")))
        .order_by(case.c.updated_at.desc(), case.c.id.desc())
        .limit(limit)
    )
    return [case_view(r) for r in (await session.execute(query)).all()]


async def case_counts(session: AsyncSession) -> dict[str, int]:
    query = select(case.c.status, func.count()).group_by(case.c.status)
    return {status: int(n) for status, n in (await session.execute(query)).all()}


async def audit_for(session: AsyncSession, case_id: str) -> list[dict[str, Any]]:
    query = select(approval_audit).where(approval_audit.c.case_id == case_id).order_by(approval_audit.c.id)
    return [{**r._mapping, "at": utc(r.at)} for r in (await session.execute(query)).all()]


def case_view(row: Any) -> dict[str, Any]:
    request = json.loads(row.request)
    return {
        "case_id": row.case_id,
        "service_order_id": row.service_order_id,
        "original_job_id": row.original_job_id,
        "source": row.source,
        "reason_code": row.reason_code,
        "reason_detail": request.get("reason_detail"),
        "status": row.status,
        "soft_no_delivered": request.get("soft_no_delivered"),
        "requested_by": request.get("requested_by"),
        "denial_code": row.denial_code,
        "decided_by": {"id": row.decided_by_id, "role": row.decided_by_role} if row.decided_by_id else None,
        "rules": json.loads(row.rules) if row.rules else [],
        "policy_version": row.policy_version,
        "second_job_id": row.second_job_id,
        "second_provider_id": row.second_provider_id,
        "outcome": row.outcome,
        "created_at": utc(row.created_at),
        "updated_at": utc(row.updated_at),
    }


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored in UTC); the API always answers with an offset."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
