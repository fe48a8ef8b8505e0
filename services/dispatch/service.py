"""The dispatch service: picks the second-opinion provider, creates the job, asks to notify the customer."""

from __future__ import annotations

from services.common.service_app import ServiceSpec
from services.dispatch.adapters import orm
from services.dispatch.entrypoints.consumers import build_routes

SPEC = ServiceSpec(
    name="dispatch",
    metadata=orm.metadata,
    inbox=orm.inbox,
    outbox=orm.outbox,
    build_routes=build_routes,
)
