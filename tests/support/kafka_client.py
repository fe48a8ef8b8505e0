"""Small real-Kafka helpers for tests: publish events, read what the services emitted."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from services.common.kafka_offsets import partitions


class Tap:
    """Reads topics from their current end; collects records for later assertions."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[Any] = []

    async def __aenter__(self) -> Tap:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all")
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.producer.start()
        await self.consumer.start()
        parts = [tp for t in self.topics for tp in await partitions(self.bootstrap, t)]
        self.consumer.assign(parts)
        for tp, end in (await self.consumer.end_offsets(parts)).items():
            self.consumer.seek(tp, end)
        self._task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(records)

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def publish(self, topic: str, key: str, value: dict[str, Any] | bytes) -> RecordMetadata:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return await self.producer.send_and_wait(topic, raw, key=key.encode())

    def values(self, topic: str, where: Callable[[dict[str, Any]], bool] = lambda v: True) -> list[dict[str, Any]]:
        out = []
        for r in self.records:
            if r.topic != topic:
                continue
            try:
                value = json.loads(r.value)
            except (TypeError, ValueError, RecursionError):
                continue
            if where(value):
                out.append(value)
        return out

    def distinct(
        self, topic: str, where: Callable[[dict[str, Any]], bool] = lambda v: True
    ) -> dict[str, dict[str, Any]]:
        return {v["event_id"]: v for v in self.values(topic, where)}

    async def wait_for(self, check: Callable[[], bool], timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            await asyncio.sleep(0.2)
        return check()
