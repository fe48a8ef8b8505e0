"""`second-opinion dlq list|show|redrive` on the real stack, and the audit trail of every redrive.

Records are dead-lettered by the running services themselves (bad bytes, an unknown enum value);
the "fixed" case is a valid grant whose DLQ record says a handler failed, as after an outage or
a bug since fixed: redriving it must make dispatch and payout act on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas import v1
from services.common import dlq_headers
from services.scenario.spec import new_run_token
from tests.support.events import approval, grant
from tests.support.kafka_client import Tap
from tests.support.operator import cli, operator_actions, point_cli_at

# One database is enough here: these tools work on Kafka, and the audit rows they write go through
# the same code as replay's, which test_replay runs on every database of TEST_DATABASES.
FIRST_DATABASE = os.environ.get("TEST_DATABASES", "postgres,sqlite").split(",")[0].strip()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.parametrize("stack", [FIRST_DATABASE], indirect=True, scope="module"),
]

APPROVALS, GRANTED = v1.APPROVAL_RECORDED, v1.SECOND_OPINION_GRANTED
APPROVALS_DLQ, GRANTED_DLQ = v1.dlq_topic(APPROVALS), v1.dlq_topic(GRANTED)


@pytest.fixture(autouse=True)
def _cli_env(stack, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    point_cli_at(stack, monkeypatch)


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert await cli(*argv) == 0
    return capsys.readouterr().out


def listed(printed: str) -> dict[tuple[str, str], tuple[int, str, str]]:
    """`dlq list` rows: {(dlq topic, error class): (count, oldest, newest)}."""
    rows = {}
    for line in printed.splitlines()[1:]:
        topic, error_class, count, oldest, newest = line.split()
        rows[(topic, error_class)] = (int(count), oldest, newest)
    return rows


def keyed(tap: Tap, topic: str, key: str) -> list[Any]:
    return [r for r in tap.records if r.topic == topic and r.key == key.encode()]


async def test_list_show_and_redrive_of_records_the_services_dead_lettered(stack, capsys) -> None:  # type: ignore[no-untyped-def]
    token = new_run_token()
    order = f"SO-DLQ-{token}"
    before = listed(await run_cli(capsys, "dlq", "list", "--topic", APPROVALS))
    started = datetime.now(UTC).replace(microsecond=0).isoformat()
    async with Tap(stack.bootstrap_servers, [APPROVALS, APPROVALS_DLQ]) as tap:
        await tap.publish(APPROVALS, order, f"{{not json {token}".encode())
        await tap.publish(APPROVALS, order, approval(order, f"JOB-{token}", f"evt-appr-{token}", decision="maybe"))
        assert await tap.wait_for(lambda: len(keyed(tap, APPROVALS_DLQ, order)) == 2)
        after = listed(await run_cli(capsys, "dlq", "list", "--topic", APPROVALS))
        for error_class in ("not_json", "schema_invalid"):
            count, _, newest = after[(APPROVALS_DLQ, error_class)]
            assert count == before.get((APPROVALS_DLQ, error_class), (0,))[0] + 1
            assert newest >= started
        not_json, invalid = keyed(tap, APPROVALS_DLQ, order)
        shown = await run_cli(capsys, "dlq", "show", APPROVALS_DLQ, str(not_json.partition), str(not_json.offset))
        for expected in (
            f"key: {order}",
            f"x-original-topic: {APPROVALS}",
            "x-error-class: not_json",
            f"{{not json {token}",
        ):
            assert expected in shown, shown
        where_bad = (APPROVALS_DLQ, str(not_json.partition), str(not_json.offset))
        # A large value is cut for the terminal (--max-bytes, 4096 by default) and says so.
        shown = await run_cli(capsys, "dlq", "show", *where_bad, "--max-bytes", "9")
        size = len(not_json.value)
        assert f"value ({size} bytes, the first 9 shown; --max-bytes 0 shows all):\n{{not json\n" in shown, shown
        assert token not in shown.split("value (")[1], shown
        assert f"{{not json {token}" in await run_cli(capsys, "dlq", "show", *where_bad, "--max-bytes", "0")
        shown = await run_cli(capsys, "dlq", "show", APPROVALS, str(invalid.partition), str(invalid.offset))
        assert "x-error-class: schema_invalid" in shown and '"decision": "maybe"' in shown, shown

        # Still bad when sent back: it simply lands in the DLQ again, from its new offset.
        where = f"{not_json.partition}:{not_json.offset}"
        redrive = ("dlq", "redrive", "--topic", APPROVALS, "--offsets", where, "--error-class", "not_json")
        await run_cli(capsys, *redrive, "--execute", "--operator", "dlq-bad")
        assert await tap.wait_for(lambda: len(keyed(tap, APPROVALS_DLQ, order)) == 3)
    [resent] = [r for r in keyed(tap, APPROVALS, order) if dict(r.headers).get("x-redriven-from")]
    assert resent.value == not_json.value
    assert dict(resent.headers)["x-redriven-from"] == f"{APPROVALS_DLQ}/{not_json.partition}/{not_json.offset}".encode()
    again = dict(keyed(tap, APPROVALS_DLQ, order)[2].headers)
    assert again[dlq_headers.ORIGINAL_OFFSET] == str(resent.offset).encode()
    [action] = await operator_actions(stack, "decision", "dlq-bad")
    assert (action["command"], action["dry_run"], action["status"]) == ("dlq redrive", False, "completed")
    assert action["parameters"] == {
        "topic": APPROVALS,
        "error_class": "not_json",
        "offsets": [where],
        "execute": True,
    }
    assert action["result"]["sent_to"] == [f"{APPROVALS}/{resent.partition}/{resent.offset}"]


async def test_redrive_of_a_fixed_record_is_processed_and_recorded_by_every_consumer(stack, capsys) -> None:  # type: ignore[no-untyped-def]
    token = new_run_token()
    order = f"SO-RDV-{token}"
    watched = [GRANTED, v1.PAYOUT_ISSUED, v1.SERVICE_JOB_CREATED, v1.DISPATCH_UNASSIGNED]
    async with Tap(stack.bootstrap_servers, watched) as tap:
        dlq = await dead_letter_a_valid_grant(stack.bootstrap_servers, order, token)
        where, dlq_name = f"{dlq.partition}:{dlq.offset}", f"{GRANTED_DLQ}/{dlq.partition}/{dlq.offset}"
        redrive = ("dlq", "redrive", "--topic", GRANTED, "--offsets", where, "--operator", "dlq-fixed")

        planned = await run_cli(capsys, *redrive)
        assert "would send 1 record(s)" in planned and f"{dlq_name} key={order} error_class=handler_error" in planned
        await asyncio.sleep(2)
        assert not [r for r in tap.records if r.key == order.encode()], "a dry run sent something"

        await run_cli(capsys, *redrive, "--execute")
        mine = lambda v: v["service_order_id"] == order  # noqa: E731
        dispatched = lambda: tap.values(v1.SERVICE_JOB_CREATED, mine) or tap.values(v1.DISPATCH_UNASSIGNED, mine)  # noqa: E731
        assert await tap.wait_for(lambda: len(tap.values(v1.PAYOUT_ISSUED, mine)) == 2 and bool(dispatched()))
    [sent] = keyed(tap, GRANTED, order)
    assert dict(sent.headers)["x-redriven-from"] == dlq_name.encode()
    assert sent.value == dlq.value
    for svc in ("dispatch", "payout"):
        actions = await operator_actions(stack, svc, "dlq-fixed")
        assert [(a["dry_run"], a["status"]) for a in actions] == [(True, "planned"), (False, "completed")], svc
        assert actions[0]["plan"] == [{"dlq": dlq_name, "key": order, "error_class": "handler_error", "to": GRANTED}]
        assert actions[0]["result"] == {"selected": 1}
        assert actions[1]["result"] == {"sent": 1, "sent_to": [f"{GRANTED}/{sent.partition}/{sent.offset}"]}
    assert await operator_actions(stack, "decision", "dlq-fixed") == []  # decision does not consume grants


class Sent:
    """Where a record went and what it carried."""

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self.partition, self.offset, self.value = partition, offset, value


async def dead_letter_a_valid_grant(bootstrap: str, order: str, token: str) -> Sent:
    """A DLQ record as the services write it, for a grant whose handler had failed (since fixed)."""
    value = json.dumps(grant(order, f"Z-{token}", token)).encode()
    headers = [
        (dlq_headers.ORIGINAL_TOPIC, GRANTED.encode()),
        (dlq_headers.ORIGINAL_PARTITION, b"0"),
        (dlq_headers.ORIGINAL_OFFSET, b"0"),
        (dlq_headers.ORIGINAL_TIMESTAMP, str(int(time.time() * 1000)).encode()),
        (dlq_headers.ERROR_CLASS, b"handler_error"),
        (dlq_headers.ERROR_MESSAGE, b"OperationalError: the payout database was read-only"),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(GRANTED_DLQ, value, key=order.encode(), headers=headers)
    finally:
        await producer.stop()
    return Sent(meta.partition, meta.offset, value)
