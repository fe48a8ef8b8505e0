"""The bench's Kafka edges: producers, publishing, group offsets, and a reader of the outputs of one run."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata, TopicPartition

CLIENT_ID = "second-opinion-bench"
log = logging.getLogger(__name__)


def producer(bootstrap: str, *, linger_ms: int = 5) -> AIOKafkaProducer:
    """Idempotent, acks=all: what the services' relays use too."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
    )


async def publish(prod: AIOKafkaProducer, topic: str, items: Sequence[tuple[bytes, bytes]]) -> list[RecordMetadata]:
    """Queue every record, then wait for all acknowledgements."""
    futures = [await prod.send(topic, value, key=key) for key, value in items]
    return list(await asyncio.gather(*futures))


def high_water(sent: Iterable[RecordMetadata]) -> dict[TopicPartition, int]:
    """Per partition, the offset a consumer must have committed to have read all of `sent`."""
    marks: dict[TopicPartition, int] = {}
    for meta in sent:
        tp = TopicPartition(meta.topic, meta.partition)
        marks[tp] = max(marks.get(tp, 0), meta.offset + 1)
    return marks


async def partitions(bootstrap: str, topics: Iterable[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [
        TopicPartition(d["topic"], p["partition"]) for d in described if d["error_code"] == 0 for p in d["partitions"]
    ]


async def end_offsets(bootstrap: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(list(tps)))
    finally:
        await consumer.stop()


async def commit_group_to_end(bootstrap: str, group: str, topics: Iterable[str], within_s: float = 60) -> None:
    """Commit `group`'s offsets at the current end of `topics`: it skips what is there now.

    Only possible while the group has no members (its service is stopped); retried while a member
    that just left is still being removed.
    """
    tps = await partitions(bootstrap, topics)
    deadline = time.monotonic() + within_s
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, client_id=CLIENT_ID, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tp: ends[tp] for tp in tps})
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.debug("commit of %s refused (%s); retrying", group, exc)
        finally:
            await consumer.stop()
        await asyncio.sleep(1)


async def wait_for_group(
    bootstrap: str, group: str, marks: Mapping[TopicPartition, int], within_s: float, what: str = ""
) -> None:
    """Return once `group` committed past `marks`; TimeoutError naming `what` otherwise."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
    await admin.start()
    deadline = time.monotonic() + within_s
    try:
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=list(marks))
            behind = _behind(marks, committed)
            if behind == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{group} still {behind} records behind on {what or 'its input'} after {within_s:.0f}s"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def wait_no_lag(bootstrap: str, groups: Mapping[str, Sequence[str]], within_s: float) -> None:
    """Return once every group has committed up to the end of each of its topics (nothing left to handle)."""
    deadline = time.monotonic() + within_s
    tps = {group: await partitions(bootstrap, topics) for group, topics in groups.items()}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
    await admin.start()
    try:
        while True:
            behind = 0
            for group, parts in tps.items():
                ends = await end_offsets(bootstrap, parts)
                committed = await admin.list_consumer_group_offsets(group, partitions=parts)
                behind += _behind(ends, committed)
            if behind == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the services still have {behind} records to handle after {within_s:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _behind(marks: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, Any]) -> int:
    """Records between a group's committed offsets (none: 0) and `marks`."""
    return sum(max(end - (max(committed[tp].offset, 0) if tp in committed else 0), 0) for tp, end in marks.items())


@dataclass(frozen=True)
class Obs:
    """One output record of the run: its Kafka CreateTime (ms) and when the bench read it (epoch s)."""

    topic: str
    partition: int
    offset: int
    key: str
    event_id: str
    create_ms: int
    arrival: float
    value: dict[str, Any] | None


class Collector:
    """Reads `topics` from the end offsets noted at start; keeps the records keyed by one of `keys`."""

    def __init__(self, bootstrap: str, topics: Sequence[str], keys: set[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.keys = keys
        self.records: list[Obs] = []
        self.distinct: dict[str, set[str]] = defaultdict(set)
        self.last_arrival = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Collector:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=CLIENT_ID,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        await self.consumer.start()
        tps = await partitions(self.bootstrap, self.topics)
        self.consumer.assign(tps)
        self.start_offsets = dict(await self.consumer.end_offsets(tps))
        for tp, offset in self.start_offsets.items():
            self.consumer.seek(tp, offset)
        self._task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, messages in batches.items():
                for m in messages:
                    key = m.key.decode(errors="replace") if m.key else ""
                    if key not in self.keys:
                        continue
                    value = _json(m.value)
                    event_id = str(value.get("event_id")) if value else f"{tp.topic}/{tp.partition}/{m.offset}"
                    self.records.append(Obs(tp.topic, tp.partition, m.offset, key, event_id, m.timestamp, now, value))
                    self.distinct[tp.topic].add(event_id)
                    self.last_arrival = now

    def count(self, *topics: str) -> int:
        return sum(len(self.distinct.get(t, ())) for t in topics)

    async def wait(
        self,
        done: Callable[[], bool],
        within_s: float,
        progress: Callable[[], str] | None = None,
        stall_s: float = 30.0,
    ) -> bool:
        """True once `done()`; False after `within_s`, or when nothing new arrived for `stall_s`."""
        started = time.monotonic()
        last_print, last_seen, seen = started, started, len(self.records)
        while not done():
            now = time.monotonic()
            if self._task is not None and self._task.done():
                self._task.result()  # the reader failed: raise its error
            if len(self.records) != seen:
                seen, last_seen = len(self.records), now
            if now - started > within_s or now - last_seen > stall_s:
                return False
            if progress is not None and now - last_print >= 2.0:
                print(f"      ... {progress()}", flush=True)
                last_print = now
            await asyncio.sleep(0.02)
        return True

    async def settle(self, quiet_s: float = 1.0, limit_s: float = 30.0) -> None:
        """Keep reading until nothing of the run arrived for `quiet_s` (late duplicates show up here)."""
        for _ in range(int(limit_s / 0.1)):
            if time.time() - self.last_arrival >= quiet_s:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


async def read_range(bootstrap: str, starts: Mapping[TopicPartition, int], keys: set[str]) -> list[Obs]:
    """Everything from `starts` to the current end of those partitions whose key is in `keys`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, enable_auto_commit=False)
    await consumer.start()
    out: list[Obs] = []
    try:
        tps = list(starts)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            now = time.time()
            for tp, messages in batches.items():
                for m in messages:
                    key = m.key.decode(errors="replace") if m.key else ""
                    if key in keys:
                        value = _json(m.value)
                        event_id = str(value.get("event_id")) if value else f"{tp.topic}/{tp.partition}/{m.offset}"
                        out.append(Obs(tp.topic, tp.partition, m.offset, key, event_id, m.timestamp, now, value))
                    if m.offset + 1 >= ends[tp]:
                        pending.discard(tp)
    finally:
        await consumer.stop()
    return out


def _json(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
