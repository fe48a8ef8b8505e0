"""The scenario runner against a real broker, with a tiny fake service echoing grants."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.cli import main as cli_main
from services.common import dlq_headers
from services.common.settings import KafkaSettings
from services.scenario.runner import RunnerSettings, ScenarioResult, run_paths, run_scenario_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROVIDER_DELAY_S = 1.0  # the fake is slow with providers: the runner must wait for it
LATE_EXTRA_DELAY_S = 1.5  # a second grant that comes only after the expectations first held


@dataclass(frozen=True)
class Topics:
    """Topics of this test session only, so a running stack never sees the fake's traffic."""

    requested: str
    granted: str
    denied: str
    provider: str

    @property
    def dlq(self) -> str:
        return self.requested + ".dlq"

    def all(self) -> tuple[str, ...]:
        return (self.requested, self.granted, self.denied, self.provider, self.dlq)


@pytest.fixture(scope="session")
def bootstrap() -> str:
    return KafkaSettings().bootstrap_servers  # KAFKA_BOOTSTRAP_SERVERS


@pytest_asyncio.fixture(scope="session")
async def topics(bootstrap: str) -> AsyncIterator[Topics]:
    base = f"scenario-it-{uuid.uuid4().hex[:8]}"
    names = Topics(f"{base}.requested", f"{base}.granted", f"{base}.denied", f"{base}.provider")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 3, 1) for t in names.all()])
        yield names
        await admin.delete_topics(list(names.all()))
    finally:
        await admin.close()


