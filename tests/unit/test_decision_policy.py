"""The decision policy, table-driven: every rule of DESIGN §1 and the precedence of §5."""

from __future__ import annotations

import pytest

from services.common.policy import default_policy
from services.decision.domain.model import (
    SYSTEM,
    Actor,
    ApprovalFacts,
    AwaitingApproval,
    Denied,
    Granted,
    ReportFacts,
    RequestFacts,
)
from services.decision.domain.policy import decide

POLICY = default_policy()
PAID = ReportFacts(deductible_paid_in_full=True)
UNPAID = ReportFacts(deductible_paid_in_full=False)
SUPERVISOR = Actor("SUP-1", "supervisor")
MANAGER = Actor("MGR-1", "manager")
AGENT = Actor("AGT-1", "agent")


def customer(**kw: object) -> RequestFacts:
    base: dict[str, object] = {"source": "customer", "reason_code": "conflicting_reports", "soft_no_delivered": True}
    return RequestFacts(**{**base, **kw})  # type: ignore[arg-type]


def auth(**kw: object) -> RequestFacts:
    return RequestFacts(**{"source": "authorizations", "reason_code": "conflicting_reports", **kw})  # type: ignore[arg-type]


def sp(hotline: str | None = "called", second_tech: bool | None = True, **kw: object) -> RequestFacts:
    return RequestFacts(
        **{
            "source": "service_provider",
            "reason_code": "provider_unable_to_determine_failure",
            "manufacturer_hotline": hotline,
            "second_technician_sent": second_tech,
            **kw,
        }  # type: ignore[arg-type]
    )


INVALID = [
    ("lack_of_confidence_in_provider", [], None),
    ("high_pricing", ["approve_provider_pricing"], "high_cost"),
    ("provider_refuses_company_parts", ["approve_provider_parts"], "not_following_process"),
    ("customer_disputes_non_covered_charges", [], None),
    ("failure_caused_by_part_not_addressed", [], None),
]
VALID = [
    "provider_information_lacking",
    "conflicting_reports",
    "suspected_pre_existing_condition",
    "suspected_lack_of_maintenance",
    "provider_unable_to_determine_failure",
]


class TestInvalidReasons:
    @pytest.mark.parametrize(("reason", "guidance", "feedback"), INVALID)
    @pytest.mark.parametrize("make", [customer, auth, sp])
    def test_invalid_reason_is_denied_with_its_guidance_and_feedback(self, make, reason, guidance, feedback):
        decision = decide(POLICY, make(reason_code=reason, approved_by=SUPERVISOR), PAID)
        assert isinstance(decision, Denied)
        assert decision.denial_code == reason
        assert list(decision.guidance) == guidance
        assert decision.provider_feedback == feedback


class TestValidReasons:
    @pytest.mark.parametrize("reason", VALID)
    @pytest.mark.parametrize("make", [auth, sp])
    def test_valid_reason_is_granted_by_the_policy(self, make, reason):
        decision = decide(POLICY, make(reason_code=reason), PAID)
        assert isinstance(decision, Granted)
        assert decision.decided_by == SYSTEM
        assert decision.diagnostic_charges == "company"
        assert decision.disclosures == ()


class TestCustomerRequests:
    def test_supervisor_approval_in_the_request_grants_with_both_disclosures(self):
        decision = decide(POLICY, customer(approved_by=SUPERVISOR), PAID)
        assert isinstance(decision, Granted)
        assert decision.decided_by == SUPERVISOR
        assert decision.diagnostic_charges == "customer_unless_covered_difference"
        assert decision.disclosures == ("no_charge_if_different_and_covered", "customer_pays_if_same_evaluation")

    def test_manager_approval_grants(self):
        assert isinstance(decide(POLICY, customer(approved_by=MANAGER), PAID), Granted)

    @pytest.mark.parametrize("soft_no", [False, None])
    def test_without_soft_no_is_denied_with_deliver_soft_no(self, soft_no):
        decision = decide(POLICY, customer(soft_no_delivered=soft_no, approved_by=SUPERVISOR), PAID)
        assert isinstance(decision, Denied)
        assert (decision.denial_code, decision.guidance) == ("soft_no_not_delivered", ("deliver_soft_no",))

    def test_offered_by_agent_is_denied_before_anything_else(self):
        request = customer(offered_by_agent=True, reason_code="high_pricing", soft_no_delivered=False)
        decision = decide(POLICY, request, PAID)
        assert isinstance(decision, Denied)
        assert decision.denial_code == "not_customer_initiated"

    def test_without_approval_waits(self):
        assert isinstance(decide(POLICY, customer(), PAID), AwaitingApproval)

    def test_approval_by_an_agent_never_counts(self):
        decision = decide(POLICY, customer(approved_by=AGENT), PAID, approvals=[ApprovalFacts("approve", AGENT)])
        assert isinstance(decision, AwaitingApproval)

    def test_role_is_compared_exactly(self):
        decision = decide(POLICY, customer(approved_by=Actor("S", "Supervisor")), PAID)
        assert isinstance(decision, AwaitingApproval)

    def test_first_supervisor_decision_recorded_decides(self):
        approvals = [
            ApprovalFacts("approve", AGENT),
            ApprovalFacts("deny", MANAGER),
            ApprovalFacts("approve", SUPERVISOR),
        ]
        decision = decide(POLICY, customer(), PAID, approvals=approvals)
        assert isinstance(decision, Denied)
        assert decision.denial_code == "approval_denied"
        assert decision.approval_used == approvals[1]

    def test_recorded_supervisor_approval_grants_and_names_the_approver(self):
        decision = decide(POLICY, customer(), PAID, approvals=[ApprovalFacts("approve", SUPERVISOR)])
        assert isinstance(decision, Granted)
        assert decision.decided_by == SUPERVISOR

    def test_unpaid_deductible_does_not_block_a_customer_request(self):
        assert isinstance(decide(POLICY, customer(approved_by=SUPERVISOR), UNPAID), Granted)


