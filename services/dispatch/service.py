"""The dispatch service: picks the second-opinion provider, creates the job, asks to notify the customer."""

from __future__ import annotations

from schemas import v1
from services.common.service_app import ServiceSpec
from services.dispatch.adapters import orm
from services.dispatch.entrypoints.consumers import build_routes

SPEC = ServiceSpec(
    name="dispatch",
    metadata=orm.metadata,
    inbox=orm.inbox,
    outbox=orm.outbox,
    build_routes=build_routes,
    # Grants wait until the provider directory has caught up, so the two need their own consumers.
    separate_consumers=((v1.SERVICE_PROVIDER_UPDATED,), (v1.SECOND_OPINION_GRANTED,)),
    catch_up_before={v1.SECOND_OPINION_GRANTED: v1.SERVICE_PROVIDER_UPDATED},
)
