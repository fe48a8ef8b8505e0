"""The broker or PostgreSQL goes away mid-stream, or a consumer gets stuck: the services stay calm and say so.

Everything runs on a broker and a PostgreSQL cluster of this module's own (tests/outages/dedicated.py), each
stopped for 20 s while orders flow; the shared broker (9092) and PostgreSQL (5432) are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from schemas import v1
from services.common import dlq_headers
from services.common.backoff import Backoff
from services.common.consumer import EventConsumer, Route, is_transient
from services.common.metrics import ServiceMetrics
from services.common.service_app import _dead_letter_sink
from tests.outages.conftest import Own
from tests.outages.probes import (
    database_url,
    eventually,
    header,
    metric,
    query,
    read_all,
    table_locked,
    wait_status,
    waiting_on,
)
from tests.support.bus import FakeRecord
from tests.support.events import provider, report, request
from tests.support.kafka_client import Tap

if TYPE_CHECKING:  # imported by name, TestStack would look like a test class to pytest
    from tests.support.stack import RunningService, TestStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

OUTAGE_S = 20.0
# What each order of a day ends in, counted by distinct event_id: the business facts.
FACTS = {
    v1.SECOND_OPINION_GRANTED: 1,
    v1.SERVICE_JOB_CREATED: 1,
    v1.CUSTOMER_NOTIFICATION_REQUESTED: 1,
    v1.PAYOUT_ISSUED: 2,  # service call and diagnosis fees of the original provider
}
WATCHED = [*FACTS, v1.DISPATCH_UNASSIGNED, *v1.DLQ_TOPICS]


@dataclass(frozen=True)
class Day:
    """Orders that are all granted: a paid report and an authorizations request each, one provider in the zip."""

    run: str
    orders: tuple[str, ...]

    @classmethod
    def new(cls, count: int) -> Day:
        run = "o" + secrets.token_hex(3)  # few digits: ids never look like card numbers
        return cls(run, tuple(f"SO-{run}-{i:03d}" for i in range(count)))

    async def directory(self, tap: Tap, stack: TestStack) -> None:
        """The day's provider, applied by dispatch before any request (else a grant may overtake it)."""
        pid = f"P-{self.run}"
        entry = await tap.publish(v1.SERVICE_PROVIDER_UPDATED, pid, provider(pid, f"Z-{self.run}"))
        await stack.applied("dispatch", v1.SERVICE_PROVIDER_UPDATED, entry)

    async def reports(self, tap: Tap, orders: Sequence[str]) -> None:
        for order in orders:
            event = report(order, f"JOB-{order}", provider_id=f"P-orig-{self.run}", zip_=f"Z-{self.run}")
            await tap.publish(v1.SERVICE_REPORT_RECEIVED, order, event)

    async def requests(self, tap: Tap, orders: Sequence[str]) -> None:
        for order in orders:
            await tap.publish(v1.SECOND_OPINION_REQUESTED, order, request(order, f"JOB-{order}", f"evt-req-{order}"))


def facts(tap: Tap, order: str) -> dict[str, int]:
    return {t: len(tap.distinct(t, lambda v: v.get("service_order_id") == order)) for t in FACTS}


def unfinished(tap: Tap, orders: Sequence[str]) -> list[str]:
    return [o for o in orders if any(n < FACTS[t] for t, n in facts(tap, o).items())]


def stuck(tap: Tap, orders: Sequence[str]) -> dict[str, dict[str, int]]:
    """What each unfinished order has published so far (a failure's message): which service holds it."""
    seen = [*FACTS, v1.DISPATCH_UNASSIGNED]
    return {
        o: {t: len(tap.distinct(t, lambda v, o=o: v.get("service_order_id") == o)) for t in seen}
        for o in unfinished(tap, orders)
    }


def alive(stack: TestStack) -> dict[str, bool]:
    return {name: svc.process.poll() is None for name, svc in stack.services.items()}


# ---------------------------------------------------------------- the broker goes away


