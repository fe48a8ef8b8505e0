"""Typed settings read from the environment (pydantic-settings); nothing is read at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ServiceName = Literal["decision", "dispatch", "payout"]
SERVICES: tuple[ServiceName, ...] = ("decision", "dispatch", "payout")
DEFAULT_PORTS: dict[str, int] = {"decision": 8081, "dispatch": 8082, "payout": 8083}


def http_port(service: str) -> int:
    """The service's HTTP port: an explicit <SERVICE>_HTTP_PORT wins, as it does for the service itself."""
    return int(os.environ.get(f"{service.upper()}_HTTP_PORT", DEFAULT_PORTS[service]))


class KafkaSettings(BaseSettings):
    """Where the broker is. `KAFKA_BOOTSTRAP_SERVERS` points at any existing cluster."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(default=3, ge=1, description="partitions for topics the project creates")
    replication_factor: int = Field(default=1, ge=1)
    group_prefix: str = Field(default="second-opinion", description="consumer group = <prefix>-<service>")


class StackSettings(BaseSettings):
    """Where the project keeps runtime files and which database the stack uses."""

    model_config = SettingsConfigDict(env_prefix="STACK_", extra="ignore")

    run_dir: Path = Path(".run")
    data_dir: Path = Path(".data")
    cache_dir: Path = Path.home() / ".cache" / "second-opinion"
    database: Literal["sqlite", "postgres"] = "sqlite"
    postgres_url: str = "postgresql+asyncpg://second_opinion:second_opinion@127.0.0.1:5432"
    kafka_version: str = "4.1.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"


class TracingSettings(BaseSettings):
    """`OTEL_EXPORTER`: `none` (spans are made and trace context propagated, nothing exported) or `console`."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    exporter: Literal["none", "console"] = "none"


def group_id(service: str, kafka: KafkaSettings | None = None) -> str:
    prefix = (kafka or KafkaSettings()).group_prefix
    return f"{prefix}-{service}"


class ServiceSettings(BaseSettings):
    """Settings of one service; read with the service's prefix (DECISION_, DISPATCH_, PAYOUT_)."""

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str = Field(description="SQLAlchemy async URL of the service's own database")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_attempts: int = Field(default=3, ge=1, description="tries of a failing handler before its DLQ")
    max_poll_interval_ms: int = 300_000
    # = ops.kafka MAX_RECORD_BYTES + DLQ_HEADROOM_BYTES: the DLQ copy of the largest record a topic accepts.
    max_record_bytes: int = Field(default=10_551_296, description="largest record produced or fetched")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(default="json", description="json: one JSON object a line")
    lag_interval_s: float = Field(default=5.0, gt=0, description="how often lag is measured")
    stall_after_s: float = Field(default=60.0, gt=0, description="lag with no progress this long turns readiness red")
    shutdown_grace_s: int = Field(default=10, ge=1, description="seconds SIGTERM waits for in-flight work")
    commit_interval_ms: int = Field(
        default=100, ge=0, le=60_000, description="gather offset commits this long (0: commit after each record)"
    )
    batch_max: int = Field(
        default=100,
        ge=1,
        le=5_000,
        description="most records applied in one transaction (1: one transaction per event); a batch is what has"
        " arrived, so under light load it is one record",
    )
    batch_wait_ms: int = Field(
        default=10,
        ge=1,
        le=1_000,
        description="a batching consumer with nothing to read waits this long for records, then pauses as long"
        " (FastStream's batch poll); the most a record arriving in the pause waits",
    )


def service_settings(service: str, **overrides: object) -> ServiceSettings:
    """Settings for `service` from `<SERVICE>_*` variables, with embedded SQLite defaults."""
    prefix = f"{service.upper()}_"
    cls = type(
        f"{service.title()}Settings",
        (ServiceSettings,),
        {"model_config": SettingsConfigDict(env_prefix=prefix, extra="ignore")},
    )
    defaults = {
        "database_url": f"sqlite+aiosqlite:///{StackSettings().data_dir}/{service}.db",
        "http_port": DEFAULT_PORTS.get(service, 8080),
    }
    for name in list(defaults):
        if f"{prefix}{name.upper()}" in os.environ:
            defaults.pop(name)
    return cls(**{**defaults, **overrides})
