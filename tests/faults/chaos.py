"""Delivery under real faults: a synthetic day streams while services are killed, restarted and rebalanced.

The same engine backs the CI fault tests (short) and `make chaos` (a longer soak). Traffic is
published over a window so every fault lands mid-stream; the simulator reconciles each order
with its intended outcome and counts duplicates by business fact, and the services' own tables
are read to check one row per fact. `python -m tests.faults.chaos --help` for the soak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from rich.console import Console

from schemas import v1
from services.simulate import kafka_io
from services.simulate.generator import Message, Plan, generate, run_token
from services.simulate.runner import (
    Collector,
    Options,
    open_watch,
    progress_bar,
    publish,
    wait_for_directory,
    wait_settled,
    watch,
)
from services.simulate.summary import build_summary, distinct_events, group_by_order
from tests.faults import facts

if TYPE_CHECKING:
    from tests.faults.fleet import Fleet

TICK_S = 0.5
QUIET_S = 3.0  # after settling, keep reading: a late duplicate still counts against the run


@dataclass(frozen=True)
class ChaosOptions:
    name: str = "crash"
    orders: int = 200
    seed: int = 11
    kills: int = 2  # kill -9 per service, each followed by a restart
    churn_rounds: int = 0  # add/add/remove/remove rounds of replicas per service
    spread_s: float = 20.0  # traffic is published over this long, faults happen meanwhile
    settle_s: float = 150.0  # how long orders may take to settle once the faults are over
    report_dir: Path = Path(".run/chaos")


async def trickle(producer: AIOKafkaProducer, messages: Sequence[Message], spread_s: float) -> None:
    """Publish in order, a slice every tick, so the stream flows for `spread_s` seconds."""
    per_tick = max(1, math.ceil(len(messages) / max(1.0, spread_s / TICK_S)))
    for start in range(0, len(messages), per_tick):
        acks = [await kafka_io.send(producer, m) for m in messages[start : start + per_tick]]
        await asyncio.gather(*acks)
        await asyncio.sleep(TICK_S)


async def faults(fleet: Fleet, opts: ChaosOptions, rng: random.Random) -> None:
    from tests.faults.fleet import churn, monkey

    services, window = list(fleet.running), opts.spread_s
    await asyncio.gather(
        *(monkey(fleet, s, opts.kills, random.Random(rng.random()), window) for s in services),
        *(churn(fleet, s, opts.churn_rounds, random.Random(rng.random()), window) for s in services),
    )


async def stream(fleet: Fleet, plan: Plan, opts: ChaosOptions, console: Console, phases: dict[str, float]) -> Collector:
    """The simulator's day, with faults injected while the claim traffic flows; `phases` gets timings."""
    stack, mark = fleet.stack, time.monotonic()
    sim = Options(
        bootstrap=stack.bootstrap_servers, timeout=opts.settle_s, dispatch_group=f"{stack.group_prefix}-dispatch"
    )
    consumer, producer = kafka_io.reader(sim.bootstrap), kafka_io.producer(sim.bootstrap)
    await consumer.start()
    await producer.start()
    collector = Collector(plan)
    fleet.status = lambda: f"[{collector.settled()}/{len(plan.orders)} orders settled]"
    try:
        await open_watch(consumer, sim.bootstrap)
        watcher = asyncio.create_task(watch(consumer, producer, collector))
        with progress_bar(console) as progress:
            directory = plan.provider_messages()
            sent = await publish(producer, directory, progress, "provider directory")
            await wait_for_directory(sim, kafka_io.high_water(sent), console)
            mark = _phase(phases, "directory", mark)
            traffic = plan.order_messages()
            injected = asyncio.create_task(faults(fleet, opts, random.Random(opts.seed)))
            fleet.note("claim traffic starts")
            await trickle(producer, traffic, opts.spread_s)
            fleet.note("claim traffic all sent")
            collector.published.update(m.topic for m in (*directory, *traffic))
            mark = _phase(phases, "traffic", mark)
            await injected
            await fleet.wait_ready()
            mark = _phase(phases, "faults after traffic", mark)
            await wait_settled(collector, watcher, progress, sim)
            fleet.note("settled")
            _phase(phases, "settle", mark)
        await asyncio.sleep(QUIET_S)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        await producer.stop()
        await consumer.stop()
    return collector


def _phase(phases: dict[str, float], name: str, since: float) -> float:
    now = time.monotonic()
    phases[name] = round(now - since, 1)
    return now


@dataclass
class Observed:
    """What one run produced: the output records, the services' rows, and how the fleet fared."""

    collector: Collector
    phases: dict[str, float]
    dead: list[str]
    events: dict[str, list[Any]]
    tables: dict[str, facts.Rows]
    db_problems: list[str]


async def run_chaos(fleet: Fleet, opts: ChaosOptions, console: Console | None = None) -> dict[str, Any]:
    """Stream a day under faults; the report says what went in, what came out, and what went wrong."""
    plan = generate(opts.seed, opts.orders, run_token(opts.seed, str(time.time_ns())))
    phases: dict[str, float] = {}
    collector = await stream(fleet, plan, opts, console or Console(quiet=True), phases)
    dead = fleet.dead()
    urls = {svc: s.env[f"{svc.upper()}_DATABASE_URL"] for svc, s in fleet.stack.services.items()}
    await facts.settle_outboxes(urls, plan.run)
    events = distinct_events([r for rs in group_by_order(plan, collector.records).values() for r in rs])
    tables = await facts.read_tables(urls, plan.run)
    problems = facts.compare(tables, facts.expected_rows(events, _requests(plan)))
    return report(opts, fleet, Observed(collector, phases, dead, dict(events), tables, problems))


