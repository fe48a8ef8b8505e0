"""Outbox: events a handler emits are staged as rows in its transaction and sent later by the relay.

Each row also keeps the trace context current when it was staged (the handled record's consumer
span), as a JSON object of Kafka header name -> value, so the relay continues the trace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import tracing
from services.common.sql import insert_ignore, insert_ignore_many


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
    return await insert_ignore(session, table, _row(outgoing, trace_headers(), datetime.now(UTC)))


async def stage_many(session: AsyncSession, table: Table, staged: Sequence[tuple[Outgoing, str | None]]) -> None:
    """Stage several events, each with its own `headers` column value (see trace_headers), in one statement."""
    now = datetime.now(UTC)
    await insert_ignore_many(session, table, [_row(o, headers, now) for o, headers in staged])


def _row(outgoing: Outgoing, headers: str | None, now: datetime) -> dict[str, object]:
    return {
        "event_id": outgoing.event_id,
        "topic": outgoing.topic,
        "key": outgoing.key,
        "payload": outgoing.event.model_dump_json(),
        "headers": headers,
        "created_at": now,
    }


def trace_headers(span: trace.Span | None = None) -> str | None:
    """A trace context (the current one, or `span`'s) as the `headers` column holds it; None when there is none."""
    headers = tracing.current_headers() if span is None else tracing.span_headers(span)
    return json.dumps(headers, sort_keys=True) if headers else None
