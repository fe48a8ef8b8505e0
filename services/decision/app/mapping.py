"""Translations between stored rows, wire events and the policy's plain facts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas import v1
from services.common.ids import derive
from services.common.money import to_str
from services.common.outbox import Outgoing
from services.decision.domain.model import (
    Actor,
    ApprovalFacts,
    Conclusion,
    Denied,
    Diagnosis,
    Granted,
    ReportFacts,
    RequestFacts,
)


def case_id_for(request_event_id: str) -> str:
    return derive("case", request_event_id)


def request_facts(req: v1.SecondOpinionRequested) -> RequestFacts:
    attempts = req.provider_attempts
    return RequestFacts(
        source=req.source,
        reason_code=req.reason_code,
        soft_no_delivered=req.soft_no_delivered,
        offered_by_agent=req.offered_by_agent,
        approved_by=Actor(req.approved_by.id, req.approved_by.role) if req.approved_by else None,
        manufacturer_hotline=attempts.manufacturer_hotline if attempts else None,
        second_technician_sent=attempts.second_technician_sent if attempts else None,
    )


def report_facts(row: Any) -> ReportFacts:
    return ReportFacts(deductible_paid_in_full=row.deductible_paid_in_full)


def diagnosis(row: Any) -> Diagnosis:
    return Diagnosis(row.failure_found, row.component, row.cause, row.covered)


def approval_facts(row: Any) -> ApprovalFacts:
    return ApprovalFacts(decision=row.decision, approver=Actor(row.approver_id, row.approver_role))


def _out(topic: str, case_id: str, order_id: str, model: type[v1.Event], **fields: Any) -> Outgoing:
    event = model(
        event_id=derive(case_id, topic),
        occurred_at=datetime.now(UTC),
        service_order_id=order_id,
        case_id=case_id,
        **fields,
    )
    return Outgoing(topic=topic, key=order_id, event=event)


def granted(case_id: str, req: v1.SecondOpinionRequested, rpt: Any, d: Granted, version: str) -> Outgoing:
    return _out(
        v1.SECOND_OPINION_GRANTED,
        case_id,
        req.service_order_id,
        v1.SecondOpinionGranted,
        original_job_id=req.service_job_id,
        original_provider_id=rpt.provider_id,
        original_technician_id=rpt.technician_id,
        customer_id=rpt.customer_id,
        trade=rpt.trade,
        property_zip=rpt.property_zip,
        source=req.source,
        reason_code=req.reason_code,
        decided_by=v1.Actor(id=d.decided_by.id, role=d.decided_by.role),
        policy_version=version,
        rules=list(d.rules),
        diagnostic_charges=d.diagnostic_charges,
        customer_disclosures=list(d.disclosures),
        prefer_same_company_different_technician=req.prefer_same_company_different_technician,
        original_charges=v1.Charges(
            service_call_fee=to_str(rpt.service_call_fee_cents),
            diagnosis_fee=to_str(rpt.diagnosis_fee_cents),
            currency=rpt.currency,
        ),
    )


def denied(case_id: str, req: v1.SecondOpinionRequested, d: Denied, version: str) -> Outgoing:
    return _out(
        v1.SECOND_OPINION_DENIED,
        case_id,
        req.service_order_id,
        v1.SecondOpinionDenied,
        original_job_id=req.service_job_id,
        source=req.source,
        reason_code=req.reason_code,
        denial_code=d.denial_code,
        guidance=list(d.guidance),
        policy_version=version,
        rules=list(d.rules),
        open_case_id=d.open_case_id,
    )


def feedback(case_id: str, order_id: str, provider_id: str, category: str) -> Outgoing:
    return _out(
        v1.PROVIDER_FEEDBACK_RECORDED,
        case_id,
        order_id,
        v1.ProviderFeedbackRecorded,
        provider_id=provider_id,
        category=category,
    )


def concluded(case: Any, second: Any, customer_id: str, c: Conclusion) -> Outgoing:
    visit = second.service_call_fee_cents + second.diagnosis_fee_cents
    return _out(
        v1.SECOND_OPINION_CONCLUDED,
        case.case_id,
        case.service_order_id,
        v1.SecondOpinionConcluded,
        outcome=c.outcome,
        covered=c.covered,
        second_visit_charges=c.second_visit_charges,
        second_job_id=case.second_job_id,
        second_provider_id=case.second_provider_id,
        customer_id=customer_id,
        visit_charges=v1.Amount(amount=to_str(visit), currency=second.currency),
    )


# What the case timeline keeps of an event: its fields without the envelope.
_ENVELOPE = {"event_id", "occurred_at", "service_order_id"}


def summary(event: v1.Event) -> dict[str, Any]:
    return {k: v for k, v in event.model_dump(mode="json").items() if k not in _ENVELOPE}


def report_summary(row: Any) -> dict[str, Any]:
    return {
        "service_job_id": row.service_job_id,
        "provider_id": row.provider_id,
        "technician_id": row.technician_id,
        "diagnosis": {
            "failure_found": row.failure_found,
            "component": row.component,
            "cause": row.cause,
            "covered": row.covered,
        },
        "charges": {
            "service_call_fee": to_str(row.service_call_fee_cents),
            "diagnosis_fee": to_str(row.diagnosis_fee_cents),
            "currency": row.currency,
        },
        "deductible": {"amount": to_str(row.deductible_cents), "paid_in_full": row.deductible_paid_in_full},
    }


def approval_summary(row: Any) -> dict[str, Any]:
    return {
        "service_job_id": row.service_job_id,
        "decision": row.decision,
        "approver": {"id": row.approver_id, "role": row.approver_role},
        "note": row.note,
    }
