"""Kafka routes of the decision service: topic -> contract model -> use case."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import v1
from services.common.consumer import Route, RouteContext
from services.common.policy import default_policy
from services.decision.app.handlers import DecisionHandlers


def build_routes(ctx: RouteContext) -> Sequence[Route]:
    handlers = DecisionHandlers(default_policy(), ctx.metrics)
    return (
        Route(v1.SERVICE_REPORT_RECEIVED, v1.ServiceReportReceived, handlers.on_report),
        Route(v1.SECOND_OPINION_REQUESTED, v1.SecondOpinionRequested, handlers.on_request, handlers.on_requests),
        Route(v1.APPROVAL_RECORDED, v1.ApprovalRecorded, handlers.on_approval),
        Route(v1.SERVICE_JOB_CREATED, v1.ServiceJobCreated, handlers.on_job_created),
        Route(v1.DISPATCH_UNASSIGNED, v1.DispatchUnassigned, handlers.on_unassigned),
    )
