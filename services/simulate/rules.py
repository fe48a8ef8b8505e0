"""DESIGN §1, §3 and §5 as small pure functions: where each simulated order should end up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, get_args

from schemas.v1 import InvalidReason, ValidReason

VALID_REASONS: tuple[str, ...] = get_args(ValidReason)
INVALID_REASONS: tuple[str, ...] = get_args(InvalidReason)
APPROVER_ROLES = frozenset({"supervisor", "manager"})
FEEDBACK = {"high_pricing": "high_cost", "provider_refuses_company_parts": "not_following_process"}
ZERO = Decimal("0.00")

GRANTED = "granted"
AWAITING = "awaiting_approval"
UNASSIGNED = "unassigned"


@dataclass(frozen=True)
class Request:
    """The fields of one `second_opinion.requested` that the decision rules read."""

    source: str
    reason_code: str
    soft_no_delivered: bool | None = None
    offered_by_agent: bool = False
    approved_by_role: str | None = None
    hotline: str | None = None
    second_technician_sent: bool | None = None
    prefer_same: bool = False


@dataclass(frozen=True)
class Dispatch:
    provider_id: str
    technician_id: str | None
    network: str


@dataclass(frozen=True)
class SecondVisit:
    """The second-opinion job's planned report: same evaluation or not, its coverage and fees."""

    same: bool
    covered: bool | None
    charges: Mapping[str, str]


@dataclass(frozen=True)
class Market:
    """Where the original job was and who could take a second-opinion job there."""

    providers: tuple[Mapping[str, Any], ...]
    trade: str
    zip_code: str
    original: tuple[str, str]  # (provider_id, technician_id) of the original job


@dataclass(frozen=True)
class OrderFacts:
    """Everything about one generated order that decides where it should end up."""

    requests: tuple[Request, ...]
    charges: Mapping[str, str]
    deductible_paid: bool
    market: Market
    recorded: tuple[tuple[str, str], ...] = ()
    second: SecondVisit | None = None
    dlq: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Intended:
    """What the stack shows for one order once settled (intended, or as observed)."""

    outcome: str
    denials: tuple[str, ...] = ()
    payouts: tuple[tuple[str, str], ...] = ()
    charge: tuple[str, str] | None = None
    feedback: tuple[str, ...] = ()
    network: str | None = None
    notifications: int = 0
    dlq: tuple[tuple[str, int], ...] = ()
    pan_leaks: int = 0


def request_from_value(value: Mapping[str, Any]) -> Request:
    """Read a `second_opinion.requested` value the way the rules see it (absent means not done)."""
    attempts = value.get("provider_attempts") or {}
    return Request(
        source=value["source"],
        reason_code=value["reason_code"],
        soft_no_delivered=value.get("soft_no_delivered"),
        offered_by_agent=bool(value.get("offered_by_agent", False)),
        approved_by_role=(value.get("approved_by") or {}).get("role"),
        hotline=attempts.get("manufacturer_hotline"),
        second_technician_sent=attempts.get("second_technician_sent"),
        prefer_same=bool(value.get("prefer_same_company_different_technician", False)),
    )


def denied(code: str) -> str:
    return f"denied:{code}"


def suggestions_missing(req: Request) -> bool:
    hotline_ok = req.hotline in ("called", "not_applicable")
    return not (hotline_ok and req.second_technician_sent is True)


def precondition_denial(req: Request, deductible_paid: bool) -> str | None:
    """Rule 4: the source's own preconditions."""
    if req.source == "customer" and req.soft_no_delivered is not True:
        return "soft_no_not_delivered"
    if req.source == "service_provider" and suggestions_missing(req):
        return "provider_suggestions_pending"
    if req.source == "authorizations" and not deductible_paid:
        return "deductible_not_paid"
    return None


def approval_step(req: Request, recorded: Sequence[tuple[str, str]]) -> str:
    """Rule 5: inline approval, else the first supervisor/manager decision recorded for the job."""
    if req.approved_by_role in APPROVER_ROLES:
        return GRANTED
    for role, decision in recorded:
        if role in APPROVER_ROLES:
            return GRANTED if decision == "approve" else denied("approval_denied")
    return AWAITING


def decide(req: Request, deductible_paid: bool, recorded: Sequence[tuple[str, str]], case_open: bool) -> str:
    """One request's decision, first applicable rule wins (DESIGN §5)."""
    if case_open:
        return denied("case_already_open")
    if req.source == "customer" and req.offered_by_agent:
        return denied("not_customer_initiated")
    if req.reason_code in INVALID_REASONS:
        return denied(req.reason_code)
    if code := precondition_denial(req, deductible_paid):
        return denied(code)
    return approval_step(req, recorded) if req.source == "customer" else GRANTED


