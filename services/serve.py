"""`second-opinion serve <service>` and `second-opinion migrate <service>`."""

from __future__ import annotations

import argparse
import importlib

from services.common import logs, tracing
from services.common.service_app import ServiceSpec, create_app
from services.common.settings import SERVICES, TracingSettings, service_settings


def load_spec(service: str) -> ServiceSpec:
    return importlib.import_module(f"services.{service}.service").SPEC


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = service_settings(args.service)
    logs.configure(args.service, level=settings.log_level, fmt=settings.log_format)
    tracing.configure(args.service, TracingSettings().exporter)
    if args.migrate:
        migrate_service(args.service)
    app = create_app(load_spec(args.service), settings)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        log_config=None,  # uvicorn's loggers go through the handler configured above
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    server = uvicorn.Server(config)
    # SIGTERM while start-up still waits for the broker must end the process, not be held until it answers.
    app.state.runtime.should_stop = lambda: server.should_exit
    server.run()
    return 0


def migrate_service(service: str) -> None:
    from services.migrate import upgrade

    upgrade(service, service_settings(service).database_url)


def migrate(args: argparse.Namespace) -> int:
    for service in SERVICES if args.service == "all" else (args.service,):
        migrate_service(service)
        print(f"{service}: database at head")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("serve", help="run one service (Kafka consumers + HTTP health/metrics)")
    p.add_argument("service", choices=SERVICES)
    p.add_argument("--migrate", action="store_true", help="apply migrations before starting")
    p.set_defaults(func=serve)
    m = subparsers.add_parser("migrate", help="apply a service's database migrations")
    m.add_argument("service", choices=(*SERVICES, "all"))
    m.set_defaults(func=migrate)
