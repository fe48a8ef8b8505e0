"""Business facts read straight from the services' tables, compared with what reached Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import v1
from services.common.db import make_engine
from services.decision.adapters import orm as decision
from services.dispatch.adapters import orm as dispatch
from services.payout.adapters import orm as payout

Rows = dict[str, list[tuple[Any, ...]]]  # kind of fact -> one tuple per row (or per event)
DECIDED = ("granted", "dispatched", "unassigned", "concluded")
OUTPUTS = {
    "decision": (
        v1.SECOND_OPINION_GRANTED,
        v1.SECOND_OPINION_DENIED,
        v1.PROVIDER_FEEDBACK_RECORDED,
        v1.SECOND_OPINION_CONCLUDED,
    ),
    "dispatch": (v1.SERVICE_JOB_CREATED, v1.DISPATCH_UNASSIGNED, v1.CUSTOMER_NOTIFICATION_REQUESTED),
    "payout": (v1.PAYOUT_ISSUED, v1.CUSTOMER_CHARGE_ASSESSED),
}


async def _rows(engine: AsyncEngine, query: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(query)).all()]


async def decision_rows(engine: AsyncEngine, like: str) -> Rows:
    t = decision.case
    cases = await _rows(
        engine, select(t.c.case_id, t.c.status, t.c.request_event_id).where(t.c.service_order_id.like(like))
    )
    return {
        "granted": [(c,) for c, s, _ in cases if s in DECIDED],
        "denied": [(c,) for c, s, _ in cases if s == "denied"],
        "concluded": [(c,) for c, s, _ in cases if s == "concluded"],
        "requests": [(r,) for *_, r in cases],
    }


async def dispatch_rows(engine: AsyncEngine, like: str) -> Rows:
    t = dispatch.assignment
    rows = await _rows(engine, select(t.c.case_id, t.c.outcome).where(t.c.service_order_id.like(like)))
    return {
        "jobs": [(c,) for c, o in rows if o == "job_created"],
        "unassigned": [(c,) for c, o in rows if o == "unassigned"],
    }


async def payout_rows(engine: AsyncEngine, like: str) -> Rows:
    p, charge, claim = payout.payout, payout.customer_charge, payout.claim
    cases = select(claim.c.case_id).where(claim.c.service_order_id.like(like))
    return {
        "payouts": await _rows(engine, select(p.c.job_id, p.c.fee_type).where(p.c.case_id.in_(cases))),
        "charges": await _rows(engine, select(charge.c.case_id).where(charge.c.case_id.in_(cases))),
    }


async def outbox_rows(engine: AsyncEngine, table: Table, like: str) -> Rows:
    query = select(table.c.topic, table.c.event_id, table.c.published_at).where(table.c.key.like(like))
    rows = await _rows(engine, query)
    out: Rows = {"outbox unpublished": [(t, e) for t, e, at in rows if at is None]}
    for topic, event_id, _ in rows:
        out.setdefault(f"outbox {topic}", []).append((event_id,))
    return out


READERS: dict[str, tuple[Callable[[AsyncEngine, str], Awaitable[Rows]], Table]] = {
    "decision": (decision_rows, decision.outbox),
    "dispatch": (dispatch_rows, dispatch.outbox),
    "payout": (payout_rows, payout.outbox),
}


async def read_tables(urls: Mapping[str, str], run: str) -> dict[str, Rows]:
    """Rows of this run (its order ids start with SO-<run>-), per service and kind of fact."""
    like = f"SO-{run}-%"
    tables = {}
    for service, (reader, outbox) in READERS.items():
        engine = make_engine(urls[service])
        try:
            tables[service] = await reader(engine, like) | await outbox_rows(engine, outbox, like)
        finally:
            await engine.dispose()
    return tables


def expected_rows(events: Mapping[str, list[Mapping[str, Any]]], requests: Iterable[str]) -> dict[str, Rows]:
    """What the tables must hold: a case per request sent, and one row per distinct event on Kafka."""

    def keys(topic: str, *fields: str) -> list[tuple[Any, ...]]:
        return [tuple(v.get(f) for f in fields) for v in events.get(topic, [])]

    expected = {
        "decision": {
            "granted": keys(v1.SECOND_OPINION_GRANTED, "case_id"),
            "denied": keys(v1.SECOND_OPINION_DENIED, "case_id"),
            "concluded": keys(v1.SECOND_OPINION_CONCLUDED, "case_id"),
            "requests": [(r,) for r in requests],
        },
        "dispatch": {
            "jobs": keys(v1.SERVICE_JOB_CREATED, "case_id"),
            "unassigned": keys(v1.DISPATCH_UNASSIGNED, "case_id"),
        },
        "payout": {
            "payouts": keys(v1.PAYOUT_ISSUED, "job_id", "fee_type"),
            "charges": keys(v1.CUSTOMER_CHARGE_ASSESSED, "case_id"),
        },
    }
    for service, topics in OUTPUTS.items():
        expected[service]["outbox unpublished"] = []
        expected[service] |= {f"outbox {t}": keys(t, "event_id") for t in topics if events.get(t)}
    return expected


def compare(tables: Mapping[str, Rows], expected: Mapping[str, Rows]) -> list[str]:
    """Problems: a kind of fact whose rows are not the expected keys, each exactly once."""
    problems = []
    for service, kinds in expected.items():
        found = tables.get(service, {})
        for kind in sorted(set(kinds) | set(found)):
            rows, want = found.get(kind, []), kinds.get(kind, [])
            if sorted(map(repr, rows)) != sorted(map(repr, want)):
                problems.append(_difference(f"{service} {kind}", rows, want))
    return problems


def _difference(what: str, rows: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> str:
    extra, missing = sorted(set(rows) - set(want))[:3], sorted(set(want) - set(rows))[:3]
    doubled = len(rows) - len(set(rows))
    return f"{what}: {len(rows)} row(s) for {len(want)} fact(s); extra {extra}, missing {missing}, doubled {doubled}"


def row_counts(tables: Mapping[str, Rows]) -> dict[str, int]:
    return {f"{svc} {kind}": len(rows) for svc, kinds in tables.items() for kind, rows in kinds.items()}


async def settle_outboxes(urls: Mapping[str, str], run: str, timeout: float = 20.0) -> None:
    """Wait until every outbox row of this run is published (each relay runs on its own clock)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        tables = await read_tables(urls, run)
        if not any(kinds["outbox unpublished"] for kinds in tables.values()):
            return
        await asyncio.sleep(0.5)