def _requests(plan: Plan) -> set[str]:
    """Distinct well-formed requests sent: each must have exactly one case row."""
    return {
        m.value["event_id"]
        for o in plan.orders
        for m in o.messages
        if m.topic == v1.SECOND_OPINION_REQUESTED and not m.bad and m.value is not None
    }


def report(opts: ChaosOptions, fleet: Fleet, seen: Observed) -> dict[str, Any]:
    plan = seen.collector.plan
    summary = build_summary(plan, seen.collector.records)
    missing = [r for r in summary["reconciliation"] if not r["accounted"]]
    intended_dlq = Counter(t for o in plan.orders for t, n in o.intended.dlq for _ in range(n))
    result = {
        "name": opts.name,
        "database": fleet.stack.database,
        "run": plan.run,
        "orders": len(plan.orders),
        "phases_s": seen.phases,
        "events_in": dict(sorted(seen.collector.published.items())),
        "outputs": {t: len(seen.events.get(t, [])) for topics in facts.OUTPUTS.values() for t in topics},
        "redelivered_records": summary["redelivered_records"],
        "duplicates": summary["duplicates"],
        "missing": len(missing),
        "missing_orders": missing[:50],
        "dlq": summary["dlq"],
        "dlq_intended": dict(sorted(intended_dlq.items())),
        "faults": dict(sorted(fleet.actions.items())),
        "restarts": sum(n for k, n in fleet.actions.items() if k.endswith("restarted")),
        "timeline": fleet.timeline,
        "dead_instances": seen.dead,
        "commit_failures_logged": _log_count(fleet, "offset commit failed"),
        "database_rows": facts.row_counts(seen.tables),
        "database_problems": seen.db_problems,
        "options": {k: str(v) for k, v in asdict(opts).items()},
    }
    result["ok"] = bool(summary["ok"]) and not seen.db_problems and not seen.dead
    return result


def _log_count(fleet: Fleet, needle: str) -> int:
    logs = {i.log_file for i in (*fleet.all(), *fleet.stopped)}
    return sum(p.read_text(errors="replace").count(needle) for p in logs if p.exists())


def write_report(result: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{result['name']}-{result['database']}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


def markdown(r: dict[str, Any]) -> str:
    verdict = "OK" if r["ok"] else "NOT OK"
    lines = [
        f"# Chaos run `{r['name']}` on {r['database']}: {verdict}",
        "",
        f"Run `{r['run']}`, {r['orders']} orders, {sum(r['phases_s'].values()):.0f} s; faults: "
        + (", ".join(f"{k} {n}" for k, n in r["faults"].items()) or "none"),
        "",
        "| measure | count |",
        "|---|---|",
        f"| events in | {sum(r['events_in'].values())} |",
        *(f"| out: {t} | {n} |" for t, n in r["outputs"].items()),
        f"| duplicates by business fact | {sum(r['duplicates'].values())} |",
        f"| orders missing or wrong | {r['missing']} |",
        f"| DLQ entries (intended {sum(r['dlq_intended'].values())}) | {sum(r['dlq'].values())} |",
        f"| restarts after kill -9 | {r['restarts']} |",
        f"| instances that died on their own | {len(r['dead_instances'])} |",
        f"| offset commits refused (logged, harmless) | {r['commit_failures_logged']} |",
        f"| records redelivered with the same event_id (harmless) | {r['redelivered_records']} |",
        f"| database problems | {len(r['database_problems'])} |",
        "",
    ]
    lines += [f"- database: {p}" for p in r["database_problems"]]
    lines += [f"- order {m['order_id']}: {'; '.join(m['problems'])}" for m in r["missing_orders"][:20]]
    return "\n".join(lines) + "\n"


async def soak(fleet: Fleet, opts: ChaosOptions) -> dict[str, Any]:
    try:
        return await run_chaos(fleet, opts, Console())
    finally:
        await fleet.shrink()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make chaos", description="A soak: a synthetic day under kill -9 and rebalances.")
    p.add_argument("--orders", type=int, default=1000)
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--kills", type=int, default=5, help="kill -9 + restart per service (5)")
    p.add_argument("--churn", type=int, default=1, help="add/add/remove/remove rounds of replicas (1; PostgreSQL)")
    p.add_argument("--spread", type=float, default=90.0, help="seconds over which traffic is published (90)")
    p.add_argument("--settle", type=float, default=300.0, help="seconds orders may take to settle after (300)")
    p.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # Its own services, ports, databases and groups, so a `make up` stack or a test run is not disturbed.
    os.environ.setdefault("TEST_STACK_ID", "chaos")
    os.environ.setdefault("TEST_PORT_BASE", "18881")
    from tests.faults.fleet import Fleet
    from tests.support.stack import running_stack, start_infra

    churn = args.churn if args.database == "postgres" else 0  # replicas need PostgreSQL
    opts = ChaosOptions("soak", args.orders, args.seed, args.kills, churn, args.spread, args.settle)
    infra = start_infra(need_postgres=args.database == "postgres")
    work_dir = Path(".run/chaos").resolve()
    with running_stack(infra, args.database, work_dir) as stack:
        result = asyncio.run(soak(Fleet(stack), opts))
    json_path, md_path = write_report(result, opts.report_dir)
    print(md_path.read_text())
    print(f"report: {json_path} and {md_path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
