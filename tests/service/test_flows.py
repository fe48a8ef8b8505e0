"""Business flows through the real handlers and databases of all three services (in-memory bus)."""

from __future__ import annotations

import json

import pytest

from services.common.pan import contains_card_number
from tests.support.events import approval, provider, report, request

GRANTED, DENIED = "second_opinion.granted", "second_opinion.denied"
JOBS, PAYOUTS = "service_job.created", "payout.issued"


async def directory(bus, zip_: str = "Z1") -> None:  # type: ignore[no-untyped-def]
    techs = [{"technician_id": "T1", "senior": False}, {"technician_id": "T2", "senior": True}]
    await bus.publish("service_provider.updated", "P1", provider("P1", zip_, techs=techs))
    await bus.publish("service_provider.updated", "P2", provider("P2", zip_, rating=4.8))
    await bus.publish("service_provider.updated", "P3", provider("P3", zip_, rating=4.2))


async def granted_order(bus, order: str = "SO-1", **req) -> None:  # type: ignore[no-untyped-def]
    await directory(bus)
    await bus.publish("service_report.received", order, report(order, f"{order}-J1"))
    await bus.publish("second_opinion.requested", order, request(order, f"{order}-J1", f"{order}-R1", **req))
    await bus.settle()


class TestGrant:
    async def test_authorizations_grant_pays_dispatches_and_notifies(self, bus):
        await granted_order(bus)
        assert len(bus.events(GRANTED, diagnostic_charges="company", customer_disclosures=[])) == 1
        fees = sorted((p["fee_type"], p["amount"], p["provider_id"]) for p in bus.events(PAYOUTS))
        assert fees == [("original_diagnosis", "45.00", "P1"), ("original_service_call", "89.00", "P1")]
        [job] = bus.events(JOBS)
        assert (job["provider_id"], job["deductible_waived"], job["network"]) == ("P2", True, "in_network")
        [note] = bus.events("customer_notification.requested")
        assert (note["reason_code"], note["disclosures"], note["customer_id"]) == (
            "conflicting_reports",
            [],
            "CUST-SO-1",
        )

    async def test_request_before_report_waits_then_is_granted(self, bus):
        await directory(bus)
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R1"))
        await bus.settle()
        assert bus.events(GRANTED) == [] and bus.events(DENIED) == []
        await bus.publish("service_report.received", "SO-1", report("SO-1", "SO-1-J1"))
        await bus.settle()
        assert len(bus.events(GRANTED)) == 1

    async def test_redelivered_events_change_nothing(self, bus):
        await granted_order(bus)
        await bus.publish("service_report.received", "SO-1", report("SO-1", "SO-1-J1"))
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "SO-1-R1"))
        for published in list(bus.log):  # every output delivered a second time
            await bus.publish(published.topic, published.key, published.value)
        await bus.settle()
        assert len(bus.events(GRANTED)) == 1
        assert len(bus.events(PAYOUTS)) == 2
        assert len(bus.events(JOBS)) == 1

    async def test_sp_grant_pays_the_call_fee_only(self, bus):
        attempts = {"manufacturer_hotline": "not_applicable", "second_technician_sent": True}
        await granted_order(
            bus, source="service_provider", reason="provider_unable_to_determine_failure", provider_attempts=attempts
        )
        assert [p["fee_type"] for p in bus.events(PAYOUTS)] == ["original_service_call"]

    async def test_same_company_different_technician(self, bus):
        await granted_order(bus, prefer_same_company_different_technician=True)
        [job] = bus.events(JOBS)
        assert (job["provider_id"], job["technician_id"]) == ("P1", "T2")


class TestCases:
    async def test_second_request_while_open_is_denied_naming_the_open_case(self, bus):
        await granted_order(bus)
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "SO-1-R2"))
        await bus.settle()
        [grant] = bus.events(GRANTED)
        [denial] = bus.events(DENIED)
        assert (denial["denial_code"], denial["open_case_id"]) == ("case_already_open", grant["case_id"])
        assert len(bus.events(PAYOUTS)) == 2

    async def test_a_denied_case_does_not_block_a_later_request(self, bus):
        await directory(bus)
        await bus.publish("service_report.received", "SO-1", report("SO-1", "SO-1-J1"))
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R1", reason="high_pricing"))
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R2"))
        await bus.settle()
        assert [d["denial_code"] for d in bus.events(DENIED)] == ["high_pricing"]
        assert len(bus.events("provider_feedback.recorded", category="high_cost", provider_id="P1")) == 1
        assert len(bus.events(GRANTED)) == 1

    async def test_requests_waiting_for_a_report_are_decided_in_arrival_order(self, bus):
        await directory(bus)
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R1"))
        await bus.publish(
            "second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R2", reason="suspected_lack_of_maintenance")
        )
        await bus.publish("service_report.received", "SO-1", report("SO-1", "SO-1-J1"))
        await bus.settle()
        assert [g["reason_code"] for g in bus.events(GRANTED)] == ["conflicting_reports"]
        assert [d["denial_code"] for d in bus.events(DENIED)] == ["case_already_open"]


class TestApprovals:
    CUSTOMER = {"source": "customer", "soft_no_delivered": True}

    async def test_waits_for_a_supervisor_and_ignores_an_agent(self, bus):
        await granted_order(bus, **self.CUSTOMER)
        assert bus.events(GRANTED) == []
        await bus.publish("second_opinion.approval_recorded", "SO-1", approval("SO-1", "SO-1-J1", "A1", role="agent"))
        await bus.settle()
        assert bus.events(GRANTED) == []
        await bus.publish("second_opinion.approval_recorded", "SO-1", approval("SO-1", "SO-1-J1", "A2"))
        await bus.settle()
        [grant] = bus.events(GRANTED)
        assert grant["decided_by"] == {"id": "SUPERVISOR-7", "role": "supervisor"}
        assert grant["customer_disclosures"] == [
            "no_charge_if_different_and_covered",
            "customer_pays_if_same_evaluation",
        ]

    async def test_approval_recorded_before_the_request_is_applied(self, bus):
        await directory(bus)
        await bus.publish("service_report.received", "SO-1", report("SO-1", "SO-1-J1"))
        await bus.publish("second_opinion.approval_recorded", "SO-1", approval("SO-1", "SO-1-J1", "A1", role="manager"))
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R1", **self.CUSTOMER))
        await bus.settle()
        assert bus.events(GRANTED)[0]["decided_by"]["role"] == "manager"

    async def test_supervisor_denial_denies(self, bus):
        await granted_order(bus, **self.CUSTOMER)
        await bus.publish("second_opinion.approval_recorded", "SO-1", approval("SO-1", "SO-1-J1", "A1", "deny"))
        await bus.settle()
        assert [d["denial_code"] for d in bus.events(DENIED)] == ["approval_denied"]


class TestDispatchOutcomes:
    async def test_no_eligible_provider_is_unassigned_and_keeps_the_case_open(self, bus):
        await bus.publish("service_report.received", "SO-1", report("SO-1", "SO-1-J1", zip_="NOWHERE"))
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R1"))
        await bus.settle()
        assert len(bus.events("dispatch.unassigned", reason="no_eligible_provider")) == 1
        assert bus.events(JOBS) == [] and bus.events("customer_notification.requested") == []
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R2"))
        await bus.settle()
        assert [d["denial_code"] for d in bus.events(DENIED)] == ["case_already_open"]


SAME = {"failure_found": True, "component": " Compressor", "cause": "pre_existing", "covered": False}
COVERED = {"failure_found": True, "component": "compressor", "cause": "wear_and_tear", "covered": True}
NOT_COVERED = {"failure_found": True, "component": "compressor", "cause": "wear_and_tear", "covered": False}


class TestSettlement:
    @pytest.mark.parametrize(
        ("source", "diagnosis", "outcome", "payer", "charge_reason"),
        [
            ("customer", SAME, "same_evaluation", "customer", "same_evaluation"),
            ("customer", COVERED, "different_evaluation", "company", None),
            ("customer", NOT_COVERED, "different_evaluation", "customer", "not_covered"),
            ("authorizations", SAME, "same_evaluation", "company", None),
        ],
    )
    async def test_second_report_concludes_and_settles(self, bus, source, diagnosis, outcome, payer, charge_reason):
        extra = (
            {"soft_no_delivered": True, "approved_by": {"id": "S", "role": "supervisor"}}
            if source == "customer"
            else {}
        )
        await granted_order(bus, source=source, **extra)
        [job] = bus.events(JOBS)
        second = report("SO-1", job["job_id"], provider_id="P2", diagnosis=diagnosis, fees=("95.00", "30.00"))
        await bus.publish("service_report.received", "SO-1", second)
        await bus.settle()
        [concluded] = bus.events("second_opinion.concluded")
        assert (concluded["outcome"], concluded["second_visit_charges"]) == (outcome, payer)
        assert concluded["visit_charges"] == {"amount": "125.00", "currency": "USD"}
        [visit] = bus.events(PAYOUTS, fee_type="second_opinion_visit")
        assert (visit["provider_id"], visit["amount"], visit["job_id"]) == ("P2", "125.00", job["job_id"])
        charges = bus.events("customer_charge.assessed")
        assert [c["reason"] for c in charges] == ([charge_reason] if charge_reason else [])
        assert all(c["amount"] == "125.00" for c in charges)

    async def test_second_report_before_the_job_link_waits_for_it(self, bus):
        await directory(bus)
        await bus.publish("service_report.received", "SO-1", report("SO-1", "SO-1-J1"))
        await bus.publish("second_opinion.requested", "SO-1", request("SO-1", "SO-1-J1", "R1"))
        await bus.settle(hold=frozenset({JOBS}))
        [job] = bus.events(JOBS)
        await bus.publish("service_report.received", "SO-1", report("SO-1", job["job_id"], diagnosis=COVERED))
        await bus.settle()
        assert bus.events("second_opinion.concluded") == []
        await bus.release(JOBS)
        assert len(bus.events("second_opinion.concluded", outcome="different_evaluation")) == 1

    async def test_a_further_report_for_a_concluded_job_changes_nothing(self, bus):
        await granted_order(bus)
        [job] = bus.events(JOBS)
        await bus.publish("service_report.received", "SO-1", report("SO-1", job["job_id"]))
        await bus.publish(
            "service_report.received", "SO-1", report("SO-1", job["job_id"], event_id="other", diagnosis=COVERED)
        )
        await bus.settle()
        assert len(bus.events("second_opinion.concluded")) == 1
        assert len(bus.events(PAYOUTS, fee_type="second_opinion_visit")) == 1


class TestBadInput:
    async def test_card_numbers_hidden_in_json_escapes_or_the_key_are_masked_in_the_dlq(self, bus):
        escaped = json.dumps(report("SO-P", "SO-P-J1")).replace('"Compressor seized."', '"card \\u0034111111111111111"')
        assert not contains_card_number(escaped.encode())  # the escape hides it from the scan of the bytes
        await bus.publish("service_report.received", "SO-P", escaped.encode())
        # A valid event under a card number as its key: the topic would keep the number as long as the event.
        await bus.publish("service_report.received", "4111111111111111", report("SO-Q", "SO-Q-J1"))
        decision = bus.services[0]
        [(_, key1, value1, h1), (_, key2, value2, h2)] = decision.dead_letters
        assert (h1["x-error-class"], key1) == (b"card_number", b"SO-P")
        assert b"4111111111111111" not in value1 and b"************1111" in value1
        assert (h2["x-error-class"], key2) == (b"card_number", b"************1111")
        assert json.loads(value2)["service_order_id"] == "SO-Q"
        await bus.settle()
        assert bus.events(GRANTED) == []

    async def test_bad_records_are_dead_lettered_and_the_next_one_is_processed(self, bus):
        await directory(bus)
        bad = report("SO-1", "SO-1-JX")
        bad["charges"]["service_call_fee"] = "-12.00"
        await bus.publish("service_report.received", "SO-1", b"{not json")
        await bus.publish("service_report.received", "SO-1", bad)
        await bus.publish("service_report.received", "SO-1", b'{"notes": "card 4111 1111 1111 1111"}')
        await granted_order(bus)
        decision = bus.services[0]
        topics = [d[0] for d in decision.dead_letters]
        assert topics == ["service_report.received.dlq"] * 3
        assert [d[3]["x-error-class"] for d in decision.dead_letters] == [
            b"not_json",
            b"schema_invalid",
            b"card_number",
        ]
        assert decision.dead_letters[2][2] == b'{"notes": "card **** **** **** 1111"}'
        assert all(d[1] == b"SO-1" for d in decision.dead_letters)
        assert len(bus.events(GRANTED)) == 1
