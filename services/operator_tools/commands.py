"""`second-opinion replay` and `second-opinion dlq list|show|redrive`: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import DBAPIError

from schemas.v1 import DLQ_SUFFIX
from services.common.settings import SERVICES
from services.operator_tools import actions
from services.operator_tools.dlq import SHOW_MAX_BYTES, RedriveRequest, dlq_list, dlq_show, run_redrive
from services.operator_tools.planning import PlanError, Start, parse_offsets, parse_partitions, parse_timestamp
from services.operator_tools.replay import ReplayRequest, run_replay

# Each parser gets `run` (async, returns an exit code) for in-process callers such as tests,
# and `func` (what `second-opinion` calls) which runs it on a fresh event loop.
Run = Callable[[argparse.Namespace], Awaitable[int]]


def register(subparsers: Any) -> None:
    _register_replay(subparsers)
    _register_dlq(subparsers)


def _register_replay(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="re-run a service's input records through its consumer (dry run unless --execute)",
        description="Reads the planned offsets without a consumer group (the live group's offsets never move) "
        "and feeds each record to the service's own consumer: its inbox makes what was already applied a no-op.",
    )
    p.add_argument("--service", choices=SERVICES, required=True)
    p.add_argument("--topic", action="append", dest="topics", metavar="T", help="repeatable; default: all its inputs")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-earliest", action="store_true", help="from the start of each partition's log")
    start.add_argument("--from-offset", type=int, metavar="N", help="from offset N of each chosen partition")
    start.add_argument("--from-timestamp", metavar="ISO8601", help="from the first record at or after this time")
    p.add_argument("--partitions", metavar="0,2", help="only these partitions (default: all)")
    _execute_and_operator(p)
    _set(p, _replay)


def _register_dlq(subparsers: Any) -> None:
    parser = subparsers.add_parser("dlq", help="dead-lettered records: list, show, redrive")
    sub = parser.add_subparsers(dest="dlq_command", required=True)
    p = sub.add_parser("list", help="counts per DLQ topic and error class, oldest and newest")
    p.add_argument("--topic", help="one topic (its name or its .dlq name); default: every DLQ")
    _set(p, lambda a: dlq_list(a.topic))
    p = sub.add_parser("show", help="one DLQ record: headers and value")
    p.add_argument("dlq_topic")
    p.add_argument("partition", type=int)
    p.add_argument("offset", type=int)
    p.add_argument(
        "--max-bytes", type=_non_negative, default=SHOW_MAX_BYTES, metavar="N",
        help=f"print at most N bytes of the value (default {SHOW_MAX_BYTES}; 0: all of it)",
    )  # fmt: skip
    _set(p, lambda a: dlq_show(a.dlq_topic, a.partition, a.offset, max_bytes=a.max_bytes))
    p = sub.add_parser("redrive", help="send DLQ records back to their topic (dry run unless --execute)")
    p.add_argument("--topic", required=True, metavar="SOURCE_TOPIC", help="the topic the records came from")
    p.add_argument("--error-class", help="only records with this x-error-class")
    p.add_argument("--offsets", metavar="P:O,...", help="only these DLQ partition:offset records")
    _execute_and_operator(p)
    _set(p, _redrive)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _execute_and_operator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--execute", action="store_true", help="do it (default: a dry run that only prints the plan)")
    p.add_argument("--operator", default=None, metavar="NAME", help="who does it, for the audit trail (default: $USER)")


def _set(p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Awaitable[int]]) -> None:
    p.set_defaults(run=_guard(run), func=lambda args: _sync(args.run, args))


def _guard(run: Callable[[argparse.Namespace], Awaitable[int]]) -> Run:
    async def guarded(args: argparse.Namespace) -> int:
        try:
            return await run(args)
        except PlanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except DBAPIError as exc:
            if "operator_action" not in str(exc):
                raise
            print(
                f"error: no operator_action table; run `second-opinion migrate <service>` first ({exc.orig})",
                file=sys.stderr,
            )
            return 2

    return guarded


def _sync(run: Run, args: argparse.Namespace) -> int:
    # The consumer logs what it dead-letters and retries; an operator wants to see that.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


def replay_request(args: argparse.Namespace) -> ReplayRequest:
    if args.from_timestamp is not None:
        start = Start("timestamp", timestamp_ms=parse_timestamp(args.from_timestamp))
    elif args.from_offset is not None:
        if args.from_offset < 0:
            raise PlanError("--from-offset must not be negative")
        start = Start("offset", offset=args.from_offset)
    else:
        start = Start("earliest")
    return ReplayRequest(
        service=args.service,
        start=start,
        topics=tuple(args.topics) if args.topics else None,
        partitions=parse_partitions(args.partitions) if args.partitions else None,
        execute=args.execute,
        operator=args.operator or actions.default_operator(),
    )


async def _replay(args: argparse.Namespace) -> int:
    report = await run_replay(replay_request(args))
    return 1 if report.stopped_short else 0


async def _redrive(args: argparse.Namespace) -> int:
    request = RedriveRequest(
        source_topic=args.topic.removesuffix(DLQ_SUFFIX),
        error_class=args.error_class,
        offsets=parse_offsets(args.offsets) if args.offsets else None,
        execute=args.execute,
        operator=args.operator or actions.default_operator(),
    )
    await run_redrive(request)
    return 0
