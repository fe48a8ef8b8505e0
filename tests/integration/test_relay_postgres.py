"""The outbox relay on PostgreSQL: one mark-sent statement for every batch size, and relays never share a row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event

from tests.service.test_relay import Broker, Outbox, failed, nothing_pending, outbox_at, relay_on, running, until
from tests.support.stack import fresh_postgres_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def outbox(infra) -> AsyncIterator[Outbox]:  # type: ignore[no-untyped-def]
    if infra.postgres_url is None:
        pytest.skip("needs PostgreSQL (TEST_DATABASES includes postgres)")
    async with outbox_at(fresh_postgres_url(infra, "relay_outbox")) as made:
        yield made


async def test_every_batch_size_marks_sent_with_the_same_statement(outbox: Outbox) -> None:
    updates: list[str] = []

    @event.listens_for(outbox.engine.sync_engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE OUTBOX"):
            updates.append(statement)

    broker = Broker()
    relay = relay_on(outbox, broker)
    for n in (1, 2, 5):
        await outbox.stage(n)
        assert await relay.publish_batch() == n
    assert await outbox.unpublished() == []
    assert len(updates) == 3 and len(set(updates)) == 1, updates  # one prepared statement, not one per size
    assert broker.keys == [f"k-{i}" for i in range(8)]


async def test_coalesced_wake_ups_and_a_failed_send(outbox: Outbox) -> None:
    broker = Broker(ack_s=0.001, fail_key="k-3")
    relay = relay_on(outbox, broker, linger_s=0.3, poll_interval_s=30)
    async with running(relay):
        await asyncio.sleep(0.05)
        ids = []
        for _ in range(10):
            ids += await outbox.stage()
            relay.wake()
        await until(lambda: failed(relay))
        assert await outbox.unpublished() == ids
        broker.fail_key = None
        await until(lambda: nothing_pending(outbox))
    assert len(broker.batches) < 10
    assert broker.batches[-1] == [f"k-{i}" for i in range(10)]


async def test_two_relays_never_send_the_same_row(outbox: Outbox) -> None:
    # SKIP LOCKED: while one relay holds a batch (acks are slow), the other takes the next rows.
    brokers = [Broker(ack_s=0.02), Broker(ack_s=0.02)]
    relays = [relay_on(outbox, b, batch_size=10, poll_interval_s=0.05) for b in brokers]
    await outbox.stage(200)
    async with running(relays[0]), running(relays[1]):
        await until(lambda: nothing_pending(outbox), 20)
    sent = brokers[0].keys + brokers[1].keys
    assert sorted(sent) == sorted(f"k-{i}" for i in range(200))  # each row once
    assert all(b.keys for b in brokers), "one relay did all the work: the check proved nothing"
    for b in brokers:  # each relay sends its rows in id order
        assert [int(k[2:]) for k in b.keys] == sorted(int(k[2:]) for k in b.keys)
