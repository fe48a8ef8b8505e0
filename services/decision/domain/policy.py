"""The decision policy: pure functions of (policy, facts) -> decision. No clock, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.common.policy import Policy
from services.decision.domain.model import (
    SYSTEM,
    ApprovalFacts,
    AwaitingApproval,
    Conclusion,
    Decision,
    Denied,
    Diagnosis,
    Granted,
    ReportFacts,
    RequestFacts,
)


class _Facts:
    def __init__(
        self,
        request: RequestFacts,
        report: ReportFacts,
        open_case_id: str | None,
        approvals: Sequence[ApprovalFacts],
    ) -> None:
        self.request = request
        self.report = report
        self.open_case_id = open_case_id
        self.approvals = approvals


Step = Callable[[Policy, _Facts, list[str]], Decision | None]


def decide(
    policy: Policy,
    request: RequestFacts,
    report: ReportFacts,
    *,
    open_case_id: str | None = None,
    approvals: Sequence[ApprovalFacts] = (),
) -> Decision:
    """Walk the policy's precedence; the first step that decides wins, else the request is granted.

    `approvals` are the recorded approvals/denials for the request's job, oldest first.
    """
    facts = _Facts(request, report, open_case_id, approvals)
    fired: list[str] = []
    for step in policy.precedence:
        decision = _STEPS[step](policy, facts, fired)
        if decision is not None:
            return decision
    rule = policy.sources[request.source]  # type: ignore[index]
    fired.append("grant")
    return Granted(
        decided_by=SYSTEM,
        rules=tuple(fired),
        diagnostic_charges=rule.diagnostic_charges,
        disclosures=tuple(rule.disclosures),
    )


def _case_already_open(policy: Policy, facts: _Facts, fired: list[str]) -> Decision | None:
    if facts.open_case_id is None:
        return None
    return _deny(fired, "case_already_open", "case_already_open", open_case_id=facts.open_case_id)


def _not_customer_initiated(policy: Policy, facts: _Facts, fired: list[str]) -> Decision | None:
    if facts.request.source == "customer" and facts.request.offered_by_agent:
        return _deny(fired, "not_customer_initiated", "not_customer_initiated")
    return None


def _invalid_reason(policy: Policy, facts: _Facts, fired: list[str]) -> Decision | None:
    reason = facts.request.reason_code
    invalid = policy.invalid_reasons.get(reason)  # type: ignore[call-overload]
    if invalid is None:
        fired.append(f"valid_reason:{reason}")
        return None
    return _deny(
        fired,
        f"invalid_reason:{reason}",
        reason,
        guidance=tuple(invalid.guidance),
        provider_feedback=invalid.provider_feedback,
    )


def _source_preconditions(policy: Policy, facts: _Facts, fired: list[str]) -> Decision | None:
    rule = policy.sources[facts.request.source]  # type: ignore[index]
    missing = [p for p in rule.preconditions if not _precondition_met(p, facts)]
    if not missing:
        fired.extend(f"precondition_met:{p}" for p in rule.preconditions)
        return None
    first = policy.preconditions[missing[0]]
    same_denial = [m for m in missing if policy.preconditions[m].denial_code == first.denial_code]
    return _deny(
        fired,
        f"precondition_missing:{','.join(same_denial)}",
        first.denial_code,
        guidance=tuple(policy.preconditions[m].guidance for m in same_denial),
    )


def _precondition_met(name: str, facts: _Facts) -> bool:
    request = facts.request
    checks: dict[str, Callable[[], bool]] = {
        "soft_no_delivered": lambda: request.soft_no_delivered is True,
        "deductible_paid": lambda: facts.report.deductible_paid_in_full,
        "manufacturer_hotline": lambda: request.manufacturer_hotline in ("called", "not_applicable"),
        "second_technician": lambda: request.second_technician_sent is True,
    }
    return checks[name]()


def _approval(policy: Policy, facts: _Facts, fired: list[str]) -> Decision | None:
    if not policy.sources[facts.request.source].needs_approval:  # type: ignore[index]
        return None
    approver_roles = set(policy.approver_roles)
    given = facts.request.approved_by
    if given is not None and given.role in approver_roles:
        return _grant_by(policy, facts, fired, given, None)
    for approval in facts.approvals:
        if approval.approver.role not in approver_roles:
            continue
        if approval.decision == "approve":
            return _grant_by(policy, facts, fired, approval.approver, approval)
        return _deny(fired, "approval_denied", "approval_denied", approval_used=approval)
    fired.append("approval_pending")
    return AwaitingApproval(rules=tuple(fired))


def _grant_by(policy: Policy, facts: _Facts, fired: list[str], approver, approval) -> Granted:  # type: ignore[no-untyped-def]
    rule = policy.sources[facts.request.source]  # type: ignore[index]
    fired.extend([f"approved_by:{approver.role}", "grant"])
    return Granted(
        decided_by=approver,
        rules=tuple(fired),
        diagnostic_charges=rule.diagnostic_charges,
        disclosures=tuple(rule.disclosures),
        approval_used=approval,
    )


def _deny(fired: list[str], rule_id: str, denial_code: str, **details) -> Denied:  # type: ignore[no-untyped-def]
    fired.append(rule_id)
    guidance = details.pop("guidance", ())
    return Denied(denial_code=denial_code, guidance=guidance, rules=tuple(fired), **details)


_STEPS: dict[str, Step] = {
    "case_already_open": _case_already_open,
    "not_customer_initiated": _not_customer_initiated,
    "invalid_reason": _invalid_reason,
    "source_preconditions": _source_preconditions,
    "approval": _approval,
}


def _component(value: str | None) -> str:
    return (value or "").strip().casefold()


def same_evaluation(first: Diagnosis, second: Diagnosis) -> bool:
    return (
        first.failure_found == second.failure_found
        and _component(first.component) == _component(second.component)
        and first.cause == second.cause
        and first.covered == second.covered
    )


def conclude(policy: Policy, source: str, original: Diagnosis, second: Diagnosis) -> Conclusion:
    """Compare the two reports and say who pays the second visit."""
    same = same_evaluation(original, second)
    payer = policy.sources[source].second_visit_payer  # type: ignore[index]
    customer_pays = payer == "customer_unless_covered_difference" and (same or second.covered is not True)
    return Conclusion(
        outcome="same_evaluation" if same else "different_evaluation",
        covered=second.covered,
        second_visit_charges="customer" if customer_pays else "company",
    )
