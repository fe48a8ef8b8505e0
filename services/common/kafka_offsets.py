"""Offsets read from outside a consumer: a topic's end offsets and a group's committed offsets."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def partitions(bootstrap_servers: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0:
        raise LookupError(f"topic {topic} is not available (error {described['error_code']})")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    return (await _bounds(bootstrap_servers, topic))[1]


async def _bounds(bootstrap_servers: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition of `topic`: the log's start offset and its end offset, now."""
    parts = await partitions(bootstrap_servers, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        starts, ends = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return {tp.partition: o for tp, o in starts.items()}, {tp.partition: o for tp, o in ends.items()}


async def committed_offsets(bootstrap_servers: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


async def caught_up(bootstrap_servers: str, group: str, topic: str) -> bool:
    """True when `group` has committed every partition of `topic` up to the partition's end offset now.

    Records the log no longer holds (before its start offset) count as read: a partition whose
    records were all deleted is caught up though the group never committed on it.
    """
    starts, ends = await _bounds(bootstrap_servers, topic)
    committed = await committed_offsets(bootstrap_servers, group, topic)
    return all(max(committed.get(p, 0), starts[p]) >= end for p, end in ends.items())


async def overview(bootstrap_servers: str, groups: dict[str, list[str]]) -> dict[str, Any]:
    """Per (group, topic) lag, summed over partitions, and the record count of every DLQ topic.

    `groups` maps each consumer group to the topics it consumes. DLQ topics are the `.dlq` twins
    of every topic named; a count is end minus log-start offset (what the DLQ still holds).
    """
    topics = sorted({t for ts in groups.values() for t in ts})
    dlqs = [f"{t}.dlq" for t in topics]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics([*topics, *dlqs])
        parts = [
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if d["error_code"] == 0
            for p in d["partitions"]
        ]
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        lag: list[dict[str, Any]] = []
        for group, consumed in groups.items():
            committed = await admin.list_consumer_group_offsets(group)
            done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
            for topic in consumed:
                mine = [tp for tp in parts if tp.topic == topic]
                behind = sum(max(ends[tp] - done.get(tp, starts[tp]), 0) for tp in mine)
                lag.append({"group": group, "topic": topic, "partitions": len(mine), "lag": behind})
        dlq = {d: sum(ends[tp] - starts[tp] for tp in parts if tp.topic == d) for d in dlqs}
    finally:
        await consumer.stop()
        await admin.close()
    return {"lag": lag, "dlq": dlq}
