"""The day's business mix: who asks, why, how approvals arrive, what providers tried (pure)."""

from __future__ import annotations

import random
from collections.abc import Mapping

from services.simulate.rules import INVALID_REASONS, VALID_REASONS, Request

SOURCES = {"customer": 45, "authorizations": 35, "service_provider": 20}
VALID_SHARE = 0.7
REASON_WEIGHTS = {  # per source, in VALID_REASONS / INVALID_REASONS order
    "customer": ((2, 3, 3, 2, 1), (3, 2, 1, 3, 2)),
    "authorizations": ((3, 2, 2, 2, 1), (1, 3, 3, 1, 1)),
    "service_provider": ((1, 1, 0, 0, 6), (1, 1, 1, 1, 2)),
}
APPROVAL_MODES = {
    "inline": 62,
    "before": 10,
    "after": 10,
    "agent_then_supervisor": 6,
    "deny": 6,
    "none": 6,
}
INCOMPLETE_ATTEMPTS = (
    ("not_called", True),
    ("called", False),
    ("not_applicable", False),
    ("not_called", False),
)


def _pick(rng: random.Random, weights: Mapping[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def primary_request(rng: random.Random) -> tuple[Request, str, bool]:
    """The order's first request, how a customer request gets approved, and the deductible."""
    source = _pick(rng, SOURCES)
    valid_weights, invalid_weights = REASON_WEIGHTS[source]
    if rng.random() < VALID_SHARE:
        reason = rng.choices(VALID_REASONS, valid_weights)[0]
    else:
        reason = rng.choices(INVALID_REASONS, invalid_weights)[0]
    paid = rng.random() >= (0.15 if source == "authorizations" else 0.1)
    if source == "customer":
        mode = _pick(rng, APPROVAL_MODES)
        return _customer_request(rng, reason, inline=mode == "inline"), mode, paid
    if source == "service_provider":
        return _provider_request(rng, reason), "", paid
    return Request(source, reason, prefer_same=rng.random() < 0.1), "", paid


def _customer_request(rng: random.Random, reason: str, inline: bool) -> Request:
    soft_no = rng.choices([True, False, None], [85, 5, 10])[0]
    role = rng.choice(("supervisor", "supervisor", "manager")) if inline else None
    return Request("customer", reason, soft_no, rng.random() < 0.05, approved_by_role=role)


def _provider_request(rng: random.Random, reason: str) -> Request:
    roll = rng.random()
    if roll < 0.7:
        hotline, sent = rng.choice(("called", "called", "not_applicable")), True
    elif roll < 0.95:
        hotline, sent = rng.choice(INCOMPLETE_ATTEMPTS)
    else:
        hotline, sent = None, None
    return Request(
        "service_provider",
        reason,
        hotline=hotline,
        second_technician_sent=sent,
        prefer_same=rng.random() < 0.05,
    )
