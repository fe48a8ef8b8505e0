"""The synthetic day end to end: publish it, watch the services react, reconcile (the I/O side)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import RecordMetadata
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from schemas import v1
from services.common.settings import DEFAULT_PORTS, http_port
from services.ops import kafka
from services.simulate import kafka_io
from services.simulate.generator import Message, Plan, generate, run_token, second_report_messages
from services.simulate.render import render
from services.simulate.summary import Record, build_summary, is_settled

POLL_SECONDS = 0.5


class SimulationError(Exception):
    """The run cannot start; the message tells the user what to do."""


@dataclass(frozen=True)
class Options:
    orders: int = 400
    seed: int = 7
    bootstrap: str = "127.0.0.1:9092"
    timeout: float = 180.0
    report: Path = Path(".run/simulate-report.json")
    run_dir: Path = Path(".run")
    dispatch_group: str = "second-opinion-dispatch"
    directory_wait: float = 30.0
    grace: float = 3.0


@dataclass
class Collector:
    """This run's output records, per order, and the follow-ups they call for (no I/O)."""

    plan: Plan
    records: list[Record] = field(default_factory=list)
    by_order: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    answered: set[str] = field(default_factory=set)
    published: Counter[str] = field(default_factory=Counter)

    def add(self, record: Record) -> list[Message]:
        """Keep the record if it is ours; a first job for an order brings its planned report."""
        order_id = record.order_in(self.plan.by_id)
        if order_id is None:
            return []
        self.records.append(record)
        self.by_order[order_id].append(record)
        if record.topic != v1.SERVICE_JOB_CREATED or record.value is None or order_id in self.answered:
            return []
        self.answered.add(order_id)
        return second_report_messages(self.plan.by_id[order_id], record.value)

    def settled(self) -> int:
        return sum(is_settled(o, self.by_order.get(o.order_id, [])) for o in self.plan.orders)


def progress_bar(console: Console) -> Progress:
    columns = (TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console)


async def publish(
    producer: AIOKafkaProducer, messages: Sequence[Message], progress: Progress, label: str
) -> list[RecordMetadata]:
    """Send in order without awaiting each ack (idempotence keeps per-key order), then await all."""
    task = progress.add_task(label, total=len(messages))
    futures = []
    for message in messages:
        future = await kafka_io.send(producer, message)
        future.add_done_callback(lambda _: progress.advance(task))
        futures.append(future)
    return list(await asyncio.gather(*futures))


async def watch(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, collector: Collector) -> None:
    """Read output topics for the whole run; answer each new second-opinion job with its report."""
    while True:
        for record in await kafka_io.read_batch(consumer):
            for follow_up in collector.add(record):
                await (await kafka_io.send(producer, follow_up))
                collector.published[follow_up.topic] += 1


async def wait_settled(collector: Collector, watcher: asyncio.Task[None], progress: Progress, opts: Options) -> None:
    total = len(collector.plan.orders)
    task = progress.add_task("orders settled", total=total)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + opts.timeout
    while loop.time() < deadline:
        if watcher.done():
            watcher.result()  # re-raises whatever stopped the reader
        done = collector.settled()
        progress.update(task, completed=done)
        if done == total:
            await asyncio.sleep(opts.grace)  # a late duplicate still counts against the run
            progress.update(task, completed=collector.settled())
            return
        await asyncio.sleep(POLL_SECONDS)


async def services_not_ready() -> list[str]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        results = await asyncio.gather(
            *(client.get(f"http://127.0.0.1:{http_port(name)}/health/ready") for name in DEFAULT_PORTS),
            return_exceptions=True,
        )
    ready = [not isinstance(r, BaseException) and r.status_code == 200 for r in results]
    return [name for name, ok in zip(DEFAULT_PORTS, ready, strict=True) if not ok]


