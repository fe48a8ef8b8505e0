"""Bring the whole local stack up (broker, database, three services) and down again."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx

from services.common.settings import SERVICES, KafkaSettings, StackSettings, http_port
from services.ops import kafka, postgres, procs
from services.ops.procs import OpsError

Database = Literal["sqlite", "postgres"]
ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
MIGRATE_TIMEOUT = 300.0


def state_file(st: StackSettings) -> Path:
    return st.run_dir / "stack.json"


def pid_file(st: StackSettings, svc: str) -> Path:
    return st.run_dir / f"{svc}.pid"


def log_file(st: StackSettings, svc: str) -> Path:
    return st.run_dir / "logs" / f"{svc}.log"


def database_name(svc: str) -> str:
    return f"second_opinion_{svc}"


def database_url(st: StackSettings, svc: str, database: Database) -> str:
    if database == "postgres":
        return f"{st.postgres_url}/{database_name(svc)}"
    return f"sqlite+aiosqlite:///{st.data_dir.resolve() / f'{svc}.db'}"


def service_env(st: StackSettings, ks: KafkaSettings, svc: str, database: Database) -> dict[str, str]:
    """The variables that point one service at this stack (merge over os.environ to use)."""
    prefix = svc.upper()
    return {
        "KAFKA_BOOTSTRAP_SERVERS": ks.bootstrap_servers,
        f"{prefix}_DATABASE_URL": database_url(st, svc, database),
        f"{prefix}_HTTP_PORT": str(http_port(svc)),
        # The console's tokens: `second-opinion token` signs with the same key file.
        "AUTH_JWT_SECRET_FILE": str((st.data_dir / "auth.secret").resolve()),
    }


def _marker(svc: str) -> str:
    return f"serve {svc}"  # in the service's command line; guards against a recycled pid


# ---------------------------------------------------------------- up


def up(st: StackSettings, ks: KafkaSettings, database: Database) -> None:
    """Start (or reuse) everything; each step is idempotent, so re-running `up` is safe."""
    _check_same_database(st, database)
    kafka.start(st, ks)  # fetches the jars first if it has to launch a broker
    kafka.create_topics(ks)
    state: dict[str, Any] = {"database": database, "kafka": ks.bootstrap_servers, "services": {}}
    if database == "postgres":
        postgres.ensure_running(st)  # records in run_dir whether we started it, for `down`
        postgres.ensure_role_and_databases([database_name(s) for s in SERVICES], st)
    else:
        st.data_dir.mkdir(parents=True, exist_ok=True)
    _up_services(st, ks, database, state)
    print(f"stack: up ({database}); " + ", ".join(
        f"{s} http://127.0.0.1:{i['port']}" for s, i in state["services"].items()
    ))  # fmt: skip


def _check_same_database(st: StackSettings, database: Database) -> None:
    # Reusing services that run against the other database would silently mix two stacks.
    previous = _load(st).get("database")
    running = [s for s in SERVICES if procs.read_pid(pid_file(st, s), _marker(s))]
    if running and previous and previous != database:
        raise OpsError(
            f"the stack is up with --database {previous} ({', '.join(running)} running); "
            "run `second-opinion down` first"
        )


def _up_services(st: StackSettings, ks: KafkaSettings, database: Database, state: dict[str, Any]) -> None:
    """Migrate, launch, then wait: each phase runs for all services at once, because every
    service spends most of its start-up waiting (imports, consumer-group rebalances)."""
    running = {s: pid for s in SERVICES if (pid := procs.read_pid(pid_file(st, s), _marker(s)))}
    envs = {s: _child_env(st, ks, s, database) for s in SERVICES}
    _migrate_all([s for s in SERVICES if s not in running], envs)
    alive: dict[str, Callable[[], bool]] = {}
    for svc in SERVICES:
        if svc in running:
            print(f"{svc}: already running (pid {running[svc]}); not restarting")
            pid = running[svc]
            alive[svc] = functools.partial(procs.pid_alive, pid)
        else:
            proc = _launch(st, svc, envs[svc])
            pid = proc.pid
            alive[svc] = functools.partial(_running, proc)
        info = {"pid": pid, "port": http_port(svc), "log": str(log_file(st, svc))}
        state["services"][svc] = info
    _save(st, state)  # before waiting, so `down` can stop a half-started stack
    for svc in SERVICES:
        _wait_ready(st, svc, http_port(svc), alive[svc])


def _child_env(st: StackSettings, ks: KafkaSettings, svc: str, database: Database) -> dict[str, str]:
    env = {**os.environ, **service_env(st, ks, svc, database)}
    # Unbuffered, so the log tail we show on failure is what the service really printed last.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _running(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _launch(st: StackSettings, svc: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    port = http_port(svc)
    if procs.tcp_open("127.0.0.1", port):
        raise OpsError(f"{svc}: port {port} is already in use by another process")
    cmd = [sys.executable, "-m", "services.cli", "serve", svc]
    proc = procs.start_detached(cmd, pid_file=pid_file(st, svc), log_file=log_file(st, svc), env=env, cwd=ROOT)
    print(f"{svc}: started pid {proc.pid} on port {port}, log {log_file(st, svc)}")
    return proc


def _migrate_all(services: list[str], envs: dict[str, dict[str, str]]) -> None:
    if not services:
        return
    print(f"stack: migrating {', '.join(services)}")
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        errors = [e for e in pool.map(lambda s: _migrate(s, envs[s]), services) if e]
    if errors:
        raise OpsError("\n".join(errors))


def _migrate(svc: str, env: dict[str, str]) -> str | None:
    """Run `second-opinion migrate <svc>`; the error text if it failed."""
    cmd = [sys.executable, "-m", "services.cli", "migrate", svc]
    try:
        result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=MIGRATE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"{svc}: migrate did not finish within {MIGRATE_TIMEOUT:.0f}s"
    if result.returncode != 0:
        return (
            f"{svc}: `second-opinion migrate {svc}` failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return None


def _wait_ready(st: StackSettings, svc: str, port: int, alive: Callable[[], bool]) -> None:
    url = f"http://127.0.0.1:{port}/health/ready"
    started = time.monotonic()
    if procs.wait_http_ok(url, READY_TIMEOUT, alive=alive):
        print(f"{svc}: ready after {time.monotonic() - started:.1f}s")
        return
    why = "exited" if not alive() else f"not ready after {READY_TIMEOUT:.0f}s (still running)"
    raise OpsError(
        f"{svc}: {why}; {url} never answered 200. Last lines of {log_file(st, svc)}:\n"
        f"{procs.tail(log_file(st, svc), 40)}"
    )


def _load(st: StackSettings) -> dict[str, Any]:
    try:
        return json.loads(state_file(st).read_text())
    except (OSError, ValueError):
        return {}


def _save(st: StackSettings, state: dict[str, Any]) -> None:
    st.run_dir.mkdir(parents=True, exist_ok=True)
    state_file(st).write_text(json.dumps(state, indent=2) + "\n")


# ---------------------------------------------------------------- down and status


def down(st: StackSettings) -> None:
    """Stop the services, our broker, and PostgreSQL if (and only if) we started it."""
    for svc in reversed(SERVICES):  # downstream first: they stop consuming what is left
        procs.stop_pid_file(pid_file(st, svc), svc, marker=_marker(svc), timeout=STOP_TIMEOUT)
    kafka.stop(st)
    postgres.stop(st)
    state_file(st).unlink(missing_ok=True)


def status(st: StackSettings, ks: KafkaSettings) -> dict[str, Any]:
    """Snapshot of what runs: broker, database, each service (pid, port, readiness)."""
    database = _load(st).get("database")
    result: dict[str, Any] = {"database": database, "kafka": kafka.status(st, ks)}
    if database == "postgres" or postgres.state_file(st).exists():
        result["postgres"] = postgres.status(st)
    result["services"] = {svc: _service_status(st, svc) for svc in SERVICES}
    return result


def _service_status(st: StackSettings, svc: str) -> dict[str, Any]:
    port = http_port(svc)
    pid = procs.read_pid(pid_file(st, svc), _marker(svc))
    try:
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        ready = False
    return {"pid": pid, "port": port, "ready": ready, "log": str(log_file(st, svc))}
