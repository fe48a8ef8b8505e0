"""Runs scenario files against a live stack: publish the steps, collect the outputs, judge them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from services.scenario.kafka_io import Collector, KafkaIO
from services.scenario.model import (
    Failure,
    Record,
    bind_fields,
    compact,
    describe,
    evaluate,
    first_match,
    new_run_token,
    new_run_tokens,
    payload,
    resolve_expectation,
    resolve_step,
    scoped,
)
from services.scenario.results import RunnerSettings, ScenarioResult
from services.scenario.spec import AwaitStep, PublishStep, Scenario, ScenarioError, load_scenario

__all__ = ["RunnerSettings", "ScenarioResult", "run_paths", "run_scenario_file", "scenario_files"]

_POLL_S = 0.2


def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories as their `*.json` in name order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such scenario file or directory: {path}")
    return files


async def run_paths(
    paths: Iterable[str | Path],
    settings: RunnerSettings | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Run every scenario file under `paths`, one after another, each with its own run token."""
    settings = settings or RunnerSettings.for_stack()
    files = scenario_files(paths)
    results = []
    async with KafkaIO(settings.bootstrap_servers) as io:
        for path, token in zip(files, new_run_tokens(len(files)), strict=True):
            result = await run_scenario_file(path, settings, run_token=token, io=io)
            if on_result is not None:
                on_result(result)
            results.append(result)
    return results


async def run_scenario_file(
    path: str | Path,
    settings: RunnerSettings | None = None,
    *,
    run_token: str | None = None,
    io: KafkaIO | None = None,
) -> ScenarioResult:
    """Run one scenario file; a bad file or a broken run is a FAIL result, not an exception."""
    settings = settings or RunnerSettings.for_stack()
    if io is None:
        async with KafkaIO(settings.bootstrap_servers) as own_io:
            return await run_scenario_file(path, settings, run_token=run_token, io=own_io)
    path, token, started = Path(path), run_token or new_run_token(), time.monotonic()
    try:
        scenario = load_scenario(path.read_text(encoding="utf-8"), path.stem, settings.topics)
    except (OSError, ScenarioError) as exc:
        failure = Failure("error", None, "a valid scenario file", str(exc))
        return ScenarioResult(path.stem, str(path), token, False, 0.0, [failure])
    run = _ScenarioRun(scenario, token, settings, io)
    failures, warnings = await run.execute()
    elapsed = time.monotonic() - started
    passed = not failures
    return ScenarioResult(scenario.name, str(path), token, passed, elapsed, failures, warnings, run.records_seen)


