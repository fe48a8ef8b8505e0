"""Poison records reach their DLQ after bounded tries, and the records behind them keep flowing.

On the shared broker and PostgreSQL (the `stack` fixture of this folder). Each poison goes to
service_report.received with its own key; a valid order under the same key follows it on the same
partition and must be granted. A record whose header is not UTF-8 must be processed, not skipped.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka.structs import RecordMetadata

from schemas import v1
from services.common import dlq_headers
from services.common.settings import ServiceSettings
from services.ops import kafka
from tests.outages.probes import RawProducer, database_url, eventually, header, metric, query, read_all
from tests.outages.probes import end_offsets as topic_ends
from tests.support.events import report, request

if TYPE_CHECKING:  # imported by name, TestStack would look like a test class to pytest
    from tests.support.stack import RunningService, TestStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOPIC = v1.SERVICE_REPORT_RECEIVED
DLQ = v1.dlq_topic(TOPIC)
FIVE_MB = 5 * 1024 * 1024


@dataclass(frozen=True)
class Poison:
    name: str
    value: bytes | None  # None: built from the order (a report that fails in the handler)
    error_class: str | None  # None: the record must be processed, not dead-lettered
    headers: list[tuple[str, bytes]] = field(default_factory=list)


POISONS = (
    Poison("permanent", None, "handler_error"),  # valid JSON; PostgreSQL refuses the 300-char order id
    Poison("novalue", None, "empty_value"),
    Poison("empty", b"", "empty_value"),
    Poison("huge", b'{"notes": "' + b"x" * FIVE_MB + b'"', "not_json"),
    Poison("notutf8", b'{"event_id": "caf\xe9"}', "not_utf8"),
    Poison("header", None, None, [("x-trace", b"\xff\xfe not utf-8")]),
)


@dataclass
class Sent:
    poison: Poison
    order: str
    where: RecordMetadata  # the poison
    behind: RecordMetadata  # the valid report right after it


def _poison_value(p: Poison, order: str, run: str) -> bytes | None:
    if p.name == "permanent":
        long_order = f"SO-{run}-" + "y" * 300  # the report table's service_order_id is String(200)
        return json.dumps(report(long_order, f"JOB-{run}-long", event_id=f"evt-{run}-long")).encode()
    if p.name == "header":
        return json.dumps(report(order, f"JOB-{order}", event_id=f"evt-{run}-header")).encode()
    return p.value


async def _publish(producer: RawProducer, p: Poison, run: str) -> Sent:
    order = f"SO-{run}-{p.name}"
    where = await producer.send(TOPIC, order, _poison_value(p, order, run), p.headers)
    valid = json.dumps(report(order, f"JOB-{order}", event_id=f"evt-rpt-{order}-behind")).encode()
    behind = await producer.send(TOPIC, order, valid)
    await producer.send(
        v1.SECOND_OPINION_REQUESTED, order, json.dumps(request(order, f"JOB-{order}", f"evt-req-{order}")).encode()
    )
    return Sent(p, order, where, behind)


async def _counters(svc: RunningService) -> dict[str, float]:
    counts = {"retries": await metric(svc, "second_opinion_event_retries_total", topic=TOPIC)}
    for error_class in {p.error_class for p in POISONS if p.error_class}:
        counts[error_class] = await metric(
            svc, "second_opinion_dead_lettered_total", topic=TOPIC, error_class=error_class
        )
    return counts


def _granted(records: list[Any], order: str) -> bool:
    return any(
        r.topic == v1.SECOND_OPINION_GRANTED and json.loads(r.value)["service_order_id"] == order for r in records
    )


async def test_poison_is_dead_lettered_and_the_partition_moves_on(stack: TestStack) -> None:
    bootstrap, decision = stack.bootstrap_servers, stack.services["decision"]
    max_attempts = int(decision.env.get("DECISION_MAX_ATTEMPTS", "3"))
    run = "p" + secrets.token_hex(3)
    watched = [DLQ, v1.SECOND_OPINION_GRANTED]
    since, before = await topic_ends(bootstrap, watched), await _counters(decision)
    async with RawProducer(bootstrap) as producer:
        sent = [await _publish(producer, p, run) for p in POISONS]
    orders = [s.order for s in sent]

    async def all_granted() -> list[Any] | None:
        records = await read_all(bootstrap, watched, since)
        return records if all(_granted(records, o) for o in orders) else None

    records = await eventually(all_granted, 90, interval=1.0)
    last = records or await read_all(bootstrap, watched, since)
    assert records, f"not granted: {[o for o in orders if not _granted(last, o)]}"
    await asyncio.sleep(3)  # room for a hot loop to show in the counters
    after = await _counters(decision)
    dead = [r for r in await read_all(bootstrap, [DLQ], since) if r.key and r.key.decode().startswith(f"SO-{run}-")]
    for s in sent:
        _assert_dead_lettered(s, [r for r in dead if r.key == s.order.encode()])
        assert s.behind.partition == s.where.partition and s.behind.offset > s.where.offset
    expected = {"retries": max_attempts - 1}  # the permanent one only: bad input is never retried
    for p in POISONS:
        if p.error_class:
            expected[p.error_class] = expected.get(p.error_class, 0) + 1
    assert {k: after[k] - before[k] for k in after} == expected
    # The record with the undecodable header was applied, not skipped (nor dead-lettered).
    applied = await query(
        database_url(decision), "SELECT count(*) FROM inbox WHERE event_id = :e", e=f"evt-{run}-header"
    )
    assert applied == [(1,)]


def _assert_dead_lettered(s: Sent, dead: list[Any]) -> None:
    if s.poison.error_class is None:
        assert dead == [], f"{s.poison.name}: dead-lettered, but it should have been processed"
        return
    # Every stack on the shared broker reads this topic and dead-letters into the same DLQ, so
    # copies from other groups may be there too: each copy must say the same. Ours counts once
    # in our service's metric (asserted by the caller).
    assert dead, f"{s.poison.name}: not dead-lettered"
    for r in dead:
        _assert_dlq_copy(s, r)


def _assert_dlq_copy(s: Sent, r: Any) -> None:
    assert {name: header(r, name) for name in dlq_headers.ALL[:5]} == {
        dlq_headers.ORIGINAL_TOPIC: TOPIC.encode(),
        dlq_headers.ORIGINAL_PARTITION: str(s.where.partition).encode(),
        dlq_headers.ORIGINAL_OFFSET: str(s.where.offset).encode(),
        dlq_headers.ORIGINAL_TIMESTAMP: str(s.where.timestamp).encode(),
        dlq_headers.ERROR_CLASS: s.poison.error_class.encode(),
    }
    assert header(r, dlq_headers.ERROR_MESSAGE), s.poison.name
    if s.poison.value is not None:
        assert r.value == s.poison.value, f"{s.poison.name}: the DLQ copy differs from the original bytes"
    if s.poison.name == "permanent":
        assert b"value too long" in header(r, dlq_headers.ERROR_MESSAGE)  # PostgreSQL's 22001
        # Each retry waits Backoff.delay: at least 0.2 s after the first try and 0.4 s after the second.
        assert r.timestamp - s.where.timestamp >= 600


def test_limits_agree() -> None:
    """The producer's limit is the DLQ topics' limit, which leaves room above the source topics' limit."""
    default = ServiceSettings.model_fields["max_record_bytes"].default
    assert default == kafka.MAX_RECORD_BYTES + kafka.DLQ_HEADROOM_BYTES
    assert kafka.topic_configs(TOPIC)["max.message.bytes"] == str(kafka.MAX_RECORD_BYTES)
    assert kafka.topic_configs(DLQ)["max.message.bytes"] == str(default)


async def test_topics_accept_large_records(stack: TestStack) -> None:
    ks = stack.kafka
    for topic in (TOPIC, DLQ, v1.SERVICE_PROVIDER_UPDATED):
        config = await asyncio.to_thread(kafka.topic_config, ks, topic)
        assert config["max.message.bytes"] == kafka.topic_configs(topic)["max.message.bytes"], topic
    assert (await asyncio.to_thread(kafka.topic_config, ks, v1.SERVICE_PROVIDER_UPDATED))["cleanup.policy"] == "compact"
