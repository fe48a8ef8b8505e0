"""Kafka routes of the dispatch service."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import v1
from services.common.consumer import Route
from services.common.metrics import ServiceMetrics
from services.dispatch.app import handlers


def build_routes(metrics: ServiceMetrics) -> Sequence[Route]:
    return (
        Route(v1.SERVICE_PROVIDER_UPDATED, v1.ServiceProviderUpdated, handlers.on_provider_updated),
        Route(v1.SECOND_OPINION_GRANTED, v1.SecondOpinionGranted, handlers.on_granted),
    )
