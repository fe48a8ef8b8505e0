"""Builders of valid contract events for tests (JSON-ready dicts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas import v1


def provider(
    pid: str, zip_: str, *, rating: float = 4.0, in_network: bool = True, techs: Any = None, **kw: Any
) -> dict[str, Any]:
    return {
        "event_id": f"evt-prov-{pid}",
        "occurred_at": "2026-11-01T08:00:00+00:00",
        "provider_id": pid,
        "company_name": f"Company {pid}",
        "trades": ["hvac"],
        "zips": [zip_],
        "in_network": in_network,
        "accepts_second_opinions": True,
        "rating": rating,
        "active": True,
        "technicians": techs if techs is not None else [{"technician_id": f"{pid}-T1", "senior": False}],
        **kw,
    }


def report(
    order: str,
    job: str,
    *,
    provider_id: str = "P1",
    zip_: str = "Z1",
    event_id: str | None = None,
    diagnosis: dict[str, Any] | None = None,
    fees: tuple[str, str] = ("89.00", "45.00"),
    paid: bool = True,
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"evt-rpt-{job}",
        "occurred_at": "2026-11-02T15:04:00+00:00",
        "service_order_id": order,
        "service_job_id": job,
        "provider_id": provider_id,
        "technician_id": "T1",
        "customer_id": f"CUST-{order}",
        "trade": "hvac",
        "property_zip": zip_,
        "diagnosis": diagnosis
        or {"failure_found": True, "component": "compressor", "cause": "pre_existing", "covered": False},
        "notes": "Compressor seized.",
        "charges": {"service_call_fee": fees[0], "diagnosis_fee": fees[1], "currency": "USD"},
        "deductible": {"amount": "100.00", "paid_in_full": paid},
    }


def request(
    order: str,
    job: str,
    event_id: str,
    *,
    source: str = "authorizations",
    reason: str = "conflicting_reports",
    **kw: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": "2026-11-03T10:00:00+00:00",
        "service_order_id": order,
        "service_job_id": job,
        "source": source,
        "reason_code": reason,
        "requested_by": {"id": "REQ-1", "role": source},
        **kw,
    }


def approval(
    order: str, job: str, event_id: str, decision: str = "approve", role: str = "supervisor"
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": "2026-11-03T09:00:00+00:00",
        "service_order_id": order,
        "service_job_id": job,
        "decision": decision,
        "approver": {"id": f"{role.upper()}-7", "role": role},
    }


def grant(order: str, zip_: str, run: str) -> dict[str, Any]:
    """A grant as decision publishes it (for tests that feed dispatch or payout directly)."""
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
