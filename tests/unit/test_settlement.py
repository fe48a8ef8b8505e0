"""Comparing evaluations and settling the second visit (DESIGN §1 step 4, §3 'Same evaluation')."""

from __future__ import annotations

import pytest

from services.common.policy import default_policy
from services.decision.domain.model import Diagnosis
from services.decision.domain.policy import conclude, same_evaluation
from services.payout.domain.fees import customer_charge, original_fees, second_visit_fee

POLICY = default_policy()
ORIGINAL = Diagnosis(True, "Compressor", "pre_existing", False)


class TestSameEvaluation:
    @pytest.mark.parametrize(
        "second",
        [
            Diagnosis(True, "compressor", "pre_existing", False),
            Diagnosis(True, "  COMPRESSOR ", "pre_existing", False),
        ],
    )
    def test_component_is_trimmed_and_case_insensitive(self, second):
        assert same_evaluation(ORIGINAL, second)

    def test_null_component_equals_empty(self):
        assert same_evaluation(Diagnosis(False, None, "undetermined", None), Diagnosis(False, "", "undetermined", None))

    @pytest.mark.parametrize(
        "second",
        [
            Diagnosis(False, "compressor", "pre_existing", False),
            Diagnosis(True, "fan motor", "pre_existing", False),
            Diagnosis(True, "compressor", "wear_and_tear", False),
            Diagnosis(True, "compressor", "pre_existing", True),
            Diagnosis(True, "compressor", "pre_existing", None),
        ],
    )
    def test_any_field_differing_makes_a_different_evaluation(self, second):
        assert not same_evaluation(ORIGINAL, second)


class TestConclude:
    @pytest.mark.parametrize(
        ("source", "second", "outcome", "payer"),
        [
            ("customer", Diagnosis(True, "compressor", "pre_existing", False), "same_evaluation", "customer"),
            ("customer", Diagnosis(True, "compressor", "wear_and_tear", True), "different_evaluation", "company"),
            ("customer", Diagnosis(True, "compressor", "wear_and_tear", False), "different_evaluation", "customer"),
            ("customer", Diagnosis(True, "compressor", "wear_and_tear", None), "different_evaluation", "customer"),
            ("authorizations", Diagnosis(True, "compressor", "pre_existing", False), "same_evaluation", "company"),
            ("service_provider", Diagnosis(True, "compressor", "pre_existing", False), "same_evaluation", "company"),
        ],
    )
    def test_who_pays_the_second_visit(self, source, second, outcome, payer):
        conclusion = conclude(POLICY, source, ORIGINAL, second)
        assert (conclusion.outcome, conclusion.second_visit_charges) == (outcome, payer)
        assert conclusion.covered == second.covered


class TestFees:
    CHARGES = {"service_call_fee": 8900, "diagnosis_fee": 4500}

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("customer", [("original_service_call", 8900), ("original_diagnosis", 4500)]),
            ("authorizations", [("original_service_call", 8900), ("original_diagnosis", 4500)]),
            ("service_provider", [("original_service_call", 8900)]),
        ],
    )
    def test_original_provider_fees_by_source(self, source, expected):
        assert [(f.fee_type, f.cents) for f in original_fees(POLICY, source, self.CHARGES)] == expected

    def test_a_zero_fee_is_not_paid(self):
        fees = original_fees(POLICY, "customer", {"service_call_fee": 8900, "diagnosis_fee": 0})
        assert [f.fee_type for f in fees] == ["original_service_call"]
        assert second_visit_fee(0) is None

    @pytest.mark.parametrize(
        ("payer", "outcome", "cents", "expected"),
        [
            ("customer", "same_evaluation", 12500, (12500, "same_evaluation")),
            ("customer", "different_evaluation", 12500, (12500, "not_covered")),
            ("company", "same_evaluation", 12500, None),
            ("customer", "same_evaluation", 0, None),
        ],
    )
    def test_customer_charge(self, payer, outcome, cents, expected):
        charge = customer_charge(payer, outcome, cents)
        assert (None if charge is None else (charge.cents, charge.reason)) == expected
