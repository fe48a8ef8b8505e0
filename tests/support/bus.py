"""An in-memory stand-in for Kafka that drives the real handlers on real databases.

Fast tests of the business flows: each service runs its real EventConsumer (inbox, handlers,
outbox) on its own SQLite or PostgreSQL database; the bus drains each outbox and delivers
the events to the services that subscribe to their topic. It proves handler logic, not
delivery guarantees (no offsets, no rebalances): those are tested on the real broker.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from services.common import db
from services.common.consumer import EventConsumer, RouteContext
from services.common.metrics import ServiceMetrics
from services.common.relay import headers as relay_headers
from services.common.service_app import ServiceSpec


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Published:
    topic: str
    key: str
    value: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # as the relay would send them


@dataclass
class ServiceUnderTest:
    spec: ServiceSpec
    url: str
    dead_letters: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = field(default_factory=list)

    async def start(self) -> None:
        self.engine = db.make_engine(self.url)
        self.sessions = db.make_session_factory(self.engine)
        self.metrics = ServiceMetrics(self.spec.name)
        self.consumer = EventConsumer(
            name=self.spec.name,
            routes={r.topic: r for r in self.spec.build_routes(RouteContext(self.metrics))},
            sessions=self.sessions,
            inbox_table=self.spec.inbox,
            outbox_table=self.spec.outbox,
            dead_letter=self._dead_letter,
            metrics=self.metrics,
        )

    async def _dead_letter(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.dead_letters.append((topic, key, value, dict(headers)))

    async def drain_outbox(self) -> list[Published]:
        table = self.spec.outbox
        async with self.sessions() as session, session.begin():
            rows = (
                await session.execute(select(table).where(table.c.published_at.is_(None)).order_by(table.c.id))
            ).all()
            if rows:
                await session.execute(
                    update(table).where(table.c.id.in_([r.id for r in rows])).values(published_at=db_now())
                )
        return [
            Published(r.topic, r.key, json.loads(r.payload), {k: v.decode() for k, v in relay_headers(r)}) for r in rows
        ]

    async def stop(self) -> None:
        await self.engine.dispose()


def db_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class InMemoryBus:
    def __init__(self, services: list[ServiceUnderTest]) -> None:
        self.services = services
        self.log: list[Published] = []
        self.held: list[Published] = []
        self._offsets = itertools.count()

    async def publish(
        self, topic: str, key: str, value: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        encoded = [(k, v.encode()) for k, v in (headers or {}).items()]
        record = FakeRecord(topic, 0, next(self._offsets), 0, key.encode(), raw, encoded)
        for service in self.services:
            if topic in service.consumer.routes:
                await service.consumer.process(record)

    async def settle(self, hold: frozenset[str] = frozenset()) -> None:
        """Deliver staged events until no service has anything left to send.

        Events on `hold` topics are kept back (to reorder deliveries) until `release`.
        """
        while True:
            batch = [p for s in self.services for p in await s.drain_outbox()]
            if not batch:
                return
            for published in batch:
                self.log.append(published)
                if published.topic in hold:
                    self.held.append(published)
                else:
                    await self.publish(published.topic, published.key, published.value, published.headers)

    async def release(self, topic: str) -> None:
        for published in [p for p in self.held if p.topic == topic]:
            self.held.remove(published)
            await self.publish(published.topic, published.key, published.value, published.headers)
        await self.settle()

    def events(self, topic: str, **match: Any) -> list[dict[str, Any]]:
        return [p.value for p in self.log if p.topic == topic and all(p.value.get(k) == v for k, v in match.items())]
