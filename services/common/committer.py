"""Offset commits of processed records, one per record or gathered over a short interval.

Only offsets of records whose transaction committed (or that reached their DLQ) are ever
committed, as explicit per-partition offsets: never the consumer's position, which may already
include a record still being handled. Gathering commits saves a round trip to the group
coordinator per record; what a crash or a rebalance leaves uncommitted is delivered again and
the inbox absorbs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import TopicPartition

log = logging.getLogger(__name__)


class Committer:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        # id(consumer) -> (consumer, {partition: next offset to read})
        self._pending: dict[int, tuple[Any, dict[TopicPartition, int]]] = {}
        self._lock = asyncio.Lock()

    @property
    def gathering(self) -> bool:
        return self.interval_s > 0

    async def done(self, consumer: Any, records: Any) -> None:
        """The records (of one consumer) are applied, duplicates or dead-lettered: their offsets may go."""
        _, offsets = self._pending.setdefault(id(consumer), (consumer, {}))
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        if not self.gathering:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, {}
            for consumer, offsets in pending.values():
                # A partition revoked meanwhile is another member's now: committing it would fail the call.
                mine = {tp: o for tp, o in offsets.items() if tp in consumer.assignment()}
                if not mine:
                    continue
                try:
                    await consumer.commit(mine)
                except Exception as exc:  # a commit refused during a rebalance: the inbox dedupes the redelivery
                    log.warning("offset commit failed: %s", exc)

    async def run(self) -> None:
        """Commit what gathered every interval, so a quiet partition does not keep its last offsets."""
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(Exception):
                await self.flush()
