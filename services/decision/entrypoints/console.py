"""Supervisor console: server-rendered pages over the case API's queries and approval use case.

The session is the same signed JWT as the API's, kept in an HttpOnly, SameSite=Strict cookie;
every form carries a CSRF token bound to it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from services.common import kafka_offsets
from services.common.auth import Principal, Tokens
from services.common.settings import SERVICES, group_id
from services.decision.adapters import queries
from services.decision.entrypoints.api import CaseId, principal_from, submit_approval, tokens

COOKIE = "so_session"
templates = Jinja2Templates(directory=FsPath(__file__).parent / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)


class LoginRequired(Exception):
    """No session cookie, or one that no longer verifies: the page sends the user to log in."""


def console_user(request: Request, verifier: Annotated[Tokens, Depends(tokens)]) -> Principal:
    token = request.cookies.get(COOKIE)
    try:
        return principal_from(verifier, token)
    except HTTPException as exc:
        raise LoginRequired(exc.detail) from exc


User = Annotated[Principal, Depends(console_user)]


def _page(request: Request, name: str, who: Principal | None, code: int = 200, **context: Any) -> HTMLResponse:
    token = request.cookies.get(COOKIE)
    csrf = tokens(request).csrf(token) if token and who else ""
    return templates.TemplateResponse(
        request, name, {"who": who, "csrf": csrf, "now": datetime.now(UTC), **context}, status_code=code
    )


def _check_csrf(request: Request, given: str) -> None:
    token = request.cookies.get(COOKIE) or ""
    if not hmac.compare_digest(tokens(request).csrf(token), given):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form expired or did not come from this console; reload")


@router.get("", response_class=RedirectResponse)
async def home() -> RedirectResponse:
    return RedirectResponse("/console/queue", status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, error: str | None = None) -> HTMLResponse:
    return _page(request, "login.html", None, error=error)


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form(max_length=4096)]) -> Response:
    token = token.strip()
    try:
        principal_from(tokens(request), token)
    except HTTPException as exc:
        return _page(request, "login.html", None, code=401, error=exc.detail)
    response = RedirectResponse("/console/queue", status.HTTP_303_SEE_OTHER)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/console")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/console/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/queue", response_class=HTMLResponse)
async def queue(request: Request, who: User, flash: str | None = None) -> HTMLResponse:
    async with request.app.state.runtime.sessions() as session:
        items = await queries.approval_queue(session)
    return _page(request, "queue.html", who, items=items, flash=flash)


@router.get("/cases/{case_id}", response_class=HTMLResponse)
async def case_page(request: Request, who: User, case_id: CaseId, flash: str | None = None) -> HTMLResponse:
    async with request.app.state.runtime.sessions() as session:
        found = await queries.get_case(session, case_id)
        if found is None:
            return _page(request, "error.html", who, code=404, message=f"No case {case_id}.")
        events = await queries.timeline(session, case_id)
        audit = await queries.audit_for(session, case_id)
    return _page(request, "case.html", who, case=found, timeline=events, audit=audit, flash=flash)


@router.post("/cases/{case_id}/approval")
async def approve_or_deny(
    request: Request,
    who: User,
    case_id: CaseId,
    decision: Annotated[str, Form(pattern="^(approve|deny)$")],
    csrf: Annotated[str, Form(max_length=200)],
    note: Annotated[str, Form(max_length=2000)] = "",
    back: Annotated[str, Form(pattern="^(queue|case)$")] = "queue",
) -> Response:
    _check_csrf(request, csrf)
    try:
        outcome = await submit_approval(request, who, case_id, decision, note.strip() or None)  # type: ignore[arg-type]
    except HTTPException as exc:
        return _page(request, "error.html", who, code=exc.status_code, message=exc.detail)
    except RequestValidationError as exc:
        return _page(request, "error.html", who, code=422, message=exc.errors()[0]["msg"])
    target = "/console/queue" if back == "queue" else f"/console/cases/{case_id}"
    flash = f"{decision} of case {case_id} recorded" if outcome.kind == "recorded" else outcome.message
    return RedirectResponse(f"{target}?flash={flash}", status.HTTP_303_SEE_OTHER)


_OVERVIEW_TTL_S = 2.0


@router.get("/ops", response_class=HTMLResponse)
async def ops(request: Request, who: User) -> HTMLResponse:
    runtime = request.app.state.runtime
    kafka, error = await _kafka_overview(request), None
    if isinstance(kafka, Exception):
        kafka, error = {"lag": [], "dlq": {}}, f"broker not reachable: {type(kafka).__name__}"
    async with runtime.sessions() as session:
        counts = await queries.case_counts(session)
        recent = await queries.recent_decisions(session)
    return _page(request, "ops.html", who, kafka=kafka, kafka_error=error, counts=counts, recent=recent)


async def _kafka_overview(request: Request) -> dict[str, Any] | Exception:
    """Lag of every service's group and DLQ sizes, cached briefly so reloads do not hammer the broker."""
    from services.operator_tools.replay import input_topics  # the services' routes name their topics

    state = request.app.state
    cached = getattr(state, "ops_overview", None)
    if cached is not None and time.monotonic() - cached[0] < _OVERVIEW_TTL_S:
        return cached[1]
    kafka_settings = state.runtime.kafka
    groups = {group_id(s, kafka_settings): input_topics(s) for s in SERVICES}
    try:
        result: dict[str, Any] | Exception = await asyncio.wait_for(
            kafka_offsets.overview(kafka_settings.bootstrap_servers, groups), 5
        )
    except Exception as exc:
        result = exc
    state.ops_overview = (time.monotonic(), result)
    return result


def configure(app: Any) -> None:
    """Pages without a valid session send the browser to the login page."""

    async def to_login(request: Request, exc: Exception) -> Response:
        # A first visit has no session: that is no error to show; an expired or bad one is.
        query = f"?error={exc}" if request.cookies.get(COOKIE) else ""
        return RedirectResponse(f"/console/login{query}", status.HTTP_303_SEE_OTHER)

    app.add_exception_handler(LoginRequired, to_login)
