"""The second-opinion policy as data: one versioned file read by the services that apply it."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.v1 import Disclosure, FeeType, Guidance, InvalidReason, Source, ValidReason

DEFAULT_POLICY_FILE = Path(__file__).with_name("second_opinion.v1.json")

Precondition = Literal["soft_no_delivered", "deductible_paid", "manufacturer_hotline", "second_technician"]
Step = Literal["case_already_open", "not_customer_initiated", "invalid_reason", "source_preconditions", "approval"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InvalidReasonRule(_Frozen):
    guidance: list[Guidance]
    provider_feedback: Literal["high_cost", "not_following_process"] | None


class SourceRule(_Frozen):
    preconditions: list[Precondition]
    needs_approval: bool
    diagnostic_charges: Literal["company", "customer_unless_covered_difference"]
    disclosures: list[Disclosure]
    original_fees: list[FeeType]
    second_visit_payer: Literal["company", "customer_unless_covered_difference"]


class PreconditionRule(_Frozen):
    denial_code: Literal["soft_no_not_delivered", "deductible_not_paid", "provider_suggestions_pending"]
    guidance: Guidance


class Assumption(_Frozen):
    id: str
    rule: str
    why: str


class Policy(_Frozen):
    """Reasons, guidance, precedence and payout rules; every decision names `version`."""

    version: str
    approver_roles: list[str]
    precedence: list[Step]
    valid_reasons: list[ValidReason]
    invalid_reasons: dict[InvalidReason, InvalidReasonRule]
    sources: dict[Source, SourceRule]
    preconditions: dict[Precondition, PreconditionRule]
    assumptions: list[Assumption]


def load_policy(path: Path = DEFAULT_POLICY_FILE) -> Policy:
    return Policy.model_validate_json(path.read_text(encoding="utf-8"))


@cache
def default_policy() -> Policy:
    return load_policy()
