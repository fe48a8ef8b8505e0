"""The Kafka edges of the simulator: topic checks, offsets, an idempotent producer, a reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata, TopicPartition

from schemas import v1
from services.simulate.plan import Message
from services.simulate.summary import Record

CLIENT_ID = "second-opinion-simulate"
INPUT_TOPICS = (
    v1.SERVICE_PROVIDER_UPDATED,
    v1.SERVICE_REPORT_RECEIVED,
    v1.SECOND_OPINION_REQUESTED,
    v1.APPROVAL_RECORDED,
)
OUTPUT_TOPICS = (*v1.SERVICE_OUTPUTS, *v1.DLQ_TOPICS)


def producer(bootstrap: str) -> AIOKafkaProducer:
    # acks=all + idempotence: a retried send is neither lost nor written twice, and one key's
    # records stay in order even with several batches in flight.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )


def reader(bootstrap: str) -> AIOKafkaConsumer:
    # No group: the simulator only watches, it must not join (or move) any service's group.
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partitions(bootstrap: str, topics: Iterable[str]) -> dict[str, set[int]]:
    """Partitions per existing topic; a missing topic is absent from the result."""
    async with admin_client(bootstrap) as admin:
        # Describe all topics: naming a missing one would create it on a broker that auto-creates.
        described = await admin.describe_topics()
    wanted = set(topics)
    return {
        t["topic"]: {p["partition"] for p in t["partitions"]}
        for t in described
        if t["topic"] in wanted and t["error_code"] == 0 and t["partitions"]
    }


async def watch_from_end(consumer: AIOKafkaConsumer, topics: Mapping[str, set[int]]) -> None:
    """Assign every partition from its current end, so only output from this run on is read."""
    tps = [TopicPartition(t, p) for t, ps in topics.items() for p in sorted(ps)]
    ends = await consumer.end_offsets(tps)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, ends[tp])


async def send(producer: AIOKafkaProducer, message: Message) -> asyncio.Future[RecordMetadata]:
    """Queue one message; the returned future resolves once the broker has it."""
    return await producer.send(message.topic, message.payload(), key=message.key.encode())


def high_water(sent: Iterable[RecordMetadata]) -> dict[TopicPartition, int]:
    """The offset a consumer must reach per partition to have read everything we sent."""
    marks: dict[TopicPartition, int] = {}
    for meta in sent:
        tp = TopicPartition(meta.topic, meta.partition)
        marks[tp] = max(marks.get(tp, 0), meta.offset + 1)
    return marks


async def group_caught_up(admin: AIOKafkaAdminClient, group: str, marks: Mapping[TopicPartition, int]) -> bool:
    committed = await admin.list_consumer_group_offsets(group, partitions=list(marks))
    return all(tp in committed and committed[tp].offset >= end for tp, end in marks.items())


async def wait_for_group(bootstrap: str, group: str, marks: Mapping[TopicPartition, int]) -> None:
    """Return once `group` has committed past `marks`; bound it with `asyncio.timeout`."""
    async with admin_client(bootstrap) as admin:
        # Committed offsets live on the broker; there is nothing to await but another look.
        while True:
            try:
                if await group_caught_up(admin, group, marks):
                    return
            except KafkaError:
                pass  # a broker restarting or a coordinator moving: look again until the caller's timeout
            await asyncio.sleep(0.5)


async def read_batch(consumer: AIOKafkaConsumer) -> list[Record]:
    batches = await consumer.getmany(timeout_ms=500)
    return [
        Record.parse(tp.topic, tp.partition, m.offset, m.key, m.value or b"")
        for tp, messages in batches.items()
        for m in messages
    ]
