"""A Kafka broker and a PostgreSQL cluster of our own, so outage tests can stop them without hurting anyone."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import KafkaSettings, StackSettings
from services.ops import kafka, postgres, procs

ROOT = Path(__file__).resolve().parents[2]
KAFKA_PORT, KAFKA_CONTROLLER_PORT = 19292, 19293
PG_VERSION, PG_CLUSTER, PG_PORT = "15", "outages", 5544
PG_URL = f"postgresql+asyncpg://second_opinion:second_opinion@127.0.0.1:{PG_PORT}"
HOME = ROOT / ".run" / "outages-kafka"


@dataclass(frozen=True)
class DedicatedBroker:
    """The broker on KAFKA_PORT with its storage under .run/outages-kafka/ (never the shared 9092)."""

    st: StackSettings
    ks: KafkaSettings

    @classmethod
    def fresh(cls) -> DedicatedBroker:
        st = StackSettings(
            run_dir=HOME / "run",
            data_dir=HOME / "data",
            kafka_port=KAFKA_PORT,
            kafka_controller_port=KAFKA_CONTROLLER_PORT,
            kafka_heap="384m",
        )
        broker = cls(st, KafkaSettings(bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}"))
        broker.stop()  # a leftover of an interrupted run
        _require_free(KAFKA_PORT, KAFKA_CONTROLLER_PORT)
        shutil.rmtree(HOME, ignore_errors=True)  # fresh storage: no topics or offsets of an earlier run
        return broker

    def start(self) -> None:
        kafka.start(self.st, self.ks)

    def stop(self) -> None:
        kafka.stop(self.st)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(HOME, ignore_errors=True)


@dataclass(frozen=True)
class DedicatedPostgres:
    """Cluster 15/outages on PG_PORT (never the shared 5432), with the project's role."""

    st: StackSettings

    @classmethod
    def fresh(cls) -> DedicatedPostgres:
        pg = cls(StackSettings(postgres_url=PG_URL))
        pg.remove()  # a leftover of an interrupted run
        _require_free(PG_PORT)
        _pg("pg_createcluster", PG_VERSION, PG_CLUSTER, "--port", str(PG_PORT))
        pg.start()
        postgres.ensure_role_and_databases([], pg.st)
        return pg

    def start(self) -> None:
        _pg("pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, PG_CLUSTER, "start")
        if not procs.wait_until(lambda: _accepting(PG_PORT), 30, interval=0.2):
            raise RuntimeError(f"cluster {PG_CLUSTER} does not accept connections on {PG_PORT}")

    def stop(self) -> None:
        # Fast mode: sessions are terminated with 57P01, as in a real restart.
        _pg("pg_ctlcluster", "--skip-systemctl-redirect", "-m", "fast", PG_VERSION, PG_CLUSTER, "stop")

    def begin_smart_stop(self) -> subprocess.Popen[bytes]:
        """Smart mode waits for sessions to end; meanwhile new connections get 57P03 (cannot connect now)."""
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", "-m", "smart", PG_VERSION, PG_CLUSTER, "stop"]
        return subprocess.Popen(cmd, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def remove(self) -> None:
        if any(c.name == PG_CLUSTER and c.version == PG_VERSION for c in postgres.clusters()):
            _pg("pg_dropcluster", "--stop", PG_VERSION, PG_CLUSTER)


def _pg(*cmd: str) -> None:
    # Files, not pipes, and cwd=/: the postgres daemon must not inherit our pipes (see ops.postgres).
    postgres._run(list(cmd))


def _accepting(port: int) -> bool:
    cmd = ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"]
    return subprocess.run(cmd, check=False).returncode == 0


def _require_free(*ports: int) -> None:
    taken = [p for p in ports if procs.tcp_open("127.0.0.1", p)]
    if taken:
        raise RuntimeError(f"ports {taken} are taken: another outage test session is running?")
