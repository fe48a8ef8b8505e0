"""Realistic payload content for the synthetic day: diagnoses, notes, fees, reason texts."""

from __future__ import annotations

import random
from typing import Any

from services.simulate.rules import same_evaluation

COMPONENTS = {
    "hvac": ("compressor", "condenser fan motor", "evaporator coil", "control board", "capacitor"),
    "plumbing": ("water heater element", "gas control valve", "pressure regulator", "sewer line"),
    "appliance": (
        "refrigerator compressor",
        "dishwasher pump",
        "oven igniter",
        "washer drive motor",
    ),
    "electrical": ("breaker panel", "GFCI outlet", "ceiling fan wiring", "doorbell transformer"),
}
CAUSE_COVERED = {
    "wear_and_tear": True,
    "pre_existing": False,
    "lack_of_maintenance": False,
    "improper_installation": False,
    "code_violation": False,
}
CAUSE_NOTES = {
    "wear_and_tear": "normal wear for the unit's age",
    "pre_existing": "corrosion at the base points to a long-standing leak",
    "lack_of_maintenance": "filters and coils clogged, no service record",
    "improper_installation": "installed without the clearance the manufacturer requires",
    "code_violation": "wiring does not meet local code",
}
REASON_DETAIL = {
    "provider_information_lacking": "Report gives no model number or test readings.",
    "conflicting_reports": "Technician's notes contradict what the customer was told on site.",
    "suspected_pre_existing_condition": "Damage may predate the contract start.",
    "suspected_lack_of_maintenance": "Unit looks neglected; maintenance history unclear.",
    "provider_unable_to_determine_failure": "Could not reproduce the failure after two visits.",
    "lack_of_confidence_in_provider": "Customer does not trust this company.",
    "high_pricing": "Quote is well above the usual rate for this repair.",
    "provider_refuses_company_parts": "Company insists on its own parts supplier.",
    "customer_disputes_non_covered_charges": "Customer does not want to pay the non-covered part.",
    "failure_caused_by_part_not_addressed": "Customer says an earlier repair caused this.",
}
NOT_FOUND = {"failure_found": False, "component": None, "cause": "undetermined", "covered": None}


def _found(component: str, cause: str) -> dict[str, Any]:
    return {
        "failure_found": True,
        "component": component,
        "cause": cause,
        "covered": CAUSE_COVERED[cause],
    }


def diagnosis(rng: random.Random, trade: str, reason: str) -> dict[str, Any]:
    """A first report's diagnosis consistent with the reason the second opinion is asked for."""
    if reason == "provider_unable_to_determine_failure":
        return dict(NOT_FOUND)
    component = rng.choice(COMPONENTS[trade])
    if reason == "suspected_pre_existing_condition":
        return _found(component, "pre_existing")
    if reason == "suspected_lack_of_maintenance":
        return _found(component, "lack_of_maintenance")
    causes, weights = zip(
        *{
            "pre_existing": 3,
            "lack_of_maintenance": 2,
            "improper_installation": 2,
            "code_violation": 1,
            "wear_and_tear": 2,
        }.items(),
        strict=True,
    )
    return _found(component, rng.choices(causes, weights)[0])


def _recased(component: str | None, rng: random.Random) -> str | None:
    # Same evaluation compares components trimmed and case-insensitively; vary the spelling
    # now and then so the demo exercises that.
    if component is None or rng.random() < 0.6:
        return component
    return rng.choice((component.upper(), f" {component.title()} "))


def _different(rng: random.Random, trade: str, first: dict[str, Any]) -> dict[str, Any]:
    component = first["component"] or rng.choice(COMPONENTS[trade])
    roll = rng.random()
    if roll < 0.6:
        return _found(component, "wear_and_tear")
    if roll < 0.9:
        return _found(component, rng.choice(("improper_installation", "code_violation")))
    return dict(NOT_FOUND)


def second_diagnosis(rng: random.Random, trade: str, first: dict[str, Any], same: bool) -> dict[str, Any]:
    if same:
        return {**first, "component": _recased(first["component"], rng)}
    for _ in range(10):
        candidate = _different(rng, trade, first)
        if not same_evaluation(first, candidate):
            return candidate
    return {**first, "failure_found": not first["failure_found"]}


def notes(diag: dict[str, Any]) -> str:
    if not diag["failure_found"]:
        return "Could not reproduce the failure; unit ran normally for 40 minutes."
    component = (diag["component"] or "unit").strip()
    return f"{component[0].upper()}{component[1:]} failed; {CAUSE_NOTES[diag['cause']]}."


def first_charges(rng: random.Random) -> dict[str, str]:
    zero_diagnosis = rng.random() < 0.1
    return {
        "service_call_fee": rng.choice(("79.00", "89.00", "95.00", "99.00", "109.00")),
        "diagnosis_fee": "0.00" if zero_diagnosis else rng.choice(("35.00", "45.00", "55.00")),
        "currency": "USD",
    }


def second_charges(rng: random.Random) -> dict[str, str]:
    return {
        "service_call_fee": rng.choice(("85.00", "95.00", "110.00")),
        "diagnosis_fee": rng.choice(("30.00", "40.00")),
        "currency": "USD",
    }


def deductible(rng: random.Random, paid: bool) -> dict[str, Any]:
    return {"amount": rng.choice(("75.00", "100.00", "125.00")), "paid_in_full": paid}
