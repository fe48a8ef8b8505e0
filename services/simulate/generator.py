"""The seeded synthetic day: providers, orders, their events and intended outcomes (no I/O)."""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Mapping
from itertools import cycle
from typing import Any

from schemas import v1
from services.simulate import orders as order_builder
from services.simulate.bad_records import BAD_KINDS
from services.simulate.directory import build_directory
from services.simulate.plan import Message, OrderPlan, Plan

__all__ = [
    "BAD_KINDS",
    "Message",
    "OrderPlan",
    "Plan",
    "generate",
    "run_token",
    "second_report_messages",
]

TOKEN_ALPHABET = string.ascii_lowercase + string.digits
# Ids join the run token's digits to a 4-digit order number ("JOB-a1234567-0042-1" holds a run
# of 12 digits). A 5-digit order number could make a 13-digit, Luhn-valid run: a "card number"
# the services would rightly dead-letter.
MAX_ORDERS = 9999


def run_token(seed: int, salt: str) -> str:
    """A lower-case letter and 7 of [a-z0-9], from the seed and a per-run salt (e.g. the time)."""
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return string.ascii_lowercase[digest[0] % 26] + "".join(
        TOKEN_ALPHABET[b % len(TOKEN_ALPHABET)] for b in digest[1:8]
    )


def bad_record_orders(seed: int, orders: int) -> dict[int, str]:
    """Which orders carry a bad record, every kind at least once when there are enough orders."""
    count = min(orders, max(len(BAD_KINDS), round(orders * 0.015)))
    picked = random.Random(f"bad/{seed}").sample(range(orders), count)
    return dict(zip(sorted(picked), cycle(BAD_KINDS), strict=False))


def generate(seed: int, orders: int, run: str) -> Plan:
    """The same business day for the same seed; `run` only makes ids unique per run."""
    if not 1 <= orders <= MAX_ORDERS:
        raise ValueError(f"orders must be between 1 and {MAX_ORDERS}")
    providers = build_directory(seed, run)
    bad = bad_record_orders(seed, orders)
    built = tuple(order_builder.build(seed, run, index, providers, bad.get(index)) for index in range(orders))
    return Plan(seed, run, providers, built)


def second_report_messages(order: OrderPlan, job: Mapping[str, Any]) -> list[Message]:
    """The planned second report, naming the job dispatch created (and its provider/technician)."""
    planned = order.second_report
    if planned is None:
        return []
    provider = job["provider_id"]
    value = {
        **planned.value,
        "service_job_id": job["job_id"],
        "provider_id": provider,
        "technician_id": job.get("technician_id") or f"{provider}-TECH",
    }
    message = Message(v1.SERVICE_REPORT_RECEIVED, order.order_id, 0.0, value, label="second_report")
    return [message, message] if planned.duplicate else [message]
