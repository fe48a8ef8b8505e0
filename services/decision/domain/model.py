"""Facts the decision policy reads and the decisions it returns: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Actor:
    id: str
    role: str


SYSTEM = Actor(id="policy", role="system")


@dataclass(frozen=True)
class RequestFacts:
    source: str
    reason_code: str
    soft_no_delivered: bool | None = None
    offered_by_agent: bool = False
    approved_by: Actor | None = None
    manufacturer_hotline: str | None = None  # called | not_applicable | not_called | None (absent)
    second_technician_sent: bool | None = None


@dataclass(frozen=True)
class ReportFacts:
    deductible_paid_in_full: bool


@dataclass(frozen=True)
class ApprovalFacts:
    decision: str  # approve | deny
    approver: Actor


@dataclass(frozen=True)
class Granted:
    decided_by: Actor
    rules: tuple[str, ...]
    diagnostic_charges: str
    disclosures: tuple[str, ...]
    approval_used: ApprovalFacts | None = None


@dataclass(frozen=True)
class Denied:
    denial_code: str
    guidance: tuple[str, ...]
    rules: tuple[str, ...]
    provider_feedback: str | None = None
    open_case_id: str | None = None
    approval_used: ApprovalFacts | None = None


@dataclass(frozen=True)
class AwaitingApproval:
    rules: tuple[str, ...] = field(default=())


Decision = Granted | Denied | AwaitingApproval


@dataclass(frozen=True)
class Diagnosis:
    failure_found: bool
    component: str | None
    cause: str | None
    covered: bool | None


@dataclass(frozen=True)
class Conclusion:
    outcome: str  # same_evaluation | different_evaluation
    covered: bool | None
    second_visit_charges: str  # customer | company
