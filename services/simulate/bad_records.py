"""Bad input the services must dead-letter, one record per kind of contract violation (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from schemas import v1

BAD_KINDS = ("non_json", "negative_fee", "naive_timestamp", "wrong_enum", "card_number")
TEST_PAN = "4111 1111 1111 1111"  # a Luhn-valid test card number, never a real one


def bad_record(
    kind: str, report: Mapping[str, Any], request: Mapping[str, Any], naive_at: str
) -> tuple[str, bytes]:
    """(topic, raw bytes) of a bad record built from an order's valid report and request.

    Its event_id is new and its report names a job `-x` nobody uses, so were a service to accept
    it by mistake, it would show up as an extra fact on the order rather than go unnoticed.
    """
    event_id = report["event_id"].removesuffix("-rpt") + "-bad"
    job_x = report["service_job_id"].rsplit("-", 1)[0] + "-x"
    bad_report = {**report, "event_id": event_id, "service_job_id": job_x}
    if kind == "non_json":
        return (
            v1.SERVICE_REPORT_RECEIVED,
            f'{{"event_id": "{event_id}", "diagnosis": {{not json'.encode(),
        )
    if kind == "negative_fee":
        charges = {**report["charges"], "service_call_fee": "-12.00"}
        return v1.SERVICE_REPORT_RECEIVED, _json({**bad_report, "charges": charges})
    if kind == "card_number":
        notes = f"Customer read card {TEST_PAN} to the technician."
        return v1.SERVICE_REPORT_RECEIVED, _json({**bad_report, "notes": notes})
    if kind == "naive_timestamp":
        return v1.SECOND_OPINION_REQUESTED, _json(
            {**request, "event_id": event_id, "occurred_at": naive_at}
        )
    if kind == "wrong_enum":
        approval = {
            "event_id": event_id,
            "occurred_at": request["occurred_at"],
            "service_order_id": request["service_order_id"],
            "service_job_id": request["service_job_id"],
            "decision": "escalate",
            "approver": {"id": "SUP-1", "role": "supervisor"},
        }
        return v1.APPROVAL_RECORDED, _json(approval)
    raise ValueError(f"unknown bad record kind {kind!r}")


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value).encode()
