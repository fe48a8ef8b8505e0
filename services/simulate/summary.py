"""What the stack did with the synthetic day, reconciled order by order against the plan (pure)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

from schemas import v1
from services.simulate.bad_records import TEST_PAN
from services.simulate.plan import OrderPlan, Plan
from services.simulate.rules import AWAITING, GRANTED, UNASSIGNED, Intended

NOT_DISPATCHED = "granted:not_dispatched"
NO_DECISION = "no_decision"
# A case awaiting approval emits nothing: from outside it is indistinguishable from silence.
OBSERVABLE = {AWAITING: NO_DECISION}
PAN_DIGITS = re.sub(r"\D", "", TEST_PAN)

# One business fact per key: a second distinct event_id for the same key is a duplicate, e.g.
# two payouts for the same (job_id, fee_type) pay the same fee twice.
FACT_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "decision per case": ((v1.SECOND_OPINION_GRANTED, v1.SECOND_OPINION_DENIED), ("case_id",)),
    "payout per (job_id, fee_type)": ((v1.PAYOUT_ISSUED,), ("job_id", "fee_type")),
    "job per case": ((v1.SERVICE_JOB_CREATED,), ("case_id",)),
    "unassigned per case": ((v1.DISPATCH_UNASSIGNED,), ("case_id",)),
    "notification per case": ((v1.CUSTOMER_NOTIFICATION_REQUESTED,), ("case_id",)),
    "conclusion per case": ((v1.SECOND_OPINION_CONCLUDED,), ("case_id",)),
    "customer charge per case": ((v1.CUSTOMER_CHARGE_ASSESSED,), ("case_id",)),
    "feedback per (case, category)": ((v1.PROVIDER_FEEDBACK_RECORDED,), ("case_id", "category")),
}


@dataclass(frozen=True)
class Record:
    """One record read from an output or dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: str | None
    raw: bytes
    value: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, topic: str, partition: int, offset: int, key: bytes | None, raw: bytes) -> Record:
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):  # nested past the parser's depth: not JSON
            value = None
        value = value if isinstance(value, dict) else None
        key_text = key.decode("utf-8", "replace") if key is not None else None
        return cls(topic, partition, offset, key_text, raw, value)

    @property
    def is_dlq(self) -> bool:
        return self.topic.endswith(v1.DLQ_SUFFIX)

    @property
    def event_id(self) -> str | None:
        return None if self.value is None else self.value.get("event_id")

    def order_in(self, known: Mapping[str, Any]) -> str | None:
        """The order this record is about, as the scenario runner decides it (key or value)."""
        candidates = (self.key, (self.value or {}).get("service_order_id"))
        return next((c for c in candidates if isinstance(c, str) and c in known), None)


def _identity(r: Record) -> tuple[str, str]:
    return r.topic, r.event_id or f"@{r.partition}:{r.offset}"


def distinct_events(records: Iterable[Record]) -> dict[str, list[Mapping[str, Any]]]:
    """Event values per output topic, each event_id once, in arrival order."""
    seen: set[tuple[str, str]] = set()
    events: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.is_dlq or r.value is None or _identity(r) in seen:
            continue
        seen.add(_identity(r))
        events[r.topic].append(r.value)
    return events


def redelivered(records: Iterable[Record]) -> int:
    """Records repeating an event_id already seen: harmless at-least-once noise, shown for info."""
    ids = [_identity(r) for r in records if not r.is_dlq]
    return len(ids) - len(set(ids))


def _dlq_records(records: Iterable[Record]) -> list[Record]:
    # A redelivered DLQ write carries the same original bytes; count each bad record once.
    unique = {(r.topic, r.key, r.raw): r for r in records if r.is_dlq}
    return list(unique.values())


def _outcome(events: Mapping[str, list[Mapping[str, Any]]]) -> str:
    if concluded := events.get(v1.SECOND_OPINION_CONCLUDED):
        return f"concluded:{concluded[0]['outcome']}"
    if events.get(v1.SERVICE_JOB_CREATED):
        return GRANTED
    if events.get(v1.DISPATCH_UNASSIGNED):
        return UNASSIGNED
    if events.get(v1.SECOND_OPINION_GRANTED):
        return NOT_DISPATCHED
    # A later request refused as `case_already_open` says nothing about the case left open.
    codes = [d["denial_code"] for d in events.get(v1.SECOND_OPINION_DENIED, [])]
    codes = [c for c in codes if c != "case_already_open"]
    return f"denied:{codes[-1]}" if codes else NO_DECISION


def _first_per(values: Iterable[Mapping[str, Any]], *key: str) -> list[Mapping[str, Any]]:
    firsts: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for v in values:
        firsts.setdefault(tuple(v.get(k) for k in key), v)
    return list(firsts.values())


def observe(records: Sequence[Record]) -> Intended:
    """The same facts as an order's `Intended`, read from what the services emitted for it."""
    events = distinct_events(records)
    payouts = _first_per(events.get(v1.PAYOUT_ISSUED, []), "job_id", "fee_type")
    charges = events.get(v1.CUSTOMER_CHARGE_ASSESSED, [])
    feedback = _first_per(events.get(v1.PROVIDER_FEEDBACK_RECORDED, []), "case_id", "category")
    jobs = events.get(v1.SERVICE_JOB_CREATED, [])
    dlq = _dlq_records(records)
    return Intended(
        outcome=_outcome(events),
        denials=tuple(sorted(d["denial_code"] for d in events.get(v1.SECOND_OPINION_DENIED, []))),
        payouts=tuple(sorted((p["fee_type"], p["amount"]) for p in payouts)),
        charge=(charges[0]["amount"], charges[0]["reason"]) if charges else None,
        feedback=tuple(sorted(f["category"] for f in feedback)),
        network=jobs[0]["network"] if jobs else None,
        notifications=len(_first_per(events.get(v1.CUSTOMER_NOTIFICATION_REQUESTED, []), "case_id")),
        dlq=tuple(sorted(Counter(r.topic for r in dlq).items())),
        pan_leaks=sum(PAN_DIGITS in re.sub(rb"[ -]", b"", r.raw).decode("latin-1") for r in dlq),
    )


