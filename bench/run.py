"""`make bench` / `python -m bench`: every variant, alternating, for a few rounds; results in bench/results/."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import infra as infra_mod
from bench import kafkaio, machine, report, variants
from bench.infra import BenchStack, Infra, pg_dsn
from bench.variants import Ctx, say
from bench.workload import directory, run_token
from schemas import v1
from services.common.settings import ServiceSettings

RESULTS = Path(__file__).resolve().parent / "results"
CEILINGS = (
    "ceiling-kafka",
    "ceiling-kafka-record-commit",
    "ceiling-db",
    "ceiling-db-batched",
    "ceiling-db-concurrent",
    "ceiling-db-sqlite",
)
# In this order each variant's reports are preloaded by the service the previous one left running,
# and the batched service preloads fastest.
DECISION_MODES = {"": "default", "-batched": "batched", "-per-event": "per-event", "-record-commit": "record-commit"}
SERVICE_VARIANTS = tuple(
    f"{kind}-{db}{suffix}"
    for db in ("pg", "sqlite")
    for kind, suffixes in (("decision", DECISION_MODES), ("pipeline", ("",)))
    for suffix in suffixes
)
ALL = (*CEILINGS, *SERVICE_VARIANTS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--events", type=int, default=1000, help="requests per service run (default 1000)")
    p.add_argument(
        "--ceiling-events",
        type=int,
        default=1000,
        help="records per ceiling run (default 1000; half of it for ceiling-kafka-record-commit)",
    )
    p.add_argument("--rounds", type=int, default=3, help="times every variant runs, alternating (default 3)")
    p.add_argument(
        "--variants",
        default=",".join(ALL),
        help=f"comma-separated subset of: {', '.join(ALL)} (default all)",
    )
    p.add_argument("--db-batch", type=int, default=100, help="events per transaction of ceiling-db-batched")
    p.add_argument("--db-lanes", type=int, default=4, help="connections of ceiling-db-concurrent (default 4)")
    p.add_argument(
        "--service-batch", type=int, default=500, help="DECISION_BATCH_MAX of decision-<db>-batched (default 500)"
    )
    p.add_argument("--latency-load", type=float, default=0.5, help="latency rate as a fraction of the measured max")
    p.add_argument("--latency-seconds", type=float, default=8.0, help="how long the latency run sends (default 8)")
    p.add_argument("--latency-min-events", type=int, default=100, help="fewest requests of a latency run")
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the rounds, decision-alone runs under py-spy, per database and --profile-modes (default on;"
        " --no-profile skips them)",
    )
    p.add_argument(
        "--profile-modes",
        default="default,per-event",
        help=f"comma-separated settings of the profiled runs, of: {', '.join(DECISION_MODES.values())}"
        " (default: default,per-event)",
    )
    p.add_argument("--port-base", type=int, default=18681, help="HTTP ports: PostgreSQL stack base..+2, SQLite +3..+5")
    p.add_argument("--kafka-port", type=int, default=18691, help="port of the bench's own broker (controller +1)")
    p.add_argument("--bootstrap-servers", default=None, help="use this cluster instead of starting a bench broker")
    p.add_argument("--keep-broker", action="store_true", help="leave the bench broker running afterwards")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the results go (default bench/results)")
    args = p.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.profile_mode_list = [m.strip() for m in args.profile_modes.split(",") if m.strip()]
    bad_modes = [m for m in args.profile_mode_list if m not in DECISION_MODES.values()]
    if bad_modes:
        p.error(f"unknown profile modes: {', '.join(bad_modes)}")
    unknown = sorted(set(args.variant_list) - set(ALL))
    if unknown:
        p.error(f"unknown variants: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_main(args))
    except asyncio.CancelledError:
        print("bench: interrupted; the services and the broker it started are stopped", flush=True)
        return 130


def _clock(started: float) -> str:
    elapsed = int(time.monotonic() - started)
    return f"[{elapsed // 60:02d}:{elapsed % 60:02d}]"


async def _main(args: argparse.Namespace) -> int:
    # SIGTERM or Ctrl-C: stop what the bench started (services, its broker) before exiting.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    started, t0 = datetime.now(UTC), time.monotonic()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    token = run_token()
    wanted = args.variant_list
    print(f"bench {stamp}: {args.events} events per run, {args.rounds} round(s), variants {', '.join(wanted)}")
    print(f"{_clock(t0)} infrastructure", flush=True)
    infra = await asyncio.to_thread(infra_mod.start_infra, args.kafka_port, args.bootstrap_servers)
    if args.keep_broker:
        infra.started_broker = False
    stacks: dict[str, BenchStack] = {}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in wanted}
    profiles: list[dict[str, Any]] = []
    where = directory(token)
    prod = kafkaio.producer(infra.bootstrap)
    paced = kafkaio.producer(infra.bootstrap, linger_ms=0)
    await prod.start()
    await paced.start()
    try:
        ceiling_urls = await asyncio.to_thread(_ceiling_databases, infra, wanted)
        for db in ("pg", "sqlite"):
            if any(v.endswith(f"-{db}") or f"-{db}-" in v for v in wanted if not v.startswith("ceiling")):
                say(f"fresh {db} databases for the three services (migrated)")
                port = args.port_base + (0 if db == "pg" else 3)
                stacks[db] = BenchStack(infra, db, port, token)
                await asyncio.to_thread(stacks[db].create)
        await kafkaio.publish(prod, v1.SERVICE_PROVIDER_UPDATED, where.records())
        say(f"provider directory: {len(where.providers)} bench providers serving {where.zip_code}")
        ctx = Ctx(infra, args, token, where, prod, paced, ceiling_urls)
        await variants.warm_up(ctx)
        for round_no in range(1, args.rounds + 1):
            print(f"{_clock(t0)} round {round_no}/{args.rounds}", flush=True)
            for name in [c for c in CEILINGS if c in wanted]:
                print(f"{_clock(t0)}   {name}", flush=True)
                runs[name].append(await _guard(variants.ceiling(ctx, name, round_no)))
            order = ["pg", "sqlite"] if round_no % 2 else ["sqlite", "pg"]
            for db in [d for d in order if d in stacks]:
                stack = stacks[db]
                for suffix, mode in DECISION_MODES.items():
                    name = f"decision-{db}{suffix}"
                    if name in wanted:
                        print(f"{_clock(t0)}   {name}", flush=True)
                        runs[name].append(await _guard(variants.decision_alone(ctx, stack, round_no, mode=mode)))
                if f"pipeline-{db}" in wanted:
                    print(f"{_clock(t0)}   pipeline-{db}", flush=True)
                    runs[f"pipeline-{db}"].append(await _guard(variants.pipeline(ctx, stack, round_no)))
                await stack.stop_all()
        if args.profile:
            suffixes = {mode: s for s, mode in DECISION_MODES.items()}
            for mode in args.profile_mode_list:
                for db in [d for d in ("pg", "sqlite") if d in stacks]:
                    name = f"decision-{db}{suffixes[mode]}"
                    print(f"{_clock(t0)} profile: {name} under py-spy", flush=True)
                    path = args.results / f"{stamp}-profile-{name}.speedscope.json"
                    run = await _guard(variants.decision_alone(ctx, stacks[db], 0, profile=path, mode=mode))
                    await stacks[db].stop_all()
                    profiles.append(
                        {
                            "variant": name,
                            "ok": run.get("ok"),
                            "events_per_s": run.get("events_per_s"),
                            "events": run.get("events"),
                            "cpu": run.get("cpu"),
                            **run.get("profile", {}),
                        }
                    )
    finally:
        for stack in stacks.values():
            await stack.stop_all()
        await prod.stop()
        await paced.stop()
        pg_version = await _pg_version(infra)
        infra.stop()
    summary = {name: report.summarize_variant(name, rs) for name, rs in runs.items()}
    finished = datetime.now(UTC)
    info = machine.machine()
    info["loadavg_at_end"] = list(os.getloadavg())
    results = {
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": info,
        "versions": machine.versions(
            infra.stack_settings.kafka_version if args.bootstrap_servers is None else "external",
            pg_version,
            infra_mod.sqlite_version(),
        ),
        "settings": {
            "events": args.events,
            "ceiling_events": args.ceiling_events,
            "rounds": args.rounds,
            "variants": wanted,
            "db_batch": args.db_batch,
            "db_lanes": args.db_lanes,
            "service_batch": args.service_batch,
            # What "default settings" meant for this run (the services' own defaults, from their code).
            "service_defaults": {
                "commit_interval_ms": ServiceSettings.model_fields["commit_interval_ms"].default,
                "batch_max": ServiceSettings.model_fields["batch_max"].default,
            },
            "latency_load": args.latency_load,
            "latency_seconds": args.latency_seconds,
            "latency_min_events": args.latency_min_events,
            "bootstrap": infra.bootstrap,
            "bench_broker": args.bootstrap_servers is None,
            "kafka_partitions": 3,
            "token": token,
            "latency_timestamps": "request: the bench's clock just before producer.send (linger 0); output: the "
            "Kafka CreateTime the services' relay producer set (ms); arrival_ms: when the bench's consumer read it",
        },
        "variants": summary,
        "ratios": report.ratios(summary),
        "targets": report.targets(summary),
        "profiles": profiles,
        "failed": any(v["failed_runs"] for v in summary.values()),
    }
    paths = report.write(results, args.results, stamp)
    print(f"{_clock(t0)} done; results in {', '.join(str(p) for p in paths)}")
    print()
    print(report.markdown(results))
    return 1 if results["failed"] else 0


def _ceiling_databases(infra: Infra, wanted: list[str]) -> dict[str, str]:
    urls = {}
    if any(v in wanted for v in ("ceiling-db", "ceiling-db-batched", "ceiling-db-concurrent")):
        urls["pg"] = infra_mod.migrated(infra, "pg", "so_bench_ceiling_pg")
    if "ceiling-db-sqlite" in wanted:
        urls["sqlite"] = infra_mod.migrated(infra, "sqlite", "so_bench_ceiling_sqlite")
    return urls


async def _guard(run: Any) -> dict[str, Any]:
    """A run that raises is recorded as failed; the benchmark goes on with the next one."""
    try:
        return await run
    except Exception as exc:
        traceback.print_exc()
        say(f"FAILED: {type(exc).__name__}: {exc}")
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}


async def _pg_version(infra: Infra) -> str | None:
    try:
        conn = await asyncpg.connect(pg_dsn(infra.postgres_url) + "/postgres")
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    except Exception:
        return None
