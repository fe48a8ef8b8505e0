"""Replicas of every service join and leave mid-stream on PostgreSQL: no duplicate, no loss, no crash loop."""

from __future__ import annotations

import pytest

from tests.faults.chaos import ChaosOptions, run_chaos, write_report
from tests.faults.fleet import Fleet

pytestmark = pytest.mark.integration


async def test_no_duplicate_or_loss_while_instances_join_and_leave(fleet: Fleet) -> None:
    opts = ChaosOptions("rebalance", orders=200, kills=0, churn_rounds=1, spread_s=35, settle_s=90)
    result = await run_chaos(fleet, opts)
    write_report(result, opts.report_dir)
    for service in fleet.running:  # two replicas each joined, then left: three instances at the peak
        assert result["faults"].get(f"{service} added") == 2
        assert result["faults"].get(f"{service} removed") == 2
    assert result["dead_instances"] == []  # no crash loop, e.g. on a commit refused during a rebalance
    assert result["duplicates"] == dict.fromkeys(result["duplicates"], 0)
    assert result["missing_orders"] == []
    assert result["database_problems"] == []
    assert result["dlq"] == result["dlq_intended"]
