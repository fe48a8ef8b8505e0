"""A batch of requests of distinct orders goes through the set-based handler (a "run"):
the same outcome, row for row, as the same records applied one at a time.

Shared by the SQLite tests here and the PostgreSQL ones in tests/integration.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, select

from services.common.consumer import APPLIED, DUPLICATE
from services.decision.adapters.orm import approval, case, case_event
from services.decision.app.mapping import case_id_for
from tests.support.bus import FakeRecord, ServiceUnderTest
from tests.support.events import approval as approval_event
from tests.support.events import report, request

REPORT, REQUEST, APPROVAL = "service_report.received", "second_opinion.requested", "second_opinion.approval_recorded"

# The orders of the batch and what each one exercises.
CASES = {
    "SO-R1": "granted",
    "SO-R2": "granted, another reason",
    "SO-R3": "customer, approved by a supervisor before the request arrived",
    "SO-R4": "a case already open on the order: denied",
    "SO-R5": "no report yet: waits for it",
    "SO-R6": "invalid reason with provider feedback: denied, two events",
    "SO-R7": "customer, no approval yet: waits for one",
    "SO-R8": "already handled: a duplicate",
    "SO-R9": "report of another order under that job id: waits",
}


def _record(topic: str, offset: int, value: dict[str, Any], traceparent: str | None = None) -> FakeRecord:
    headers = [("traceparent", traceparent.encode())] if traceparent else []
    return FakeRecord(topic, 0, offset, 0, value["service_order_id"].encode(), json.dumps(value).encode(), headers)


def customer(order: str, event_id: str) -> dict[str, Any]:
    return request(
        order, f"{order}-J1", event_id, source="customer", reason="conflicting_reports", soft_no_delivered=True
    )


def preload() -> list[FakeRecord]:
    """What the decision service has seen before the batch."""
    items = [(REPORT, report(o, f"{o}-J1")) for o in CASES if o not in ("SO-R5", "SO-R9")]
    items += [
        (REPORT, report("SO-OTHER", "SO-R9-J1")),  # the job id of SO-R9, reported for another order
        (APPROVAL, approval_event("SO-R3", "SO-R3-J1", "evt-apr-R3")),
        (REQUEST, request("SO-R4", "SO-R4-J1", "R-R4-first")),  # granted: the order now has an open case
        (REQUEST, request("SO-R8", "SO-R8-J1", "R-R8")),
    ]
    return [_record(topic, n, value) for n, (topic, value) in enumerate(items)]


def batch() -> list[FakeRecord]:
    values = [
        request("SO-R1", "SO-R1-J1", "R-R1"),
        request("SO-R2", "SO-R2-J1", "R-R2", reason="suspected_lack_of_maintenance"),
        customer("SO-R3", "R-R3"),
        request("SO-R4", "SO-R4-J1", "R-R4"),
        request("SO-R5", "SO-R5-J1", "R-R5"),
        request("SO-R6", "SO-R6-J1", "R-R6", reason="high_pricing"),
        customer("SO-R7", "R-R7"),
        request("SO-R8", "SO-R8-J1", "R-R8"),
        request("SO-R9", "SO-R9-J1", "R-R9"),
    ]
    return [_record(REQUEST, 100 + n, v, f"00-{n + 1:032x}-{n + 1:016x}-01") for n, v in enumerate(values)]


EXPECTED_OUTCOMES = [APPLIED] * 7 + [DUPLICATE, APPLIED]


async def apply(svc: ServiceUnderTest, *, as_batch: bool) -> list[str]:
    for record in preload():
        await svc.consumer.process(record)
    if as_batch:
        return await svc.consumer.process_batch(batch())
    return [await svc.consumer.process(r) for r in batch()]


async def snapshot(svc: ServiceUnderTest) -> dict[str, Any]:
    """Everything the decision service wrote, without times and generated row ids."""
    outbox = svc.spec.outbox
    async with svc.sessions() as session:
        cases = (await session.execute(select(case).order_by(case.c.case_id))).mappings().all()
        timeline = (await session.execute(select(case_event).order_by(case_event.c.id))).mappings().all()
        approvals = (await session.execute(select(approval.c.event_id, approval.c.used_by_case_id))).all()
        staged = (await session.execute(select(outbox).order_by(outbox.c.id))).mappings().all()
    skip = {"id", "created_at", "updated_at", "recorded_at", "occurred_at"}
    return {
        "cases": [{k: v for k, v in c.items() if k not in skip} for c in cases],
        # Per case in order; rows of different orders may interleave differently.
        "timeline": sorted(
            (
                (t["case_id"], n, t["direction"], t["topic"], t["event_id"], t["summary"])
                for n, t in enumerate(timeline)
            ),
            key=lambda row: (row[0], row[1]),
        ),
        "approvals": sorted(approvals),
        "outbox": sorted(
            (o["topic"], o["key"], o["event_id"], json.dumps(_timeless(json.loads(o["payload"])), sort_keys=True))
            for o in staged
        ),
    }


def per_case_order(snap: dict[str, Any]) -> dict[str, Any]:
    """The timeline as each case's sequence of rows (positions across cases dropped)."""
    timeline: dict[str, list[Any]] = {}
    for case_id, _, *row in snap["timeline"]:
        timeline.setdefault(case_id, []).append(tuple(row))
    return {**snap, "timeline": timeline}


def _timeless(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "occurred_at"}


class StatementCounter:
    """Counts the SQL statements an engine sends (an executemany counts once)."""

    def __init__(self, svc: ServiceUnderTest) -> None:
        self.count = 0
        self._engine = svc.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


def granted_requests(prefix: str, n: int) -> tuple[list[FakeRecord], list[FakeRecord]]:
    reports = [_record(REPORT, i, report(f"{prefix}{i}", f"{prefix}{i}-J1")) for i in range(n)]
    requests = [
        _record(REQUEST, 1000 + i, request(f"{prefix}{i}", f"{prefix}{i}-J1", f"R-{prefix}{i}")) for i in range(n)
    ]
    return reports, requests


def request_of_case(cid: str) -> str | None:
    """The request event id (of the batch) whose case this is."""
    ids = [json.loads(r.value or b"{}")["event_id"] for r in batch()]
    return next((e for e in ids if case_id_for(e) == cid), None)


class LockCounter(StatementCounter):
    """Counts the per-order lock statements an engine sends."""

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_advisory_xact_lock" in statement:
            self.count += 1
