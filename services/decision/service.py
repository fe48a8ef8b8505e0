"""The decision service: decides each second-opinion request and concludes granted cases."""

from __future__ import annotations

from services.common.service_app import ServiceSpec
from services.decision.adapters import orm
from services.decision.entrypoints import api, console
from services.decision.entrypoints.consumers import build_routes

SPEC = ServiceSpec(
    name="decision",
    metadata=orm.metadata,
    inbox=orm.inbox,
    outbox=orm.outbox,
    build_routes=build_routes,
    routers=(api.router, console.router),
    configure=lambda app: (api.configure(app), console.configure(app)),
)
