"""The machine, the versions, and CPU use of processes and of the whole machine during a run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
PACKAGES = (
    "aiokafka",
    "faststream",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "pydantic",
    "fastapi",
    "uvicorn",
    "opentelemetry-sdk",
    "prometheus-client",
)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gib": round(_meminfo("MemTotal") / 1024 / 1024, 1),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
    }
    return info


def versions(kafka_version: str, postgres_version: str | None, sqlite_version: str) -> dict[str, Any]:
    found: dict[str, Any] = {"python": sys.version.split()[0], "kafka": kafka_version}
    found["postgresql"] = postgres_version
    found["sqlite"] = sqlite_version
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["git"] = _git()
    return found


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]

    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_model() -> str | None:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def process_cpu_s(pid: int | None) -> tuple[float, float] | None:
    """(user, system) CPU seconds of `pid` so far, its threads included."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, all cores."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / TICK, total / TICK


@dataclass
class CpuWindow:
    """CPU used between `begin()` and `end()` by some processes and by the machine."""

    pids: dict[str, int | None]
    started: float = 0.0
    proc0: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    machine0: tuple[float, float] = (0.0, 0.0)

    def begin(self) -> CpuWindow:
        self.started = time.monotonic()
        self.proc0 = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        self.machine0 = machine_cpu()
        return self

    def end(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        busy0, total0 = self.machine0
        busy1, total1 = machine_cpu()
        out: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "machine_busy_pct": round(100 * (busy1 - busy0) / max(total1 - total0, 1e-9), 1),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        for name, pid in self.pids.items():
            before, after = self.proc0.get(name), process_cpu_s(pid)
            if before is not None and after is not None:
                user, system = after[0] - before[0], after[1] - before[1]
                out[f"{name}_cpu_s"] = round(user + system, 3)
                out[f"{name}_cpu_pct_of_core"] = round(100 * (user + system) / max(wall, 1e-9), 1)
                out[f"{name}_system_cpu_pct"] = round(100 * system / max(user + system, 1e-9), 1)
        return out
