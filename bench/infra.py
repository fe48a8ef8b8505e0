"""What the bench runs on: its own Kafka broker, the local PostgreSQL, scratch databases, the three services.

The bench starts a broker of its own (same jars and start-up code as `make up`, other ports and data
directory) so that no other stack's services consume the bench's traffic, and the bench's services
consume nobody else's. Services run as processes with the project's `RunningService`, on their own
ports, databases and consumer groups (`second-opinion-bench-<database>-<token>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench import kafkaio
from schemas import v1
from services.common.consumer import RouteContext
from services.common.metrics import ServiceMetrics
from services.common.settings import SERVICES, KafkaSettings, StackSettings
from services.migrate import upgrade
from services.ops import kafka, postgres
from services.serve import load_spec
from tests.support.stack import RunningService

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run" / "bench"
DATA_DIR = ROOT / ".data" / "bench"
CEILING_IN = "bench.ceiling.in"
CEILING_OUT = "bench.ceiling.out"
AUTH_SECRET = "second-opinion-bench-signing-key-0123456789abcdef"
DATABASES = ("pg", "sqlite")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The ops helpers print a line per step; the bench prints its own progress instead."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class Infra:
    bootstrap: str
    postgres_url: str  # server URL (SQLAlchemy form), no database
    stack_settings: StackSettings
    started_broker: bool = False

    def stop(self) -> None:
        if self.started_broker:
            with quiet():
                kafka.stop(self.stack_settings)


def start_infra(kafka_port: int, bootstrap: str | None) -> Infra:
    """Our broker on 127.0.0.1:`kafka_port` (or the given cluster), PostgreSQL, and every topic."""
    st = StackSettings(run_dir=RUN_DIR, data_dir=DATA_DIR, kafka_port=kafka_port, kafka_controller_port=kafka_port + 1)
    ks = KafkaSettings(bootstrap_servers=bootstrap or f"127.0.0.1:{kafka_port}")
    started = False
    if bootstrap is None:
        started = not kafka.is_up(ks)
        if started:
            print(f"  starting a bench Kafka broker on 127.0.0.1:{kafka_port} (log {kafka.log_file(st)})", flush=True)
        kafka.ensure_jars(st)
        with quiet():
            kafka.start(st, ks)
    pg = StackSettings()  # the local cluster `make test` uses (STACK_POSTGRES_URL)
    with quiet():
        postgres.ensure_running(pg)
        postgres.ensure_role_and_databases([], pg)
        kafka.create_topics(ks)
        kafka.create_topics(ks, [CEILING_IN, CEILING_OUT])
    return Infra(ks.bootstrap_servers, pg.postgres_url, st, started)


def database_url(infra: Infra, database: str, name: str) -> str:
    """A fresh, empty database (PostgreSQL) or file (SQLite) called `name`."""
    if database == "pg":
        with quiet():
            postgres.recreate_database(name)
        return f"{infra.postgres_url}/{name}"
    path = DATA_DIR / f"{name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite+aiosqlite:///{path}"


def migrated(infra: Infra, database: str, name: str, service: str = "decision") -> str:
    url = database_url(infra, database, name)
    upgrade(service, url)
    return url


def input_topics(service: str) -> list[str]:
    """The topics a service consumes, from its own routes."""
    return [r.topic for r in load_spec(service).build_routes(RouteContext(ServiceMetrics(f"bench_{service}")))]


@dataclass
class BenchStack:
    """The three services on one database kind; started and stopped per variant."""

    infra: Infra
    database: str  # pg | sqlite
    port_base: int
    token: str
    urls: dict[str, str] = field(default_factory=dict)
    services: dict[str, RunningService] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    base_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Extra settings a service runs with (e.g. DECISION_BATCH_MAX), as it was last started.
    started_with: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def group_prefix(self) -> str:
        return f"second-opinion-bench-{self.database}-{self.token}"

    def group(self, service: str) -> str:
        return f"{self.group_prefix}-{service}"

    def create(self) -> None:
        """Fresh migrated databases and the service definitions (nothing started yet)."""
        # The services run with their defaults: settings of the caller's environment are not passed on.
        own = (*(f"{s.upper()}_" for s in SERVICES), "KAFKA_", "OTEL_")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        for i, svc in enumerate(SERVICES):
            self.urls[svc] = migrated(self.infra, self.database, f"so_bench_{self.database}_{svc}", svc)
            port = self.port_base + i
            env = {
                **inherited,
                "KAFKA_BOOTSTRAP_SERVERS": self.infra.bootstrap,
                "KAFKA_GROUP_PREFIX": self.group_prefix,
                f"{svc.upper()}_DATABASE_URL": self.urls[svc],
                f"{svc.upper()}_HTTP_PORT": str(port),
                "AUTH_JWT_SECRET": AUTH_SECRET,
            }
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            self.base_env[svc] = env
            self.services[svc] = RunningService(
                svc, port, env, RUN_DIR / f"{self.database}-{svc}.pid", RUN_DIR / f"{self.database}-{svc}.log"
            )

    async def use(
        self, wanted: set[str], settings: dict[str, dict[str, str]] | None = None, *, restart: bool = True
    ) -> None:
        """Exactly `wanted` running and ready, each with its `settings` (extra environment; none: defaults).

        A service that starts skips what its topics hold now (its group is committed to their ends),
        except the provider directory, which dispatch reads whole. A running service whose settings
        differ is restarted, unless `restart` is false (the caller restarts it itself soon)."""
        settings = settings or {}
        for svc in sorted(self.running):
            changed = self.started_with.get(svc, {}) != settings.get(svc, {})
            if svc not in wanted or (changed and restart):
                await self.stop(svc)
        starting = sorted(wanted - self.running)
        for svc in starting:
            skip = [t for t in input_topics(svc) if t != v1.SERVICE_PROVIDER_UPDATED]
            await kafkaio.commit_group_to_end(self.infra.bootstrap, self.group(svc), skip)
            await self.start(svc, wait=False, settings=settings.get(svc, {}))
        for svc in starting:
            await asyncio.to_thread(self.services[svc].wait_ready, 120)

    async def start(self, svc: str, *, wait: bool = True, settings: dict[str, str] | None = None) -> None:
        """Start `svc` with `settings` (None: as it was last started)."""
        service = self.services[svc]
        if settings is not None:
            self.started_with[svc] = dict(settings)
        service.env = {**self.base_env[svc], **self.started_with.get(svc, {})}
        with quiet():
            await asyncio.to_thread(service.start)
        self.running.add(svc)
        if wait:
            await asyncio.to_thread(service.wait_ready, 120)

    async def stop(self, svc: str) -> None:
        with quiet():
            await asyncio.to_thread(self.services[svc].stop)
        self.running.discard(svc)

    async def stop_all(self) -> None:
        for svc in sorted(self.running):
            await self.stop(svc)

    async def quiesce(self, within_s: float = 120) -> None:
        """Wait until every running service has handled everything on its input topics."""
        groups = {self.group(svc): input_topics(svc) for svc in self.running}
        await kafkaio.wait_no_lag(self.infra.bootstrap, groups, within_s)

    def pid(self, svc: str) -> int | None:
        return self.services[svc].pid()

    def log_tail(self, svc: str, lines: int = 30) -> str:
        from services.ops.procs import tail

        return tail(self.services[svc].log_file, lines)


def sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


def pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def pg_connect(url: str) -> Any:
    """An asyncpg connection as the services open theirs: no TLS on loopback (services/common/db.py)."""
    parsed = make_url(url)
    plain = parsed.host in ("127.0.0.1", "localhost", "::1") and not {"ssl", "sslmode"} & set(parsed.query)
    return await asyncpg.connect(pg_dsn(url), **({"ssl": False} if plain else {}))


def sqlite_version() -> str:
    return sqlite3.sqlite_version
