"""The stack the integration tests and scenarios run against: real broker, real database, three services.

Where the infrastructure comes from is a setting (`TEST_INFRA`):
- `local` (default): the project's own scripts start Apache Kafka (KRaft, jars from Maven) and
  Debian's PostgreSQL on this machine, as `make up` does; the broker is the tests' own, on
  TEST_KAFKA_PORT (19092), so that a `make up` stack never reads the tests' events;
- `testcontainers`: a Docker engine provides Kafka and PostgreSQL containers;
- `external`: use `KAFKA_BOOTSTRAP_SERVERS` and `TEST_POSTGRES_URL` as given.
The services themselves always run as separate processes (`second-opinion serve ...`), on
their own ports, databases, consumer groups and broker so that a running `make up` stack is not
disturbed (nor disturbs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.structs import RecordMetadata

from services.common.kafka_offsets import committed_offsets
from services.common.settings import SERVICES, KafkaSettings, StackSettings, group_id
from services.migrate import upgrade
from services.ops import kafka, postgres, procs
from tests.support import broker

ROOT = Path(__file__).resolve().parents[2]
# Two test sessions on one machine stay apart with TEST_STACK_ID (a short word) and TEST_PORT_BASE.
STACK_ID = os.environ.get("TEST_STACK_ID", "")
PORT_BASE = int(os.environ.get("TEST_PORT_BASE", "18081"))
TEST_PORTS = {svc: PORT_BASE + i for i, svc in enumerate(SERVICES)}
# The key the test services verify bearer tokens with; tests sign theirs with it (TestStack.token).
TEST_AUTH_SECRET = "second-opinion-test-signing-key-0123456789abcdef"


@dataclass
class Infra:
    bootstrap_servers: str
    postgres_url: str | None  # server URL without a database name
    _cleanup: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for stop in reversed(self._cleanup):
            stop()


def start_infra(need_postgres: bool) -> Infra:
    mode = os.environ.get("TEST_INFRA", "local")
    if mode == "external":
        return Infra(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ.get("TEST_POSTGRES_URL"))
    if mode == "testcontainers":
        return _containers(need_postgres)
    ks = broker.start()  # the tests' own broker, not `make up`'s (see tests/support/broker.py)
    url = None
    if need_postgres:
        st = StackSettings()
        postgres.ensure_running(st)
        url = st.postgres_url
    return Infra(ks.bootstrap_servers, url)


def _containers(need_postgres: bool) -> Infra:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    broker = KafkaContainer("apache/kafka:4.1.1").with_kraft()
    broker.start()
    infra = Infra(broker.get_bootstrap_server(), None, [broker.stop])
    if need_postgres:
        pg = PostgresContainer("postgres:16", username="second_opinion", password="second_opinion")
        pg.start()
        infra._cleanup.append(pg.stop)
        host, port = pg.get_container_host_ip(), pg.get_exposed_port(5432)
        infra.postgres_url = f"postgresql+asyncpg://second_opinion:second_opinion@{host}:{port}"
    return infra


def create_databases(infra: Infra, database: str, label: str, data_dir: Path) -> dict[str, str]:
    """A fresh, migrated database per service; returns the URLs."""
    urls = {}
    for svc in SERVICES:
        if database == "postgres":
            urls[svc] = _recreated_postgres(infra, f"so_test_{label}_{svc}")
        else:
            path = data_dir / f"{label}_{svc}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            urls[svc] = f"sqlite+aiosqlite:///{path}"
        upgrade(svc, urls[svc])
    return urls


def fresh_postgres_url(infra: Infra, name: str) -> str:
    """A new, empty database on the test PostgreSQL (named with TEST_STACK_ID, so sessions stay apart)."""
    return _recreated_postgres(infra, f"so_test_{name}{STACK_ID}")


def _recreated_postgres(infra: Infra, name: str) -> str:
    """Database `name` dropped if it exists and created empty, on the tests' PostgreSQL; its URL."""
    if os.environ.get("TEST_INFRA", "local") == "local":
        postgres.ensure_role_and_databases([])
        postgres.recreate_database(name)
    else:
        _create_database_remote(infra.postgres_url or "", name)
    return f"{infra.postgres_url}/{name}"


