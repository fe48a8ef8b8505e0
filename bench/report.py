"""Medians, ratios to the ceilings, the targets, and the results files (JSON and a Markdown table)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

DESCRIPTIONS = {
    "ceiling-kafka": "raw aiokafka relay: getmany, idempotent acks=all produce, commit per batch",
    "ceiling-kafka-record-commit": "ceiling-kafka, but the offset committed after every record (COMMIT_INTERVAL_MS=0)",
    "ceiling-db": "ceiling-kafka + the decision's DB work with asyncpg, one transaction per event",
    "ceiling-db-batched": "ceiling-db with N events per transaction",
    "ceiling-db-concurrent": "ceiling-db on several connections at once (lanes by order), one transaction per event",
    "ceiling-db-sqlite": "ceiling-kafka + the same DB work with sqlite3, one transaction per event",
    "decision-pg": "decision service alone on PostgreSQL, default settings (batches of up to 100 per transaction):"
    " backlog of requests, reports preloaded",
    "decision-pg-batched": "decision-pg with DECISION_BATCH_MAX=--service-batch (records per transaction)",
    "decision-pg-per-event": "decision-pg with DECISION_BATCH_MAX=1 (one transaction per event)",
    "decision-pg-record-commit": "decision-pg-per-event with DECISION_COMMIT_INTERVAL_MS=0 (an offset commit a record)",
    "pipeline-pg": "three services on PostgreSQL, default settings: request to job + payouts, burst",
    "decision-sqlite": "decision service alone on SQLite, default settings: backlog of requests, reports preloaded",
    "decision-sqlite-batched": "decision-sqlite with DECISION_BATCH_MAX=--service-batch",
    "decision-sqlite-per-event": "decision-sqlite with DECISION_BATCH_MAX=1",
    "decision-sqlite-record-commit": "decision-sqlite-per-event with DECISION_COMMIT_INTERVAL_MS=0",
    "pipeline-sqlite": "three services on SQLite, default settings: request to job + payouts, burst",
}
ORDER = tuple(DESCRIPTIONS)
# Each service figure compared with the ceilings that bound it.
RATIOS = (
    ("decision-pg", "ceiling-db-batched"),
    ("decision-pg", "decision-pg-per-event"),
    ("decision-pg-batched", "ceiling-db-batched"),
    ("decision-pg-per-event", "ceiling-db"),
    ("decision-pg-per-event", "ceiling-db-concurrent"),
    ("decision-pg-per-event", "ceiling-kafka-record-commit"),
    ("decision-pg-record-commit", "ceiling-db"),
    ("decision-pg-record-commit", "decision-pg-per-event"),
    ("decision-sqlite", "decision-sqlite-per-event"),
    ("decision-sqlite-per-event", "ceiling-db-sqlite"),
    ("decision-sqlite-record-commit", "ceiling-db-sqlite"),
    ("pipeline-pg", "decision-pg"),
    ("pipeline-pg", "ceiling-kafka"),
    ("pipeline-sqlite", "decision-sqlite"),
    ("pipeline-sqlite", "ceiling-kafka"),
    ("ceiling-kafka-record-commit", "ceiling-kafka"),
    ("ceiling-db", "ceiling-kafka"),
    ("ceiling-db-batched", "ceiling-db"),
    ("ceiling-db-concurrent", "ceiling-db"),
    ("ceiling-db-sqlite", "ceiling-kafka"),
)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def rate_of(run: dict[str, Any]) -> float | None:
    if "throughput" in run:
        return run["throughput"].get("events_per_s")
    return run.get("events_per_s")


def summarize_variant(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if r.get("ok")]
    out: dict[str, Any] = {
        "description": DESCRIPTIONS.get(name, name),
        "unit": "events/s",
        "runs": runs,
        "failed_runs": len(runs) - len(good),
        "median_events_per_s": _median([v for r in good if (v := rate_of(r)) is not None]),
    }
    if name.startswith("pipeline"):
        lat = [r["latency"] for r in good if r.get("latency", {}).get("ms")]
        out["median_latency_ms"] = {
            q: _median([x["ms"][q] for x in lat if q in x["ms"]]) for q in ("p50", "p99", "p99.9", "max")
        }
        out["median_latency_rate_per_s"] = _median([x["target_rate_per_s"] for x in lat])
        out["latency_samples_per_run"] = [x["samples"] for x in lat]
    if name.startswith("decision"):
        out["median_cpu_ms_per_event"] = _median(
            [r["decision_cpu_ms_per_event"] for r in good if r.get("decision_cpu_ms_per_event")]
        )
        out["median_cpu_pct_of_core"] = _median(
            [r["cpu"]["decision_cpu_pct_of_core"] for r in good if r.get("cpu", {}).get("decision_cpu_pct_of_core")]
        )
        stats = [r["postgres_per_request"] for r in good if r.get("postgres_per_request")]
        if stats:
            out["median_postgres_per_request"] = {k: _median([s[k] for s in stats]) for k in stats[0]}
    return out


def ratios(variants: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    found = {}
    for top, bottom in RATIOS:
        a = variants.get(top, {}).get("median_events_per_s")
        b = variants.get(bottom, {}).get("median_events_per_s")
        if top in variants and bottom in variants:
            found[f"{top} / {bottom}"] = round(a / b, 3) if a and b else None
    return found


def _target(name: str, figure: Any, status: str, detail: str, unit: str = "") -> dict[str, Any]:
    return {"target": name, "figure": figure, "unit": unit, "status": status, "detail": detail}


def _why(variants: dict[str, dict[str, Any]], name: str, goal: float, ceiling: str | None) -> str:
    """What the run's own figures say limits `name` below `goal` requests/s."""
    var = variants.get(name, {})
    cpu = var.get("median_cpu_ms_per_event")
    busy = var.get("median_cpu_pct_of_core")
    parts = []
    cpu_bound = busy is None or busy >= 60  # a service kept busy most of a core is limited by its CPU
    if cpu and 1000 / cpu < goal and cpu_bound:
        parts.append(
            f"the service spends {cpu:.2f} ms of CPU per request, so one core allows at most {1000 / cpu:,.0f}/s"
            f" ({goal:,.0f}/s needs {1000 / goal:.2f} ms)"
        )
    elif busy:
        parts.append(
            f"not its own CPU (the service kept {busy:.0f}% of a core busy): the rest of its time is waiting for"
            " commits (the database's; the offset's too with COMMIT_INTERVAL_MS=0) and the broker's fetches and acks,"
            " on 2 cores shared with both"
        )
    bound = variants.get(ceiling or "", {}).get("median_events_per_s")
    if bound is not None and bound < goal:
        parts.append(f"{ceiling} (the same DB work in raw asyncpg/sqlite3, no service) reaches {bound:,.0f}/s here")
    return "; ".join(parts)


