"""`second-opinion token`: a signed bearer token for the case API and console (local and test use)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from services.common.auth import APPROVER_ROLES, AuthSettings, issue


def token(args: argparse.Namespace) -> int:
    role = args.role.lower()
    print(issue(AuthSettings(), args.user, role, ttl=timedelta(minutes=args.ttl_minutes)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "token",
        help="print a bearer token for the case API and console",
        description=(
            "Signs a JWT with AUTH_JWT_SECRET (or else the stack's key file, <STACK_DATA_DIR>/auth.secret). "
            f"Roles that may approve: {', '.join(sorted(APPROVER_ROLES))}; any other role may only read."
        ),
    )
    p.add_argument("--user", required=True, help="the user id (JWT sub)")
    p.add_argument("--role", required=True, help="e.g. supervisor, manager, agent")
    p.add_argument("--ttl-minutes", type=int, default=480, help="validity (default 8 hours)")
    p.set_defaults(func=token)