class TestAuthorizationsRequests:
    def test_unpaid_deductible_is_denied_with_collect_deductible(self):
        decision = decide(POLICY, auth(), UNPAID)
        assert isinstance(decision, Denied)
        assert (decision.denial_code, decision.guidance) == ("deductible_not_paid", ("collect_deductible",))

    def test_needs_no_approval(self):
        assert isinstance(decide(POLICY, auth(), PAID), Granted)


class TestServiceProviderRequests:
    @pytest.mark.parametrize(
        ("hotline", "second_tech", "guidance"),
        [
            ("not_called", False, ("call_manufacturer_hotline", "send_second_technician")),
            (None, None, ("call_manufacturer_hotline", "send_second_technician")),
            ("called", False, ("send_second_technician",)),
            ("not_called", True, ("call_manufacturer_hotline",)),
        ],
    )
    def test_pending_suggestions_are_listed_hotline_first(self, hotline, second_tech, guidance):
        decision = decide(POLICY, sp(hotline, second_tech), PAID)
        assert isinstance(decision, Denied)
        assert decision.denial_code == "provider_suggestions_pending"
        assert decision.guidance == guidance

    @pytest.mark.parametrize("hotline", ["called", "not_applicable"])
    def test_granted_once_both_suggestions_were_tried(self, hotline):
        assert isinstance(decide(POLICY, sp(hotline, True), UNPAID), Granted)


class TestPrecedence:
    def test_an_open_case_wins_over_everything(self):
        request = customer(offered_by_agent=True, reason_code="high_pricing")
        decision = decide(POLICY, request, PAID, open_case_id="CASE-1")
        assert isinstance(decision, Denied)
        assert (decision.denial_code, decision.open_case_id) == ("case_already_open", "CASE-1")
        assert decision.provider_feedback is None

    def test_invalid_reason_wins_over_missing_soft_no(self):
        decision = decide(POLICY, customer(reason_code="high_pricing", soft_no_delivered=False), PAID)
        assert isinstance(decision, Denied)
        assert decision.denial_code == "high_pricing"

    def test_missing_soft_no_wins_over_a_recorded_denial(self):
        decision = decide(
            POLICY, customer(soft_no_delivered=False), PAID, approvals=[ApprovalFacts("deny", SUPERVISOR)]
        )
        assert isinstance(decision, Denied)
        assert decision.denial_code == "soft_no_not_delivered"

    def test_rules_that_fired_are_named(self):
        decision = decide(POLICY, customer(approved_by=SUPERVISOR), PAID)
        assert decision.rules == (
            "valid_reason:conflicting_reports",
            "precondition_met:soft_no_delivered",
            "approved_by:supervisor",
            "grant",
        )


class TestApprovalsMatterOnlyToAWaitingDecision:
    """The handler looks approvals up only when the decision without them waits for one; that is
    sound only if approvals never change a decision that does not wait."""

    REASONS = [r for r, *_ in INVALID] + VALID
    ACTORS = [SUPERVISOR, MANAGER, AGENT]

    @staticmethod
    def _approvals():  # type: ignore[no-untyped-def]
        from hypothesis import strategies as st

        actors = st.sampled_from(TestApprovalsMatterOnlyToAWaitingDecision.ACTORS)
        one = st.builds(ApprovalFacts, decision=st.sampled_from(["approve", "deny"]), approver=actors)
        return st.lists(one, max_size=3)

    def test_property(self) -> None:
        from hypothesis import given, settings
        from hypothesis import strategies as st

        requests = st.builds(
            RequestFacts,
            source=st.sampled_from(["customer", "authorizations", "service_provider"]),
            reason_code=st.sampled_from(self.REASONS),
            soft_no_delivered=st.sampled_from([None, True, False]),
            offered_by_agent=st.booleans(),
            approved_by=st.sampled_from([None, *self.ACTORS]),
            manufacturer_hotline=st.sampled_from([None, "called", "not_called", "not_applicable"]),
            second_technician_sent=st.sampled_from([None, True, False]),
        )

        @settings(max_examples=500, derandomize=True, deadline=None)
        @given(
            request=requests,
            report=st.sampled_from([PAID, UNPAID]),
            open_case=st.sampled_from([None, "CASE-OPEN"]),
            approvals=self._approvals(),
        )
        def check(request, report, open_case, approvals) -> None:  # type: ignore[no-untyped-def]
            without = decide(POLICY, request, report, open_case_id=open_case)
            with_them = decide(POLICY, request, report, open_case_id=open_case, approvals=approvals)
            if not isinstance(without, AwaitingApproval):
                assert with_them == without

        check()
