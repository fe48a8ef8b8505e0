"""What is paid and charged for a case. Pure; amounts in integer cents."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.policy import Policy

_FEE_FIELDS = {"original_service_call": "service_call_fee", "original_diagnosis": "diagnosis_fee"}


@dataclass(frozen=True)
class Fee:
    fee_type: str
    cents: int


@dataclass(frozen=True)
class Charge:
    cents: int
    reason: str  # same_evaluation | not_covered


def original_fees(policy: Policy, source: str, charges_cents: dict[str, int]) -> list[Fee]:
    """The original provider's fees for a grant, by the source's rule; a zero fee is not paid."""
    fees = [Fee(t, charges_cents[_FEE_FIELDS[t]]) for t in policy.sources[source].original_fees]  # type: ignore[index]
    return [f for f in fees if f.cents > 0]


def second_visit_fee(visit_cents: int) -> Fee | None:
    return Fee("second_opinion_visit", visit_cents) if visit_cents > 0 else None


def customer_charge(second_visit_charges: str, outcome: str, visit_cents: int) -> Charge | None:
    if second_visit_charges != "customer" or visit_cents <= 0:
        return None
    return Charge(visit_cents, "same_evaluation" if outcome == "same_evaluation" else "not_covered")
