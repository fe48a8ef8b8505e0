"""The `second-opinion simulate` subcommand: stream a seeded synthetic day through the stack."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.settings import KafkaSettings, StackSettings, group_id
from services.simulate.generator import MAX_ORDERS


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="stream a synthetic day of claim traffic through the running services",
        description=(
            "Publish a seeded, realistic day of service reports, second-opinion requests and "
            "approvals to Kafka, watch the services react, and reconcile every order against "
            "its intended outcome. Exit 0 only if every order is accounted for and nothing "
            "happened twice."
        ),
    )
    parser.add_argument("--orders", type=_order_count, default=400, help="service orders (400)")
    parser.add_argument("--seed", type=int, default=7, help="same seed, same business day (7)")
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for orders to settle (180)")
    parser.add_argument("--report", type=Path, default=None, help="JSON report (default .run/simulate-report.json)")
    parser.set_defaults(func=_run)


def _order_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_ORDERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_ORDERS}")
    return value


def _run(args: argparse.Namespace) -> int:
    # Imported here so `second-opinion --help` does not load aiokafka and rich.
    from services.simulate.runner import Options, run

    kafka, stack = KafkaSettings(), StackSettings()
    options = Options(
        orders=args.orders,
        seed=args.seed,
        bootstrap=args.bootstrap or kafka.bootstrap_servers,
        timeout=args.timeout,
        report=args.report or stack.run_dir / "simulate-report.json",
        run_dir=stack.run_dir,
        dispatch_group=group_id("dispatch", kafka),
    )
    return run(options)
