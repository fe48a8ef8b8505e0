"""A local single-node Kafka broker (KRaft) fetched from Maven Central, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from schemas.v1 import ALL_TOPICS, DLQ_SUFFIX, SERVICE_PROVIDER_UPDATED
from services.common.settings import KafkaSettings, StackSettings
from services.ops import procs
from services.ops.procs import OpsError

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
PID_MARKER = "kafka.Kafka"  # in the broker's command line; guards against a recycled pid
_TOPIC_ALREADY_EXISTS = 36
# Provider updates are "latest state per provider_id": compaction keeps the last one per key.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {SERVICE_PROVIDER_UPDATED: {"cleanup.policy": "compact"}}
# Every topic accepts records up to 10 MiB (the broker default is 1 MiB) so that an oversized record
# is consumed and dead-lettered, not stuck. DLQs get headroom for the headers a DLQ copy adds, so the
# copy of the largest accepted record always fits (ServiceSettings.max_record_bytes is their sum).
MAX_RECORD_BYTES = 10 * 1024 * 1024
DLQ_HEADROOM_BYTES = 64 * 1024

T = TypeVar("T")


# ---------------------------------------------------------------- paths


def libs_dir(st: StackSettings) -> Path:
    return st.cache_dir / f"kafka-{st.kafka_version}" / "libs"


def pid_file(st: StackSettings) -> Path:
    return st.run_dir / "kafka.pid"


def log_file(st: StackSettings) -> Path:
    return st.run_dir / "logs" / "kafka.log"


def storage_dir(st: StackSettings) -> Path:
    return st.data_dir / "kafka"


# ---------------------------------------------------------------- jars


def ensure_jars(st: StackSettings) -> Path:
    """Download the broker jars once per version into the cache; returns the libs directory."""
    libs = libs_dir(st)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    _require_tools("java", "mvn")
    libs.mkdir(parents=True, exist_ok=True)
    print(f"kafka: fetching Kafka {st.kafka_version} jars from Maven Central into {libs} ...")
    started = time.monotonic()
    cmd = [
        "mvn", "-q", "-B", "-f", str(DEPLOY_DIR / "pom.xml"),
        f"-Dkafka.version={st.kafka_version}",
        "dependency:copy-dependencies", f"-DoutputDirectory={libs.resolve()}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OpsError(f"Maven failed ({' '.join(cmd)}):\n{result.stdout}{result.stderr}")
    # Written last: a fetch interrupted half way is simply redone next time.
    marker.write_text(f"{st.kafka_version}\n")
    count = len(list(libs.glob("*.jar")))
    print(f"kafka: {count} jars ready in {time.monotonic() - started:.0f}s")
    return libs


def _require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise OpsError(
            f"missing {', '.join(missing)} on PATH: the local Kafka broker needs a Java 17+ "
            "runtime and Maven. Install them with: "
            "apt-get install openjdk-17-jre-headless maven"
        )


# ---------------------------------------------------------------- broker process


def start(st: StackSettings, ks: KafkaSettings) -> None:
    """Make sure a broker answers on ks.bootstrap_servers, launching ours if none does."""
    if is_up(ks):
        pid = procs.read_pid(pid_file(st), PID_MARKER)
        owner = f"ours, pid {pid}" if pid else "not started by this project"
        print(f"kafka: reusing the broker at {ks.bootstrap_servers} ({owner})")
        return
    pid = procs.read_pid(pid_file(st), PID_MARKER)
    if pid is not None:
        # Ours, but still starting up (or wedged): wait for it instead of starting a second one.
        print(f"kafka: broker pid {pid} is running but not answering yet; waiting")
        _wait_ready(st, ks, lambda: procs.pid_alive(pid))
        return
    _check_launchable(st, ks)
    libs = ensure_jars(st)
    config = _render_config(st, ks)
    _ensure_formatted(st, libs, config)
    proc = _launch(st, libs, config)
    _wait_ready(st, ks, lambda: proc.poll() is None)


def _check_launchable(st: StackSettings, ks: KafkaSettings) -> None:
    host, port = procs.host_port(ks.bootstrap_servers, st.kafka_port)
    if host not in ("127.0.0.1", "localhost") or port != st.kafka_port:
        raise OpsError(
            f"no Kafka broker answers at KAFKA_BOOTSTRAP_SERVERS={ks.bootstrap_servers}; "
            f"the project launches its own broker only at 127.0.0.1:{st.kafka_port} "
            "(STACK_KAFKA_PORT). Start that cluster or point the setting at the local one."
        )
    for p in (st.kafka_port, st.kafka_controller_port):
        if procs.tcp_open("127.0.0.1", p):
            raise OpsError(f"port {p} is taken by something that is not a working Kafka broker")


def _render_config(st: StackSettings, ks: KafkaSettings) -> Path:
    # Rendered on every start so a changed port or partition count takes effect.
    template = Template((DEPLOY_DIR / "server.properties.template").read_text())
    text = template.substitute(
        port=st.kafka_port,
        controller_port=st.kafka_controller_port,
        log_dirs=(storage_dir(st) / "data").resolve(),
        partitions=ks.partitions,
    )
    path = storage_dir(st) / "server.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _java(st: StackSettings, libs: Path, heap: str, main: str, *args: str) -> list[str]:
    return [
        "java", f"-Xmx{heap}", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={(DEPLOY_DIR / 'log4j2.properties').resolve()}",
        f"-Dkafka.log.file={log_file(st).resolve()}",
        "-cp", f"{libs.resolve()}/*",  # the java launcher expands the wildcard itself
        main, *args,
    ]  # fmt: skip


def _ensure_formatted(st: StackSettings, libs: Path, config: Path) -> None:
    """Format the KRaft storage once; the cluster id is kept so later starts reuse the data."""
    if (storage_dir(st) / "data" / "meta.properties").exists():
        return
    id_file = storage_dir(st) / "cluster.id"
    if not id_file.exists():
        out = _run_tool(st, libs, "random-uuid")
        id_file.write_text(out.strip().splitlines()[-1] + "\n")
    cluster_id = id_file.read_text().strip()
    print(f"kafka: formatting storage in {storage_dir(st) / 'data'} (cluster id {cluster_id})")
    # No --standalone: the quorum is given statically by controller.quorum.voters.
    _run_tool(st, libs, "format", "-t", cluster_id, "-c", str(config.resolve()))


def _run_tool(st: StackSettings, libs: Path, *args: str) -> str:
    log_file(st).parent.mkdir(parents=True, exist_ok=True)
    cmd = _java(st, libs, "256m", "kafka.tools.StorageTool", *args)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OpsError(f"StorageTool {args[0]} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _launch(st: StackSettings, libs: Path, config: Path) -> subprocess.Popen[bytes]:
    cmd = _java(st, libs, st.kafka_heap, "kafka.Kafka", str(config.resolve()))
    proc = procs.start_detached(cmd, pid_file=pid_file(st), log_file=log_file(st))
    print(f"kafka: started broker pid {proc.pid} on 127.0.0.1:{st.kafka_port}, log {log_file(st)}")
    return proc


def _wait_ready(st: StackSettings, ks: KafkaSettings, alive: Callable[[], bool]) -> None:
    started = time.monotonic()
    deadline = started + START_TIMEOUT
    while time.monotonic() < deadline:
        if is_up(ks, timeout=5.0):
            print(f"kafka: ready at {ks.bootstrap_servers} after {time.monotonic() - started:.1f}s")
            return
        if not alive():
            pid_file(st).unlink(missing_ok=True)
            raise OpsError(f"kafka broker exited during startup; see {log_file(st)}:\n"
                           f"{procs.tail(log_file(st), 30)}")  # fmt: skip
        time.sleep(0.5)
    raise OpsError(
        f"kafka broker did not answer at {ks.bootstrap_servers} within {START_TIMEOUT:.0f}s "
        f"(still running; see {log_file(st)}):\n{procs.tail(log_file(st), 30)}"
    )


def stop(st: StackSettings) -> bool:
    """Stop the broker this project started (if any); True if one was running."""
    return procs.stop_pid_file(pid_file(st), "kafka", marker=PID_MARKER, timeout=STOP_TIMEOUT)


def is_up(ks: KafkaSettings, timeout: float = 3.0) -> bool:
    """True if a broker answers metadata requests at ks.bootstrap_servers (fast when it is down)."""
    host, port = procs.host_port(ks.bootstrap_servers, 9092)
    if not procs.tcp_open(host, port, timeout=min(timeout, 1.0)):
        return False
    with quiet_aiokafka():
        try:
            info = _run(asyncio.wait_for(_describe_cluster(ks, timeout), timeout))
        except Exception:  # any failure to get metadata means "not usable yet"
            return False
    # Brokers appear in metadata once registered with the controller: then topics can be made.
    return bool(info.get("brokers"))


def status(st: StackSettings, ks: KafkaSettings) -> dict[str, Any]:
    """What `second-opinion status` shows for Kafka."""
    pid = procs.read_pid(pid_file(st), PID_MARKER)
    up = is_up(ks)
    info: dict[str, Any] = {"bootstrap": ks.bootstrap_servers, "up": up, "pid": pid}
    if up:
        info["cluster_id"] = _run(_describe_cluster(ks, 5.0)).get("cluster_id")
    info["log"] = str(log_file(st)) if pid else None
    return info


# ---------------------------------------------------------------- topics


def create_topics(ks: KafkaSettings, topics: Iterable[str] = ALL_TOPICS) -> list[str]:
    """Create the missing topics (existing ones are left alone); returns the names created."""
    return _run(_create_topics(ks, list(topics)))


def describe_topics(ks: KafkaSettings, topics: Iterable[str] = ALL_TOPICS) -> dict[str, int]:
    """Partition count of each of `topics` that exists."""
    return _run(_partition_counts(ks, list(topics)))


def topic_config(ks: KafkaSettings, topic: str) -> dict[str, str]:
    """Effective configuration of one topic."""
    return _run(_topic_config(ks, topic))


async def _create_topics(ks: KafkaSettings, topics: list[str]) -> list[str]:
    async with _admin(ks) as admin:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            response = await admin.create_topics([_new_topic(ks, t) for t in missing])
            _raise_topic_errors(response.topic_errors)
            # Wait for the metadata so a consumer started right after finds every partition.
            await _wait_topics_visible(admin, missing)
        await _fix_configs(admin, [t for t in topics if t in existing])
        _warn_partitions(ks, await _counts(admin, [t for t in topics if t in existing]))
    if missing:
        print(f"kafka: created {len(missing)} topics ({ks.partitions} partitions each)")
    print(f"kafka: {len(topics) - len(missing)} topics already existed")
    return missing


def topic_configs(topic: str) -> dict[str, str]:
    """The configuration the project gives `topic` (and brings an existing one to)."""
    limit = MAX_RECORD_BYTES + (DLQ_HEADROOM_BYTES if topic.endswith(DLQ_SUFFIX) else 0)
    return {"max.message.bytes": str(limit), **TOPIC_CONFIGS.get(topic, {})}


def _new_topic(ks: KafkaSettings, topic: str) -> NewTopic:
    return NewTopic(topic, ks.partitions, ks.replication_factor, topic_configs=topic_configs(topic))


def _raise_topic_errors(topic_errors: list[tuple[Any, ...]]) -> None:
    failures = [
        f"{name}: {for_code(code).__name__} {rest[0] if rest else ''}".strip()
        for name, code, *rest in topic_errors
        if code not in (0, _TOPIC_ALREADY_EXISTS)  # a concurrent creator won the race: fine
    ]
    if failures:
        raise OpsError("could not create topics:\n  " + "\n  ".join(failures))


async def _wait_topics_visible(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = await admin.describe_topics(topics)
        ready = [
            t for t in described
            if t["error_code"] == 0 and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        ]  # fmt: skip
        if len(ready) == len(topics):
            return
        await asyncio.sleep(0.2)
    raise OpsError(f"topics created but not visible in metadata after 30s: {topics}")


async def _fix_configs(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    # Only ever set here, and `wanted` holds every override, so a plain (non-incremental)
    # AlterConfigs loses nothing.
    for topic in topics:
        wanted = topic_configs(topic)
        current = await _config_of(admin, topic)
        if any(current.get(k) != v for k, v in wanted.items()):
            print(f"kafka: setting {wanted} on existing topic {topic}")
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, wanted)])


def _warn_partitions(ks: KafkaSettings, counts: dict[str, int]) -> None:
    # Never repartitioned automatically: that would move keys and break per-order ordering.
    odd = {t: n for t, n in counts.items() if n != ks.partitions}
    if odd:
        print(f"kafka: warning: partitions differ from KAFKA_PARTITIONS={ks.partitions}: {odd}")


async def _partition_counts(ks: KafkaSettings, topics: list[str]) -> dict[str, int]:
    async with _admin(ks) as admin:
        return await _counts(admin, topics)


async def _counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    if not topics:
        return {}
    described = await admin.describe_topics(topics)
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def _topic_config(ks: KafkaSettings, topic: str) -> dict[str, str]:
    async with _admin(ks) as admin:
        return await _config_of(admin, topic)


async def _config_of(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    config: dict[str, str] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                config[entry["config_names"]] = entry["config_value"]
    return config


# ---------------------------------------------------------------- admin client plumbing


async def _describe_cluster(ks: KafkaSettings, request_timeout: float) -> dict[str, Any]:
    async with _admin(ks, int(request_timeout * 1000)) as admin:
        return await admin.describe_cluster()


@contextlib.asynccontextmanager
async def _admin(ks: KafkaSettings, timeout_ms: int = 30_000) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=ks.bootstrap_servers,
        client_id="second-opinion-ops",
        request_timeout_ms=timeout_ms,
    )
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


@contextlib.contextmanager
def quiet_aiokafka() -> Any:
    # With a broker that may be down, aiokafka logs each refused connection at ERROR (hundreds a minute).
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # A private loop in a worker thread: callable from sync code and from inside a running
    # event loop (tests, async callers) without touching that loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