def _create_database_remote(server_url: str, name: str) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg", "postgresql") + "/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


@dataclass
class RunningService:
    name: str
    port: int
    env: dict[str, str]
    pid_file: Path
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        procs.stop_pid_file(self.pid_file, self.name)  # a leftover of an interrupted run
        if procs.tcp_open("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} for the test {self.name} service is taken by another process")
        cmd = [sys.executable, "-m", "services.cli", "serve", self.name]
        self.process = procs.start_detached(cmd, pid_file=self.pid_file, log_file=self.log_file, env=self.env, cwd=ROOT)

    def wait_ready(self, timeout: float = 90) -> None:
        alive = lambda: self.process.poll() is None  # noqa: E731
        if not procs.wait_http_ok(f"{self.url}/health/ready", timeout, alive=alive):
            raise RuntimeError(f"{self.name} not ready in {timeout}s; log:\n{procs.tail(self.log_file, 60)}")

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def stop(self, timeout: float = 30) -> None:
        procs.stop_pid_file(self.pid_file, self.name, timeout=timeout)

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


@dataclass
class TestStack:
    database: str
    bootstrap_servers: str
    group_prefix: str
    services: dict[str, RunningService]

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers, group_prefix=self.group_prefix)

    def stop(self) -> None:
        for svc in self.services.values():
            svc.stop()

    async def applied(self, service: str, topic: str, record: RecordMetadata, timeout: float = 30) -> None:
        """Returns once `service` has applied `record` (its group committed past it); fails after `timeout` s.

        Topics of one service are read by their own consumers, so a record published before
        another can be applied after it: a test that needs an order across topics waits here.
        """
        group = group_id(service, self.kafka)
        deadline = time.monotonic() + timeout
        while (await committed_offsets(self.bootstrap_servers, group, topic)).get(record.partition, 0) <= record.offset:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{service} did not apply {topic}[{record.partition}]@{record.offset} in {timeout} s"
                )
            await asyncio.sleep(0.1)

    def token(self, user: str, role: str) -> str:
        from datetime import timedelta

        from pydantic import SecretStr

        from services.common.auth import AuthSettings, issue

        return issue(AuthSettings(jwt_secret=SecretStr(TEST_AUTH_SECRET)), user, role, ttl=timedelta(hours=1))


@contextlib.contextmanager
def running_stack(infra: Infra, database: str, work_dir: Path, label_suffix: str = "") -> Iterator[TestStack]:
    """`label_suffix` keeps a second stack's databases, consumer groups and files apart from the first's."""
    label = ("pg" if database == "postgres" else "sqlite") + (f"_{label_suffix}" if label_suffix else "")
    label += f"_{STACK_ID}" if STACK_ID else ""
    ks = KafkaSettings(bootstrap_servers=infra.bootstrap_servers)
    kafka.create_topics(ks)
    urls = create_databases(infra, database, label, work_dir)
    group_prefix = f"second-opinion-test-{label}"
    services = {}
    for svc in SERVICES:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
            "KAFKA_GROUP_PREFIX": group_prefix,
            f"{svc.upper()}_DATABASE_URL": urls[svc],
            f"{svc.upper()}_HTTP_PORT": str(TEST_PORTS[svc]),
            "AUTH_JWT_SECRET": TEST_AUTH_SECRET,
        }
        services[svc] = RunningService(
            svc, TEST_PORTS[svc], env, work_dir / f"{label}-{svc}.pid", work_dir / f"{label}-{svc}.log"
        )
    stack = TestStack(database, infra.bootstrap_servers, group_prefix, services)
    try:
        for svc in services.values():
            svc.log_file.unlink(missing_ok=True)
            svc.start()
        for svc in services.values():
            svc.wait_ready()
        yield stack
    finally:
        stack.stop()
