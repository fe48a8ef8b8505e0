"""One order of the synthetic day: its business case, its events and its intended end (pure)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import v1
from services.simulate import content
from services.simulate.bad_records import bad_record
from services.simulate.mix import primary_request
from services.simulate.plan import Message, OrderPlan, SecondReport, facts_from_messages
from services.simulate.rules import (
    GRANTED,
    VALID_REASONS,
    Intended,
    Market,
    Request,
    SecondVisit,
    intend,
    request_from_value,
    same_evaluation,
)

DAY = datetime(2026, 11, 2, tzinfo=UTC)
LAST_MINUTE = 24 * 60 - 2
SHARE = {
    "request_first": 0.05,
    "duplicate": 0.04,
    "while_open": 0.05,
    "retry": 0.4,
    "second_report": 0.6,
    "same_evaluation": 0.5,
    "second_duplicate": 0.1,
}
RETRYABLE = ("denied:soft_no_not_delivered", "denied:provider_suggestions_pending")
ACTORS = {
    "supervisor": ("SUP", 12),
    "manager": ("MGR", 4),
    "agent": ("AGENT", 60),
    "authorizations_agent": ("AUTH", 40),
}


def timestamp(minutes: float, aware: bool = True) -> str:
    moment = DAY + timedelta(seconds=round(min(minutes, LAST_MINUTE) * 60))
    return (moment if aware else moment.replace(tzinfo=None)).isoformat()


@dataclass
class OrderDraft:
    """An order being built: ids, market and the messages so far."""

    rng: random.Random
    run: str
    index: int
    market: Market
    messages: list[Message] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def order_id(self) -> str:
        return f"SO-{self.run}-{self.index:04d}"

    @property
    def job_id(self) -> str:
        return f"JOB-{self.run}-{self.index:04d}-1"

    @property
    def customer_id(self) -> str:
        return f"CUST-{self.run}-{self.index:04d}"

    def header(self, suffix: str, at: float) -> dict[str, Any]:
        eid = f"evt-{self.run}-{self.index:04d}-{suffix}"
        return {"event_id": eid, "occurred_at": timestamp(at), "service_order_id": self.order_id}

    def add(self, topic: str, at: float, value: Mapping[str, Any], label: str) -> None:
        self.messages.append(Message(topic, self.order_id, at, value, label=label))

    def first(self, label: str) -> Message:
        return next(m for m in self.messages if m.label == label)

    def intended(self, second: SecondVisit | None = None) -> Intended:
        return intend(facts_from_messages(self.messages, self.market, second))


def start(rng: random.Random, run: str, index: int, providers: Sequence[Mapping[str, Any]]) -> OrderDraft:
    """Pick the original job's company (bigger companies get more jobs), technician and zip."""
    active = [p for p in providers if p["active"]]
    provider = rng.choices(active, [len(p["technicians"]) for p in active])[0]
    technician = rng.choice(provider["technicians"])["technician_id"]
    original = (provider["provider_id"], technician)
    market = Market(tuple(providers), provider["trades"][0], rng.choice(provider["zips"]), original)
    return OrderDraft(rng, run, index, market)


def _actor(rng: random.Random, role: str) -> dict[str, str]:
    prefix, count = ACTORS[role]
    return {"id": f"{prefix}-{rng.randint(1, count)}", "role": role}


def request_value(draft: OrderDraft, req: Request, suffix: str, at: float) -> dict[str, Any]:
    requester = {
        "customer": {"id": draft.customer_id, "role": "customer"},
        "service_provider": {"id": draft.market.original[0], "role": "service_provider"},
    }.get(req.source) or _actor(draft.rng, "authorizations_agent")
    value = {
        **draft.header(suffix, at),
        "service_job_id": draft.job_id,
        "source": req.source,
        "reason_code": req.reason_code,
        "reason_detail": content.REASON_DETAIL[req.reason_code],
        "requested_by": requester,
    }
    optional = {
        "soft_no_delivered": req.soft_no_delivered,
        "offered_by_agent": req.offered_by_agent or None,
        "approved_by": _actor(draft.rng, req.approved_by_role) if req.approved_by_role else None,
        "prefer_same_company_different_technician": req.prefer_same or None,
    }
    if req.hotline is not None:
        optional["provider_attempts"] = {
            "manufacturer_hotline": req.hotline,
            "second_technician_sent": req.second_technician_sent,
        }
    # Absent means "not done" in the contract, so only what was done goes on the wire.
    return value | {k: v for k, v in optional.items() if v is not None}


def report_value(draft: OrderDraft, reason: str, paid: bool, at: float) -> dict[str, Any]:
    rng, market = draft.rng, draft.market
    diagnosis = content.diagnosis(rng, market.trade, reason)
    return {
        **draft.header("rpt", at),
        "service_job_id": draft.job_id,
        "provider_id": market.original[0],
        "technician_id": market.original[1],
        "customer_id": draft.customer_id,
        "trade": market.trade,
        "property_zip": market.zip_code,
        "diagnosis": diagnosis,
        "notes": content.notes(diagnosis),
        "charges": content.first_charges(rng),
        "deductible": content.deductible(rng, paid),
    }


def add_report_and_request(draft: OrderDraft, primary: Request, paid: bool, req_at: float) -> None:
    """The report usually comes first; now and then upstream sends the request ahead of it."""
    rng = draft.rng
    if rng.random() < SHARE["request_first"]:
        report_at = req_at + rng.uniform(3, 40)
        draft.tags.append("request_before_report")
    else:
        report_at = req_at - rng.uniform(15, 150)
    report = report_value(draft, primary.reason_code, paid, report_at)
    draft.add(v1.SERVICE_REPORT_RECEIVED, report_at, report, "report")
    draft.add(v1.SECOND_OPINION_REQUESTED, req_at, request_value(draft, primary, "req", req_at), "request")


