"""Kafka routes of the payout service."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import v1
from services.common.consumer import Route
from services.common.metrics import ServiceMetrics
from services.common.policy import default_policy
from services.payout.app.handlers import PayoutHandlers


def build_routes(metrics: ServiceMetrics) -> Sequence[Route]:
    handlers = PayoutHandlers(default_policy(), metrics)
    return (
        Route(v1.SECOND_OPINION_GRANTED, v1.SecondOpinionGranted, handlers.on_granted),
        Route(v1.SECOND_OPINION_CONCLUDED, v1.SecondOpinionConcluded, handlers.on_concluded),
    )