class FakeService:
    """Grants each request (JSON) and dead-letters each bad one, then commits, like a service."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.topics = topics
        self.group = f"scenario-it-fake-{uuid.uuid4().hex[:8]}"
        self.consumer = AIOKafkaConsumer(
            topics.requested,
            topics.provider,
            bootstrap_servers=bootstrap,
            group_id=self.group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
        self.provider_commit_ms: dict[str, int] = {}  # key -> just before its commit
        self.request_ms: dict[str, int] = {}  # key -> create time of its first request
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()
        await self.producer.stop()

    async def _run(self) -> None:
        async for msg in self.consumer:
            await self._handle(msg)
            if msg.topic == self.topics.provider:
                self.provider_commit_ms[msg.key.decode()] = int(time.time() * 1000)
            await self.consumer.commit({TopicPartition(msg.topic, msg.partition): msg.offset + 1})

    async def _handle(self, msg: ConsumerRecord) -> None:
        if msg.topic == self.topics.provider:
            await asyncio.sleep(PROVIDER_DELAY_S)
            return
        self.request_ms.setdefault(msg.key.decode(), msg.timestamp)
        try:
            request = json.loads(msg.value)
        except ValueError:
            await self._dead_letter(msg)
            return
        await self._grant(msg.key, request)

    async def _grant(self, key: bytes, request: dict[str, Any]) -> None:
        event_id = request["event_id"]
        grant = {
            "event_id": f"granted-{event_id}",
            "service_order_id": request["service_order_id"],
            "case_id": f"case-{event_id}",
            "echo": request,
        }
        await self._send(self.topics.granted, key, grant)
        if request.get("duplicate"):  # a redelivery: same event_id, counts once
            await self._send(self.topics.granted, key, grant)
        if request.get("late_extra"):  # a bug: a second, distinct grant, late
            await asyncio.sleep(LATE_EXTRA_DELAY_S)
            await self._send(self.topics.granted, key, grant | {"event_id": f"extra-{event_id}"})

    async def _send(self, topic: str, key: bytes, value: dict[str, Any]) -> None:
        await self.producer.send_and_wait(topic, json.dumps(value).encode(), key=key)

    async def _dead_letter(self, msg: ConsumerRecord) -> None:
        headers = [
            (dlq_headers.ORIGINAL_TOPIC, msg.topic.encode()),
            (dlq_headers.ORIGINAL_PARTITION, str(msg.partition).encode()),
            (dlq_headers.ORIGINAL_OFFSET, str(msg.offset).encode()),
            (dlq_headers.ORIGINAL_TIMESTAMP, str(msg.timestamp).encode()),
            (dlq_headers.ERROR_CLASS, b"not_json"),
            (dlq_headers.ERROR_MESSAGE, b"value is not JSON"),
        ]
        await self.producer.send_and_wait(self.topics.dlq, msg.value, key=msg.key, headers=headers)


@pytest_asyncio.fixture(scope="session")
async def fake(bootstrap: str, topics: Topics) -> AsyncIterator[FakeService]:
    service = FakeService(bootstrap, topics)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def settings(bootstrap: str, topics: Topics, fake: FakeService) -> RunnerSettings:
    return RunnerSettings(
        bootstrap_servers=bootstrap,
        groups=(fake.group,),
        provider_group=fake.group,
        provider_topic=topics.provider,
        topics=topics.all(),
        timeout_s=8.0,
        lag_timeout_s=15.0,
        provider_wait_s=30.0,
    )


def provider_step(t: Topics) -> dict[str, Any]:
    return {"topic": t.provider, "key": "P-{run}", "value": {"event_id": "prov-{run}"}}


def request_step(t: Topics, suffix: str = "", **extra: Any) -> dict[str, Any]:
    order = "SO-{run}" + suffix
    value = {"event_id": f"req{suffix}-{{run}}", "service_order_id": order, **extra}
    return {"topic": t.requested, "key": order, "value": value}


def write(tmp_path: Path, name: str, steps: list[Any], expect: list[Any], absent: list[str]) -> Path:
    path = tmp_path / f"{name}.json"
    scenario = {"name": name, "steps": steps, "expect": expect, "absent": absent}
    path.write_text(json.dumps(scenario, indent=2))
    return path


def kinds(result: ScenarioResult) -> dict[str, str | None]:
    return {f.kind: f.topic for f in result.failures}


async def test_correct_scenario_passes(
    tmp_path: Path, topics: Topics, fake: FakeService, settings: RunnerSettings
) -> None:
    t = topics
    steps = [
        provider_step(t),
        request_step(t, duplicate=True),
        {
            "await": {
                "topic": t.granted,
                "match": {"service_order_id": "SO-{run}"},
                "bind": {"case": "case_id"},
                "timeout_s": 20,
            }
        },
        {"topic": t.requested, "key": "SO-{run}", "raw": "{not json {run}"},
        request_step(t, "-2", parent_case="{case}"),
    ]
    expect = [
        {"topic": t.granted, "match": {"service_order_id": "SO-{run}", "case_id": "{case}"}},
        {"topic": t.granted, "match": {"echo": {"parent_case": "{case}"}}, "count": 1},
        {"topic": t.dlq, "match": {}, "count": 1},
    ]
    path = write(tmp_path, "echo_ok", steps, expect, [t.denied])
    result = await run_scenario_file(path, settings)
    assert result.passed, result.explain()
    # The request went out only after the fake (slow with providers) had committed them.
    key = f"P-{result.run}"
    assert fake.provider_commit_ms[key] <= fake.request_ms[f"SO-{result.run}"]


async def test_wrong_scenario_fails_with_what_it_saw(tmp_path: Path, topics: Topics, settings: RunnerSettings) -> None:
    t = topics
    steps = [
        provider_step(t),
        request_step(t),
        {"topic": t.requested, "key": "SO-{run}", "raw": "{"},
    ]
    expect = [{"topic": t.granted, "match": {"service_order_id": "SO-{run}"}, "count": 2}]
    path = write(tmp_path, "echo_wrong", steps, expect, [t.granted])
    result = await run_scenario_file(path, settings)
    assert not result.passed
    assert kinds(result) == {"count": t.granted, "absent": t.granted, "unexpected_dlq": t.dlq}
    text = result.explain()
    assert text.startswith("FAIL echo_wrong")
    assert "count=2" in text and f"1 distinct matching (granted-req-{result.run})" in text
    assert "not_json: value is not JSON" in text  # the DLQ record, with its error headers


async def test_count_that_grows_after_expectations_held_fails(
    tmp_path: Path, topics: Topics, settings: RunnerSettings
) -> None:
    t = topics
    steps = [request_step(t, late_extra=True)]
    expect = [{"topic": t.granted, "match": {"service_order_id": "SO-{run}"}, "count": 1}]
    result = await run_scenario_file(write(tmp_path, "late", steps, expect, []), settings)
    assert not result.passed
    [failure] = result.failures
    assert failure.kind == "count" and "2 distinct matching" in failure.saw
    assert f"extra-req-{result.run}" in failure.saw


async def test_provider_wait_times_out_clearly(tmp_path: Path, topics: Topics, settings: RunnerSettings) -> None:
    nobody = replace(settings, provider_group="scenario-it-nobody", provider_wait_s=2.0)
    path = write(tmp_path, "no_dispatch", [provider_step(topics), request_step(topics)], [], [])
    result = await run_scenario_file(path, nobody)
    assert kinds(result) == {"provider_wait": topics.provider}
    assert "scenario-it-nobody" in result.explain()


async def test_run_paths_runs_a_directory_with_distinct_tokens(
    tmp_path: Path, topics: Topics, settings: RunnerSettings
) -> None:
    expect = [{"topic": topics.granted, "match": {"service_order_id": "SO-{run}"}}]
    for name in ("a", "b"):
        write(tmp_path, name, [request_step(topics)], expect, [])
    (tmp_path / "notes.txt").write_text("not a scenario")
    results = await run_paths([tmp_path], settings)
    assert [r.name for r in results] == ["a", "b"]
    assert all(r.passed for r in results), "\n".join(r.explain() for r in results)
    assert results[0].run != results[1].run


def test_cli_reports_a_bad_file_and_exits_nonzero(tmp_path: Path, bootstrap: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": [{"topic": "no.such.topic", "key": "k", "value": {}}]}))
    report = tmp_path / "out" / "report.json"
    args = ["scenario", "run", str(bad), "--bootstrap", bootstrap, "--json-report", str(report)]
    assert cli_main(args) == 1
    data = json.loads(report.read_text())
    assert data["passed"] is False
    [failure] = data["scenarios"][0]["failures"]
    assert failure["kind"] == "error" and "unknown topic" in failure["saw"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["scenario", "run", str(empty)]) == 2  # no *.json there