def _approval(draft: OrderDraft, n: int, role: str, decision: str, at: float) -> None:
    value = {
        **draft.header(f"apr{n}", at),
        "service_job_id": draft.job_id,
        "decision": decision,
        "approver": _actor(draft.rng, role),
    }
    draft.add(v1.APPROVAL_RECORDED, at, value, f"approval:{role}:{decision}")


def add_approvals(draft: OrderDraft, mode: str, req_at: float) -> None:
    """Approvals recorded apart from the request: before, after, by an agent (never counts)."""
    rng = draft.rng
    boss = rng.choice(("supervisor", "manager"))
    agent_at = req_at + rng.uniform(5, 30)
    if mode == "agent_then_supervisor" or (mode in ("deny", "none") and rng.random() < 0.5):
        _approval(draft, 1, "agent", "approve", agent_at)
    if mode == "before":
        _approval(draft, 2, boss, "approve", req_at - rng.uniform(2, 12))
    elif mode in ("after", "agent_then_supervisor", "deny"):
        _approval(draft, 2, boss, "deny" if mode == "deny" else "approve", agent_at + rng.uniform(5, 60))
    if mode:
        draft.tags.append(f"approval:{mode}")


def add_extra_request(draft: OrderDraft, mode: str, req_at: float) -> None:
    """A corrected retry after a fixable denial, or a distinct request while the case is open.

    Never after a recorded supervisor denial: whether the case is still open when the second
    request lands would then depend on which topic the decision service reads first.
    """
    rng, outcome = draft.rng, draft.intended().outcome
    first = request_from_value(draft.first("request").value or {})
    at = req_at + rng.uniform(30, 150)
    if outcome in RETRYABLE and mode in ("inline", "none", "") and rng.random() < SHARE["retry"]:
        if first.source == "customer":
            again = replace(first, soft_no_delivered=True, approved_by_role="supervisor")
        else:
            again = replace(first, hotline="called", second_technician_sent=True)
        draft.tags.append("retry_after_denial")
    elif not outcome.startswith("denied:") and mode != "deny" and rng.random() < SHARE["while_open"]:
        again = Request("authorizations", rng.choice(VALID_REASONS))
        draft.tags.append("second_request_while_open")
    else:
        return
    draft.add(v1.SECOND_OPINION_REQUESTED, at, request_value(draft, again, "req2", at), "request:extra")


def add_duplicate(draft: OrderDraft) -> None:
    """At-least-once delivery: the same event (same event_id) arrives twice."""
    rng = draft.rng
    if rng.random() >= SHARE["duplicate"]:
        return
    original = rng.choice(draft.messages)
    later = replace(original, at=original.at + rng.uniform(1, 20), label="duplicate")
    draft.messages.append(later)
    draft.tags.append(f"duplicate:{original.label.split(':')[0]}")


def add_bad_record(draft: OrderDraft, kind: str) -> None:
    report, request = draft.first("report"), draft.first("request")
    at = report.at - draft.rng.uniform(1, 10)
    naive = timestamp(at, aware=False)
    topic, raw = bad_record(kind, report.value or {}, request.value or {}, naive)
    draft.messages.append(Message(topic, draft.order_id, at, raw=raw, label=f"bad:{kind}"))
    draft.tags.append(f"bad:{kind}")


def plan_second_report(draft: OrderDraft) -> tuple[SecondReport, SecondVisit] | None:
    """Most dispatched cases get their second-opinion report, same evaluation or not."""
    rng = draft.rng
    if draft.intended().outcome != GRANTED or "second_request_while_open" in draft.tags:
        return None
    if rng.random() >= SHARE["second_report"]:
        return None
    report = draft.first("report").value or {}
    first_diagnosis = report["diagnosis"]
    same = rng.random() < SHARE["same_evaluation"]
    diagnosis = content.second_diagnosis(rng, draft.market.trade, first_diagnosis, same)
    charges = content.second_charges(rng)
    at = max(m.at for m in draft.messages) + rng.uniform(60, 240)
    value = {
        **draft.header("rpt2", at),
        "customer_id": draft.customer_id,
        "trade": draft.market.trade,
        "property_zip": draft.market.zip_code,
        "diagnosis": diagnosis,
        "notes": content.notes(diagnosis),
        "charges": charges,
        "deductible": {"amount": "0.00", "paid_in_full": True},  # waived on the new job
    }
    duplicate = rng.random() < SHARE["second_duplicate"]
    visit = SecondVisit(same_evaluation(first_diagnosis, diagnosis), diagnosis["covered"], charges)
    draft.tags.append("second_report:" + ("same" if visit.same else "different"))
    return SecondReport(value, duplicate), visit


def build(seed: int, run: str, index: int, providers: Sequence[Mapping[str, Any]], bad_kind: str | None) -> OrderPlan:
    rng = random.Random(f"order/{seed}/{index}")
    draft = start(rng, run, index, providers)
    primary, mode, paid = primary_request(rng)
    draft.tags.extend([primary.source, primary.reason_code])
    req_at = rng.uniform(8 * 60, 18 * 60)
    add_report_and_request(draft, primary, paid, req_at)
    if primary.source == "customer":
        add_approvals(draft, mode, req_at)
    add_extra_request(draft, mode, req_at)
    add_duplicate(draft)
    if bad_kind:
        add_bad_record(draft, bad_kind)
    second = plan_second_report(draft)
    intended = draft.intended(second[1] if second else None)
    messages = tuple(sorted(draft.messages, key=lambda m: m.at))
    report = second[0] if second else None
    return OrderPlan(draft.order_id, tuple(draft.tags), messages, intended, report)
