"""Kafka routes of the dispatch service."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import v1
from services.common.consumer import Route, RouteContext
from services.dispatch.app.handlers import DispatchHandlers, on_provider_updated


def build_routes(ctx: RouteContext) -> Sequence[Route]:
    grants = DispatchHandlers(directory_current=lambda: ctx.caught_up(v1.SERVICE_PROVIDER_UPDATED))
    return (
        Route(v1.SERVICE_PROVIDER_UPDATED, v1.ServiceProviderUpdated, on_provider_updated),
        Route(v1.SECOND_OPINION_GRANTED, v1.SecondOpinionGranted, grants.on_granted),
    )