@contextlib.asynccontextmanager
async def dlq_probe(bootstrap: str) -> AsyncIterator[EventConsumer]:
    """The services' consumer runtime and DLQ sink, in this process, on a producer started before the outage."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()

    async def never(*_: Any) -> list[Any]:
        raise AssertionError("bad input must not reach a handler")

    topic = v1.SERVICE_REPORT_RECEIVED
    try:
        yield EventConsumer(
            name="outage-probe",
            routes={topic: Route(topic, v1.ServiceReportReceived, never)},
            sessions=None,  # type: ignore[arg-type]
            inbox_table=None,  # type: ignore[arg-type]
            outbox_table=None,  # type: ignore[arg-type]
            dead_letter=_dead_letter_sink(producer),
            metrics=ServiceMetrics("outage-probe"),
        )
    finally:
        await producer.stop()


async def test_broker_outage_mid_stream(own: Own) -> None:
    stack, bootstrap = own.stack, own.broker.ks.bootstrap_servers
    day = Day.new(40)
    first, second = day.orders[:20], day.orders[20:]
    decision_db = database_url(stack.services["decision"])
    async with Tap(bootstrap, WATCHED) as tap, dlq_probe(bootstrap) as probe:
        await day.directory(tap, stack)
        await day.reports(tap, first)
        assert await eventually(lambda: _applied(decision_db, f"evt-rpt-JOB-SO-{day.run}-%", len(first)), 30)
        # The decision is held on its inbox while the broker goes, so it commits grants with no
        # broker to send them to: the outbox must keep them until the broker acknowledges them.
        async with table_locked(decision_db, "inbox"):
            await day.requests(tap, first)
            assert await eventually(lambda: waiting_on(decision_db, "inbox"), 15)
            await asyncio.to_thread(own.broker.stop)
            down_at, down_clock = datetime.now(UTC), time.monotonic()
        bad = FakeRecord(v1.SERVICE_REPORT_RECEIVED, 1, 7, 1_700_000_000_000, f"probe-{day.run}".encode(), b"{no")
        dead_letter = asyncio.create_task(probe.process(bad))
        for svc in stack.services.values():
            assert (await wait_status(svc, 503, 15))["checks"]["broker"] == "down"
        await asyncio.sleep(OUTAGE_S - (time.monotonic() - down_clock))
        assert all(alive(stack).values()), alive(stack)
        assert not dead_letter.done(), "the DLQ sink reported success with no broker"
        up_at = datetime.now(UTC)
        await asyncio.to_thread(own.broker.start)
        for svc in stack.services.values():
            await wait_status(svc, 200, 60)
        await asyncio.wait_for(dead_letter, 60)  # the sink kept retrying and got through
        await day.reports(tap, second)
        await day.requests(tap, second)
        assert await tap.wait_for(lambda: not unfinished(tap, day.orders), 120), stuck(tap, day.orders)
        await _settle(stack)
    _assert_exactly_once(tap, day)
    [dlq] = [r for r in tap.records if r.topic in v1.DLQ_TOPICS]  # the probe's record, nothing of the outage
    assert (dlq.topic, dlq.key, header(dlq, dlq_headers.ERROR_CLASS)) == (
        f"{v1.SERVICE_REPORT_RECEIVED}.dlq",
        bad.key,
        b"not_json",
    )
    await _assert_calm(stack)
    await _assert_rows(stack, day)
    staged = await _assert_outbox_truthful(stack, bootstrap, (down_at, up_at))
    assert staged["decision"] >= 1, "no grant was staged while the broker was down: the check proved nothing"


# ---------------------------------------------------------------- PostgreSQL goes away


async def test_postgres_outage_mid_stream(own: Own) -> None:
    stack = own.stack
    day = Day.new(30)
    first, rest = day.orders[:10], day.orders[10:]
    decision_db = database_url(stack.services["decision"])
    logs = {name: svc.log_file.stat().st_size for name, svc in stack.services.items()}
    async with Tap(own.broker.ks.bootstrap_servers, WATCHED) as tap:
        await day.directory(tap, stack)
        await day.reports(tap, first)
        await day.requests(tap, first)
        assert await tap.wait_for(lambda: len(unfinished(tap, first)) < len(first), 60), stuck(tap, first)
        flow = asyncio.create_task(_trickle(tap, day, rest, every_s=1.0))  # orders keep coming during the outage
        faults = await _stop_postgres(own, decision_db)
        down_clock = time.monotonic()
        for exc in faults.values():
            assert is_transient(exc), f"{type(exc).__name__}: {exc} would be dead-lettered"
        assert _sqlstate(faults["cannot_connect_now"]) == "57P03"
        assert _sqlstate(faults["admin_shutdown"]) == "57P01" or faults["admin_shutdown"].connection_invalidated
        for svc in stack.services.values():
            assert (await wait_status(svc, 503, 15))["checks"]["database"].startswith("down")
        await asyncio.sleep(OUTAGE_S - (time.monotonic() - down_clock))
        assert all(alive(stack).values()), alive(stack)
        retried = {
            name: await metric(svc, "second_opinion_event_retries_total") for name, svc in stack.services.items()
        }
        assert sum(retried.values()) > 0, "no handler met the outage: the test proved nothing"
        await asyncio.to_thread(own.pg.start)
        for svc in stack.services.values():
            await wait_status(svc, 200, 60)
        await flow
        assert await tap.wait_for(lambda: not unfinished(tap, day.orders), 120), stuck(tap, day.orders)
        await _settle(stack)
    _assert_exactly_once(tap, day)
    assert [r for r in tap.records if r.topic in v1.DLQ_TOPICS] == []
    await _assert_calm(stack)
    await _assert_rows(stack, day)
    await _assert_outbox_truthful(stack, own.broker.ks.bootstrap_servers)
    _assert_backoff(_retry_lines(stack, logs))


async def _trickle(tap: Tap, day: Day, orders: Sequence[str], every_s: float) -> None:
    for order in orders:
        await day.reports(tap, [order])
        await day.requests(tap, [order])
        await asyncio.sleep(every_s)


async def _stop_postgres(own: Own, url: str) -> dict[str, BaseException]:
    """Stop the cluster the way a restart does, and collect what a client meets on the way down."""
    engine = create_async_engine(url, poolclass=NullPool)
    held = await engine.connect()
    await held.execute(text("SELECT 1"))
    smart = own.pg.begin_smart_stop()  # waits for sessions (the services' pools): new ones are refused
    try:
        refused = await eventually(lambda: _connect_error(url), 10, interval=0.1)
        assert refused is not None, "the smart shutdown never refused a connection"
        faults = {"cannot_connect_now": refused}
        await asyncio.to_thread(own.pg.stop)  # fast: terminates every session
        faults["admin_shutdown"] = await _statement_error(held)
        faults["connection_refused"] = await _connect_error(url)
    finally:
        await asyncio.to_thread(smart.wait, 30)
        with contextlib.suppress(Exception):
            await held.close()
        await engine.dispose()
    return faults


async def _connect_error(url: str) -> BaseException | None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    return None


async def _statement_error(conn: AsyncConnection) -> BaseException:
    try:
        await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return exc
    raise AssertionError("a statement succeeded on a stopped server")


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


RETRY_LINE = re.compile(r"^(\S+ \S+) WARNING (\w+) services\.common\.consumer: retrying (\S+) after")
RETRY_MESSAGE = re.compile(r"^retrying (\S+) after")


def _retry_at(line: str) -> tuple[float, str, str] | None:
    """(time, service, record) of a consumer's retry line, JSON (the default) or text."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            m = RETRY_MESSAGE.match(str(entry.get("message", "")))
            if m and entry.get("logger") == "services.common.consumer" and entry.get("level") == "WARNING":
                return datetime.fromisoformat(entry["time"]).timestamp(), entry["service"], m[1]
        return None
    if m := RETRY_LINE.match(line):
        return datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), m[2], m[3]
    return None


