"""Kafka I/O of the scenario runner: an idempotent publisher, a group-less collector, offsets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.scenario.model import Record

_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION


class MissingTopicsError(RuntimeError):
    """Topics the runner must read do not exist (auto-creation is off on the project's brokers)."""


def to_record(msg: ConsumerRecord) -> Record:
    headers = tuple((k, v) for k, v in (msg.headers or ()))
    return Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value, headers, msg.timestamp)


async def start_consumer(consumer: AIOKafkaConsumer) -> None:
    await consumer.start()
    # aiokafka 0.14: a group-less consumer stopped before its background task first ran raises
    # CancelledError from stop(); one turn of the loop lets that task start.
    await asyncio.sleep(0)


class Publisher:
    """Idempotent, acks=all: a retried send never doubles a step, so counts stay exact."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True, acks="all")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, key: str, value: bytes) -> tuple[TopicPartition, int]:
        meta = await self._producer.send_and_wait(topic, value=value, key=key.encode("utf-8"))
        return TopicPartition(meta.topic, meta.partition), meta.offset


class Offsets:
    """Topic partitions, log offsets and consumer-group commits, read without joining a group."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None)

    async def start(self) -> None:
        await self._admin.start()
        try:
            await start_consumer(self._consumer)
        except BaseException:
            await self._admin.close()
            raise

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def partitions(self, topics: Iterable[str], strict: bool = True) -> list[TopicPartition]:
        """Every partition of `topics`; a missing topic raises, or is skipped when not `strict`."""
        described = await self._admin.describe_topics(sorted(set(topics)))
        missing = [d["topic"] for d in described if d["error_code"] == _UNKNOWN_TOPIC]
        if missing and strict:
            raise MissingTopicsError(f"topics missing on the broker: {', '.join(missing)}")
        return sorted(
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if d["error_code"] == 0
            for p in d["partitions"]
        )

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await self._consumer.end_offsets(tps) if tps else {}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await self._consumer.beginning_offsets(tps) if tps else {}

    async def committed(self, group: str, tps: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """The group's committed offsets (the next offset it will read); absent when none."""
        offsets = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def group_lag(self, group: str) -> dict[TopicPartition, int]:
        """Records not yet committed by `group`, on every partition of the topics it commits on."""
        committed = await self.committed(group)
        tps = await self.partitions({tp.topic for tp in committed}, strict=False)
        ends = await self.end_offsets(tps)
        # A partition of such a topic with no commit yet lags by all it holds.
        begins = await self.beginning_offsets([tp for tp in tps if tp not in committed])
        lag = {tp: ends[tp] - committed.get(tp, begins.get(tp, 0)) for tp in tps}
        return {tp: n for tp, n in lag.items() if n > 0}


class Collector:
    """Reads the given partitions from the given offsets into `records`, in a background task."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a start offset already deleted: read what is left
        )
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.records: list[Record] = []
        self.partitions: list[TopicPartition] = []

    async def start(self, start_offsets: dict[TopicPartition, int]) -> None:
        self.partitions = list(start_offsets)
        await start_consumer(self._consumer)
        self._consumer.assign(self.partitions)
        for tp, offset in start_offsets.items():
            self._consumer.seek(tp, offset)
        self._task = asyncio.create_task(self._run(), name="scenario-collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def check(self) -> None:
        """Raise what stopped the background reader, so a run never waits on a dead collector."""
        if self._error is not None:
            raise RuntimeError(f"collector stopped: {self._error!r}") from self._error

    async def caught_up(self, targets: dict[TopicPartition, int]) -> bool:
        self.check()
        for tp, offset in targets.items():
            if await self._consumer.position(tp) < offset:
                return False
        return True

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=100)
                for messages in batch.values():
                    self.records.extend(map(to_record, messages))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc


class KafkaIO:
    """The publisher and offset reader one run shares across its scenario files."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.publisher = Publisher(bootstrap_servers)
        self.offsets = Offsets(bootstrap_servers)

    def collector(self) -> Collector:
        return Collector(self.bootstrap_servers)

    async def __aenter__(self) -> KafkaIO:
        await self.publisher.start()
        try:
            await self.offsets.start()
        except BaseException:
            await self.publisher.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.offsets.stop()
        finally:
            await self.publisher.stop()
