"""The payout service: pays providers and assesses customer charges, never twice."""

from __future__ import annotations

from services.common.service_app import ServiceSpec
from services.payout.adapters import orm
from services.payout.entrypoints.consumers import build_routes

SPEC = ServiceSpec(
    name="payout",
    metadata=orm.metadata,
    inbox=orm.inbox,
    outbox=orm.outbox,
    build_routes=build_routes,
)
