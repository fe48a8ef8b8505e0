"""Requests handled as a set (SQLite; the same checks on PostgreSQL are in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.consumer import APPLIED, RouteContext, _runs
from services.common.metrics import ServiceMetrics
from services.decision.app.mapping import case_id_for
from services.serve import load_spec
from tests.service import request_sets as rs
from tests.support.bus import ServiceUnderTest


@pytest.fixture
async def decisions(sqlite_templates: dict[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two decision services on fresh databases of their own."""
    made = []
    for name in ("one", "two"):
        path = tmp_path / f"decision-{name}.db"
        path.write_bytes(sqlite_templates["decision"].read_bytes())
        svc = ServiceUnderTest(load_spec("decision"), f"sqlite+aiosqlite:///{path}")
        await svc.start()
        made.append(svc)
    yield made
    for svc in made:
        await svc.stop()


async def test_a_run_of_requests_writes_what_one_at_a_time_writes(decisions) -> None:  # type: ignore[no-untyped-def]
    batched, single = decisions
    assert await rs.apply(batched, as_batch=True) == rs.EXPECTED_OUTCOMES
    assert await rs.apply(single, as_batch=False) == rs.EXPECTED_OUTCOMES
    got, want = await rs.snapshot(batched), await rs.snapshot(single)
    assert rs.per_case_order(got) == rs.per_case_order(want)
    statuses = {c["service_order_id"]: c["status"] for c in got["cases"] if c["request_event_id"] != "R-R4-first"}
    assert statuses == {
        "SO-R1": "granted",
        "SO-R2": "granted",
        "SO-R3": "granted",
        "SO-R4": "denied",
        "SO-R5": "awaiting_report",
        "SO-R6": "denied",
        "SO-R7": "awaiting_approval",
        "SO-R8": "granted",
        "SO-R9": "awaiting_report",
    }
    assert ("evt-apr-R3", case_id_for("R-R3")) in got["approvals"]
    topics = sorted(t for t, *_ in got["outbox"])
    assert topics.count("second_opinion.granted") == 5 and topics.count("second_opinion.denied") == 2
    assert topics.count("provider_feedback.recorded") == 1


async def test_a_run_costs_the_same_statements_for_two_requests_or_forty(decisions) -> None:  # type: ignore[no-untyped-def]
    counts = []
    for svc, n in zip(decisions, (2, 40), strict=True):
        reports, requests = rs.granted_requests(f"SO-N{n}-", n)
        for record in reports:
            await svc.consumer.process(record)
        counter = rs.StatementCounter(svc)
        try:
            assert await svc.consumer.process_batch(requests) == [APPLIED] * n
        finally:
            counter.close()
        counts.append(counter.count)
        assert len((await rs.snapshot(svc))["outbox"]) == n
    assert counts[0] == counts[1], counts
    assert counts[0] <= 8, counts  # BEGIN, inbox, reports, cases, insert cases, timeline, outbox, COMMIT


async def test_each_event_of_a_run_continues_its_own_trace(decisions) -> None:  # type: ignore[no-untyped-def]
    svc = decisions[0]
    await rs.apply(svc, as_batch=True)
    sent = {r.value: dict(r.headers)["traceparent"].decode() for r in rs.batch()}
    trace_of_request = {json.loads(v)["event_id"]: tp.split("-")[1] for v, tp in sent.items()}
    async with svc.sessions() as session:
        rows = (await session.execute(rs.select(svc.spec.outbox))).mappings().all()
    checked = 0
    for row in rows:
        payload = json.loads(row["payload"])
        request_id = rs.request_of_case(payload["case_id"])
        if request_id in trace_of_request and request_id != "R-R8":  # R-R8's grant came before the batch
            assert json.loads(row["headers"])["traceparent"].split("-")[1] == trace_of_request[request_id]
            checked += 1
    assert checked == 6  # three grants, two denials, one feedback


def test_runs_split_at_another_topic_and_at_a_second_event_of_one_order() -> None:
    reports, requests = rs.granted_requests("SO-S", 3)
    routes = load_spec("decision").build_routes(RouteContext(ServiceMetrics("decision-runs")))  # the real service's
    by_topic = {r.topic: r for r in routes}

    def item(n, record):  # type: ignore[no-untyped-def]
        route = by_topic[record.topic]
        return (n, record, route, route.model.model_validate_json(record.value))

    again = rs._record(rs.REQUEST, 99, rs.request("SO-S0", "SO-S0-J1", "R-again"))
    sequence = [requests[0], requests[1], again, reports[2], requests[2], reports[0], reports[1]]
    runs = _runs([item(n, r) for n, r in enumerate(sequence)])
    assert [[i for i, *_ in run] for run in runs] == [[0, 1], [2], [3], [4], [5], [6]]


async def test_claim_many_returns_only_new_event_ids_across_pages(decisions) -> None:  # type: ignore[no-untyped-def]
    from services.common import inbox

    svc = decisions[0]
    claims = [(f"evt-{n}", "t", 0, n) for n in range(2500)]  # more than one page of 1000 rows
    async with svc.sessions() as session, session.begin():
        assert await inbox.claim_many(session, svc.spec.inbox, consumer="c", records=claims[:300]) == {
            f"evt-{n}" for n in range(300)
        }
    async with svc.sessions() as session, session.begin():
        fresh = await inbox.claim_many(session, svc.spec.inbox, consumer="c", records=claims)
    assert fresh == {f"evt-{n}" for n in range(300, 2500)}
