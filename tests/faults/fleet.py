"""Service instances under fault: replicas of a service (same group and database), kills and restarts."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.stack import PORT_BASE, RunningService, TestStack

# The fault tests run every service with this grace period: short enough for a test to outlast
# it cheaply, long enough for any record to finish.
SHUTDOWN_GRACE_S = 3
# Extra instances listen from PORT_BASE + 10 up (the three primaries use PORT_BASE..+2).
REPLICA_PORT_OFFSET = 10


def replica(primary: RunningService, port: int) -> RunningService:
    """Another instance of `primary`'s service: same database and consumer group, its own port."""
    env = {**primary.env, f"{primary.name.upper()}_HTTP_PORT": str(port)}
    stem = primary.pid_file.stem
    return RunningService(
        primary.name, port, env, primary.pid_file.with_name(f"{stem}-{port}.pid"), _log(primary.log_file, port)
    )


def _log(primary_log: Path, port: int) -> Path:
    return primary_log.with_name(f"{primary_log.stem}-{port}.log")


@dataclass
class Fleet:
    """The running instances of each service and what was done to them."""

    stack: TestStack
    running: dict[str, list[RunningService]] = field(default_factory=dict)
    stopped: list[RunningService] = field(default_factory=list)
    died: list[str] = field(default_factory=list)  # instances found gone when we came to stop them
    actions: Counter[str] = field(default_factory=Counter)
    # One membership change per service at a time: a kill never races the removal of its victim.
    _locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _next_port: int = PORT_BASE + REPLICA_PORT_OFFSET
    timeline: list[str] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)

    status: Callable[[], str] = lambda: ""  # e.g. how far the stream got, shown with each note

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self._t0:6.1f}s {what} {self.status()}".rstrip())

    def did(self, service: str, action: str, instance: RunningService) -> None:
        """Count an action (e.g. "dispatch killed") and put it on the timeline."""
        self.actions[f"{service} {action}"] += 1
        self.note(f"{service} {action} (port {instance.port})")

    def __post_init__(self) -> None:
        self.running = {name: [svc] for name, svc in self.stack.services.items()}

    def all(self) -> list[RunningService]:
        return [i for instances in self.running.values() for i in instances]

    async def add(self, service: str) -> RunningService:
        """Start one more instance and wait until it holds partitions (a rebalance happened)."""
        async with self._locks[service]:
            instance = replica(self.stack.services[service], self._next_port)
            self._next_port += 1
            instance.log_file.unlink(missing_ok=True)
            self.running[service].append(instance)
            self.note(f"{service} starting (port {instance.port})")
            await asyncio.to_thread(_start_ready, instance)
            self.did(service, "added", instance)
            return instance

    async def remove(self, service: str) -> None:
        """SIGTERM the newest replica (its partitions move to the others)."""
        async with self._locks[service]:
            instance = self.running[service].pop()
            if instance.pid() is None:
                self.died.append(f"{service}@{instance.port}")
            self.note(f"{service} stopping (port {instance.port})")
            await asyncio.to_thread(instance.stop)
            self.stopped.append(instance)
            self.did(service, "removed", instance)

    async def crash(self, service: str, rng: random.Random) -> None:
        """kill -9 a random instance, keep it down a moment, start it again and wait until ready."""
        async with self._locks[service]:
            victim = rng.choice(self.running[service])
            victim.kill()
            self.did(service, "killed", victim)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            await asyncio.to_thread(victim.start)
            self.note(f"{service} starting again (port {victim.port})")
            await asyncio.to_thread(victim.wait_ready)
            self.did(service, "restarted", victim)

    async def shrink(self) -> None:
        """Back to the primaries only (graceful stops)."""
        for service, instances in self.running.items():
            while len(instances) > 1:
                await self.remove(service)

    def dead(self) -> list[str]:
        """Instances whose process went away on its own (a crash, or a crash loop's first step)."""
        return [*self.died, *(f"{i.name}@{i.port}" for i in self.all() if i.pid() is None)]

    async def wait_ready(self) -> None:
        alive = [i for i in self.all() if i.pid() is not None]
        await asyncio.gather(*(asyncio.to_thread(i.wait_ready) for i in alive))

    async def restore(self) -> None:
        """Back to one running, ready instance per service (what the next test expects)."""
        await self.shrink()
        await asyncio.gather(*(asyncio.to_thread(_ensure_ready, i) for i in self.all()))


def _start_ready(instance: RunningService) -> None:
    instance.start()
    instance.wait_ready()


def _ensure_ready(instance: RunningService) -> None:
    if instance.pid() is None:
        instance.start()
    instance.wait_ready()


async def at_random_moments(count: int, window_s: float, rng: random.Random) -> AsyncIterator[int]:
    """Yield `count` times, at a random moment within each of `count` equal slots of the window.

    One step per slot spreads the faults over the whole stream; a step that runs over its slot
    (a restart is slow) delays the next one.
    """
    start, slot = time.monotonic(), window_s / max(1, count)
    for n in range(count):
        await asyncio.sleep(max(0.0, start + slot * (n + rng.uniform(0.1, 0.9)) - time.monotonic()))
        yield n


async def monkey(fleet: Fleet, service: str, kills: int, rng: random.Random, window_s: float) -> None:
    """kill -9 a random instance of `service` `kills` times within the window, restarting each."""
    async for _ in at_random_moments(kills, window_s, rng):
        await fleet.crash(service, rng)


CHURN = ("add", "add", "remove", "remove")  # up to three instances, back to one


async def churn(fleet: Fleet, service: str, rounds: int, rng: random.Random, window_s: float) -> None:
    """Add and remove replicas within the window, so partitions move several times mid-stream."""
    steps = CHURN * rounds
    async for n in at_random_moments(len(steps), window_s, rng):
        await (fleet.add(service) if steps[n] == "add" else fleet.remove(service))
