"""Rich tables for the synthetic day's summary, and where to look next."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.common.settings import DEFAULT_PORTS, http_port

MAX_UNACCOUNTED_ROWS = 25


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    rows = [[str(cell) for cell in row] for row in rows]
    table = Table(title=title, title_justify="left", header_style="bold")
    for n, column in enumerate(columns):
        numeric = n > 0 and all(_numeric(row[n]) for row in rows)
        # Ids and outcome names fold rather than lose their tails on a narrow terminal.
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"\$?[0-9.]+|\[[a-z ]+\][0-9]+\[/\]", cell))


def _count_rows(counts: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return list(counts.items()) or [("(none)", 0)]


def _money_rows(money: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Any, Any]]:
    return [(k, v["count"], f"${v['total']}") for k, v in money.items()] or [("(none)", 0, "$0.00")]


def _flag(n: int) -> str:
    return "[green]0[/]" if n == 0 else f"[bold red]{n}[/]"


def decision_tables(s: Mapping[str, Any]) -> list[Table]:
    rows = [(r["source"], r["reason_code"], r["granted"], r["denied"]) for r in s["decisions"]["by_source_reason"]]
    return [
        _table("Decisions by source and reason", ("source", "reason", "granted", "denied"), rows),
        _table("Denials by code", ("denial code", "count"), _count_rows(s["decisions"]["denial_codes"])),
    ]


def flow_tables(s: Mapping[str, Any]) -> list[Table]:
    jobs = [(f"jobs {k}", v) for k, v in s["jobs_by_network"].items()]
    notes = s["notifications"]
    dispatch_rows = [
        *jobs,
        ("unassigned (no eligible provider)", s["unassigned"]),
        ("customer notifications", notes["count"]),
        ("  with charge disclosures", notes["with_disclosures"]),
    ]
    return [
        _table("Dispatch and notifications", ("", "count"), dispatch_rows),
        _table("Payouts by fee type", ("fee type", "count", "total"), _money_rows(s["payouts"])),
        _table("Customer charges", ("reason", "count", "total"), _money_rows(s["customer_charges"])),
        _table("Provider feedback", ("category", "count"), _count_rows(s["provider_feedback"])),
        _table("Conclusions", ("outcome", "count"), _count_rows(s["conclusions"])),
        _table("Dead-letter records", ("topic", "records"), _count_rows(s["dlq"])),
    ]


def integrity_tables(s: Mapping[str, Any]) -> list[Table]:
    dupes = [(name, _flag(n)) for name, n in s["duplicates"].items()]
    dupes.append(("(info) records redelivered with the same event_id", s["redelivered_records"]))
    rows = s["reconciliation"]
    by_intended = []
    for outcome, planned in s["intended"].items():
        accounted = sum(1 for r in rows if r["intended"] == outcome and r["accounted"])
        by_intended.append((outcome, planned, accounted, _flag(planned - accounted)))
    columns = ("intended outcome", "orders", "accounted", "not accounted")
    return [
        _table("Duplicates by business fact", ("fact", "duplicates"), dupes),
        _table("Reconciliation", columns, by_intended),
    ]


def unaccounted_table(s: Mapping[str, Any]) -> Table | None:
    missing = [r for r in s["reconciliation"] if not r["accounted"]]
    if not missing:
        return None
    rows = [
        (r["order_id"], r["intended"], r["observed"], _fields(r["problems"])) for r in missing[:MAX_UNACCOUNTED_ROWS]
    ]
    title = f"Orders not accounted for ({len(missing)}; details in the JSON report)"
    return _table(title, ("order", "intended", "observed", "differs in"), rows)


def _fields(problems: Sequence[str]) -> str:
    return ", ".join(p.split(":", 1)[0] for p in problems)


def next_steps(report: Path | None, run_dir: Path) -> list[str]:
    lines = ["[bold]Where to look next[/]"]
    if report is not None:
        lines.append(f"  full report: {report}")
    for name in DEFAULT_PORTS:
        base = f"http://127.0.0.1:{http_port(name)}"
        lines.append(f"  {name:<9} {base}/health/ready   {base}/metrics")
    console = f"http://127.0.0.1:{http_port('decision')}"
    lines += [
        f"  console:  {console}/console  (token: uv run second-opinion token --user you --role supervisor)",
        f"  case API: {console}/docs",
        f"  logs: {run_dir / 'logs'}/",
        "  stop the stack: make down",
    ]
    return lines


def render(summary: Mapping[str, Any], console: Console, report: Path | None, run_dir: Path = Path(".run")) -> None:
    header = f"Synthetic day: run {summary['run']}, seed {summary['seed']}, {summary['orders']} orders"
    console.rule(header)
    if published := summary.get("published"):
        sent = ", ".join(f"{topic} {n}" for topic, n in published.items())
        console.print(f"published {sum(published.values())} records: {sent}")
    for table in [*decision_tables(summary), *flow_tables(summary), *integrity_tables(summary)]:
        console.print(table)
    if (table := unaccounted_table(summary)) is not None:
        console.print(table)
    verdict = (
        f"[bold green]OK[/]: all {summary['orders']} orders accounted for, no duplicates"
        if summary["ok"]
        else f"[bold red]NOT OK[/]: {summary['accounted']}/{summary['orders']} orders accounted for"
    )
    console.print(verdict)
    for line in next_steps(report, run_dir):
        console.print(line)
