"""The events a benchmark run publishes: unique orders, their reports and requests, the provider directory.

Every request is an `authorizations` request with a valid reason and the deductible paid in full, on a
report with nonzero fees, so each one is granted, dispatched to a bench provider and paid twice.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from tests.support import events

VALID_REASONS = (
    "provider_information_lacking",
    "conflicting_reports",
    "suspected_pre_existing_condition",
    "suspected_lack_of_maintenance",
    "provider_unable_to_determine_failure",
)
FEES = ("89.00", "45.00")  # service call, diagnosis: both paid to the original provider on a grant
EXPECTED_PAYOUTS = {"original_service_call": FEES[0], "original_diagnosis": FEES[1]}


def run_token() -> str:
    """A lower-case letter and 7 of [a-z0-9]: unique to one bench invocation."""
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(alphabet) for _ in range(7))


@dataclass(frozen=True)
class Directory:
    """The bench's providers: the only ones serving the bench's zip, so dispatch always picks `best`."""

    zip_code: str
    original_provider: str
    providers: tuple[dict[str, Any], ...]

    @property
    def best(self) -> str:
        return self.providers[0]["provider_id"]

    def records(self) -> list[tuple[bytes, bytes]]:
        return [(p["provider_id"].encode(), _encode(p)) for p in self.providers]


def directory(token: str) -> Directory:
    zip_code = f"Z-{token}"
    providers = (
        events.provider(
            f"BP-{token}-a", zip_code, rating=4.8, techs=[{"technician_id": f"T-{token}-a1", "senior": True}]
        ),
        events.provider(f"BP-{token}-b", zip_code, rating=4.5),
        events.provider(f"BP-{token}-c", zip_code, rating=4.9, in_network=False),
    )
    for p in providers:
        p["event_id"] = f"prov-{p['provider_id']}"
    return Directory(zip_code, f"BP-{token}-orig", providers)


@dataclass
class Workload:
    """One run's orders. Ids are `<kind>-<token>-<tag>-<n>`: never 13+ digits in a row (no card-number lookalikes)."""

    tag: str
    orders: list[str]
    jobs: dict[str, str]
    reports: list[tuple[bytes, bytes]]  # (key, value) of service_report.received
    requests: list[tuple[bytes, bytes]]  # (key, value) of second_opinion.requested
    request_ids: dict[str, str]  # order -> request event_id
    request_payloads: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return set(self.orders)

    def __len__(self) -> int:
        return len(self.orders)


def workload(token: str, tag: str, n: int, where: Directory) -> Workload:
    orders, jobs, reports, requests, ids, payloads = [], {}, [], [], {}, {}
    for i in range(n):
        order = f"SO-{token}-{tag}-{i:06d}"
        job = f"JOB-{token}-{tag}-{i:06d}"
        report = events.report(
            order,
            job,
            provider_id=where.original_provider,
            zip_=where.zip_code,
            event_id=f"rpt-{token}-{tag}-{i:06d}",
            fees=FEES,
            paid=True,
        )
        request = events.request(
            order,
            job,
            f"req-{token}-{tag}-{i:06d}",
            source="authorizations",
            reason=VALID_REASONS[i % len(VALID_REASONS)],
        )
        orders.append(order)
        jobs[order] = job
        ids[order] = request["event_id"]
        payloads[order] = request
        reports.append((order.encode(), _encode(report)))
        requests.append((order.encode(), _encode(request)))
    return Workload(tag, orders, jobs, reports, requests, ids, payloads)


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