def differences(intended: Intended, observed: Intended) -> list[str]:
    intended = replace(intended, outcome=OBSERVABLE.get(intended.outcome, intended.outcome))
    return [
        f"{f.name}: intended {getattr(intended, f.name)!r}, observed {getattr(observed, f.name)!r}"
        for f in fields(Intended)
        if getattr(intended, f.name) != getattr(observed, f.name)
    ]


def group_by_order(plan: Plan, records: Iterable[Record]) -> dict[str, list[Record]]:
    """This run's records per order; anything keyed outside the plan is someone else's."""
    grouped: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if (order_id := r.order_in(plan.by_id)) is not None:
            grouped[order_id].append(r)
    return grouped


def is_settled(order: OrderPlan, records: Sequence[Record]) -> bool:
    return not differences(order.intended, observe(records))


def reconcile(plan: Plan, grouped: Mapping[str, Sequence[Record]]) -> list[dict[str, Any]]:
    rows = []
    for order in plan.orders:
        observed = observe(grouped.get(order.order_id, []))
        problems = differences(order.intended, observed)
        rows.append(
            {
                "order_id": order.order_id,
                "case": list(order.tags),
                "intended": order.intended.outcome,
                "observed": observed.outcome,
                "accounted": not problems,
                "problems": problems,
            }
        )
    return rows


def duplicates(events: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, int]:
    """Per business fact, how many extra distinct events claim a fact that already happened."""
    result = {}
    for name, (topics, key) in FACT_KEYS.items():
        ids: dict[tuple[Any, ...], set[str]] = defaultdict(set)
        for topic in topics:
            for v in events.get(topic, []):
                ids[tuple(v.get(k) for k in key)].add(str(v.get("event_id")))
        result[name] = sum(len(s) - 1 for s in ids.values())
    return result


def _money(values: Iterable[Mapping[str, Any]], by: str) -> dict[str, dict[str, Any]]:
    totals: dict[str, list[Decimal]] = defaultdict(list)
    for v in values:
        totals[str(v.get(by))].append(Decimal(v["amount"]))
    return {k: {"count": len(a), "total": str(sum(a, Decimal("0.00")))} for k, a in sorted(totals.items())}


def _counts(values: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], str]) -> dict[str, int]:
    return dict(sorted(Counter(key(v) for v in values).items()))


def decisions(events: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, Any]:
    table: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for kind, topic in (
        ("granted", v1.SECOND_OPINION_GRANTED),
        ("denied", v1.SECOND_OPINION_DENIED),
    ):
        for v in events.get(topic, []):
            table[(v["source"], v["reason_code"])][kind] += 1
    rows = [
        {"source": s, "reason_code": r, "granted": c["granted"], "denied": c["denied"]}
        for (s, r), c in sorted(table.items())
    ]
    denied = events.get(v1.SECOND_OPINION_DENIED, [])
    return {"by_source_reason": rows, "denial_codes": _counts(denied, lambda v: v["denial_code"])}


def build_summary(plan: Plan, records: Sequence[Record]) -> dict[str, Any]:
    """The JSON-ready summary; `ok` only when every order is accounted for and nothing doubled."""
    grouped = group_by_order(plan, records)
    mine = [r for rs in grouped.values() for r in rs]
    events = distinct_events(mine)
    rows = reconcile(plan, grouped)
    dupes = duplicates(events)
    notifications = events.get(v1.CUSTOMER_NOTIFICATION_REQUESTED, [])
    return {
        "run": plan.run,
        "seed": plan.seed,
        "orders": len(plan.orders),
        "decisions": decisions(events),
        "jobs_by_network": _counts(events.get(v1.SERVICE_JOB_CREATED, []), lambda v: v["network"]),
        "unassigned": len(events.get(v1.DISPATCH_UNASSIGNED, [])),
        "notifications": {
            "count": len(notifications),
            "with_disclosures": sum(1 for v in notifications if v.get("disclosures")),
        },
        "provider_feedback": _counts(events.get(v1.PROVIDER_FEEDBACK_RECORDED, []), lambda v: v["category"]),
        "payouts": _money(events.get(v1.PAYOUT_ISSUED, []), "fee_type"),
        "customer_charges": _money(events.get(v1.CUSTOMER_CHARGE_ASSESSED, []), "reason"),
        "conclusions": _counts(
            events.get(v1.SECOND_OPINION_CONCLUDED, []),
            lambda v: f"{v['outcome']} / {v['second_visit_charges']} pays",
        ),
        "dlq": dict(sorted(Counter(r.topic for r in _dlq_records(mine)).items())),
        "duplicates": dupes,
        "redelivered_records": redelivered(mine),
        "intended": dict(sorted(Counter(o.intended.outcome for o in plan.orders).items())),
        "reconciliation": rows,
        "accounted": sum(r["accounted"] for r in rows),
        "ok": all(r["accounted"] for r in rows) and not any(dupes.values()),
    }
