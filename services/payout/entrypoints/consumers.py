"""Kafka routes of the payout service."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import v1
from services.common.consumer import Route, RouteContext
from services.common.policy import default_policy
from services.payout.app.handlers import PayoutHandlers


def build_routes(ctx: RouteContext) -> Sequence[Route]:
    handlers = PayoutHandlers(default_policy(), ctx.metrics)
    return (
        Route(v1.SECOND_OPINION_GRANTED, v1.SecondOpinionGranted, handlers.on_granted),
        Route(v1.SECOND_OPINION_CONCLUDED, v1.SecondOpinionConcluded, handlers.on_concluded),
    )
