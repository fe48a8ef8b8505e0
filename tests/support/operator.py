"""Helpers for the operator-tool tests: run the CLI in-process against a test stack, read its databases."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from sqlalchemy import select

from services.cli import build_parser
from services.common import db
from services.common.settings import SERVICES, group_id
from services.scenario.kafka_io import Offsets
from services.serve import load_spec
from tests.support.stack import TestStack


def database_url(stack: TestStack, service: str) -> str:
    return stack.services[service].env[f"{service.upper()}_DATABASE_URL"]


def point_cli_at(stack: TestStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads the service databases and the broker from the environment, as in production."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
    for svc in SERVICES:
        monkeypatch.setenv(f"{svc.upper()}_DATABASE_URL", database_url(stack, svc))


async def cli(*argv: str) -> int:
    """`second-opinion <argv>` through the same parser and functions, on the test's event loop."""
    args = build_parser().parse_args(list(argv))
    return await args.run(args)


async def table_rows(stack: TestStack, service: str, table: str) -> list[dict[str, Any]]:
    t = load_spec(service).metadata.tables[table]
    engine = db.make_engine(database_url(stack, service))
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(select(t).order_by(*t.primary_key.columns))]
    finally:
        await engine.dispose()


async def operator_actions(stack: TestStack, service: str, operator: str) -> list[dict[str, Any]]:
    """This operator's recorded actions, JSON columns parsed."""
    rows = [r for r in await table_rows(stack, service, "operator_action") if r["operator"] == operator]
    for r in rows:
        for column in ("parameters", "plan", "result"):
            r[column] = json.loads(r[column]) if r[column] is not None else None
    return rows


async def wait_caught_up(stack: TestStack, timeout: float = 120) -> None:
    """Until every service's group has consumed the topics' history (a fresh group starts at the start)."""
    offsets = Offsets(stack.bootstrap_servers)
    await offsets.start()
    try:
        deadline = time.monotonic() + timeout
        for svc in SERVICES:
            while lag := await offsets.group_lag(group_id(svc, stack.kafka)):
                assert time.monotonic() < deadline, f"{svc} still behind: {lag}"
                await asyncio.sleep(0.5)
    finally:
        await offsets.stop()
