"""Outbox: events a handler emits are staged as rows in its transaction and sent later by the relay.

Each row also keeps the trace context current when it was staged (the handled record's consumer
span), as a JSON object of Kafka header name -> value, so the relay continues the trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import tracing
from services.common.sql import insert_ignore


@dataclass(frozen=True)
class Outgoing:
    """An event to publish: the topic, the partition key and the contract model."""

    topic: str
    key: str
    event: BaseModel

    @property
    def event_id(self) -> str:
        return str(self.event.event_id)  # type: ignore[attr-defined]


async def stage(session: AsyncSession, table: Table, outgoing: Outgoing) -> bool:
    """Insert the event unless one with the same (deterministic) event_id is already staged."""
    return await insert_ignore(
        session,
        table,
        {
            "event_id": outgoing.event_id,
            "topic": outgoing.topic,
            "key": outgoing.key,
            "payload": outgoing.event.model_dump_json(),
            "headers": trace_headers(),
            "created_at": datetime.now(UTC),
        },
    )


def trace_headers() -> str | None:
    """The current trace context as the `headers` column holds it; None when there is none."""
    headers = tracing.current_headers()
    return json.dumps(headers, sort_keys=True) if headers else None
