"""Event contract, version 1: the only thing the services share on the wire.

Consumers ignore unknown fields (producers may add fields). Validation is strict: wrong
types, unknown enum values, naive timestamps, malformed money and non-USD currency are
rejected so that the consumer can dead-letter the record instead of guessing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, field_serializer

SCHEMA_VERSION = 1

MONEY_PATTERN = r"^(0|[1-9][0-9]*)\.[0-9]{2}$"
Money = Annotated[str, StringConstraints(pattern=MONEY_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Currency = Literal["USD"]

Source = Literal["customer", "authorizations", "service_provider"]
ValidReason = Literal[
    "provider_information_lacking",
    "conflicting_reports",
    "suspected_pre_existing_condition",
    "suspected_lack_of_maintenance",
    "provider_unable_to_determine_failure",
]
InvalidReason = Literal[
    "lack_of_confidence_in_provider",
    "high_pricing",
    "provider_refuses_company_parts",
    "customer_disputes_non_covered_charges",
    "failure_caused_by_part_not_addressed",
]
ReasonCode = Literal[ValidReason, InvalidReason]
Cause = Literal[
    "wear_and_tear",
    "pre_existing",
    "lack_of_maintenance",
    "improper_installation",
    "code_violation",
    "undetermined",
]
DenialCode = Literal[
    InvalidReason,
    "soft_no_not_delivered",
    "not_customer_initiated",
    "approval_denied",
    "provider_suggestions_pending",
    "deductible_not_paid",
    "case_already_open",
]
Guidance = Literal[
    "deliver_soft_no",
    "approve_provider_pricing",
    "approve_provider_parts",
    "call_manufacturer_hotline",
    "send_second_technician",
    "collect_deductible",
]
Disclosure = Literal["no_charge_if_different_and_covered", "customer_pays_if_same_evaluation"]
FeeType = Literal["original_service_call", "original_diagnosis", "second_opinion_visit"]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Event(_Model):
    event_id: NonEmpty
    occurred_at: AwareDatetime

    @field_serializer("occurred_at")
    def _iso_with_offset(self, value: datetime) -> str:
        return value.isoformat()  # "+00:00", not "Z": the contract asks for an explicit offset


class OrderEvent(Event):
    service_order_id: NonEmpty


class Actor(_Model):
    id: NonEmpty
    role: NonEmpty


# ---------------------------------------------------------------- inputs


class Diagnosis(_Model):
    failure_found: bool
    component: str | None
    cause: Cause | None
    covered: bool | None


class Charges(_Model):
    service_call_fee: Money
    diagnosis_fee: Money
    currency: Currency


class Deductible(_Model):
    amount: Money
    paid_in_full: bool


class ServiceReportReceived(OrderEvent):
    service_job_id: NonEmpty
    provider_id: NonEmpty
    technician_id: NonEmpty
    customer_id: NonEmpty
    trade: NonEmpty
    property_zip: NonEmpty
    diagnosis: Diagnosis
    notes: str
    charges: Charges
    deductible: Deductible


class ProviderAttempts(_Model):
    manufacturer_hotline: Literal["called", "not_applicable", "not_called"]
    second_technician_sent: bool


class SecondOpinionRequested(OrderEvent):
    service_job_id: NonEmpty
    source: Source
    reason_code: ReasonCode
    reason_detail: str | None = None
    requested_by: Actor
    soft_no_delivered: bool | None = None
    offered_by_agent: bool = False
    approved_by: Actor | None = None
    provider_attempts: ProviderAttempts | None = None
    prefer_same_company_different_technician: bool = False


class ApprovalRecorded(OrderEvent):
    service_job_id: NonEmpty
    decision: Literal["approve", "deny"]
    approver: Actor
    note: str | None = None
    # Optional (a v1-compatible addition): the case the approver decided on. It decides that case
    # only; without it the first approval recorded for the job decides the job's waiting request.
    case_id: NonEmpty | None = None


class Technician(_Model):
    technician_id: NonEmpty
    senior: bool


class ServiceProviderUpdated(Event):
    provider_id: NonEmpty
    company_name: str
    trades: list[str]
    zips: list[str]
    in_network: bool
    accepts_second_opinions: bool
    rating: float
    active: bool
    technicians: list[Technician]


# ---------------------------------------------------------------- outputs


class SecondOpinionGranted(OrderEvent):
    case_id: NonEmpty
    original_job_id: NonEmpty
    original_provider_id: NonEmpty
    original_technician_id: NonEmpty
    customer_id: NonEmpty
    trade: NonEmpty
    property_zip: NonEmpty
    source: Source
    reason_code: ValidReason
    decided_by: Actor
    policy_version: str
    rules: list[str]
    deductible_waived: Literal[True] = True
    diagnostic_charges: Literal["company", "customer_unless_covered_difference"]
    customer_disclosures: list[Disclosure]
    prefer_same_company_different_technician: bool
    original_charges: Charges


class SecondOpinionDenied(OrderEvent):
    case_id: NonEmpty
    original_job_id: NonEmpty
    source: Source
    reason_code: ReasonCode
    denial_code: DenialCode
    guidance: list[Guidance]
    policy_version: str
    rules: list[str]
    open_case_id: str | None = None


class ProviderFeedbackRecorded(OrderEvent):
    provider_id: NonEmpty
    category: Literal["high_cost", "not_following_process"]
    case_id: NonEmpty


class ServiceJobCreated(OrderEvent):
    job_id: NonEmpty
    case_id: NonEmpty
    provider_id: NonEmpty
    technician_id: str | None = None
    kind: Literal["second_opinion"] = "second_opinion"
    deductible_waived: Literal[True] = True
    network: Literal["in_network", "out_of_network"]


class DispatchUnassigned(OrderEvent):
    case_id: NonEmpty
    reason: Literal["no_eligible_provider"]


class CustomerNotificationRequested(OrderEvent):
    case_id: NonEmpty
    customer_id: NonEmpty
    template: Literal["second_opinion_scheduled"]
    reason_code: ValidReason
    disclosures: list[Disclosure]


class Amount(_Model):
    amount: Money
    currency: Currency


class SecondOpinionConcluded(OrderEvent):
    case_id: NonEmpty
    outcome: Literal["same_evaluation", "different_evaluation"]
    covered: bool | None
    second_visit_charges: Literal["customer", "company"]
    second_job_id: NonEmpty
    second_provider_id: NonEmpty
    customer_id: NonEmpty
    visit_charges: Amount


class PayoutIssued(OrderEvent):
    payout_id: NonEmpty
    case_id: NonEmpty
    claim_id: NonEmpty
    job_id: NonEmpty
    provider_id: NonEmpty
    amount: Money
    currency: Currency
    fee_type: FeeType


class CustomerChargeAssessed(OrderEvent):
    case_id: NonEmpty
    customer_id: NonEmpty
    amount: Money
    currency: Currency
    reason: Literal["same_evaluation", "not_covered"]


# ---------------------------------------------------------------- topics

SERVICE_REPORT_RECEIVED = "service_report.received"
SECOND_OPINION_REQUESTED = "second_opinion.requested"
APPROVAL_RECORDED = "second_opinion.approval_recorded"
SERVICE_PROVIDER_UPDATED = "service_provider.updated"
SECOND_OPINION_GRANTED = "second_opinion.granted"
SECOND_OPINION_DENIED = "second_opinion.denied"
PROVIDER_FEEDBACK_RECORDED = "provider_feedback.recorded"
SERVICE_JOB_CREATED = "service_job.created"
DISPATCH_UNASSIGNED = "dispatch.unassigned"
CUSTOMER_NOTIFICATION_REQUESTED = "customer_notification.requested"
SECOND_OPINION_CONCLUDED = "second_opinion.concluded"
PAYOUT_ISSUED = "payout.issued"
CUSTOMER_CHARGE_ASSESSED = "customer_charge.assessed"

MODELS: dict[str, type[Event]] = {
    SERVICE_REPORT_RECEIVED: ServiceReportReceived,
    SECOND_OPINION_REQUESTED: SecondOpinionRequested,
    APPROVAL_RECORDED: ApprovalRecorded,
    SERVICE_PROVIDER_UPDATED: ServiceProviderUpdated,
    SECOND_OPINION_GRANTED: SecondOpinionGranted,
    SECOND_OPINION_DENIED: SecondOpinionDenied,
    PROVIDER_FEEDBACK_RECORDED: ProviderFeedbackRecorded,
    SERVICE_JOB_CREATED: ServiceJobCreated,
    DISPATCH_UNASSIGNED: DispatchUnassigned,
    CUSTOMER_NOTIFICATION_REQUESTED: CustomerNotificationRequested,
    SECOND_OPINION_CONCLUDED: SecondOpinionConcluded,
    PAYOUT_ISSUED: PayoutIssued,
    CUSTOMER_CHARGE_ASSESSED: CustomerChargeAssessed,
}
TOPICS: tuple[str, ...] = tuple(MODELS)
# Published from outside the three services (claim systems, the CRM, the provider directory).
UPSTREAM_INPUTS: tuple[str, ...] = (
    SERVICE_REPORT_RECEIVED,
    SECOND_OPINION_REQUESTED,
    APPROVAL_RECORDED,
    SERVICE_PROVIDER_UPDATED,
)
# What the three services publish, in contract order.
SERVICE_OUTPUTS: tuple[str, ...] = tuple(t for t in TOPICS if t not in UPSTREAM_INPUTS)
DLQ_SUFFIX = ".dlq"
DLQ_TOPICS: tuple[str, ...] = tuple(t + DLQ_SUFFIX for t in TOPICS)
ALL_TOPICS: tuple[str, ...] = TOPICS + DLQ_TOPICS


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX
