"""The synthetic day: a seeded realistic plan, intended outcomes by the rules, a strict summary."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from typing import Any, get_args

import pytest
from aiokafka.structs import RecordMetadata, TopicPartition
from rich.console import Console

from schemas import v1
from services.cli import build_parser
from services.common.pan import contains_card_number
from services.simulate.bad_records import TEST_PAN
from services.simulate.directory import build_directory
from services.simulate.generator import (
    BAD_KINDS,
    MAX_ORDERS,
    Plan,
    generate,
    run_token,
    second_report_messages,
)
from services.simulate.kafka_io import high_water
from services.simulate.render import render
from services.simulate.rules import (
    AWAITING,
    GRANTED,
    INVALID_REASONS,
    UNASSIGNED,
    VALID_REASONS,
    Market,
    OrderFacts,
    Request,
    SecondVisit,
    choose_provider,
    decide,
    intend,
    same_evaluation,
)
from services.simulate.runner import Collector
from services.simulate.summary import Record, build_summary

RUN = "a1b2c3d4"
OTHER_RUN = "z9y8x7w6"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return generate(7, 400, RUN)


def _primary(order: Any) -> dict[str, Any]:
    return next(m.value for m in order.messages if m.label == "request")


def _sketch(p: Plan) -> str:
    """The plan as text with the run token blanked out: the business day, not its ids."""
    parts = [(o.tags, o.intended, o.second_report) for o in p.orders]
    messages = [(m.topic, m.key, m.at, m.payload().decode(), m.label) for m in p.order_messages()]
    return repr((p.providers, parts, messages)).replace(p.run, "{run}")


# ---------------------------------------------------------------- determinism and ids


def test_same_seed_and_run_give_the_same_plan(plan: Plan) -> None:
    assert generate(7, 400, RUN) == plan


def test_run_token_changes_ids_but_not_the_business_day(plan: Plan) -> None:
    other = generate(7, 400, OTHER_RUN)
    assert other.orders[0].order_id != plan.orders[0].order_id
    assert _sketch(other) == _sketch(plan)


def test_another_seed_gives_another_day(plan: Plan) -> None:
    assert _sketch(generate(8, 400, RUN)) != _sketch(plan)


def test_run_token_looks_like_the_scenario_runners() -> None:
    tokens = {run_token(7, str(salt)) for salt in range(50)}
    assert len(tokens) == 50
    assert all(re.fullmatch(r"[a-z][a-z0-9]{7}", t) for t in tokens)


def test_event_ids_are_unique_except_deliberate_redeliveries(plan: Plan) -> None:
    ids = Counter(m.value["event_id"] for m in plan.order_messages() if m.value)
    repeated = {e for e, n in ids.items() if n > 1}
    redelivered = {m.value["event_id"] for m in plan.order_messages() if m.label == "duplicate"}
    assert repeated == redelivered
    assert all(RUN in e for e in ids)


def test_every_event_is_keyed_by_its_order_and_providers_by_id(plan: Plan) -> None:
    for m in plan.order_messages():
        assert m.key.startswith(f"SO-{RUN}-")
        if m.value:
            assert m.value["service_order_id"] == m.key
    assert all(m.key == m.value["provider_id"] for m in plan.provider_messages())


# ---------------------------------------------------------------- realism and coverage


def test_directory_has_thin_markets_and_varied_providers() -> None:
    providers = build_directory(7, RUN)
    assert 25 <= len(providers) <= 40
    assert {t for p in providers for t in p["trades"]} == {
        "hvac",
        "plumbing",
        "appliance",
        "electrical",
    }
    assert 8 <= len({z for p in providers for z in p["zips"]}) <= 12
    assert all(1 <= len(p["technicians"]) <= 4 for p in providers)
    assert any(t["senior"] for p in providers for t in p["technicians"])
    for flag in ("in_network", "active", "accepts_second_opinions"):
        assert 0 < sum(not p[flag] for p in providers) < len(providers) / 3


def test_mix_covers_every_source_reason_and_denial_code(plan: Plan) -> None:
    sources = Counter(_primary(o)["source"] for o in plan.orders)
    shares = {s: n / len(plan.orders) for s, n in sources.items()}
    assert shares["customer"] == pytest.approx(0.45, abs=0.08)
    assert shares["authorizations"] == pytest.approx(0.35, abs=0.08)
    assert shares["service_provider"] == pytest.approx(0.20, abs=0.06)
    reasons = Counter(_primary(o)["reason_code"] for o in plan.orders)
    assert set(reasons) == set(VALID_REASONS) | set(INVALID_REASONS)
    invalid = sum(reasons[r] for r in INVALID_REASONS) / len(plan.orders)
    assert invalid == pytest.approx(0.30, abs=0.07)
    denials = {d for o in plan.orders for d in o.intended.denials}
    assert denials == set(get_args(v1.DenialCode))


def test_mix_covers_every_outcome_and_delivery_quirk(plan: Plan) -> None:
    outcomes = {o.intended.outcome for o in plan.orders}
    expected = {
        GRANTED,
        UNASSIGNED,
        AWAITING,
        "concluded:same_evaluation",
        "concluded:different_evaluation",
    }
    assert expected <= outcomes
    assert {o.intended.network for o in plan.orders} == {None, "in_network", "out_of_network"}
    tags = {t.split(":")[0] if t.startswith("duplicate") else t for o in plan.orders for t in o.tags}
    for tag in (
        "request_before_report",
        "duplicate",
        "second_request_while_open",
        "retry_after_denial",
        "approval:before",
        "approval:after",
        "approval:agent_then_supervisor",
        "approval:deny",
        "approval:none",
        *(f"bad:{kind}" for kind in BAD_KINDS),
    ):
        assert tag in tags, tag
    assert any(_primary(o).get("prefer_same_company_different_technician") for o in plan.orders)
    assert any(_primary(o)["source"] == "customer" and "soft_no_delivered" not in _primary(o) for o in plan.orders)
    dispatched = [o for o in plan.orders if o.intended.network]
    eligible = [o for o in dispatched if "second_request_while_open" not in o.tags]
    share = sum(o.second_report is not None for o in eligible) / len(eligible)
    assert share == pytest.approx(0.6, abs=0.1)


def test_valid_events_pass_the_contract_and_bad_ones_do_not(plan: Plan) -> None:
    for m in [*plan.provider_messages(), *plan.order_messages()]:
        if m.label == "bad:card_number":
            assert TEST_PAN in m.payload().decode()
            continue
        try:
            v1.MODELS[m.topic].model_validate_json(m.payload())
            valid = True
        except ValueError:
            valid = False
        assert valid is not m.bad, (m.label, m.payload()[:120])


def test_no_valid_event_looks_like_a_card_number(plan: Plan) -> None:
    valid = [m for m in [*plan.provider_messages(), *plan.order_messages()] if not m.bad]
    assert not [m.label for m in valid if contains_card_number(m.payload())]
    with pytest.raises(ValueError):
        generate(7, MAX_ORDERS + 1, RUN)


def test_bad_records_are_expected_on_their_dlq(plan: Plan) -> None:
    for order in plan.orders:
        bad = Counter(v1.dlq_topic(m.topic) for m in order.messages if m.bad)
        assert dict(order.intended.dlq) == dict(bad)
    assert sum(n for o in plan.orders for _, n in o.intended.dlq) >= len(BAD_KINDS)


def test_timestamps_are_aware_and_within_one_day(plan: Plan) -> None:
    for m in plan.order_messages():
        if m.value:
            assert re.fullmatch(r"2026-11-02T\d\d:\d\d:\d\d\+00:00", m.value["occurred_at"])


def test_second_report_names_the_job_dispatch_created(plan: Plan) -> None:
    order = next(o for o in plan.orders if o.second_report and o.second_report.duplicate)
    job = {"job_id": "JOB-NEW-1", "provider_id": "SP-X", "technician_id": "SP-X-T2"}
    messages = second_report_messages(order, job)
    assert len(messages) == 2 and messages[0] == messages[1]
    report = v1.ServiceReportReceived.model_validate_json(messages[0].payload())
    assert (report.service_job_id, report.provider_id, report.technician_id) == (
        "JOB-NEW-1",
        "SP-X",
        "SP-X-T2",
    )
    assert report.service_order_id == order.order_id
    untechnical = second_report_messages(order, {"job_id": "J", "provider_id": "P"})
    assert untechnical[0].value["technician_id"]


# ---------------------------------------------------------------- rules (DESIGN §5 table)

CUSTOMER = Request("customer", "conflicting_reports", soft_no_delivered=True)
APPROVED = replace(CUSTOMER, approved_by_role="supervisor")
AUTH = Request("authorizations", "provider_information_lacking")
SP = Request("service_provider", "provider_unable_to_determine_failure", hotline="called")
SP = replace(SP, second_technician_sent=True)
SUPERVISOR_OK = (("agent", "approve"), ("supervisor", "approve"))
PENDING = "denied:provider_suggestions_pending"

# name: (request, {paid, recorded, open}, decision)
DECISIONS = {
    "supervisor approves in the request": (APPROVED, {}, GRANTED),
    "manager approves in the request": (replace(APPROVED, approved_by_role="manager"), {}, GRANTED),
    "an agent's approval is no approval": (
        replace(APPROVED, approved_by_role="agent"),
        {},
        AWAITING,
    ),
    "recorded agent approval waits": (CUSTOMER, {"recorded": (("agent", "approve"),)}, AWAITING),
    "recorded supervisor after an agent": (CUSTOMER, {"recorded": SUPERVISOR_OK}, GRANTED),
    "first boss decision wins": (
        CUSTOMER,
        {"recorded": (("manager", "deny"), *SUPERVISOR_OK)},
        "denied:approval_denied",
    ),
    "no soft no": (replace(APPROVED, soft_no_delivered=None), {}, "denied:soft_no_not_delivered"),
    "soft no false": (
        replace(APPROVED, soft_no_delivered=False),
        {},
        "denied:soft_no_not_delivered",
    ),
    "offered beats invalid reason": (
        replace(CUSTOMER, offered_by_agent=True, reason_code="high_pricing"),
        {},
        "denied:not_customer_initiated",
    ),
    "invalid reason beats soft no": (
        replace(CUSTOMER, reason_code="high_pricing", soft_no_delivered=None),
        {},
        "denied:high_pricing",
    ),
    "open case beats all": (APPROVED, {"open": True}, "denied:case_already_open"),
    "authorizations grant": (AUTH, {}, GRANTED),
    "deductible unpaid": (AUTH, {"paid": False}, "denied:deductible_not_paid"),
    "invalid reason beats deductible": (
        replace(AUTH, reason_code="provider_refuses_company_parts"),
        {"paid": False},
        "denied:provider_refuses_company_parts",
    ),
    "provider grant, deductible irrelevant": (SP, {"paid": False}, GRANTED),
    "hotline not applicable counts": (replace(SP, hotline="not_applicable"), {}, GRANTED),
    "no second technician": (replace(SP, second_technician_sent=False), {}, PENDING),
    "hotline not called": (replace(SP, hotline="not_called"), {}, PENDING),
    "no attempts at all": (replace(SP, hotline=None, second_technician_sent=None), {}, PENDING),
}


@pytest.mark.parametrize(("req", "context", "expected"), DECISIONS.values(), ids=list(DECISIONS))
def test_decide_follows_the_precedence(req: Request, context: dict, expected: str) -> None:
    paid, recorded = context.get("paid", True), context.get("recorded", ())
    assert decide(req, paid, recorded, context.get("open", False)) == expected


def _provider(pid: str, rating: float = 4.0, *techs: tuple[str, bool], **flags: bool) -> dict:
    techs = techs or ((f"{pid}-T1", False),)
    return {
        "provider_id": pid, "trades": ["hvac"], "zips": ["Z"], "rating": rating,
        "in_network": flags.get("in_network", True), "active": flags.get("active", True),
        "accepts_second_opinions": flags.get("accepts", True),
        "technicians": [{"technician_id": t, "senior": s} for t, s in techs],
    }  # fmt: skip


P1 = _provider("P1", 4.0, ("T1", False), ("T2", True), ("T0", False))
P2 = _provider("P2", 4.8)
P3 = _provider("P3", 4.2)
ALONE = Market((P1,), "hvac", "Z", ("P1", "T1"))
CROWD = Market((P1, P2), "hvac", "Z", ("P1", "T1"))
CHARGES = {"service_call_fee": "89.00", "diagnosis_fee": "45.00", "currency": "USD"}
SECOND = {"service_call_fee": "95.00", "diagnosis_fee": "30.00", "currency": "USD"}
CALL = (("original_service_call", "89.00"),)
BOTH = (("original_diagnosis", "45.00"), *CALL)
VISITED = (*BOTH, ("second_opinion_visit", "125.00"))
MANAGED = replace(CUSTOMER, approved_by_role="manager")


def test_provider_choice_prefers_rating_then_network_then_same_company_when_asked() -> None:
    assert choose_provider([P1, P2, P3], "hvac", "Z", ("P1", "T1")).provider_id == "P2"
    same = choose_provider([P1, P2, P3], "hvac", "Z", ("P1", "T1"), prefer_same=True)
    assert (same.provider_id, same.technician_id) == ("P1", "T2")
    declining, inactive = _provider("PA2", 4.9, accepts=False), _provider("PA3", 5.0, active=False)
    picks = [declining, inactive, _provider("PA4", 3.1, in_network=False), P1]
    assert choose_provider(picks, "hvac", "Z", ("P1", "T1")).network == "out_of_network"
    assert choose_provider([P1], "hvac", "Z", ("P1", "T1")) is None
    lone = _provider("P1")
    assert choose_provider([lone], "hvac", "Z", ("P1", "P1-T1"), prefer_same=True) is None


# name: (requests in arrival order, market, second visit, (outcome, denials, payouts, charge))
INTENDED = {
    "customer grant pays call and diagnosis": ((APPROVED,), CROWD, None, (GRANTED, (), BOTH, None)),
    "provider grant pays the call only": ((SP,), CROWD, None, (GRANTED, (), CALL, None)),
    "nobody else: unassigned, still paid": ((AUTH,), ALONE, None, (UNASSIGNED, (), BOTH, None)),
    "second request while granted": (
        (AUTH, CUSTOMER),
        CROWD,
        None,
        (GRANTED, ("case_already_open",), BOTH, None),
    ),
    "second request while awaiting": (
        (CUSTOMER, AUTH),
        CROWD,
        None,
        (AWAITING, ("case_already_open",), (), None),
    ),
    "retry after suggestions": (
        (replace(SP, hotline="not_called"), SP),
        CROWD,
        None,
        (GRANTED, ("provider_suggestions_pending",), CALL, None),
    ),
    "invalid reason": (
        (replace(AUTH, reason_code="high_pricing"),),
        CROWD,
        None,
        ("denied:high_pricing", ("high_pricing",), (), None),
    ),
    "customer, same evaluation: customer pays": (
        (MANAGED,),
        CROWD,
        SecondVisit(True, False, SECOND),
        ("concluded:same_evaluation", (), VISITED, ("125.00", "same_evaluation")),
    ),
    "customer, different and covered: company pays": (
        (MANAGED,),
        CROWD,
        SecondVisit(False, True, SECOND),
        ("concluded:different_evaluation", (), VISITED, None),
    ),
    "customer, different, coverage unknown": (
        (MANAGED,),
        CROWD,
        SecondVisit(False, None, SECOND),
        ("concluded:different_evaluation", (), VISITED, ("125.00", "not_covered")),
    ),
    "company-sourced never charges": (
        (AUTH,),
        CROWD,
        SecondVisit(True, False, SECOND),
        ("concluded:same_evaluation", (), VISITED, None),
    ),
}


@pytest.mark.parametrize(("requests", "market", "second", "expected"), INTENDED.values(), ids=list(INTENDED))
def test_intended_outcome_follows_the_rules(
    requests: tuple[Request, ...], market: Market, second: SecondVisit | None, expected: tuple
) -> None:
    i = intend(OrderFacts(requests, CHARGES, True, market, second=second))
    assert (i.outcome, i.denials, i.payouts, i.charge) == expected


def test_zero_fees_are_not_paid_and_invalid_pricing_leaves_feedback() -> None:
    free_diagnosis = {**CHARGES, "diagnosis_fee": "0.00"}
    granted = intend(OrderFacts((AUTH,), free_diagnosis, True, CROWD))
    assert granted.payouts == (("original_service_call", "89.00"),)
    assert granted.network == "in_network" and granted.notifications == 1
    refuses = replace(AUTH, reason_code="provider_refuses_company_parts")
    parts = intend(OrderFacts((refuses,), CHARGES, True, ALONE))
    assert parts.feedback == ("not_following_process",)


def test_same_evaluation_trims_and_ignores_case_of_the_component() -> None:
    first = {
        "failure_found": True,
        "component": "compressor",
        "cause": "pre_existing",
        "covered": False,
    }
    assert same_evaluation(first, {**first, "component": " Compressor "})
    assert not same_evaluation(first, {**first, "covered": None})
    empty = {**first, "component": None}
    assert same_evaluation(empty, {**first, "component": ""})


# ---------------------------------------------------------------- summary and reconciliation


class PerfectStack:
    """Emits exactly what each order intends, as the three services would, one offset at a time."""

    def __init__(self, plan: Plan) -> None:
        self.records: list[Record] = []
        for order in plan.orders:
            self._order(order)

    def emit(self, topic: str, order_id: str, **fields: Any) -> Record:
        value = {
            "event_id": f"out-{len(self.records)}",
            "occurred_at": "2026-11-02T23:00:00+00:00",
            "service_order_id": order_id,
            **fields,
        }
        record = Record.parse(topic, 0, len(self.records), order_id.encode(), json.dumps(value).encode())
        self.records.append(record)
        return record

    def _order(self, order: Any) -> None:
        oid, i, req = order.order_id, order.intended, _primary(order)
        decision = {"source": req["source"], "reason_code": req["reason_code"]}
        for n, code in enumerate(i.denials):
            self.emit(v1.SECOND_OPINION_DENIED, oid, case_id=f"{oid}-d{n}", denial_code=code, **decision)
        for category in i.feedback:
            self.emit(v1.PROVIDER_FEEDBACK_RECORDED, oid, case_id=f"{oid}-d0", category=category)
        case = f"{oid}-c"
        if i.payouts:
            self.emit(v1.SECOND_OPINION_GRANTED, oid, case_id=case, **decision)
        for fee, amount in i.payouts:
            job = f"{oid}-new" if fee == "second_opinion_visit" else f"{oid}-orig"
            self.emit(v1.PAYOUT_ISSUED, oid, case_id=case, job_id=job, fee_type=fee, amount=amount)
        if i.network:
            self.emit(v1.SERVICE_JOB_CREATED, oid, case_id=case, job_id=f"{oid}-new", network=i.network)
            self.emit(v1.CUSTOMER_NOTIFICATION_REQUESTED, oid, case_id=case, disclosures=[])
        if i.outcome == UNASSIGNED:
            self.emit(v1.DISPATCH_UNASSIGNED, oid, case_id=case, reason="no_eligible_provider")
        if i.outcome.startswith("concluded:"):
            payer = "customer" if i.charge else "company"
            self.emit(
                v1.SECOND_OPINION_CONCLUDED,
                oid,
                case_id=case,
                outcome=i.outcome.split(":")[1],
                second_visit_charges=payer,
            )
        if i.charge:
            self.emit(
                v1.CUSTOMER_CHARGE_ASSESSED,
                oid,
                case_id=case,
                amount=i.charge[0],
                reason=i.charge[1],
            )
        for n, m in enumerate(x for x in order.messages if x.bad):
            masked = m.payload().replace(TEST_PAN.encode(), b"**** **** **** 1111")
            self.records.append(Record.parse(v1.dlq_topic(m.topic), 1, n, oid.encode(), masked))


@pytest.fixture(scope="module")
def small_plan() -> Plan:
    return generate(7, 120, RUN)


def test_summary_reconciles_a_perfect_run(small_plan: Plan) -> None:
    foreign = generate(7, 3, OTHER_RUN)
    summary = build_summary(small_plan, PerfectStack(small_plan).records + PerfectStack(foreign).records)
    assert summary["ok"], [r for r in summary["reconciliation"] if not r["accounted"]]
    assert summary["accounted"] == len(small_plan.orders)
    assert set(summary["duplicates"].values()) == {0}
    assert sum(summary["dlq"].values()) == sum(n for o in small_plan.orders for _, n in o.intended.dlq)
    granted = sum(r["granted"] for r in summary["decisions"]["by_source_reason"])
    assert granted == sum(bool(o.intended.payouts) for o in small_plan.orders)
    json.dumps(summary)


def test_summary_flags_a_missing_payout(small_plan: Plan) -> None:
    records = PerfectStack(small_plan).records
    victim = next(r for r in records if r.topic == v1.PAYOUT_ISSUED)
    summary = build_summary(small_plan, [r for r in records if r is not victim])
    missing = [r for r in summary["reconciliation"] if not r["accounted"]]
    assert [r["order_id"] for r in missing] == [victim.key]
    assert "payouts" in missing[0]["problems"][0]
    assert not summary["ok"]


def test_summary_counts_a_second_payout_for_the_same_fee_as_a_duplicate(small_plan: Plan) -> None:
    stack = PerfectStack(small_plan)
    first = next(r for r in stack.records if r.topic == v1.PAYOUT_ISSUED)
    again = {k: v for k, v in first.value.items() if k not in ("event_id", "service_order_id")}
    stack.emit(v1.PAYOUT_ISSUED, first.key, **again)
    summary = build_summary(small_plan, stack.records)
    assert summary["duplicates"]["payout per (job_id, fee_type)"] == 1
    assert not summary["ok"]
    baseline = build_summary(small_plan, PerfectStack(small_plan).records)
    fee = first.value["fee_type"]
    assert summary["payouts"][fee]["count"] == baseline["payouts"][fee]["count"] + 1


def test_summary_treats_a_redelivered_record_as_harmless(small_plan: Plan) -> None:
    records = PerfectStack(small_plan).records
    payout = next(r for r in records if r.topic == v1.PAYOUT_ISSUED)
    summary = build_summary(small_plan, [*records, replace(payout, offset=10_000)])
    assert summary["ok"] and summary["redelivered_records"] == 1


def test_summary_flags_an_unmasked_card_number_in_a_dlq(small_plan: Plan) -> None:
    order = next(o for o in small_plan.orders if "bad:card_number" in o.tags)
    bad = next(m for m in order.messages if m.bad)
    records = [r for r in PerfectStack(small_plan).records if not (r.is_dlq and r.key == order.order_id)]
    records.append(Record.parse(v1.dlq_topic(bad.topic), 0, 0, order.order_id.encode(), bad.payload()))
    row = next(r for r in build_summary(small_plan, records)["reconciliation"] if r["order_id"] == order.order_id)
    assert not row["accounted"] and "pan_leaks" in row["problems"][0]


def test_collector_answers_the_first_job_with_the_planned_report(plan: Plan) -> None:
    order = next(o for o in plan.orders if o.second_report)
    collector = Collector(plan)
    job = {
        "event_id": "j1",
        "service_order_id": order.order_id,
        "job_id": "JOB-N",
        "provider_id": "SP-N",
    }
    record = Record.parse(v1.SERVICE_JOB_CREATED, 0, 0, order.order_id.encode(), json.dumps(job).encode())
    assert [m.value["service_job_id"] for m in collector.add(record)][:1] == ["JOB-N"]
    assert collector.add(replace(record, offset=1)) == []
    stranger = Record.parse(v1.SERVICE_JOB_CREATED, 0, 2, b"SO-elsewhere", json.dumps(job).encode())
    assert collector.add(replace(stranger, value={**job, "service_order_id": "SO-elsewhere"})) == []
    assert len(collector.records) == 2


def test_directory_wait_targets_the_offset_after_the_last_record_sent() -> None:
    sent = [RecordMetadata("t", 0, TopicPartition("t", 0), o, 0, -1, 0) for o in (4, 9)]
    sent.append(RecordMetadata("t", 2, TopicPartition("t", 2), 0, 0, -1, 0))
    assert high_water(sent) == {TopicPartition("t", 0): 10, TopicPartition("t", 2): 1}


def test_records_that_are_not_json_still_count_by_key() -> None:
    record = Record.parse("x.dlq", 0, 3, b"SO-1", b"{not json")
    assert record.value is None and record.is_dlq
    assert record.order_in({"SO-1": None}) == "SO-1"


def test_render_prints_every_section_and_the_way_on(small_plan: Plan) -> None:
    console = Console(record=True, width=160)
    render(build_summary(small_plan, PerfectStack(small_plan).records[:-5]), console, None)
    text = console.export_text()
    for needle in (
        "Decisions by source",
        "Payouts by fee type",
        "Duplicates by business fact",
        "Orders not accounted for",
        "NOT OK",
        "/health/ready",
        "make down",
    ):
        assert needle in text


def test_cli_registers_simulate_with_its_defaults() -> None:
    args = build_parser().parse_args(["simulate"])
    assert (args.orders, args.seed, args.timeout, args.bootstrap, args.report) == (
        400,
        7,
        180.0,
        None,
        None,
    )
    assert callable(args.func)


def test_the_summary_and_the_readiness_check_use_the_ports_the_stack_runs_on(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """<SVC>_HTTP_PORT moves a service (as `up` does): simulate must look there, not at 8081-8083."""
    import asyncio
    from pathlib import Path

    from services.simulate import render, runner

    for svc, port in (("DECISION", 18991), ("DISPATCH", 18992), ("PAYOUT", 18993)):
        monkeypatch.setenv(f"{svc}_HTTP_PORT", str(port))
    text = "\n".join(render.next_steps(None, Path(".run")))
    assert "18991/health/ready" in text and "18992/health/ready" in text and "18993/health/ready" in text
    assert "18991/console" in text and ":8081" not in text
    asked: list[str] = []

    class Client:
        def __init__(self, **_: object) -> None: ...
        async def __aenter__(self):  # type: ignore[no-untyped-def]
            return self

        async def __aexit__(self, *_: object) -> None: ...
        async def get(self, url: str):  # type: ignore[no-untyped-def]
            asked.append(url)
            raise ConnectionError(url)

    monkeypatch.setattr(runner.httpx, "AsyncClient", Client)
    assert asyncio.run(runner.services_not_ready()) == ["decision", "dispatch", "payout"]
    assert asked == [f"http://127.0.0.1:{p}/health/ready" for p in (18991, 18992, 18993)]


def test_a_broker_failing_mid_run_is_a_message_and_exit_2_not_a_traceback(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aiokafka.errors import NodeNotReadyError

    from services.simulate import runner

    async def broker_gone(*_: object) -> dict[str, Any]:
        raise NodeNotReadyError("Attempt to send a request to node which is not ready (node id 1).")

    monkeypatch.setattr(runner, "simulate", broker_gone)
    console = Console(record=True, width=200)
    opts = runner.Options(bootstrap="127.0.0.1:1", report=tmp_path / "summary.json")
    assert runner.run(opts, console) == 2
    printed = console.export_text()
    assert "Kafka at 127.0.0.1:1 failed during the run (NodeNotReadyError: Attempt to send" in printed, printed
    assert not (tmp_path / "summary.json").exists()


def test_the_directory_wait_looks_again_after_a_broker_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A broker restarting while simulate waits for dispatch's directory is not the end of the run."""
    import asyncio
    import contextlib

    from aiokafka.errors import NodeNotReadyError

    from services.simulate import kafka_io

    answers: list[object] = [NodeNotReadyError("not ready"), False, True]

    @contextlib.asynccontextmanager
    async def admin(_: str):  # type: ignore[no-untyped-def]
        yield None

    async def caught_up(*_: object) -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    monkeypatch.setattr(kafka_io, "admin_client", admin)
    monkeypatch.setattr(kafka_io, "group_caught_up", caught_up)
    real_sleep = asyncio.sleep
    monkeypatch.setattr(kafka_io.asyncio, "sleep", lambda *_: real_sleep(0))
    asyncio.run(kafka_io.wait_for_group("127.0.0.1:1", "g", {}))
    assert answers == []


def test_ctrl_c_is_a_line_and_exit_130(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from services.simulate import runner

    async def interrupted(*_: object) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "simulate", interrupted)
    console = Console(record=True, width=200)
    assert runner.run(runner.Options(report=tmp_path / "summary.json"), console) == 130
    assert "interrupted; what was sent stays in Kafka" in console.export_text()


def test_closing_a_client_after_the_broker_went_does_not_hide_the_run_s_error() -> None:
    """aiokafka's consumer.stop() raised a CancelledError of its own (its fetcher's backoff sleep)
    with the broker gone, which replaced the run's LeaderNotAvailableError with a traceback."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError

    from services.simulate import runner

    async def stop_raising(exc: BaseException) -> None:
        raise exc

    async def main() -> None:
        await runner._close(stop_raising(asyncio.CancelledError()))
        await runner._close(stop_raising(KafkaConnectionError("gone")))
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # now the run itself is cancelled (Ctrl-C) while a stop waits: that one goes through
        with pytest.raises(asyncio.CancelledError):
            await runner._close(asyncio.sleep(5))

    asyncio.run(main())
