"""Bad input the services must dead-letter, one record per kind of contract violation (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from schemas import v1

TEST_PAN = "4111 1111 1111 1111"  # a Luhn-valid test card number, never a real one
Value = Mapping[str, Any]


def _non_json(report: Value, request: Value, naive_at: str) -> tuple[str, bytes]:
    return (
        v1.SERVICE_REPORT_RECEIVED,
        f'{{"event_id": "{report["event_id"]}", "diagnosis": {{'.encode(),
    )


def _negative_fee(report: Value, request: Value, naive_at: str) -> tuple[str, bytes]:
    charges = {**report["charges"], "service_call_fee": "-12.00"}
    return v1.SERVICE_REPORT_RECEIVED, _json({**report, "charges": charges})


def _card_number(report: Value, request: Value, naive_at: str) -> tuple[str, bytes]:
    notes = f"Customer read card {TEST_PAN} to the technician."
    return v1.SERVICE_REPORT_RECEIVED, _json({**report, "notes": notes})


def _naive_timestamp(report: Value, request: Value, naive_at: str) -> tuple[str, bytes]:
    value = {**request, "event_id": report["event_id"], "occurred_at": naive_at}
    return v1.SECOND_OPINION_REQUESTED, _json(value)


def _wrong_enum(report: Value, request: Value, naive_at: str) -> tuple[str, bytes]:
    keep = ("occurred_at", "service_order_id", "service_job_id")
    approval = {
        "event_id": report["event_id"],
        **{k: request[k] for k in keep},
        "decision": "escalate",
        "approver": {"id": "SUP-1", "role": "supervisor"},
    }
    return v1.APPROVAL_RECORDED, _json(approval)


BUILDERS: dict[str, Callable[[Value, Value, str], tuple[str, bytes]]] = {
    "non_json": _non_json,
    "negative_fee": _negative_fee,
    "naive_timestamp": _naive_timestamp,
    "wrong_enum": _wrong_enum,
    "card_number": _card_number,
}
BAD_KINDS = tuple(BUILDERS)


def bad_record(kind: str, report: Value, request: Value, naive_at: str) -> tuple[str, bytes]:
    """(topic, raw bytes) of a bad record built from an order's valid report and request.

    Its event_id is new and its report names a job `-x` nobody uses, so were a service to accept
    it by mistake, it would show up as an extra fact on the order rather than go unnoticed.
    """
    event_id = report["event_id"].removesuffix("-rpt") + "-bad"
    job_x = report["service_job_id"].rsplit("-", 1)[0] + "-x"
    return BUILDERS[kind]({**report, "event_id": event_id, "service_job_id": job_x}, request, naive_at)


def _json(value: Value) -> bytes:
    return json.dumps(value).encode()
