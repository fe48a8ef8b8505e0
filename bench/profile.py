"""`--profile`: py-spy attached to a running service, and a text summary of where its CPU time went.

py-spy samples the process from outside (ptrace), so the service runs unchanged. It is used from the
project's virtualenv when installed there, else through `uvx` (a PyPI wheel that carries the binary).
Only samples of running threads are kept (py-spy's default: time spent waiting in the event loop's
`select` is not counted), so shares below are shares of the process's CPU time.
"""

from __future__ import annotations

import json
import linecache
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PY_SPY = "py-spy==0.4.3"
RATE_HZ = 250

# Steps of the service's work, each sample in exactly one: the first group that has a frame on the
# sample's stack decides, and within a group the innermost such frame. Entries: (label, function name
# or "" for any, file part). asyncpg's connection is TLS when the server offers it (sslmode prefer):
# encryption and socket writes then run in asyncio's SSL protocol, partly in callbacks outside the
# statement's stack; SQLAlchemy runs statements in a greenlet whose stack does not show the caller.
STEP_GROUPS: tuple[tuple[tuple[str, str, str], ...], ...] = (
    (
        ("TLS and socket writes of the PostgreSQL connection (asyncio sslproto, ssl)", "", "asyncio/sslproto.py"),
        ("TLS and socket writes of the PostgreSQL connection (asyncio sslproto, ssl)", "", "/ssl.py"),
    ),
    (
        ("decode: PAN scan, JSON, pydantic validation", "decode", "common/consumer.py"),
        ("per-order lock (pg_advisory_xact_lock)", "lock_order", "common/db.py"),
        ("inbox claim (INSERT .. ON CONFLICT)", "claim", "common/inbox.py"),
        ("outbox stage (INSERT)", "stage", "common/outbox.py"),
        ("handler: repository SQL (reads, case insert/update, timeline)", "", "decision/adapters/repository.py"),
        ("handler: policy, mapping, pydantic models", "", "decision/app/"),
        ("handler: policy, mapping, pydantic models", "", "decision/domain/"),
        ("transaction commit and session close", "commit", "sqlalchemy/ext/asyncio/session.py"),
        ("transaction commit and session close", "__aexit__", "sqlalchemy/ext/asyncio/session.py"),
        ("transaction commit and session close", "close", "sqlalchemy/ext/asyncio/session.py"),
        ("transaction begin", "begin", "sqlalchemy/ext/asyncio/session.py"),
        ("runtime around each event (tracing span, log context, metrics, retry loop)", "", "common/consumer.py"),
        ("Kafka offset commit per record (msg.ack)", "ack", "faststream/kafka/message.py"),
        ("outbox relay (select pending, send, mark sent)", "", "common/relay.py"),
        ("lag monitor, readiness, gauges", "_watch_lag", "common/service_app.py"),
        ("lag monitor, readiness, gauges", "_readiness", "common/service_app.py"),
    ),
    (
        ("SQLAlchemy statement compile/execute (its greenlet: caller not on the stack)", "", "sqlalchemy/"),
        ("asyncpg protocol", "", "asyncpg/"),
        ("SQLite calls in aiosqlite's worker threads", "", "aiosqlite/"),
        ("FastStream dispatch around the handler", "", "faststream/"),
        ("FastStream dispatch around the handler", "", "fast_depends/"),
        ("aiokafka (fetcher, sender, heartbeats, commits)", "", "aiokafka/"),
        ("opentelemetry", "", "opentelemetry/"),
    ),
)
OTHER = "asyncio event loop, socket reads and everything else"
# Innermost frames of a thread that waits (py-spy sometimes keeps them): not CPU, left out. So is an
# innermost frame whose line is a blocking call into C (a queue's get, a lock's wait), e.g. the line
# where aiosqlite's worker thread waits for the next statement.
IDLE_CALL = re.compile(r"\.(get|wait|select|acquire|join)\(|\bsleep\(")
IDLE_LEAVES = frozenset(
    {
        "EpollSelector.select",
        "PollSelector.select",
        "Condition.wait",
        "Event.wait",
        "Queue.get",
        "SimpleQueue.get",
        "Thread._wait_for_tstate_lock",
        "sleep",
    }
)


def py_spy_command() -> list[str]:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return [str(local)]
    found = shutil.which("py-spy")
    if found:
        return [found]
    return ["uvx", "--from", PY_SPY, "py-spy"]


class Recorder:
    """py-spy record --pid, stopped with SIGINT (it then writes the speedscope file)."""

    def __init__(self, pid: int, output: Path) -> None:
        self.pid = pid
        self.output = output
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = output.with_suffix(".py-spy.log")

    def start(self) -> None:
        cmd = [
            *py_spy_command(),
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(RATE_HZ),
            "--format",
            "speedscope",
            "--output",
            str(self.output),
            "--threads",
        ]
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, timeout: float = 60) -> bool:
        """True when the profile file was written."""
        if self.proc is None:
            return False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.unlink(missing_ok=True) if self.output.exists() else None
        return self.output.exists()

    def failure(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no py-spy output)"


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _stacks(speedscope: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[list[int], float, str]]]:
    frames = speedscope["shared"]["frames"]
    stacks = []
    for profile in speedscope["profiles"]:
        thread = profile.get("name", "")
        for sample, weight in zip(profile["samples"], profile["weights"], strict=False):
            stacks.append((sample, float(weight), thread))
    return frames, stacks


