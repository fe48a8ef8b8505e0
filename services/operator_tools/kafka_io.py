"""Group-less Kafka access for the operator tools: partitions, offsets, reading ranges, a safe producer.

Nothing here joins a consumer group or commits an offset, so the live services' groups are
never touched by a replay or a DLQ inspection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.operator_tools.planning import TP, PartitionRange, PlanError
from services.ops.kafka import DLQ_HEADROOM_BYTES, MAX_RECORD_BYTES

# The largest record the tools may have to write: a DLQ copy of the largest record a topic accepts.
MAX_REQUEST_BYTES = MAX_RECORD_BYTES + DLQ_HEADROOM_BYTES

log = logging.getLogger(__name__)
CLIENT_ID = "second-opinion-operator"


class Reader:
    """Reads partitions between offsets with assign/seek; also answers offset questions."""

    def __init__(self, bootstrap_servers: str, idle_timeout_s: float = 10.0) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=CLIENT_ID)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=CLIENT_ID,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a start offset deleted meanwhile: read what is left
        )
        self.idle_timeout_s = idle_timeout_s
        self.stopped_short: list[str] = []

    async def __aenter__(self) -> Reader:
        await self._admin.start()
        await self._consumer.start()
        # aiokafka 0.14: a group-less consumer stopped before its background task first ran
        # raises CancelledError from stop(); one turn of the loop lets that task start.
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def partitions(self, topics: Iterable[str]) -> dict[str, list[int]]:
        """Partitions of each topic; a topic missing on the broker is an error."""
        wanted = set(topics)
        # Describe all topics: naming a missing one could create it on a broker that auto-creates.
        described = {d["topic"]: d for d in await self._admin.describe_topics() if d["error_code"] == 0}
        missing = sorted(wanted - set(described))
        if missing:
            raise PlanError(f"topic(s) not on the broker: {', '.join(missing)}")
        return {t: sorted(p["partition"] for p in described[t]["partitions"]) for t in sorted(wanted)}

    async def bounds(self, tps: Sequence[TP]) -> tuple[dict[TP, int], dict[TP, int]]:
        """(log start offsets, end offsets) of the partitions, as they are now."""
        parts = [TopicPartition(*tp) for tp in tps]
        if not parts:
            return {}, {}
        begins = await self._consumer.beginning_offsets(parts)
        ends = await self._consumer.end_offsets(parts)
        return {(tp.topic, tp.partition): o for tp, o in begins.items()}, {
            (tp.topic, tp.partition): o for tp, o in ends.items()
        }

    async def offsets_at(self, tps: Sequence[TP], timestamp_ms: int) -> dict[TP, int | None]:
        """Per partition, the first offset whose record timestamp is at or after `timestamp_ms`."""
        found = await self._consumer.offsets_for_times({TopicPartition(*tp): timestamp_ms for tp in tps})
        return {(tp.topic, tp.partition): (o.offset if o is not None else None) for tp, o in found.items()}

    async def read(self, ranges: Sequence[PartitionRange]) -> AsyncIterator[ConsumerRecord]:
        """Every record of the ranges, in offset order per partition; stops at each range's end."""
        async for batch in self.batches(ranges):
            for record in batch:
                yield record

    async def batches(self, ranges: Sequence[PartitionRange]) -> AsyncIterator[list[ConsumerRecord]]:
        """The records of the ranges as fetched, a batch at a time (offset order per partition)."""
        todo = {TopicPartition(r.topic, r.partition): r for r in ranges if r.count > 0}
        if not todo:
            return
        self._consumer.assign(list(todo))
        for tp, r in todo.items():
            self._consumer.seek(tp, r.start)
        idle_since = time.monotonic()
        while todo:
            fetched = await self._consumer.getmany(*todo, timeout_ms=500)
            batch = [rec for tp, recs in fetched.items() for rec in recs if rec.offset < todo[tp].end]
            if batch:
                yield batch
            idle_since = time.monotonic() if fetched else idle_since
            await self._drop_finished(todo)
            if todo and time.monotonic() - idle_since > self.idle_timeout_s:
                await self._give_up(todo)

    async def _drop_finished(self, todo: dict[TopicPartition, PartitionRange]) -> None:
        for tp in list(todo):
            if await self._consumer.position(tp) >= todo[tp].end:
                del todo[tp]

    async def _give_up(self, todo: dict[TopicPartition, PartitionRange]) -> None:
        # Offsets with no record left (compaction, retention) can leave a range short of its end.
        for tp, r in list(todo.items()):
            position = await self._consumer.position(tp)
            note = f"{tp.topic}[{tp.partition}] stopped at offset {position} of {r.end}: no further records"
            log.warning(note)
            self.stopped_short.append(note)
            del todo[tp]


def safe_producer(bootstrap_servers: str) -> AIOKafkaProducer:
    """Idempotent and acks=all: a retried send is never written twice, an acked one is not lost.

    Its request limit is the topics' own (10 MiB + DLQ headroom), not aiokafka's 1 MiB default: a
    replay or a redrive re-sends whatever the services accepted, the largest records included.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=CLIENT_ID,
        enable_idempotence=True,
        acks="all",
        max_request_size=MAX_REQUEST_BYTES,
    )
