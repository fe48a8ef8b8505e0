"""`second-opinion replay` on the real stack: replaying everything changes nothing; dry runs and ranges are exact.

The services run as processes with their own databases and consumer groups, but the topics are
shared with whatever else uses the broker. Assertions therefore look at this test's own orders
(their keys and ids carry run tokens) wherever other traffic could interfere.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas import v1
from services.cli import build_parser
from services.common import dlq_headers
from services.common.settings import SERVICES
from services.operator_tools.commands import replay_request
from services.operator_tools.replay import ReplayReport, input_topics, run_replay
from services.scenario.runner import RunnerSettings, run_scenario_file
from services.scenario.spec import new_run_token
from services.serve import load_spec
from tests.support.events import approval
from tests.support.kafka_client import Tap
from tests.support.operator import cli, operator_actions, point_cli_at, table_rows, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHARED = Path(__file__).resolve().parents[3] / "shared" / "scenarios"
SCENARIOS = (
    "s01_customer_conflicting_reports_supervisor_approved",
    "s13_same_evaluation_customer_pays",
    "s16_out_of_network_and_unassigned",
)
OUTPUTS = v1.SERVICE_OUTPUTS
NOT_STATE = {"inbox", "outbox", "operator_action"}
APPROVALS = v1.APPROVAL_RECORDED
PLAN_LINE = re.compile(r"^\s+(\S+)\[(\d+)\] from (\d+) to (\d+): (\d+) record", re.MULTILINE)
SETTLE_S = 2.0  # for anything a wrong replay would publish (and its cascade) to show up


@pytest.fixture(autouse=True)
def _cli_env(stack, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    point_cli_at(stack, monkeypatch)


async def replay(service: str, operator: str, *argv: str) -> ReplayReport:
    """The CLI's parsing and the function it runs; the report keeps per-record outcomes."""
    args = build_parser().parse_args(["replay", "--service", service, "--operator", operator, *argv])
    return await run_replay(replay_request(args), keep_outcomes=True)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def owned_by(tokens: list[str]) -> Callable[[str], bool]:
    return lambda text: any(t in text for t in tokens)


# ---------------------------------------------------------------- (a) replay everything


async def test_replaying_every_input_topic_from_the_start_changes_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    watched = [*OUTPUTS, *(v1.dlq_topic(t) for t in v1.TOPICS)]
    async with Tap(stack.bootstrap_servers, watched) as tap:
        ours = owned_by(await run_scenarios(stack))
        await wait_until(lambda: outbox_sent(stack, ours))
        state, outputs = await snapshot(stack, ours), distinct_outputs(tap, ours)
        assert outputs, "the scenarios produced no output to compare"
        replays = [replay(svc, "replay-all", "--from-earliest", "--execute") for svc in SERVICES]
        reports = dict(zip(SERVICES, await asyncio.gather(*replays), strict=True))
        await asyncio.sleep(SETTLE_S)
        assert distinct_outputs(tap, ours) == outputs
        assert await snapshot(stack, ours) == state
    for svc, report in reports.items():
        mine = [o for o in report.outcomes if o[3] is not None and ours(o[3])]
        assert mine, f"{svc}: the replay did not read this test's records"
        assert {o[4] for o in mine} == {"duplicate"}, f"{svc}: {mine}"
        await assert_recorded(stack, svc, report)


async def run_scenarios(stack) -> list[str]:  # type: ignore[no-untyped-def]
    await wait_caught_up(stack)  # the scenarios' awaits must not queue behind the topics' history
    settings = RunnerSettings.for_stack(kafka=stack.kafka)
    results = await asyncio.gather(*(run_scenario_file(SHARED / f"{name}.json", settings) for name in SCENARIOS))
    for result in results:
        assert result.passed, result.explain()
    return [r.run for r in results]


async def outbox_sent(stack, ours: Callable[[str], bool]) -> bool:  # type: ignore[no-untyped-def]
    for svc in SERVICES:
        if any(r["published_at"] is None for r in await table_rows(stack, svc, "outbox") if ours(r["key"])):
            return False
    return True


async def snapshot(stack, ours: Callable[[str], bool]) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """This test's rows of every business table and of every outbox, per service."""
    state = {}
    for svc in SERVICES:
        for table in load_spec(svc).metadata.sorted_tables:
            if table.name in NOT_STATE - {"outbox"}:
                continue
            rows = [repr(sorted(r.items())) for r in await table_rows(stack, svc, table.name)]
            state[f"{svc}.{table.name}"] = sorted(r for r in rows if ours(r))
    assert all(state[f"{svc}.outbox"] for svc in SERVICES), "every service emitted something"
    return state


def distinct_outputs(tap: Tap, ours: Callable[[str], bool]) -> set[tuple[str, str]]:
    """(topic, event_id) of this test's output events; DLQ records by their original position."""
    seen = set()
    for r in tap.records:
        if r.key is None or not ours(r.key.decode()):
            continue
        if r.topic.endswith(v1.DLQ_SUFFIX):
            headers = dict(r.headers or ())
            where = [headers.get(h, b"").decode() for h in dlq_headers.ALL[:3]]
            seen.add((r.topic, "/".join(where)))
        else:
            seen.add((r.topic, json.loads(r.value)["event_id"]))
    return seen


async def assert_recorded(stack, service: str, report: ReplayReport) -> None:  # type: ignore[no-untyped-def]
    [action] = await operator_actions(stack, service, "replay-all")
    assert (action["command"], action["dry_run"], action["status"]) == ("replay", False, "completed")
    assert action["parameters"]["topics"] == input_topics(service)
    assert action["parameters"]["from_earliest"] is True
    assert action["plan"] == [r.to_dict() for r in report.plan]
    assert action["result"] == report.result()
    assert action["finished_at"] is not None


