"""Correctness of one run: for each order, exactly what the rules call for, once, and nothing else."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from bench.kafkaio import Obs
from bench.workload import EXPECTED_PAYOUTS, Directory, Workload
from schemas import v1

DECISION_OUTPUTS = (v1.SECOND_OPINION_GRANTED, v1.SECOND_OPINION_DENIED, v1.PROVIDER_FEEDBACK_RECORDED)
PIPELINE_OUTPUTS = v1.SERVICE_OUTPUTS
INPUT_DLQS = tuple(v1.dlq_topic(t) for t in v1.TOPICS)


def decision_expectation() -> dict[str, int]:
    return {v1.SECOND_OPINION_GRANTED: 1}


def pipeline_expectation() -> dict[str, int]:
    return {
        v1.SECOND_OPINION_GRANTED: 1,
        v1.SERVICE_JOB_CREATED: 1,
        v1.CUSTOMER_NOTIFICATION_REQUESTED: 1,
        v1.PAYOUT_ISSUED: len(EXPECTED_PAYOUTS),
    }


def check(
    records: Iterable[Obs],
    wl: Workload,
    expected: Mapping[str, int],
    where: Directory | None = None,
) -> dict[str, Any]:
    """Per order and topic, the number of distinct event ids must be `expected` (0 for unnamed topics);
    no event id may arrive twice; payouts and jobs must carry what the grant calls for."""
    records = list(records)
    distinct: dict[tuple[str, str], set[str]] = defaultdict(set)
    copies = Counter((r.topic, r.event_id) for r in records)
    by_event: dict[tuple[str, str], Obs] = {}
    for r in records:
        distinct[(r.key, r.topic)].add(r.event_id)
        by_event[(r.topic, r.event_id)] = r
    problems: list[str] = []
    missing = extra = 0
    for order in wl.orders:
        for topic in {*expected, *(t for (o, t) in distinct if o == order)}:
            want, got = expected.get(topic, 0), len(distinct.get((order, topic), ()))
            if got < want:
                missing += 1
                _note(problems, f"{order}: {got} of {want} {topic}")
            elif got > want:
                extra += 1
                _note(problems, f"{order}: {got} {topic} where {want} expected")
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    for (topic, event_id), n in copies.items():
        if n > 1:
            _note(problems, f"{topic} event {event_id} arrived {n} times")
    wrong = 0
    for r in by_event.values():
        issue = _content(r, wl, where)
        if issue:
            wrong += 1
            _note(problems, f"{r.key}: {issue}")
    if v1.PAYOUT_ISSUED in expected:
        for order in _orders_with_wrong_fee_types(by_event.values()):
            wrong += 1
            _note(problems, f"{order}: payouts are not one of each of {sorted(EXPECTED_PAYOUTS)}")
    decided = {r.key for r in records if r.topic in (v1.SECOND_OPINION_GRANTED, v1.SECOND_OPINION_DENIED)}
    return {
        "ok": not (missing or extra or duplicates or wrong),
        "orders": len(wl.orders),
        "orders_decided": len(decided),
        "records": len(records),
        "missing": missing,
        "unexpected": extra,
        "duplicate_records": duplicates,
        "wrong_content": wrong,
        "problems": problems,
    }


def _content(r: Obs, wl: Workload, where: Directory | None) -> str | None:
    v = r.value or {}
    if r.topic == v1.SECOND_OPINION_GRANTED:
        if v.get("original_job_id") != wl.jobs.get(r.key) or v.get("source") != "authorizations":
            return f"grant names job {v.get('original_job_id')} / source {v.get('source')}"
    elif r.topic == v1.PAYOUT_ISSUED:
        fee_type = v.get("fee_type")
        if EXPECTED_PAYOUTS.get(str(fee_type)) != v.get("amount") or v.get("job_id") != wl.jobs.get(r.key):
            return f"payout {fee_type} {v.get('amount')} on job {v.get('job_id')}"
    elif (
        r.topic == v1.SERVICE_JOB_CREATED
        and where is not None
        and (v.get("provider_id") != where.best or v.get("deductible_waived") is not True)
    ):
        return f"job with provider {v.get('provider_id')}, deductible_waived {v.get('deductible_waived')}"
    return None


def _orders_with_wrong_fee_types(records: Iterable[Obs]) -> list[str]:
    """Orders whose (distinct) payouts are not exactly one of each expected fee type."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        if r.topic == v1.PAYOUT_ISSUED and r.value:
            seen[r.key][str(r.value.get("fee_type"))] += 1
    want = Counter(dict.fromkeys(EXPECTED_PAYOUTS, 1))
    return [order for order, c in seen.items() if c != want]


def relay_check(records: Iterable[Obs], wl: Workload, db_counts: tuple[int, int] | None = None) -> dict[str, Any]:
    """A ceiling run: one output per input order, none twice; with a database, every case granted and sent."""
    records = list(records)
    copies = Counter(r.event_id for r in records)
    per_order = Counter(r.key for r in records)
    missing = sum(1 for o in wl.orders if per_order[o] == 0)
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    problems: list[str] = []
    if missing:
        problems.append(f"{missing} orders without an output")
    if duplicates:
        problems.append(f"{duplicates} outputs arrived more than once")
    result: dict[str, Any] = {"orders": len(wl.orders), "records": len(records)}
    if db_counts is not None:
        granted, sent = db_counts
        result.update(granted_cases=granted, published_rows=sent)
        if granted != len(wl.orders) or sent != len(wl.orders):
            problems.append(f"database: {granted} granted cases, {sent} published outbox rows of {len(wl.orders)}")
    result.update(ok=not problems, missing=missing, duplicate_records=duplicates, problems=problems)
    return result


def _note(problems: list[str], text: str) -> None:
    if len(problems) < 12:
        problems.append(text)
    elif len(problems) == 12:
        problems.append("...")
