"""A supervisor's or manager's approval from the console or the case API.

It does not decide: it publishes `second_opinion.approval_recorded`, the same event a CRM sends,
through this service's outbox, and the decision handler applies it like any other. The audit row
and the outbox row commit together; a refused attempt is audited too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import v1
from services.common.auth import Principal
from services.common.ids import derive
from services.common.outbox import Outgoing, stage
from services.common.pan import contains_card_number
from services.decision.adapters.orm import approval_audit, case

Decision = Literal["approve", "deny"]


class BadNote(ValueError):
    pass


@dataclass(frozen=True)
class Outcome:
    """What became of the attempt; the caller commits (the audit row) and maps it to a response."""

    kind: Literal["recorded", "duplicate", "not_found", "forbidden", "conflict"]
    message: str
    event_id: str | None = None


async def record(
    session: AsyncSession,
    outbox: Table,
    who: Principal,
    case_id: str,
    decision: Decision,
    note: str | None,
    now: datetime,
) -> Outcome:
    """Audit the attempt and, when allowed, stage the approval event, in the caller's transaction."""
    if note is not None and contains_card_number(note.encode()):
        raise BadNote("the note contains a card number; remove it")  # nothing is written, not even the audit
    row = (await session.execute(select(case).where(case.c.case_id == case_id))).first()
    if row is None:
        return Outcome("not_found", f"no case {case_id}")
    if not who.may_approve:
        await _audit(session, case_id, who, decision, note, "forbidden", None, now)
        return Outcome("forbidden", f"role {who.role!r} may not approve or deny; supervisor or manager only")
    if row.status != "awaiting_approval":
        await _audit(session, case_id, who, decision, note, "conflict", None, now)
        return Outcome("conflict", f"case is {row.status}, not awaiting_approval")
    event = v1.ApprovalRecorded(
        # One user's decision on one case is one fact: a double submit yields the same event.
        event_id=derive("console-approval", case_id, who.user_id, decision),
        occurred_at=now,
        service_order_id=row.service_order_id,
        service_job_id=row.original_job_id,
        decision=decision,
        approver=v1.Actor(id=who.user_id, role=who.role),
        note=note or None,
        case_id=case_id,
    )
    if not await stage(session, outbox, Outgoing(v1.APPROVAL_RECORDED, row.service_order_id, event)):
        await _audit(session, case_id, who, decision, note, "duplicate", event.event_id, now)
        return Outcome("duplicate", "this decision was already recorded", event.event_id)
    await _audit(session, case_id, who, decision, note, "recorded", event.event_id, now)
    return Outcome("recorded", f"{decision} recorded; the decision service applies it", event.event_id)


async def _audit(session: AsyncSession, case_id: str, who: Principal, decision: str, note: Any, outcome: str,
                 event_id: str | None, now: datetime) -> None:  # fmt: skip
    await session.execute(
        approval_audit.insert().values(
            case_id=case_id,
            user_id=who.user_id,
            role=who.role,
            decision=decision,
            note=note,
            outcome=outcome,
            event_id=event_id,
            at=now,
        )
    )
