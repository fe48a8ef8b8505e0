"""Fixtures of the outage tests: a stack on a broker and PostgreSQL of its own, and the shared stack on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.ops import kafka
from tests.outages.dedicated import PG_URL, DedicatedBroker, DedicatedPostgres
from tests.support.stack import Infra, TestStack, running_stack

# The lag monitor measures often and calls a partition stalled quickly, so a test sees it in seconds.
FAST_LAG = {"DECISION_LAG_INTERVAL_S": "0.5", "DECISION_STALL_AFTER_S": "3"}


@dataclass
class Own:
    """The three services on infrastructure this module may stop and start at will."""

    broker: DedicatedBroker
    pg: DedicatedPostgres
    stack: TestStack


@pytest.fixture(scope="module")
def own(work_dir: Path) -> Iterator[Own]:
    pg = DedicatedPostgres.fresh()
    broker = DedicatedBroker.fresh()
    try:
        broker.start()
        kafka.create_topics(broker.ks)
        with pytest.MonkeyPatch.context() as env:
            # running_stack creates the databases on the server STACK_POSTGRES_URL names: ours.
            env.setenv("STACK_POSTGRES_URL", PG_URL)
            for name, value in FAST_LAG.items():
                env.setenv(name, value)
            with running_stack(Infra(broker.ks.bootstrap_servers, PG_URL), "postgres", work_dir / "outages") as stack:
                yield Own(broker, pg, stack)
    finally:
        broker.remove()
        pg.remove()


@pytest.fixture(scope="module")
def stack(infra: Infra, work_dir: Path) -> Iterator[TestStack]:
    """The shared broker and PostgreSQL only: the permanent poison relies on PostgreSQL's column limits."""
    if infra.postgres_url is None:
        pytest.skip("needs PostgreSQL (TEST_DATABASES includes postgres)")
    with running_stack(infra, "postgres", work_dir) as running:
        yield running
