"""How the runtime wires a service: its consumers' poll settings, what its routes may ask of the broker."""

from __future__ import annotations

from types import SimpleNamespace

from services.common.consumer import RouteContext
from services.common.metrics import ServiceMetrics
from services.common.service_app import Runtime, _build_broker, _route_context
from services.common.settings import KafkaSettings, service_settings
from services.dispatch.service import SPEC


def subscribers(**settings: object) -> list[object]:
    rt = Runtime(SPEC, service_settings("dispatch", **settings), KafkaSettings(), ServiceMetrics("dispatch"))
    consumer = SimpleNamespace(routes={r.topic: r for r in SPEC.build_routes(RouteContext(rt.metrics))})
    return list(_build_broker(rt, consumer).subscribers)  # type: ignore[arg-type]


def test_every_batching_consumer_polls_with_the_configured_wait() -> None:
    subs = subscribers(batch_max=100, batch_wait_ms=7)
    assert len(subs) == 2  # the directory and the grants have consumers of their own
    assert [(s.max_records, s.batch_timeout_ms) for s in subs] == [(100, 7), (100, 7)]


def test_the_default_wait_keeps_an_idle_hop_short() -> None:
    # FastStream's own default (200 ms) delayed a record arriving during its pause by up to 200 ms a hop.
    assert all(s.batch_timeout_ms <= 20 for s in subscribers())


def test_one_transaction_per_event_reads_record_by_record() -> None:
    assert not any(hasattr(s, "batch_timeout_ms") for s in subscribers(batch_max=1))


async def test_caught_up_is_not_yet_when_the_broker_cannot_be_asked() -> None:
    # Asked inside a handler's transaction: an unreachable broker is "cannot tell", never an error.
    closed = "127.0.0.1:1"  # nothing listens on port 1
    rt = Runtime(
        SPEC, service_settings("dispatch"), KafkaSettings(bootstrap_servers=closed), ServiceMetrics("dispatch")
    )
    assert await _route_context(rt).caught_up("service_provider.updated") is False