# ---------------------------------------------------------------- (b) dry run


async def test_a_dry_run_prints_the_plan_and_changes_nothing(stack, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    token = new_run_token()
    order, event_id = f"SO-DRY-{token}", f"evt-appr-dry-{token}"
    async with Tap(stack.bootstrap_servers, [v1.dlq_topic(APPROVALS)]) as tap:
        # A valid record and a bad one: were a dry run to replay, the bad one would be dead-lettered again.
        await tap.publish(APPROVALS, order, approval(order, f"JOB-{token}", event_id))
        await tap.publish(APPROVALS, order, f"{{not json {token}".encode())
        await wait_until(lambda: approval_rows(stack, event_id))
        assert await tap.wait_for(lambda: len(dlq_of(tap, order)) == 1)
        rows_before, inbox_before = await approval_rows(stack, event_id), await inbox_rows(stack, event_id)
        bounds_before = await partition_bounds(stack.bootstrap_servers, APPROVALS)
        capsys.readouterr()
        code = await cli(
            "replay", "--service", "decision", "--topic", APPROVALS, "--from-earliest", "--operator", "dry"
        )
        printed = capsys.readouterr().out
        bounds_after = await partition_bounds(stack.bootstrap_servers, APPROVALS)
        await asyncio.sleep(SETTLE_S)
        assert len(dlq_of(tap, order)) == 1, "the dry run dead-lettered the bad record again"
    assert code == 0
    assert await approval_rows(stack, event_id) == rows_before
    assert await inbox_rows(stack, event_id) == inbox_before
    plan = [(t, int(p), int(s), int(e), int(c)) for t, p, s, e, c in PLAN_LINE.findall(printed)]
    assert [(t, p) for t, p, *_ in plan] == [(APPROVALS, p) for p in sorted(bounds_before)], printed
    for _, p, start, end, count in plan:
        assert start == bounds_before[p][0]
        assert bounds_before[p][1] <= end <= bounds_after[p][1]
        assert count == end - start
    [action] = await operator_actions(stack, "decision", "dry")
    assert (action["dry_run"], action["status"]) == (True, "planned")
    assert [(r["topic"], r["partition"], r["from"], r["to"], r["count"]) for r in action["plan"]] == plan
    assert action["result"] == {"records": sum(c for *_, c in plan)}


async def approval_rows(stack, event_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [r for r in await table_rows(stack, "decision", "approval") if r["event_id"] == event_id]


async def inbox_rows(stack, event_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [r for r in await table_rows(stack, "decision", "inbox") if r["event_id"] == event_id]


def dlq_of(tap: Tap, key: str) -> list[Any]:
    return [r for r in tap.records if r.key == key.encode()]


async def partition_bounds(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """{partition: (log start, end)}, read independently of the code under test."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        [described] = [d for d in await admin.describe_topics([topic]) if d["topic"] == topic]
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        begins, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        return {tp.partition: (begins[tp], ends[tp]) for tp in sorted(tps)}
    finally:
        await consumer.stop()
        await admin.close()


# ---------------------------------------------------------------- (c) ranges


async def test_replay_from_a_timestamp_or_an_offset_reads_just_that_range(stack) -> None:  # type: ignore[no-untyped-def]
    token = new_run_token()
    order = f"SO-RNG-{token}"
    (a, b, c), moment = await publish_around_a_moment(stack.bootstrap_servers, order, token)
    assert a.partition == b.partition == c.partition
    for i in range(3):  # the live service has them: the replay must find them duplicates
        await wait_until(lambda i=i: approval_rows(stack, f"evt-appr-{token}-{i}"))
    only = ("--topic", APPROVALS, "--partitions", str(a.partition), "--execute")
    since = datetime.fromtimestamp(moment / 1000, UTC).isoformat()

    by_time = await replay("decision", "ranges", "--from-timestamp", since, *only)
    [r] = by_time.plan
    assert (r.topic, r.partition) == (APPROVALS, a.partition)
    assert a.offset < r.start <= b.offset < c.offset < r.end
    assert ours_read(by_time, order) == [(b.offset, "duplicate"), (c.offset, "duplicate")]
    assert [o[2] for o in by_time.outcomes] == list(range(r.start, r.end))

    by_offset = await replay("decision", "ranges", "--from-offset", str(c.offset), *only)
    [r] = by_offset.plan
    assert (r.partition, r.start) == (c.partition, c.offset) and r.end > c.offset
    assert ours_read(by_offset, order) == [(c.offset, "duplicate")]

    actions = await operator_actions(stack, "decision", "ranges")
    assert [x["status"] for x in actions] == ["completed", "completed"]
    assert actions[0]["parameters"]["from_timestamp_ms"] == pytest.approx(moment, abs=1)
    assert actions[1]["parameters"]["from_offset"] == c.offset
    assert all(x["parameters"]["partitions"] == [a.partition] for x in actions)


async def publish_around_a_moment(bootstrap: str, order: str, token: str) -> tuple[list[Any], int]:
    """Approval a, then a moment in time, then approvals b and c: one key, so one partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent, moment = [], 0
        for i in range(3):
            if i == 1:
                await asyncio.sleep(0.05)
                moment = int(time.time() * 1000)
                await asyncio.sleep(0.05)
            value = json.dumps(approval(order, f"JOB-RNG-{token}", f"evt-appr-{token}-{i}")).encode()
            sent.append(await producer.send_and_wait(APPROVALS, value, key=order.encode()))
        return sent, moment
    finally:
        await producer.stop()


def ours_read(report: ReplayReport, key: str) -> list[tuple[int, str]]:
    return [(offset, outcome) for _, _, offset, k, outcome in report.outcomes if k == key]
