"""Case API of the decision service (OpenAPI at /docs): cases, timelines, the approval queue, approve/deny."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from schemas import v1
from services.common.auth import AuthError, Principal, Tokens
from services.decision.adapters import queries
from services.decision.app import approvals

log = logging.getLogger(__name__)

CaseStatus = Literal[
    "awaiting_report", "awaiting_approval", "granted", "dispatched", "unassigned", "denied", "concluded"
]
# PostgreSQL text cannot hold U+0000: text input carrying it is refused (422) before it reaches a query.
NO_NUL = r"^[^\x00]*$"
CaseId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=NO_NUL, description="the case_id of a decision event")
]

_bearer = HTTPBearer(auto_error=False, description="JWT with `sub` (user id) and `role`")


class Actor(BaseModel):
    id: str
    role: str


class CaseOut(BaseModel):
    case_id: str
    service_order_id: str
    original_job_id: str
    source: v1.Source
    reason_code: v1.ReasonCode
    reason_detail: str | None
    status: CaseStatus
    soft_no_delivered: bool | None
    requested_by: Actor | None
    denial_code: str | None
    decided_by: Actor | None
    rules: list[str]
    policy_version: str | None
    second_job_id: str | None
    second_provider_id: str | None
    outcome: str | None
    created_at: datetime
    updated_at: datetime


class CaseList(BaseModel):
    total: int
    limit: int
    offset: int
    cases: list[CaseOut]


class TimelineEntry(BaseModel):
    direction: Literal["in", "out"]
    topic: str
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    summary: dict[str, Any] = Field(description="the event's fields without its envelope")


class AuditEntry(BaseModel):
    user_id: str
    role: str
    decision: str
    note: str | None
    outcome: str
    event_id: str | None
    at: datetime


class CaseDetail(CaseOut):
    timeline: list[TimelineEntry]
    approvals_audit: list[AuditEntry]


class Diagnosis(BaseModel):
    failure_found: bool
    component: str | None
    cause: str | None
    covered: bool | None


class QueueItem(CaseOut):
    diagnosis: Diagnosis | None = Field(description="the original report's diagnosis")


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class ApprovalOut(BaseModel):
    case_id: str
    decision: Literal["approve", "deny"]
    event_id: str
    status: Literal["recorded", "duplicate"]
    message: str


def tokens(request: Request) -> Tokens:
    state = request.app.state
    if getattr(state, "tokens", None) is None:
        state.tokens = Tokens()  # AUTH_* settings; the key is read on first use
    return state.tokens


def principal_from(verifier: Tokens, token: str | None) -> Principal:
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    try:
        return verifier.verify(token)
    except AuthError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), {"WWW-Authenticate": "Bearer"}) from exc


def current_user(
    verifier: Annotated[Tokens, Depends(tokens)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return principal_from(verifier, credentials.credentials if credentials else None)


User = Annotated[Principal, Depends(current_user)]


def no_unknown_query(request: Request) -> None:
    """A query parameter the operation does not define is an error, not silently ignored (a typo'd filter)."""
    route = request.scope.get("route")
    known = {p.alias for p in route.dependant.query_params} if route is not None else set()
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [{"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown query parameter", "input": None}
             for name in unknown]
        )  # fmt: skip


router = APIRouter(
    prefix="/api",
    tags=["cases"],
    responses={401: {"description": "no or bad token"}},
    dependencies=[Depends(no_unknown_query)],
)


def _sessions(request: Request) -> Any:
    return request.app.state.runtime.sessions


@router.get("/cases", response_model=CaseList, summary="List and filter cases, newest first")
async def list_cases(
    request: Request,
    _: User,
    status_: Annotated[CaseStatus | None, Query(alias="status")] = None,
    source: v1.Source | None = None,
    reason_code: v1.ReasonCode | None = None,
    service_order_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    min_age_s: Annotated[int | None, Query(ge=0, le=10**9, description="created at least this long ago")] = None,
    max_age_s: Annotated[int | None, Query(ge=0, le=10**9, description="created at most this long ago")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    f = queries.CaseFilter(
        status=status_,
        source=source,
        reason_code=reason_code,
        service_order_id=service_order_id,
        created_before=now - timedelta(seconds=min_age_s) if min_age_s is not None else None,
        created_after=now - timedelta(seconds=max_age_s) if max_age_s is not None else None,
        limit=limit,
        offset=offset,
    )
    async with _sessions(request)() as session:
        total, cases = await queries.list_cases(session, f)
    return {"total": total, "limit": limit, "offset": offset, "cases": cases}


@router.get(
    "/cases/{case_id}",
    response_model=CaseDetail,
    summary="A case with its timeline",
    responses={404: {"description": "no such case"}},
)
async def get_case(request: Request, _: User, case_id: CaseId) -> dict[str, Any]:
    async with _sessions(request)() as session:
        found = await queries.get_case(session, case_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}")
        found["timeline"] = await queries.timeline(session, case_id)
        found["approvals_audit"] = await queries.audit_for(session, case_id)
    return found


@router.get("/approvals/queue", response_model=list[QueueItem], summary="Customer requests awaiting approval")
async def approval_queue(request: Request, _: User) -> list[dict[str, Any]]:
    async with _sessions(request)() as session:
        return await queries.approval_queue(session)


@router.post(
    "/cases/{case_id}/approval",
    response_model=ApprovalOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Approve or deny a case awaiting approval (supervisor or manager)",
    responses={401: {"description": "no or bad token"}, 403: {"description": "role may not approve"},
               404: {"description": "no such case"}, 409: {"description": "case not awaiting approval"}},
)  # fmt: skip
async def decide_approval(request: Request, who: User, case_id: CaseId, body: ApprovalIn) -> dict[str, Any]:
    outcome = await submit_approval(request, who, case_id, body.decision, body.note)
    return {
        "case_id": case_id,
        "decision": body.decision,
        "event_id": outcome.event_id,
        "status": outcome.kind,
        "message": outcome.message,
    }


_STATUS = {"not_found": 404, "forbidden": 403, "conflict": 409}


async def submit_approval(
    request: Request, who: Principal, case_id: str, decision: approvals.Decision, note: str | None
) -> approvals.Outcome:
    """Shared by the API and the console: audit, stage, commit, wake the relay; errors as HTTP."""
    runtime = request.app.state.runtime
    if note is not None and "\x00" in note:  # the console's form note has no schema pattern
        raise _bad_note("the note contains a NUL character")
    try:
        async with runtime.sessions() as session, session.begin():
            outcome = await approvals.record(
                session, runtime.spec.outbox, who, case_id, decision, note, datetime.now(UTC)
            )
    except approvals.BadNote as exc:
        raise _bad_note(str(exc)) from exc
    log.info("approval attempt on case %s by %s (%s): %s", case_id, who.user_id, who.role, outcome.kind)
    if outcome.kind in _STATUS:
        raise HTTPException(_STATUS[outcome.kind], outcome.message)
    if runtime.relay is not None:
        runtime.relay.wake()
    return outcome


def _bad_note(message: str) -> RequestValidationError:
    """A 422 shaped like every other validation error of the API (the documented one)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", "note"), "msg": message, "input": None}])


MAX_BODY_BYTES = 64 * 1024  # an approval is a decision and a note of at most 2,000 characters


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming where and why, without echoing the input (it may be huge, hold a card number or be unencodable)."""
    errors = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]  # type: ignore[attr-defined]
    return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _limit_body(request: Request, call_next: Any) -> Response:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
    return await call_next(request)


def configure(app: Any) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.middleware("http")(_limit_body)
