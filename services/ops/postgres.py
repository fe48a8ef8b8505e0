"""The local PostgreSQL cluster (Debian postgresql-common tools), its role and databases."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from services.common.settings import StackSettings
from services.ops import procs
from services.ops.procs import OpsError

START_TIMEOUT = 60.0
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # identifiers we accept unquoted-safe
_TOOLS = ("pg_ctlcluster", "pg_lsclusters", "pg_createcluster", "psql")


@dataclass(frozen=True)
class Cluster:
    version: str
    name: str
    port: int
    status: str

    @property
    def online(self) -> bool:
        return self.status.startswith("online")


@dataclass(frozen=True)
class Target:
    """Role, password and port taken from StackSettings.postgres_url."""

    user: str
    password: str
    port: int


def target(st: StackSettings | None = None) -> Target:
    url = make_url((st or StackSettings()).postgres_url)
    return Target(url.username or "second_opinion", url.password or "", url.port or 5432)


def state_file(st: StackSettings) -> Path:
    return st.run_dir / "postgres.json"


# ---------------------------------------------------------------- cluster


def ensure_running(st: StackSettings) -> bool:
    """Install/create/start the local cluster as needed; True if this call started it."""
    if not _installed():
        _install()
    port = target(st).port
    cluster = _cluster_for(port)
    if cluster.online:
        print(f"postgres: cluster {cluster.version}/{cluster.name} already running on port {port}")
        _wait_accepting(port)
        return False
    print(f"postgres: starting cluster {cluster.version}/{cluster.name} on port {port}")
    _run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster.version, cluster.name, "start"])
    _wait_accepting(port)
    st.run_dir.mkdir(parents=True, exist_ok=True)
    state_file(st).write_text(json.dumps({"version": cluster.version, "cluster": cluster.name}))
    return True


def stop(st: StackSettings) -> bool:
    """Stop the cluster only if `ensure_running` started it; True if it was stopped."""
    try:
        state = json.loads(state_file(st).read_text())
    except (OSError, ValueError):
        print("postgres: not started by this project; leaving it alone")
        return False
    print(f"postgres: stopping cluster {state['version']}/{state['cluster']}")
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", state["version"], state["cluster"], "stop"]
    _run(cmd, check=False)  # already stopped by hand is fine
    state_file(st).unlink(missing_ok=True)
    return True


def clusters() -> list[Cluster]:
    out = _run(["pg_lsclusters", "--no-header"])
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            found.append(Cluster(parts[0], parts[1], int(parts[2]), parts[3]))
    return found


def status(st: StackSettings) -> dict[str, object]:
    """What `second-opinion status` shows for PostgreSQL."""
    port = target(st).port
    info: dict[str, object] = {"port": port, "started_by_us": state_file(st).exists()}
    if not _installed():
        return {**info, "installed": False, "up": False}
    here = [c for c in clusters() if c.port == port]
    info["cluster"] = f"{here[0].version}/{here[0].name}" if here else None
    info["up"] = bool(here) and here[0].online and _accepting(port)
    return info


def _installed() -> bool:
    return all(shutil.which(t) for t in _TOOLS) and bool(_versions())


def _versions() -> list[str]:
    found = [Path(p).parts[-3] for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")]
    return sorted(found, key=lambda v: [int(x) for x in v.split(".") if x.isdigit()])


def _install() -> None:
    if os.geteuid() != 0:
        raise OpsError(
            "PostgreSQL is not installed and we are not root: run "
            "`sudo apt-get install postgresql` (or use --database sqlite)"
        )
    print("postgres: not installed; installing with apt-get (a minute or two)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for the dpkg lock rather than failing if another apt run is in progress.
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in (["apt-get", *lock, "update"], ["apt-get", *lock, "install", "-y", "postgresql"]):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            raise OpsError(f"`{' '.join(cmd)}` failed; see its output above")
    if not _installed():
        raise OpsError("apt-get installed postgresql but its binaries are still not found")


def _cluster_for(port: int) -> Cluster:
    existing = clusters()
    for cluster in existing:
        if cluster.port == port:
            return cluster
    if existing:
        listed = ", ".join(f"{c.version}/{c.name}:{c.port}" for c in existing)
        raise OpsError(
            f"no PostgreSQL cluster on port {port} (found {listed}); change the port in "
            "STACK_POSTGRES_URL or move a cluster to it"
        )
    version = _versions()[-1]
    print(f"postgres: creating cluster {version}/main on port {port}")
    _run(["pg_createcluster", "-p", str(port), version, "main"])
    return next(c for c in clusters() if c.port == port)


def _accepting(port: int) -> bool:
    if shutil.which("pg_isready"):
        cmd = ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"]
        return subprocess.run(cmd, check=False).returncode == 0
    return procs.tcp_open("127.0.0.1", port)


def _wait_accepting(port: int) -> None:
    started = time.monotonic()
    if not procs.wait_until(lambda: _accepting(port), START_TIMEOUT, interval=0.5):
        raise OpsError(
            f"PostgreSQL does not accept connections on 127.0.0.1:{port} after "
            f"{START_TIMEOUT:.0f}s; see /var/log/postgresql/"
        )
    if time.monotonic() - started > 1:
        print(f"postgres: accepting connections after {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------- role and databases


def ensure_role_and_databases(names: list[str], st: StackSettings | None = None) -> None:
    """Create (if missing) the login role from postgres_url and each database, owned by it."""
    t = target(st)
    _ensure_role(t)
    for name in names:
        _check_name(name)
        if _psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", t.port):
            continue
        _psql(f'CREATE DATABASE "{name}" OWNER "{t.user}"', t.port)
        print(f"postgres: created database {name}")


def drop_database(name: str, st: StackSettings | None = None) -> None:
    """Drop a database even while clients are connected (tests reset state this way)."""
    _check_name(name)
    # WITH (FORCE) (PostgreSQL 13+) terminates the sessions and drops in one step, so no new
    # connection can sneak in between.
    _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', target(st).port)


def recreate_database(name: str, st: StackSettings | None = None) -> None:
    drop_database(name, st)
    ensure_role_and_databases([name], st)


def _ensure_role(t: Target) -> None:
    _check_name(t.user)
    password = t.password.replace("'", "''")
    exists = _psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{t.user}'", t.port)
    verb = "ALTER" if exists else "CREATE"
    # ALTER on an existing role too: keeps it able to log in with the password in the URL.
    _psql(f"""{verb} ROLE "{t.user}" LOGIN CREATEDB PASSWORD '{password}'""", t.port)
    if not exists:
        print(f"postgres: created role {t.user}")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise OpsError(f"refusing PostgreSQL identifier {name!r} (lowercase, digits, _ only)")


def _psql(sql: str, port: int, database: str = "postgres") -> str:
    """Run one statement as the `postgres` superuser over the local socket (peer auth)."""
    cmd = ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-p", str(port), "-d", database]
    return _run([*_as_postgres(), *cmd, "-c", sql]).strip()


def _as_postgres() -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    if pwd.getpwuid(os.geteuid()).pw_name == "postgres":
        return []
    raise OpsError("managing PostgreSQL roles needs root (or running as the postgres user)")


def _run(cmd: list[str], *, check: bool = True) -> str:
    """Run a tool and return its stdout (stderr only shown on failure)."""
    # Temp files, not pipes: pg_ctl leaves a daemon behind that may inherit a pipe and keep it
    # open, which would hang us waiting for EOF. cwd=/ because the postgres user may not be
    # allowed into ours. New session: the server must not get our Ctrl-C.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        result = subprocess.run(cmd, stdout=out, stderr=err, cwd="/", start_new_session=True, check=False)
        out.seek(0)
        err.seek(0)
        text, errors = (f.read().decode(errors="replace") for f in (out, err))
    if check and result.returncode != 0:
        raise OpsError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{text}{errors}")
    return text
