"""`second-opinion kafka|postgres|up|down|status`: run the local stack from the command line."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from services.common.settings import SERVICES, KafkaSettings, StackSettings
from services.ops import kafka, postgres, stack
from services.ops.procs import OpsError

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: Any) -> None:
    _register_kafka(subparsers)
    _register_postgres(subparsers)
    p = subparsers.add_parser("up", help="start broker, database and the three services")
    p.add_argument(
        "--database", choices=("sqlite", "postgres"), default=None,
        help="default: STACK_DATABASE (sqlite)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_up)
    p = subparsers.add_parser("down", help="stop what `up` started")
    p.set_defaults(func=_guard(lambda args: stack.down(StackSettings()) or 0))
    p = subparsers.add_parser("status", help="what is running: broker, database, services")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)


def _register_kafka(subparsers: Any) -> None:
    parser = subparsers.add_parser("kafka", help="the local Kafka broker")
    sub = parser.add_subparsers(dest="kafka_command", required=True)
    actions: dict[str, tuple[str, Handler]] = {
        "fetch": ("download the broker jars (Maven)", _kafka_fetch),
        "start": ("start (or reuse) the broker and create the topics", _kafka_start),
        "stop": ("stop the broker this project started", lambda a: kafka.stop(StackSettings())),
        "status": ("is the broker up", _kafka_status),
        "topics": ("create missing topics and list them", _kafka_topics),
    }
    for name, (help_text, handler) in actions.items():
        sub.add_parser(name, help=help_text).set_defaults(func=_guard(handler))


def _register_postgres(subparsers: Any) -> None:
    parser = subparsers.add_parser("postgres", help="the local PostgreSQL cluster")
    sub = parser.add_subparsers(dest="postgres_command", required=True)
    sub.add_parser("start", help="install/start it; create the role and databases").set_defaults(
        func=_guard(_postgres_start)
    )
    sub.add_parser("stop", help="stop it if this project started it").set_defaults(
        func=_guard(lambda a: postgres.stop(StackSettings()))
    )


def _guard(handler: Handler) -> Handler:
    """Turn an OpsError into a one-paragraph message and exit code 1 instead of a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            handler(args)
        except OpsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


def _kafka_fetch(args: argparse.Namespace) -> None:
    print(f"kafka: jars in {kafka.ensure_jars(StackSettings())}")


def _kafka_start(args: argparse.Namespace) -> None:
    ks = KafkaSettings()
    kafka.start(StackSettings(), ks)
    kafka.create_topics(ks)


def _kafka_status(args: argparse.Namespace) -> None:
    info = kafka.status(StackSettings(), KafkaSettings())
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    if not info["up"]:
        raise OpsError(f"no broker answers at {info['bootstrap']}")


def _kafka_topics(args: argparse.Namespace) -> None:
    ks = KafkaSettings()
    kafka.create_topics(ks)
    for topic, partitions in sorted(kafka.describe_topics(ks).items()):
        print(f"{topic:40} {partitions} partitions")


def _postgres_start(args: argparse.Namespace) -> None:
    st = StackSettings()
    postgres.ensure_running(st)
    postgres.ensure_role_and_databases([stack.database_name(s) for s in SERVICES], st)


@_guard
def _cmd_up(args: argparse.Namespace) -> None:
    st = StackSettings()
    stack.up(st, KafkaSettings(), args.database or st.database)


@_guard
def _cmd_status(args: argparse.Namespace) -> None:
    info = stack.status(StackSettings(), KafkaSettings())
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return
    k = info["kafka"]
    print(f"kafka     {'up' if k['up'] else 'down':5} {k['bootstrap']:22} pid={k['pid']}")
    if "postgres" in info:
        p = info["postgres"]
        up = "up" if p.get("up") else "down"
        print(f"postgres  {up:5} 127.0.0.1:{p['port']:<12} started_by_us={p['started_by_us']}")
    print(f"database  {info['database'] or '(stack not started)'}")
    for svc, s in info["services"].items():
        state = "ready" if s["ready"] else ("running" if s["pid"] else "down")
        print(f"{svc:9} {state:5} http://127.0.0.1:{s['port']:<6} pid={s['pid']} log={s['log']}")