def _retry_lines(stack: TestStack, offsets: dict[str, int]) -> dict[tuple[str, str], list[float]]:
    """Times of each record's retries (per service and record) logged since `offsets`."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for name, svc in stack.services.items():
        with svc.log_file.open("rb") as log:
            log.seek(offsets[name])
            for line in log.read().decode(errors="replace").splitlines():
                if found := _retry_at(line):
                    times[(found[1], found[2])].append(found[0])
    return times


def _assert_backoff(times: dict[tuple[str, str], list[float]]) -> None:
    """Each wait is Backoff's: within [ceiling/2, ceiling] of its attempt, the ceiling capped; jittered."""
    backoff, ratios = Backoff(), []
    for record, at in times.items():
        assert len(at) <= 30, f"{record} retried {len(at)} times in one outage: a hot loop"
        for attempt, gap in enumerate((b - a for a, b in itertools.pairwise(at)), start=1):
            ceiling = min(backoff.cap_s, backoff.base_s * 2**attempt)
            assert ceiling / 2 - 0.05 <= gap <= ceiling + 1.0, f"{record}: wait {gap:.2f}s after try {attempt}"
            ratios.append(gap / ceiling)
    assert max(len(at) for at in times.values()) >= 4, f"no record kept retrying through the outage: {times}"
    assert min(ratios) < 0.9, f"every wait sat at its ceiling: no jitter ({ratios})"


# ---------------------------------------------------------------- a stuck consumer


