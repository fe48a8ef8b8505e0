"""Detached child processes tracked by pid files, and small waiting helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx


class OpsError(RuntimeError):
    """A failure the operator can act on; the CLI prints the message without a traceback."""


def start_detached(
    cmd: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session (it outlives us and our Ctrl-C), appending to log_file."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def pid_alive(pid: int) -> bool:
    """True if `pid` runs; a zombie counts as dead (our own exited child not yet reaped)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def read_pid(pid_file: Path, marker: str | None = None) -> int | None:
    """The live pid recorded in pid_file, else None. `marker` must appear in its command line
    so that a pid recycled by an unrelated process is not mistaken for ours."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    if marker is not None and marker not in cmdline(pid):
        return None
    return pid


def stop_pid_file(pid_file: Path, name: str, *, marker: str | None = None, timeout: float = 30.0) -> bool:
    """SIGTERM the process (group) in pid_file, SIGKILL after `timeout`; True if one was running."""
    pid = read_pid(pid_file, marker)
    if pid is None:
        print(f"{name}: not running (no live process recorded in {pid_file})")
        pid_file.unlink(missing_ok=True)
        return False
    print(f"{name}: stopping pid {pid} (SIGTERM)")
    _signal(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_alive(pid), timeout):
        print(f"{name}: still running after {timeout:.0f}s, sending SIGKILL")
        _signal(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 5.0)
    pid_file.unlink(missing_ok=True)
    print(f"{name}: stopped")
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    # Signal the whole group we created with start_new_session, so children (e.g. uvicorn
    # workers) go too; fall back to the pid alone if it is not a group leader.
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    # Only works for our own children; for anyone else's there is nothing to reap.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_http_ok(url: str, timeout: float, *, alive: Callable[[], bool] | None = None) -> bool:
    """Poll `url` until it answers 200. False on timeout, or as soon as `alive()` says the
    process behind it has exited (no point waiting the full timeout for a dead server)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return True
            if alive is not None and not alive():
                return False
            time.sleep(0.5)
    return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """First entry of a comma-separated bootstrap list as (host, port)."""
    first = address.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host:
        return first, default_port
    return host.strip("[]"), int(port)
