"""`second-opinion scenario run PATH...`: run scenario files against the running stack."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from aiokafka.errors import KafkaError

from services.scenario.runner import RunnerSettings, ScenarioResult, run_paths, scenario_files

EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    scenario = subparsers.add_parser("scenario", help="acceptance scenarios against the stack")
    commands = scenario.add_subparsers(dest="scenario_command", required=True)
    run = commands.add_parser(
        "run",
        help="run scenario files (or directories of *.json) against a running stack",
        description="Publish each scenario's steps, then check its expectations (DESIGN.md §4).",
    )
    run.add_argument("paths", nargs="+", metavar="PATH", help="scenario file or directory")
    run.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")
    run.add_argument("--timeout", type=float, default=60.0, help="seconds for expectations to hold")
    run.add_argument("--json-report", type=Path, metavar="PATH", help="also write results as JSON")
    run.add_argument(
        "--group",
        action="append",
        dest="groups",
        metavar="GROUP",
        help="consumer group whose lag must drain before the final check "
        "(repeatable; default: the decision, dispatch and payout groups)",
    )
    run.add_argument(
        "--provider-group",
        help="group that must consume provider updates first (default: the dispatch group)",
    )
    run.add_argument("--no-provider-wait", action="store_true", help="do not wait for provider updates")
    run.set_defaults(func=lambda args: asyncio.run(_run(args)))


async def _run(args: argparse.Namespace) -> int:
    try:
        files = scenario_files(args.paths)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if not files:
        print("no scenario files (*.json) found", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args)
    try:
        results = await run_paths(files, settings, on_result=_print_result)
    except (KafkaError, OSError) as exc:
        print(f"cannot run against {settings.bootstrap_servers}: {exc!r}", file=sys.stderr)
        return EXIT_USAGE
    _print_summary(results)
    if args.json_report:
        _write_report(args.json_report, results)
    return 0 if all(r.passed for r in results) else EXIT_FAILED


def _settings(args: argparse.Namespace) -> RunnerSettings:
    overrides: dict[str, object] = {"timeout_s": args.timeout}
    if args.groups:
        overrides["groups"] = tuple(args.groups)
    if args.provider_group:
        overrides["provider_group"] = args.provider_group
    if args.no_provider_wait:
        overrides["provider_group"] = None
    return RunnerSettings.for_stack(args.bootstrap, **overrides)


def _print_result(result: ScenarioResult) -> None:
    print(result.explain(), flush=True)


def _print_summary(results: list[ScenarioResult]) -> None:
    failed = [r.name for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed", flush=True)


def _write_report(path: Path, results: list[ScenarioResult]) -> None:
    report = {
        "passed": all(r.passed for r in results),
        "scenarios": [r.to_dict() for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