def fold_requests(
    requests: Sequence[Request], deductible_paid: bool, recorded: Sequence[tuple[str, str]]
) -> tuple[int | None, str, list[str]]:
    """Decide requests in arrival order; returns (index of the case left open, its state, denials).

    Assumes no case concludes between requests: the generator never plans a second report on an
    order that has a later request, because that ordering is a race between topics.
    """
    open_index: int | None = None
    state = ""
    denials: list[str] = []
    for i, req in enumerate(requests):
        result = decide(req, deductible_paid, recorded, open_index is not None)
        if result.startswith("denied:"):
            denials.append(result.removeprefix("denied:"))
        else:
            open_index, state = i, result
    return open_index, state, denials


def original_payouts(source: str, charges: Mapping[str, str]) -> list[tuple[str, str]]:
    """The original SP gets its call fee, plus diagnosis unless SP-sourced; zero fees are unpaid."""
    fees = [("original_service_call", charges["service_call_fee"])]
    if source != "service_provider":
        fees.append(("original_diagnosis", charges["diagnosis_fee"]))
    return [(kind, amount) for kind, amount in fees if Decimal(amount) > ZERO]


def norm_component(value: str | None) -> str:
    return (value or "").strip().casefold()


def same_evaluation(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    keys = ("failure_found", "cause", "covered")
    return all(first[k] == second[k] for k in keys) and norm_component(first["component"]) == norm_component(
        second["component"]
    )


def visit_amount(charges: Mapping[str, str]) -> str:
    return str(Decimal(charges["service_call_fee"]) + Decimal(charges["diagnosis_fee"]))


def customer_charge(source: str, same: bool, covered: bool | None, amount: str) -> tuple[str, str] | None:
    """Only customer-sourced cases charge, unless the evaluation differs and the item is covered."""
    if source != "customer" or (not same and covered is True):
        return None
    return amount, "same_evaluation" if same else "not_covered"


def _eligible(p: Mapping[str, Any], trade: str, zip_code: str) -> bool:
    return bool(p["active"] and p["accepts_second_opinions"] and trade in p["trades"] and zip_code in p["zips"])


def _other_technicians(p: Mapping[str, Any], original_tech: str) -> list[Mapping[str, Any]]:
    techs = [t for t in p["technicians"] if t["technician_id"] != original_tech]
    return sorted(techs, key=lambda t: (not t["senior"], t["technician_id"]))


def choose_provider(
    providers: Iterable[Mapping[str, Any]],
    trade: str,
    zip_code: str,
    original: tuple[str, str],
    prefer_same: bool = False,
) -> Dispatch | None:
    """DESIGN §3 provider choice: same company first when asked, in-network, rating, id."""
    original_provider, original_tech = original
    ranked = []
    for p in providers:
        if not _eligible(p, trade, zip_code):
            continue
        is_original = p["provider_id"] == original_provider
        if is_original and not (prefer_same and _other_technicians(p, original_tech)):
            continue
        ranked.append(((not is_original, not p["in_network"], -p["rating"], p["provider_id"]), p))
    if not ranked:
        return None
    best = min(ranked, key=lambda item: item[0])[1]
    techs = _other_technicians(best, original_tech)
    network = "in_network" if best["in_network"] else "out_of_network"
    return Dispatch(best["provider_id"], techs[0]["technician_id"] if techs else None, network)


def intend(facts: OrderFacts) -> Intended:
    """The order's intended end state, from the rules above."""
    open_index, state, denials = fold_requests(facts.requests, facts.deductible_paid, facts.recorded)
    common = {
        "denials": tuple(sorted(denials)),
        "feedback": tuple(sorted(FEEDBACK[c] for c in denials if c in FEEDBACK)),
        "dlq": tuple(sorted(facts.dlq)),
    }
    if open_index is None:
        return Intended(outcome=denied(denials[-1]), **common)
    if state == AWAITING:
        return Intended(outcome=AWAITING, **common)
    return _granted(facts, facts.requests[open_index], common)


def dispatch_for(market: Market, prefer_same: bool) -> Dispatch | None:
    m = market
    return choose_provider(m.providers, m.trade, m.zip_code, m.original, prefer_same)


def _granted(facts: OrderFacts, req: Request, common: dict[str, Any]) -> Intended:
    source = req.source
    payouts = original_payouts(source, facts.charges)
    dispatch = dispatch_for(facts.market, req.prefer_same)
    if dispatch is None:
        return Intended(outcome=UNASSIGNED, payouts=tuple(sorted(payouts)), **common)
    job = {"network": dispatch.network, "notifications": 1}
    second = facts.second
    if second is None:
        return Intended(outcome=GRANTED, payouts=tuple(sorted(payouts)), **job, **common)
    amount = visit_amount(second.charges)
    if Decimal(amount) > ZERO:
        payouts.append(("second_opinion_visit", amount))
    outcome = "same_evaluation" if second.same else "different_evaluation"
    return Intended(
        outcome=f"concluded:{outcome}",
        payouts=tuple(sorted(payouts)),
        charge=customer_charge(source, second.same, second.covered, amount),
        **job,
        **common,
    )