def _where(frame: dict[str, Any]) -> str:
    path = frame.get("file") or ""
    for marker in ("site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame.get('name')} ({path}:{frame.get('line')})"


def _library(frame: dict[str, Any]) -> str:
    path = frame.get("file") or ""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/services/" in path or "/schemas/" in path:
        rest = path.split("/services/", 1)[1] if "/services/" in path else "schemas"
        return "services/" + "/".join(rest.split("/")[:2]).removesuffix(".py")
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib:" + rest.split("/", 1)[0].removesuffix(".py")
    return path or "?"


def _idle(frame: dict[str, Any]) -> bool:
    if str(frame.get("name")) in IDLE_LEAVES:
        return True
    line = linecache.getline(frame.get("file") or "", int(frame.get("line") or 0))
    return bool(IDLE_CALL.search(line))


def _labels(frame: dict[str, Any]) -> tuple[tuple[int, str], ...]:
    """(group, label) of each step group the frame names, at most one per group."""
    name = str(frame.get("name", ""))
    short = name.split(".")[-1]
    path = frame.get("file") or ""
    found = []
    for g, group in enumerate(STEP_GROUPS):
        for label, fn, part in group:
            if part in path and (not fn or short == fn or name == fn):
                found.append((g, label))
                break
    return tuple(found)


def _step(sample: list[int], labels: list[tuple[tuple[int, str], ...]]) -> str:
    best: tuple[int, int, str] | None = None  # (group, -depth, label): lowest group, then innermost
    for depth, idx in enumerate(sample):
        for group, label in labels[idx]:
            key = (group, -depth, label)
            if best is None or key < best:
                best = key
    return best[2] if best else OTHER


def summarize(path: Path, *, events: int, cpu_s: float | None, wall_s: float | None) -> tuple[str, dict[str, Any]]:
    """A text report (by step, by library, top functions by self and total time) and its key figures."""
    data = json.loads(path.read_text())
    frames, stacks = _stacks(data)
    labels = [_labels(f) for f in frames]
    idle_frames = {i for i, f in enumerate(frames) if _idle(f)}
    idle = 0.0
    self_time: Counter[int] = Counter()
    incl: Counter[int] = Counter()
    libs: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for sample, weight, thread in stacks:
        if not sample or sample[-1] in idle_frames:
            idle += weight
            continue
        threads[thread] += weight
        leaf = sample[-1]
        self_time[leaf] += weight
        libs[_library(frames[leaf])] += weight
        for idx in set(sample):
            incl[idx] += weight
        steps[_step(sample, labels)] += weight
    total = sum(threads.values()) or 1.0
    per_event_ms = (cpu_s * 1000 / events) if cpu_s and events else None

    def line(share: float, text: str) -> str:
        ms = f"{share * per_event_ms:7.3f} ms/event  " if per_event_ms else ""
        return f"  {100 * share:5.1f}%  {ms}{text}"

    out = [
        f"py-spy profile of the decision service: {path.name}",
        f"samples: {len(stacks)} at {RATE_HZ} Hz; {100 * idle / max(idle + total, 1):.0f}% were a thread waiting "
        "(select, a lock, a queue) and are left out; threads of the rest: "
        + ", ".join(f"{t or '?'} {100 * w / total:.0f}%" for t, w in threads.most_common()),
        f"events handled while recording: {events}; process CPU: {_num(cpu_s)} s over {_num(wall_s)} s wall"
        + (f" = {per_event_ms:.3f} ms CPU per event" if per_event_ms else ""),
        "(shares are of the samples of running threads; ms/event = share x CPU per event)",
        "",
        "By step (each sample in one step; see STEP_GROUPS in bench/profile.py; steps add up to 100%):",
        *[line(w / total, label) for label, w in steps.most_common()],
        "",
        "By library of the innermost frame (self time):",
        *[line(w / total, lib) for lib, w in libs.most_common(25)],
        "",
        "Top functions by self time:",
        *[line(w / total, _where(frames[i])) for i, w in self_time.most_common(30)],
        "",
        "Top functions by total time (self + callees):",
        *[line(w / total, _where(frames[i])) for i, w in incl.most_common(60)],
    ]
    figures = {
        "samples": len(stacks),
        "idle_samples_pct": round(100 * idle / max(idle + total, 1), 1),
        "cpu_ms_per_event": round(per_event_ms, 3) if per_event_ms else None,
        "steps_pct": {label: round(100 * w / total, 1) for label, w in steps.most_common()},
        "libraries_pct": {lib: round(100 * w / total, 1) for lib, w in libs.most_common(12)},
        "top_self": [
            {"function": _where(frames[i]), "pct": round(100 * w / total, 1)} for i, w in self_time.most_common(12)
        ],
    }
    return "\n".join(out) + "\n", figures