async def test_stuck_consumer_is_visible(own: Own) -> None:
    decision = own.stack.services["decision"]
    db = database_url(decision)
    run = "s" + secrets.token_hex(3)
    await wait_status(decision, 200, 30)
    async with Tap(own.broker.ks.bootstrap_servers, [v1.SECOND_OPINION_GRANTED]) as tap:
        async with table_locked(db, "inbox"):  # the handler can neither finish nor fail
            for i in range(3):
                order = f"SO-{run}-{i}"
                await tap.publish(v1.SERVICE_REPORT_RECEIVED, order, report(order, f"JOB-{order}"))
            assert await eventually(lambda: _lag(decision), 15), "lag never showed"
            checks = (await wait_status(decision, 503, 20))["checks"]
            assert "stalled" in checks["progress"], checks
            assert all(v == "ok" for k, v in checks.items() if k != "progress"), checks
        await wait_status(decision, 200, 20)
        assert await eventually(lambda: _no_lag(decision), 15), "lag did not return to 0"


async def _lag(svc: RunningService) -> float:
    return await metric(svc, "second_opinion_consumer_lag", topic=v1.SERVICE_REPORT_RECEIVED)


async def _no_lag(svc: RunningService) -> bool:
    return await metric(svc, "second_opinion_consumer_lag") == 0


# ---------------------------------------------------------------- shared assertions


async def _applied(url: str, event_id_like: str, count: int) -> bool:
    """True once the service's inbox holds `count` events whose id is like `event_id_like`."""
    return (await query(url, "SELECT count(*) FROM inbox WHERE event_id LIKE :p", p=event_id_like))[0][0] >= count


async def _settle(stack: TestStack) -> None:
    """Wait until every service has published everything it staged."""
    for svc in stack.services.values():
        assert await eventually(lambda s=svc: _sent_all(s), 30), f"{svc.name} outbox not drained"


async def _sent_all(svc: RunningService) -> bool:
    return (await query(database_url(svc), "SELECT count(*) FROM outbox WHERE published_at IS NULL"))[0][0] == 0


async def _equal(got: Any, want: Any) -> bool:
    return await got == want


def _assert_exactly_once(tap: Tap, day: Day) -> None:
    counts = {o: facts(tap, o) for o in day.orders}
    assert {o: c for o, c in counts.items() if c != FACTS} == {}


async def _assert_calm(stack: TestStack) -> None:
    assert all(alive(stack).values()), alive(stack)
    for svc in stack.services.values():
        assert await metric(svc, "second_opinion_dead_lettered_total") == 0, f"{svc.name} dead-lettered"


async def _assert_rows(stack: TestStack, day: Day) -> None:
    """One case, one assignment, two payouts per order in the services' own databases."""
    order_like, job_like = f"SO-{day.run}-%", f"JOB-SO-{day.run}-%"
    want = [(o, 1, "dispatched") for o in day.orders]

    async def cases() -> list[Any]:
        sql = "SELECT service_order_id, count(*), min(status) FROM so_case WHERE service_order_id LIKE :p GROUP BY 1"
        return sorted(await query(database_url(stack.services["decision"]), sql, p=order_like))

    # The last jobs' service_job.created may still be on its way back to the decision service.
    await eventually(lambda: _equal(cases(), want), 15)
    assert await cases() == want
    jobs = await query(
        database_url(stack.services["dispatch"]),
        "SELECT service_order_id, count(*), min(outcome) FROM assignment WHERE service_order_id LIKE :p GROUP BY 1",
        p=order_like,
    )
    assert sorted(jobs) == [(o, 1, "job_created") for o in day.orders]
    payouts = await query(
        database_url(stack.services["payout"]),
        "SELECT job_id, count(DISTINCT fee_type), count(*) FROM payout WHERE job_id LIKE :p GROUP BY 1",
        p=job_like,
    )
    assert sorted(payouts) == [(f"JOB-{o}", 2, 2) for o in day.orders]


async def _assert_outbox_truthful(
    stack: TestStack, bootstrap: str, outage: tuple[datetime, datetime] | None = None
) -> dict[str, int]:
    """No outbox row is marked published for an event the topic lacks, nor while the broker was down.

    Returns per service how many rows were staged during `outage`."""
    in_topics = {(r.topic, _event_id(r.value)) for r in await read_all(bootstrap, v1.TOPICS)}
    staged: dict[str, int] = {}
    for name, svc in stack.services.items():
        rows = await query(database_url(svc), "SELECT topic, event_id, created_at, published_at FROM outbox")
        missing = [r for r in rows if r.published_at is not None and (r.topic, r.event_id) not in in_topics]
        assert missing == [], f"{name}: marked published but not in the topic"
        if outage:
            early = [r for r in rows if r.published_at is not None and outage[0] < r.published_at < outage[1]]
            assert early == [], f"{name}: marked published while the broker was down"
            staged[name] = sum(outage[0] < r.created_at < outage[1] for r in rows)
    return staged


def _event_id(value: bytes | None) -> str | None:
    try:
        return json.loads(value or b"").get("event_id")
    except (ValueError, AttributeError):
        return None