async def open_watch(consumer: AIOKafkaConsumer, bootstrap: str) -> None:
    """Check every topic exists (nothing auto-creates them); read outputs from their end."""
    found = await kafka_io.partitions(bootstrap, (*kafka_io.INPUT_TOPICS, *kafka_io.OUTPUT_TOPICS))
    missing = [t for t in (*kafka_io.INPUT_TOPICS, *kafka_io.OUTPUT_TOPICS) if t not in found]
    if missing:
        raise SimulationError(f"missing topics: {', '.join(missing)}. Start the stack first (make up).")
    await kafka_io.watch_from_end(consumer, {t: found[t] for t in kafka_io.OUTPUT_TOPICS})


async def stream_day(
    plan: Plan, opts: Options, console: Console, io: tuple[AIOKafkaConsumer, AIOKafkaProducer]
) -> Collector:
    consumer, producer = io
    collector = Collector(plan)
    watcher = asyncio.create_task(watch(consumer, producer, collector))
    try:
        with progress_bar(console) as progress:
            directory = plan.provider_messages()
            sent = await publish(producer, directory, progress, "provider directory")
            await wait_for_directory(opts, kafka_io.high_water(sent), console)
            traffic = plan.order_messages()
            await publish(producer, traffic, progress, "claim traffic")
            collector.published.update(m.topic for m in (*directory, *traffic))
            await wait_settled(collector, watcher, progress, opts)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return collector


async def wait_for_directory(opts: Options, marks: dict[Any, int], console: Console) -> None:
    """Grants dispatched before dispatch knows the providers would all come out unassigned."""
    group, wait = opts.dispatch_group, opts.directory_wait
    try:
        async with asyncio.timeout(wait):
            await kafka_io.wait_for_group(opts.bootstrap, group, marks)
    except TimeoutError:
        console.print(f"[yellow]{group} has not read the provider directory after {wait:.0f}s[/]")


async def simulate(opts: Options, console: Console) -> dict[str, Any]:
    plan = generate(opts.seed, opts.orders, run_token(opts.seed, str(time.time_ns())))
    if not_ready := await services_not_ready():
        console.print(f"[yellow]not ready: {', '.join(not_ready)}; orders may not settle (make up)[/]")
    consumer, producer = kafka_io.reader(opts.bootstrap), kafka_io.producer(opts.bootstrap)
    await consumer.start()
    try:
        await producer.start()
        try:
            await open_watch(consumer, opts.bootstrap)
            collector = await stream_day(plan, opts, console, (consumer, producer))
        finally:
            await _close(producer.stop())
    finally:
        await _close(consumer.stop())
    extra = {
        "published": dict(sorted(collector.published.items())),
        "options": _jsonable(asdict(opts)),
    }
    return build_summary(plan, collector.records) | extra


async def _close(stopping: Awaitable[None]) -> None:
    """Stop a client; with the broker gone aiokafka's stop can fail, even with a CancelledError of
    its own (its fetcher's backoff sleep) that must not hide the error that ended the run."""
    try:
        await stopping
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this run is being cancelled (Ctrl-C): not aiokafka's
    except KafkaError:
        pass


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in value.items()}


def write_report(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")


def run(opts: Options, console: Console | None = None) -> int:
    """Exit code: 0 every order accounted for and no duplicates, 1 otherwise, 2 could not run."""
    console = console or Console()
    try:
        with kafka.quiet_aiokafka():  # a broker restart mid-run is this run's to report, once, not the client's
            summary = asyncio.run(simulate(opts, console))
    except SimulationError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; what was sent stays in Kafka for the services[/]")
        return 130
    except KafkaConnectionError as exc:
        console.print(f"[red]cannot reach Kafka at {opts.bootstrap}: {exc}. Is the stack up (make up)?[/]")
        return 2
    except KafkaError as exc:  # the broker went away mid-run (NodeNotReadyError, a request timing out)
        name, said = type(exc).__name__, str(exc)
        said = said.removeprefix(f"{name}: ")  # aiokafka's errors often start with their own name
        console.print(
            f"[red]Kafka at {opts.bootstrap} failed during the run ({name}: {said}); "
            "what was sent stays in Kafka for the services; run it again for a summary[/]"
        )
        return 2
    write_report(opts.report, summary)
    render(summary, console, opts.report, opts.run_dir)
    return 0 if summary["ok"] else 1