class _ScenarioRun:
    """The state of one scenario while it runs: bound names, keys used, provider records."""

    def __init__(self, scenario: Scenario, token: str, settings: RunnerSettings, io: KafkaIO):
        self.scenario, self.settings, self.io = scenario, settings, io
        self.names: dict[str, Any] = {"run": token}
        self.keys: dict[str, None] = {}  # ordered set of the keys the steps used
        self.pending_providers: list[tuple[TopicPartition, int]] = []
        self.collector: Collector = io.collector()
        self.records_seen = 0

    async def execute(self) -> tuple[list[Failure], list[str]]:
        try:
            await self._start_collector()
            try:
                return await self._steps_then_check()
            finally:
                self.records_seen = len(scoped(self.collector.records, self.keys))
                await self.collector.stop()
        except Exception as exc:
            return [Failure("error", None, "the run to complete", f"{type(exc).__name__}: {exc}")], []

    async def _start_collector(self) -> None:
        # Note where every topic ends before the first send: outputs are read from there on.
        tps = await self.io.offsets.partitions(self.settings.topics)
        await self.collector.start(await self.io.offsets.end_offsets(tps))

    async def _steps_then_check(self) -> tuple[list[Failure], list[str]]:
        for step in self.scenario.steps:
            if failure := await self._step(resolve_step(step, self.names)):
                return [failure], []
        return await self._final_check()

    async def _step(self, step: PublishStep | AwaitStep) -> Failure | None:
        is_provider = isinstance(step, PublishStep) and step.topic == self.settings.provider_topic
        if not is_provider and self.pending_providers and (failure := await self._wait_for_providers()):
            return failure
        if isinstance(step, AwaitStep):
            return await self._await(step)
        await self._publish(step)
        return None

    async def _publish(self, step: PublishStep) -> None:
        tp, offset = await self.io.publisher.publish(step.topic, step.key, payload(step))
        self.keys[step.key] = None
        if step.topic == self.settings.provider_topic:
            self.pending_providers.append((tp, offset))

    async def _wait_for_providers(self) -> Failure | None:
        """Dispatch must know the providers before the request that needs them is decided."""
        group = self.settings.provider_group
        if group is None:
            self.pending_providers.clear()
            return None
        left: list[tuple[TopicPartition, int]] = list(self.pending_providers)

        async def consumed() -> bool:
            nonlocal left
            committed = await self.io.offsets.committed(group, [tp for tp, _ in left])
            left = [(tp, off) for tp, off in left if committed.get(tp, -1) <= off]
            return not left

        if await _wait_until(consumed, self.settings.provider_wait_s):
            self.pending_providers.clear()
            return None
        missing = ", ".join(f"{tp.topic}[{tp.partition}]@{off}" for tp, off in left)
        wait = self.settings.provider_wait_s
        expected = f"group {group} to consume the provider updates within {wait:g}s"
        topic = self.settings.provider_topic
        return Failure("provider_wait", topic, expected, f"not consumed: {missing}")

    async def _await(self, step: AwaitStep) -> Failure | None:
        found: list[Record] = []

        async def arrived() -> bool:
            self.collector.check()
            hit = first_match(self.collector.records, step.topic, step.match, self.keys)
            found.extend([hit] if hit else [])
            return hit is not None

        if not await _wait_until(arrived, step.timeout_s):
            return self._await_timeout(step)
        try:
            self.names.update(bind_fields(found[0], step.bind))
        except KeyError as exc:
            return Failure("await", step.topic, f"field {exc} to bind", describe(found[0]))
        return None

    def _await_timeout(self, step: AwaitStep) -> Failure:
        mine = [r for r in scoped(self.collector.records, self.keys) if r.topic == step.topic]
        expected = f"an event matching {compact(step.match)} within {step.timeout_s:g}s"
        details = tuple(describe(r, step.match) for r in mine[:10])
        return Failure("await", step.topic, expected, f"{len(mine)} record(s) of the scenario", details)

    async def _final_check(self) -> tuple[list[Failure], list[str]]:
        """Wait for the expectations, let every group drain, wait a little more, judge again."""

        async def hold() -> bool:
            self.collector.check()
            return not self._failures()

        await _wait_until(hold, self.settings.timeout_s)
        warnings = await self._wait_for_groups()
        await asyncio.sleep(self.settings.settle_s)
        warnings += await self._catch_up()
        return self._failures(), warnings

    def _failures(self) -> list[Failure]:
        expect = [resolve_expectation(e, self.names) for e in self.scenario.expect]
        return evaluate(expect, self.scenario.absent, self.collector.records, self.keys)

    async def _wait_for_groups(self) -> list[str]:
        lagging: dict[str, str] = {}

        async def drained() -> bool:
            lagging.clear()
            for group in self.settings.groups:
                if lag := await self._group_lag(group):
                    lagging[group] = lag
            return not lagging

        if await _wait_until(drained, self.settings.lag_timeout_s):
            return []
        after = f"{self.settings.lag_timeout_s:g}s"
        return [f"group {g} still lags after {after}: {lag}" for g, lag in lagging.items()]

    async def _group_lag(self, group: str) -> str:
        """The group's lag in words; empty when there is none."""
        try:
            lag = await self.io.offsets.group_lag(group)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            return f"unknown ({type(exc).__name__})"
        return ", ".join(f"{tp.topic}[{tp.partition}]={n}" for tp, n in sorted(lag.items()))

    async def _catch_up(self) -> list[str]:
        """The collector reads up to where the topics end now, so the last check misses nothing."""
        targets = await self.io.offsets.end_offsets(self.collector.partitions)
        if await _wait_until(lambda: self.collector.caught_up(targets), self.settings.catch_up_s):
            return []
        return [f"collector did not reach the end of the topics within {self.settings.catch_up_s:g}s"]


async def _wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passes (False); at least once.

    A retriable broker error (say, no group coordinator yet on a fresh broker) counts as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await condition():
                return True
        except KafkaError as exc:
            if not exc.retriable:
                raise
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
