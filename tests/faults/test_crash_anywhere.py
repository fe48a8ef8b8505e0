"""kill -9 every service at random moments while a day of orders flows: every fact exactly once, none missing."""

from __future__ import annotations

import pytest

from tests.faults.chaos import ChaosOptions, run_chaos, write_report
from tests.faults.fleet import Fleet

pytestmark = pytest.mark.integration
KILLS = 2  # per service


async def test_every_fact_exactly_once_when_services_are_killed_mid_stream(fleet: Fleet) -> None:
    result = await run_chaos(fleet, ChaosOptions("crash", orders=200, kills=KILLS, spread_s=20, settle_s=90))
    write_report(result, ChaosOptions().report_dir)
    assert {s: result["faults"].get(f"{s} restarted") for s in fleet.running} == dict.fromkeys(fleet.running, KILLS)
    assert result["dead_instances"] == []
    assert result["duplicates"] == dict.fromkeys(result["duplicates"], 0)
    assert result["missing_orders"] == []
    assert result["database_problems"] == []
    assert result["dlq"] == result["dlq_intended"]
