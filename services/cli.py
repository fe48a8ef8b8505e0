"""The `second-opinion` command: one entry point, a subcommand per concern."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes `register(subparsers)`; it adds its subcommand(s) and sets
# `func` (taking the parsed args, returning an exit code) on each parser it adds.
_COMMAND_MODULES = (
    "services.ops.commands",
    "services.serve",
    "services.scenario.commands",
    "services.simulate.commands",
    "services.operator_tools.commands",
    "services.contracts",
    "services.tokens",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="second-opinion",
        description="Decide, dispatch and pay for second opinions on home-warranty repairs.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
