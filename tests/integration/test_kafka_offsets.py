"""`kafka_offsets.caught_up` on the real broker: what "this group has applied the topic to its end" means."""

from __future__ import annotations

import secrets

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.structs import OffsetAndMetadata

from services.common.kafka_offsets import caught_up

pytestmark = pytest.mark.integration


@pytest.fixture
async def topic(infra) -> str:  # type: ignore[no-untyped-def]
    """A fresh topic of two partitions: three records in partition 0, none in partition 1."""
    name = f"offsets-test-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(name, b"x%d" % n, partition=0)
    finally:
        await producer.stop()
    return name


async def commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def test_a_group_is_caught_up_once_it_committed_to_the_end(infra, topic: str) -> None:  # type: ignore[no-untyped-def]
    bootstrap, group = infra.bootstrap_servers, f"offsets-{secrets.token_hex(3)}"
    assert not await caught_up(bootstrap, group, topic)  # never read: three records unread
    await commit(bootstrap, group, TopicPartition(topic, 0), 2)
    assert not await caught_up(bootstrap, group, topic)  # one left
    await commit(bootstrap, group, TopicPartition(topic, 0), 3)
    assert await caught_up(bootstrap, group, topic)  # partition 1 is empty: nothing to read there


async def test_records_the_log_no_longer_holds_count_as_read(infra, topic: str) -> None:  # type: ignore[no-untyped-def]
    bootstrap, group = infra.bootstrap_servers, f"offsets-{secrets.token_hex(3)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(3)})
    finally:
        await admin.close()
    assert await caught_up(bootstrap, group, topic)  # nothing left to read, though it never committed


async def test_a_topic_that_does_not_exist_is_an_error_not_an_answer(infra) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LookupError):
        await caught_up(infra.bootstrap_servers, "offsets-none", f"no-such-topic-{secrets.token_hex(3)}")
