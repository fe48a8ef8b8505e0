"""One run of each variant: set up, time, check. Each returns a dict for the results file."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import ceilings, checks, kafkaio
from bench.dbio import InboxReader, per_event, pg_database_stats
from bench.infra import CEILING_OUT, ROOT, BenchStack, Infra
from bench.kafkaio import Collector, Obs
from bench.machine import CpuWindow
from bench.profile import Recorder, summarize
from bench.workload import EXPECTED_PAYOUTS, Directory, Workload, workload
from schemas import v1

DECISIONS = (v1.SECOND_OPINION_GRANTED, v1.SECOND_OPINION_DENIED)
CEILING_TAGS = {
    "ceiling-kafka": "ck",
    "ceiling-kafka-record-commit": "cr",
    "ceiling-db": "cd",
    "ceiling-db-batched": "cb",
    "ceiling-db-concurrent": "cc",
    "ceiling-db-sqlite": "cs",
}
PIPELINE_ENDS = (v1.SERVICE_JOB_CREATED, v1.PAYOUT_ISSUED)  # the request is done when its job and payouts are out


@dataclass
class Ctx:
    infra: Infra
    args: argparse.Namespace
    token: str
    where: Directory
    producer: AIOKafkaProducer  # bulk sends (linger 5 ms)
    paced_producer: AIOKafkaProducer  # latency runs (linger 0: a request leaves when it is sent)
    ceiling_urls: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return self.infra.bootstrap


def say(text: str) -> None:
    print(f"    {text}", flush=True)


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


# ---------------------------------------------------------------- ceilings


async def warm_up(ctx: Ctx) -> None:
    """A small relay run, not recorded: a fresh broker creates its offsets topic and coordinator here."""
    wl = workload(ctx.token, "wu", 50, ctx.where)
    starts = await ceilings.preload(ctx.bootstrap, wl)
    await ceilings.relay(ctx.bootstrap, f"second-opinion-bench-warm-up-{ctx.token}", starts, 50, ceilings.forward, None)


async def ceiling(ctx: Ctx, name: str, round_no: int) -> dict[str, Any]:
    n = ctx.args.ceiling_events
    if name == "ceiling-kafka-record-commit":
        n = max(n // 2, 100)  # ~7 ms a record: the smaller run says as much
    tag = CEILING_TAGS[name]
    wl = workload(ctx.token, f"{tag}r{round_no}", n, ctx.where)
    work: Any = None
    if name == "ceiling-db":
        work = ceilings.PgDecisionWork(ctx.ceiling_urls["pg"])
    elif name == "ceiling-db-batched":
        work = ceilings.PgDecisionWork(ctx.ceiling_urls["pg"], batch=ctx.args.db_batch)
    elif name == "ceiling-db-concurrent":
        work = ceilings.PgDecisionWork(ctx.ceiling_urls["pg"], lanes=ctx.args.db_lanes)
    elif name == "ceiling-db-sqlite":
        work = ceilings.SqliteDecisionWork(ctx.ceiling_urls["sqlite"])
    if work is not None:
        await work.open()
        await work.load_reports(wl)
    try:
        say(f"preloading {n} requests on {ceilings.CEILING_IN}")
        starts = await ceilings.preload(ctx.bootstrap, wl)
        out_starts = await kafkaio.end_offsets(ctx.bootstrap, await kafkaio.partitions(ctx.bootstrap, [CEILING_OUT]))
        say("relaying")
        run = await ceilings.relay(
            ctx.bootstrap,
            f"second-opinion-bench-ceiling-{ctx.token}-{tag}{round_no}",
            starts,
            n,
            work.process if work is not None else ceilings.forward,
            work.mark if work is not None else None,
            commit_per_record=name == "ceiling-kafka-record-commit",
        )
    finally:
        if work is not None:
            await work.close()
    records = await kafkaio.read_range(ctx.bootstrap, out_starts, wl.keys)
    db_counts = None
    if work is not None:
        db_counts = await ceilings.granted_count(ctx.ceiling_urls["sqlite" if name.endswith("sqlite") else "pg"], wl)
    check = checks.relay_check(records, wl, db_counts)
    result = {
        "ok": check["ok"],
        "events": n,
        "elapsed_s": round(run.elapsed_s, 3),
        "events_per_s": round(run.events_per_s, 1),
        "batches": run.batches,
        "checks": check,
    }
    if name == "ceiling-db-batched":
        result["events_per_transaction"] = ctx.args.db_batch
    if name == "ceiling-db-concurrent":
        result["connections"] = ctx.args.db_lanes
    say(f"{result['events_per_s']:.0f} events/s ({n} in {run.elapsed_s:.2f}s, {run.batches} fetches)" + _ok(check))
    return result


# ---------------------------------------------------------------- decision service alone


def decision_settings(ctx: Ctx, mode: str) -> dict[str, str]:
    """The decision service's extra settings for a decision-alone mode.

    default: none (batches of up to 100 records per transaction); batched: `--service-batch` records
    per transaction; per-event: one transaction per event; record-commit: per-event, and an offset
    commit awaited after every record.
    """
    if mode == "batched":
        return {"DECISION_BATCH_MAX": str(ctx.args.service_batch)}
    if mode == "per-event":
        return {"DECISION_BATCH_MAX": "1"}
    if mode == "record-commit":
        return {"DECISION_BATCH_MAX": "1", "DECISION_COMMIT_INTERVAL_MS": "0"}
    return {}


async def decision_alone(
    ctx: Ctx, stack: BenchStack, round_no: int, profile: Path | None = None, mode: str = "default"
) -> dict[str, Any]:
    n = ctx.args.events
    if profile is not None and mode in ("default", "batched"):
        n = max(n, 2000)  # a batching run of a few hundred is over before py-spy has sampled it
    db = stack.database
    # Orders of their own per mode: a profiled run of another mode must not meet these as duplicates.
    kind = ("x" if profile else "") + {"default": "r", "batched": "b", "per-event": "e", "record-commit": "c"}[mode]
    wl = workload(ctx.token, f"d{db[0]}{kind}{round_no}", n, ctx.where)
    extra = decision_settings(ctx, mode)
    # Reports are preloaded by whichever decision service runs; the timed start uses `extra`.
    await stack.use({"decision"}, {"decision": extra}, restart=False)
    group = stack.group("decision")
    say(f"preloading {n} reports (decision running)")
    sent = await kafkaio.publish(ctx.producer, v1.SERVICE_REPORT_RECEIVED, wl.reports)
    await kafkaio.wait_for_group(ctx.bootstrap, group, kafkaio.high_water(sent), 60 + n / 20, "the reports")
    say(f"stopping decision; publishing {n} requests")
    await stack.stop("decision")
    collector = await Collector(ctx.bootstrap, [*checks.DECISION_OUTPUTS, *checks.INPUT_DLQS], wl.keys).start()
    sent = await kafkaio.publish(ctx.producer, v1.SECOND_OPINION_REQUESTED, wl.requests)
    heads = _partition_heads(sent, wl)
    stats0 = await pg_database_stats(stack.urls["decision"])
    launched = time.time()
    say("starting decision on the backlog" + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else ""))
    await stack.start("decision", wait=False, settings=extra)
    pid = stack.pid("decision")
    recorder: Recorder | None = None
    try:
        async with InboxReader(stack.urls["decision"], "decision") as inbox:
            alive = lambda: stack.services["decision"].process.poll() is None  # noqa: E731
            if not await inbox.wait_first_claim(heads, 120, alive):
                raise RuntimeError(f"decision handled nothing within 120s; log:\n{stack.log_tail('decision')}")
            cpu = CpuWindow({"decision": pid}).begin()
            if profile is not None and pid is not None:
                recorder = Recorder(pid, profile)
                recorder.start()
            complete = await collector.wait(
                lambda: collector.count(*DECISIONS) >= n,
                30 + n / 10,
                lambda: f"{collector.count(*DECISIONS)}/{n} decisions",
            )
            used = cpu.end()
            profiled = recorder.stop() if recorder is not None else False
            await collector.settle()
            first_claim = min(await inbox.claim_times(heads)).timestamp()
            own_queries = inbox.queries
    finally:
        await collector.stop()
    await asyncio.sleep(1.0)  # the server publishes its statistics counters about once a second
    database = per_event(stats0, await pg_database_stats(stack.urls["decision"]), n, own_queries)
    decided = _first_arrivals(collector.records, DECISIONS)
    last = max(decided.values()) if decided else time.time()
    elapsed = last - first_claim
    check = checks.check(collector.records, wl, checks.decision_expectation())
    if not complete:
        check["ok"] = False
        check["problems"].insert(0, f"timed out: {collector.count(*DECISIONS)} of {n} decisions")
    result: dict[str, Any] = {
        "ok": check["ok"],
        "events": n,
        "settings": extra,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": _rate(len(decided), elapsed),
        "wall_from_process_start_s": round(last - launched, 3),
        "cpu": used,
        "checks": check,
    }
    if database is not None:
        result["postgres_per_request"] = database
    if used.get("decision_cpu_s"):
        result["decision_cpu_ms_per_event"] = round(1000 * used["decision_cpu_s"] / n, 3)
    if recorder is not None:
        result["profile"] = _profile_files(recorder, profiled, n, used)
    say(
        f"{result['events_per_s']:.0f} requests/s ({len(decided)} decisions in {elapsed:.2f}s after the first claim; "
        f"decision CPU {used.get('decision_cpu_pct_of_core', '?')}% of a core, machine {used['machine_busy_pct']}%)"
        + _ok(check)
    )
    return result


def _profile_files(recorder: Recorder, written: bool, n: int, used: dict[str, Any]) -> dict[str, Any]:
    if not written:
        return {"error": "py-spy wrote no profile", "py_spy_output": recorder.failure()}
    text, figures = summarize(recorder.output, events=n, cpu_s=used.get("decision_cpu_s"), wall_s=used.get("wall_s"))
    summary = recorder.output.with_name(recorder.output.name.replace(".speedscope.json", ".txt"))
    summary.write_text(text)
    return {"speedscope": _shown(recorder.output), "summary": _shown(summary), **figures}


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _partition_heads(sent: Sequence[Any], wl: Workload) -> list[str]:
    """Event ids of the first request of the run on each partition."""
    heads: dict[int, tuple[int, str]] = {}
    for meta, order in zip(sent, wl.orders, strict=True):
        if meta.partition not in heads or meta.offset < heads[meta.partition][0]:
            heads[meta.partition] = (meta.offset, wl.request_ids[order])
    return [event_id for _, event_id in heads.values()]


def _first_arrivals(records: Sequence[Obs], topics: Sequence[str]) -> dict[str, float]:
    first: dict[str, float] = {}
    for r in records:
        if r.topic in topics and r.event_id not in first:
            first[r.event_id] = r.arrival
    return first


# ---------------------------------------------------------------- full pipeline


async def pipeline(ctx: Ctx, stack: BenchStack, round_no: int) -> dict[str, Any]:
    n = ctx.args.events
    db = stack.database
    await stack.use({"decision", "dispatch", "payout"})
    wl = workload(ctx.token, f"p{db[0]}r{round_no}", n, ctx.where)
    await _preload_reports(ctx, stack, wl)
    await stack.quiesce()
    say(f"burst of {n} requests, all three services running")
    pids = {svc: stack.pid(svc) for svc in ("decision", "dispatch", "payout")}
    collector = await Collector(ctx.bootstrap, [*checks.PIPELINE_OUTPUTS, *checks.INPUT_DLQS], wl.keys).start()
    try:
        cpu = CpuWindow(pids).begin()
        t0 = time.time()
        await kafkaio.publish(ctx.producer, v1.SECOND_OPINION_REQUESTED, wl.requests)
        complete = await collector.wait(
            lambda: _pipeline_done(collector, n), 60 + n / 5, lambda: _pipeline_progress(collector, n)
        )
        used = cpu.end()
        await collector.settle()
    finally:
        await collector.stop()
    ends = _order_ends(collector.records)
    last = max((e["arrival"] for e in ends.values()), default=time.time())
    elapsed = last - t0
    check = checks.check(collector.records, wl, checks.pipeline_expectation(), ctx.where)
    if not complete:
        check["ok"] = False
        check["problems"].insert(0, f"timed out: {_pipeline_progress(collector, n)}")
    throughput = {
        "ok": check["ok"],
        "events": n,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": _rate(len(ends), elapsed),
        "cpu": used,
        "checks": check,
    }
    say(
        f"{throughput['events_per_s']:.0f} requests/s end to end ({len(ends)} orders complete in {elapsed:.2f}s; "
        f"CPU % of a core: decision {used.get('decision_cpu_pct_of_core')}, dispatch "
        f"{used.get('dispatch_cpu_pct_of_core')}, payout {used.get('payout_cpu_pct_of_core')}; "
        f"machine {used['machine_busy_pct']}%)" + _ok(check)
    )
    latency = await _latency(ctx, stack, round_no, throughput["events_per_s"])
    return {"ok": throughput["ok"] and latency["ok"], "throughput": throughput, "latency": latency}


async def _preload_reports(ctx: Ctx, stack: BenchStack, wl: Workload) -> None:
    say(f"preloading {len(wl)} reports")
    sent = await kafkaio.publish(ctx.producer, v1.SERVICE_REPORT_RECEIVED, wl.reports)
    await kafkaio.wait_for_group(
        ctx.bootstrap, stack.group("decision"), kafkaio.high_water(sent), 60 + len(wl) / 20, "the reports"
    )


def _pipeline_done(c: Collector, n: int) -> bool:
    return (
        c.count(v1.SECOND_OPINION_GRANTED) >= n
        and c.count(v1.SERVICE_JOB_CREATED) >= n
        and c.count(v1.CUSTOMER_NOTIFICATION_REQUESTED) >= n
        and c.count(v1.PAYOUT_ISSUED) >= len(EXPECTED_PAYOUTS) * n
    )


def _pipeline_progress(c: Collector, n: int) -> str:
    return (
        f"granted {c.count(v1.SECOND_OPINION_GRANTED)}/{n}, jobs {c.count(v1.SERVICE_JOB_CREATED)}/{n}, "
        f"payouts {c.count(v1.PAYOUT_ISSUED)}/{len(EXPECTED_PAYOUTS) * n}"
    )


def _order_ends(records: Sequence[Obs]) -> dict[str, dict[str, float]]:
    """Per complete order: CreateTime (ms) and arrival (s) of its grant and of its last job/payout record."""
    got: dict[str, dict[str, list[Obs]]] = defaultdict(lambda: defaultdict(list))
    seen: set[tuple[str, str]] = set()
    for r in records:
        if (r.topic, r.event_id) in seen:
            continue
        seen.add((r.topic, r.event_id))
        got[r.key][r.topic].append(r)
    ends = {}
    for order, topics in got.items():
        jobs, payouts, grants = (topics.get(t, []) for t in (*PIPELINE_ENDS, v1.SECOND_OPINION_GRANTED))
        if not jobs or len(payouts) < len(EXPECTED_PAYOUTS) or not grants:
            continue
        final = [*jobs, *payouts]
        ends[order] = {
            "create_ms": max(r.create_ms for r in final),
            "arrival": max(r.arrival for r in final),
            "grant_create_ms": min(r.create_ms for r in grants),
            "job_create_ms": min(r.create_ms for r in jobs),
            "payout_create_ms": max(r.create_ms for r in payouts),
        }
    return ends


async def _latency(ctx: Ctx, stack: BenchStack, round_no: int, max_rate: float) -> dict[str, Any]:
    rate = max(1.0, ctx.args.latency_load * max_rate)
    m = max(ctx.args.latency_min_events, round(rate * ctx.args.latency_seconds))
    wl = workload(ctx.token, f"l{stack.database[0]}r{round_no}", m, ctx.where)
    await _preload_reports(ctx, stack, wl)
    await stack.quiesce()  # the burst's job links may still be queued for decision
    say(f"latency: {m} requests at {rate:.1f}/s ({ctx.args.latency_load:g} x the measured maximum)")
    collector = await Collector(ctx.bootstrap, [*checks.PIPELINE_OUTPUTS, *checks.INPUT_DLQS], wl.keys).start()
    try:
        sent_at, achieved = await _paced(ctx.paced_producer, wl, rate)
        complete = await collector.wait(
            lambda: _pipeline_done(collector, m), 60 + m / 5, lambda: _pipeline_progress(collector, m)
        )
        await collector.settle()
    finally:
        await collector.stop()
    ends = _order_ends(collector.records)
    check = checks.check(collector.records, wl, checks.pipeline_expectation(), ctx.where)
    if not complete:
        check["ok"] = False
        check["problems"].insert(0, f"timed out: {_pipeline_progress(collector, m)}")
    created = [e["create_ms"] - 1000 * sent_at[o] for o, e in ends.items()]
    arrived = [1000 * (e["arrival"] - sent_at[o]) for o, e in ends.items()]
    to_grant = [e["grant_create_ms"] - 1000 * sent_at[o] for o, e in ends.items()]
    to_job = [e["job_create_ms"] - 1000 * sent_at[o] for o, e in ends.items()]
    to_payouts = [e["payout_create_ms"] - 1000 * sent_at[o] for o, e in ends.items()]
    result = {
        "ok": check["ok"],
        "target_rate_per_s": round(rate, 1),
        "achieved_rate_per_s": achieved,
        "events": m,
        "samples": len(created),
        "ms": percentiles(created),
        "arrival_ms": percentiles(arrived),
        "stage_p50_ms": {
            "to_grant": percentiles(to_grant).get("p50"),
            "to_job": percentiles(to_job).get("p50"),
            "to_payouts": percentiles(to_payouts).get("p50"),
        },
        "checks": check,
    }
    ms = result["ms"]
    say(
        f"latency p50 {ms.get('p50')} ms, p99 {ms.get('p99')} ms, p99.9 {ms.get('p99.9')} ms over {len(created)} "
        f"orders (to grant p50 {result['stage_p50_ms']['to_grant']} ms)" + _ok(check)
    )
    return result


async def _paced(prod: AIOKafkaProducer, wl: Workload, rate: float) -> tuple[dict[str, float], float]:
    """Send the requests at `rate` per second; each order's send time (epoch s) and the rate achieved."""
    sent_at: dict[str, float] = {}
    futures = []
    start = time.monotonic() + 0.05
    for i, (key, value) in enumerate(wl.requests):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[key.decode()] = time.time()
        futures.append(await prod.send(v1.SECOND_OPINION_REQUESTED, value, key=key))
    await asyncio.gather(*futures)
    span = max(sent_at.values()) - min(sent_at.values()) if len(sent_at) > 1 else 0.0
    return sent_at, _rate(len(sent_at) - 1, span) if span else 0.0


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank percentiles, in the values' unit, rounded to 0.1."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
        return round(ordered[min(int(rank), len(ordered)) - 1], 1)

    return {
        "p50": at(50),
        "p90": at(90),
        "p99": at(99),
        "p99.9": at(99.9),
        "max": round(ordered[-1], 1),
        "mean": round(sum(ordered) / len(ordered), 1),
    }


def _ok(check: dict[str, Any]) -> str:
    if check["ok"]:
        return "  [checks ok]"
    return "  [CHECKS FAILED: " + "; ".join(check["problems"][:3]) + "]"