def targets(variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for db, label in (("pg", "PostgreSQL"), ("sqlite", "SQLite")):
        ceiling_name = "ceiling-db" if db == "pg" else "ceiling-db-sqlite"
        per_event = [
            (f"decision-{db}-per-event", "DECISION_BATCH_MAX=1"),
            (f"decision-{db}-record-commit", "and a commit per record"),
        ]
        for name, how in per_event:
            if name not in variants:
                continue
            rate = variants[name]["median_events_per_s"]
            met = rate is not None and rate >= 1000
            why = "" if met else _why(variants, name, 1000, ceiling_name)
            out.append(
                _target(
                    f"decision service >= 1,000 requests/s, one transaction per event ({label}, {how})",
                    rate,
                    _status(met, rate),
                    f"{name}: median {rate} requests/s" + (f"; limit: {why}" if why else ""),
                    "requests/s",
                )
            )
        for name, how in ((f"decision-{db}", "default settings"), (f"decision-{db}-batched", "--service-batch")):
            if name not in variants:
                continue
            rate = variants[name]["median_events_per_s"]
            met = rate is not None and rate >= 5000
            bound = "ceiling-db-batched" if db == "pg" else None
            why = "" if met else _why(variants, name, 5000, bound)
            out.append(
                _target(
                    f"decision service >= 5,000 requests/s batched ({label}, {how})",
                    rate,
                    _status(met, rate),
                    f"{name}: median {rate} requests/s" + (f"; limit: {why}" if why else ""),
                    "requests/s",
                )
            )
        pairs = [(f"decision-{db}-per-event", ceiling_name), (f"decision-{db}-record-commit", ceiling_name)]
        if db == "pg":
            pairs += [("decision-pg", "ceiling-db-batched"), ("decision-pg-batched", "ceiling-db-batched")]
        for name, bound in pairs:
            if name not in variants or bound not in variants:
                continue
            rate, c = variants[name]["median_events_per_s"], variants[bound]["median_events_per_s"]
            ratio = round(rate / c, 3) if rate and c else None
            met = ratio is not None and ratio >= 0.5
            cpu = variants[name].get("median_cpu_ms_per_event")
            why = (
                f"; limit: a request costs the service {cpu:.2f} ms of CPU, the whole event {1000 / c:.2f} ms"
                f" of wall time in {bound}"
                if not met and cpu and c
                else ""
            )
            out.append(
                _target(
                    f"decision throughput >= 0.5 x ceiling ({name} / {bound})",
                    ratio,
                    _status(met, ratio),
                    f"{rate} / {c} events/s{why}",
                    "x ceiling",
                )
            )
        pipe = variants.get(f"pipeline-{db}")
        if pipe is not None:
            p99 = pipe.get("median_latency_ms", {}).get("p99")
            out.append(
                _target(
                    f"pipeline p99 at half load < 100 ms ({label})",
                    p99,
                    _status(p99 is not None and p99 < 100, p99),
                    f"median p99 {p99} ms at {pipe.get('median_latency_rate_per_s')} requests/s",
                    "ms",
                )
            )
    return out


def _status(met: bool, figure: Any) -> str:
    if figure is None:
        return "not evaluated: no passing run"
    return "met" if met else "not met"


def write(results: dict[str, Any], directory: Path, stamp: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False, default=str) + "\n"
    paths = [directory / f"{stamp}.json", directory / "latest.json", directory / "latest.md"]
    for path, body in zip(paths, (text, text, markdown(results)), strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(body)
        tmp.replace(path)
    return paths


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    variants = results["variants"]
    m, v, s = results["machine"], results["versions"], results["settings"]
    lines = [
        f"# Benchmark {results['started_at']}",
        "",
        f"{m['cores']} cores, {m['memory_gib']} GiB ({m.get('cpu_model')}); load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. "
        f"Python {v['python']}, Kafka {v['kafka']}, PostgreSQL {v.get('postgresql')}, SQLite {v['sqlite']}, "
        f"aiokafka {v.get('aiokafka')}, FastStream {v.get('faststream')}, SQLAlchemy {v.get('sqlalchemy')}; "
        f"commit {str(v['git']['commit'])[:10]}{' (uncommitted changes)' if v['git']['dirty'] else ''}.",
        f"{s['events']} requests per service run, {s['ceiling_events']} per ceiling run, {s['rounds']} rounds, "
        f"latency at {s['latency_load']:g} x max for {s['latency_seconds']:g} s (at least "
        f"{s['latency_min_events']} requests), {s['db_batch']} events per batched transaction, "
        f"{s['db_lanes']} connections for ceiling-db-concurrent; the services' defaults: "
        + ", ".join(f"{k} {v}" for k, v in s.get("service_defaults", {}).items())
        + "; "
        f"{results['duration_s']:.0f} s in all."
        + (" **Some runs failed their correctness checks.**" if results["failed"] else " All checks passed."),
        "",
        "| variant | what | events/s per round | median | failed runs |",
        "|---|---|---|---:|---:|",
    ]
    for name in [n for n in ORDER if n in variants]:
        var = variants[name]
        per_round = ", ".join(_fmt(rate_of(r)) + ("" if r.get("ok") else " (failed)") for r in var["runs"])
        lines.append(
            f"| {name} | {var['description']} | {per_round} | {_fmt(var['median_events_per_s'])} | "
            f"{var['failed_runs']} |"
        )
    pipes = [n for n in ORDER if n.startswith("pipeline") and n in variants]
    if pipes:
        lines += [
            "",
            "Pipeline latency at a fixed rate, request sent to the CreateTime of its last job/payout record (ms):",
            "",
            "| variant | rate/s | p50 | p99 | p99.9 | max | samples per round | arrival p99 (bench consumer) |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for name in pipes:
            var = variants[name]
            lat = var.get("median_latency_ms", {})
            arrival = _median(
                [
                    r["latency"]["arrival_ms"]["p99"]
                    for r in var["runs"]
                    if r.get("ok") and r["latency"].get("arrival_ms")
                ]
            )
            lines.append(
                f"| {name} | {_fmt(var.get('median_latency_rate_per_s'), 1)} | {_fmt(lat.get('p50'), 1)} | "
                f"{_fmt(lat.get('p99'), 1)} | {_fmt(lat.get('p99.9'), 1)} | {_fmt(lat.get('max'), 1)} | "
                f"{', '.join(str(x) for x in var.get('latency_samples_per_run', []))} | {_fmt(arrival, 1)} |"
            )
    if results["ratios"]:
        lines += ["", "| ratio of medians | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(r, 3)} |" for k, r in results["ratios"].items()]
    lines += ["", "| target | figure | status |", "|---|---:|---|"]
    digits = {"requests/s": 0, "x ceiling": 3, "ms": 1}
    for t in results["targets"]:
        figure = _fmt(t["figure"], digits.get(t.get("unit", ""), 1)) + (f" {t['unit']}" if t["figure"] else "")
        lines.append(f"| {t['target']} | {figure} | {t['status']} ({t['detail']}) |")
    cpu = [(n, variants[n].get("median_cpu_ms_per_event")) for n in ORDER if n.startswith("decision") and n in variants]
    if any(c for _, c in cpu):
        lines += ["", "Decision service CPU per event (median): " + ", ".join(f"{n} {_fmt(c, 2)} ms" for n, c in cpu)]
    for name in ("decision-pg-per-event", "decision-pg"):
        pg = variants.get(name, {}).get("median_postgres_per_request")
        if pg:
            lines += [
                "",
                f"{name} per request (pg_stat_database, median): "
                + ", ".join(f"{k} {_fmt(v, 2)}" for k, v in pg.items())
                + " (commits include the outbox relay's own transactions)",
            ]
    for prof in results.get("profiles", []):
        lines += ["", f"Profile ({prof['variant']}, {_fmt(prof.get('events_per_s'))} requests/s under py-spy): "
                      f"`{prof.get('speedscope')}`, summary `{prof.get('summary')}`"]  # fmt: skip
        if prof.get("cpu_ms_per_event"):
            per_event = prof["cpu_ms_per_event"]
            lines.append(f"CPU per event {per_event} ms; by step (share of CPU samples, ms per event):")
            lines += [""]
            lines += [
                f"- {label}: {pct}% ({pct * per_event / 100:.2f} ms)"
                for label, pct in list(prof.get("steps_pct", {}).items())[:12]
            ]
        if prof.get("error"):
            lines.append(f"py-spy failed: {prof['error']}")
    failures = [
        (name, i + 1, r)
        for name in ORDER
        if name in variants
        for i, r in enumerate(variants[name]["runs"])
        if not r.get("ok")
    ]
    if failures:
        lines += ["", "Failed runs:"]
        for name, i, r in failures:
            problems = _problems(r)
            lines.append(f"- {name} round {i}: " + "; ".join(problems[:5]))
    return "\n".join(lines) + "\n"


def _problems(run: dict[str, Any]) -> list[str]:
    if "error" in run:
        return [run["error"]]
    found = list(run.get("checks", {}).get("problems", []))
    for part in ("throughput", "latency"):
        found += run.get(part, {}).get("checks", {}).get("problems", [])
    return found or ["failed"]
