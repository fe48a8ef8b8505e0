"""The running decision service's case API against its own OpenAPI document (/openapi.json).

Schemathesis generates requests for every /api operation, valid ones and invalid ones, with a
supervisor's bearer token so they reach the handlers, and checks that none is answered with a
server error and that every response matches its schema; valid requests get only documented
status codes, invalid ones a client error. A few cases in several states exist first, so lists,
the queue and case details answer with data, not just empty pages and 404s. Health and metrics
are left out: /health/ready answers 503 by design while a dependency is away. Bounded: a fixed
number of examples per operation, a deadline on each, the same examples on every run.

(Schemathesis's own pytest loader, `schemathesis.pytest.from_fixture`, does not run on this
pytest: it reads `Node._nodeid`, which pytest 9.2 no longer has. The operations' Hypothesis
strategies are its public API for plain tests, so these use them.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.orders import Order, poll
from tests.support.kafka_client import Tap

if TYPE_CHECKING:
    from tests.support.stack import TestStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OPERATIONS = [
    ("GET", "/api/cases"),
    ("GET", "/api/cases/{case_id}"),
    ("GET", "/api/approvals/queue"),
    ("POST", "/api/cases/{case_id}/approval"),
]
CHECKS = [not_a_server_error, response_schema_conformance]
# Valid requests: only documented status codes. Invalid ones: refused with a 4xx (a body that is not
# even JSON gets the framework's 400, which the document does not list, and need not).
MODE_CHECKS = {
    GenerationMode.POSITIVE: [*CHECKS, status_code_conformance],
    GenerationMode.NEGATIVE: [*CHECKS, negative_data_rejection],
}
FUZZ = settings(
    max_examples=25,
    deadline=5000,  # ms per request
    derandomize=True,  # the same examples on every run: CI stays reproducible
    database=None,  # no .hypothesis folder in the work tree
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def api_schema(decision_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{decision_url}/openapi.json", timeout=10)


@pytest.fixture(scope="module")
def supervisor(e2e_stack: TestStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {e2e_stack.token('schemathesis', 'supervisor')}"}


@pytest.fixture(scope="module")
async def sample_cases(e2e_stack: TestStack, decision_url: str, supervisor: dict[str, str]) -> dict[str, str]:
    """Cases awaiting approval, denied, and granted (dispatched soon after); their ids by kind."""
    orders = {
        "awaiting_approval": Order("fuzz-pending"),
        "denied": Order("fuzz-denied"),
        "granted": Order("fuzz-granted"),
    }
    async with Tap(e2e_stack.bootstrap_servers, []) as tap:
        await orders["awaiting_approval"].publish_pending_customer_request(tap, e2e_stack)
        await orders["denied"].publish_denied_request(tap)
        await orders["granted"].publish_granted_request(tap, e2e_stack)
    accepted = {"awaiting_approval": {"awaiting_approval"}, "denied": {"denied"}, "granted": {"granted", "dispatched"}}
    async with httpx.AsyncClient(base_url=decision_url, headers=supervisor, timeout=10) as http:

        async def statuses() -> dict[str, str]:
            found = {}
            for kind, o in orders.items():
                cases = (await http.get("/api/cases", params={"service_order_id": o.order})).json()["cases"]
                found[kind] = cases[0]["status"] if cases else "missing"
            return found

        async def all_there() -> bool:
            now = await statuses()
            return all(now[k] in accepted[k] for k in now)

        assert await poll(all_there), await statuses()
    return {kind: o.case_id for kind, o in orders.items()}


def test_the_schema_lists_the_api_operations_tested_here(api_schema: Any) -> None:
    listed = [(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()]
    assert sorted(m for m in listed if m[1].startswith("/api/")) == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_api_operation_answers_within_its_schema(
    api_schema: Any, supervisor: dict[str, str], sample_cases: dict[str, str], method: str, path: str, mode: Any
) -> None:
    operation = api_schema[path][method]

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=supervisor, checks=MODE_CHECKS[mode], timeout=10)

    fuzz()


@pytest.mark.parametrize("kind", ["awaiting_approval", "denied", "granted"])
@pytest.mark.parametrize(("method", "path"), [op for op in OPERATIONS if "{case_id}" in op[1]], ids=str)
def test_operations_on_an_existing_case_answer_within_their_schema(
    api_schema: Any, supervisor: dict[str, str], sample_cases: dict[str, str], method: str, path: str, kind: str
) -> None:
    operation = api_schema[path][method]

    @FUZZ
    @given(case=operation.as_strategy(path_parameters={"case_id": sample_cases[kind]}))
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=supervisor, checks=MODE_CHECKS[GenerationMode.POSITIVE], timeout=10)

    fuzz()


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/api/cases?service_order_id=a%00b", None),
        ("GET", "/api/cases/a%00b", None),
        ("POST", "/api/cases/a%00b/approval", {"decision": "deny"}),
        ("POST", "/api/cases/{pending}/approval", {"decision": "deny", "note": "a\x00b"}),
    ],
    ids=["query", "path", "approval-path", "approval-note"],
)
def test_a_nul_character_in_a_string_input_is_a_client_error(
    decision_url: str, supervisor: dict[str, str], sample_cases: dict[str, str], method: str, url: str, body: Any
) -> None:
    """PostgreSQL text cannot hold U+0000; such input must be refused as input, not fail as a 500."""
    with httpx.Client(base_url=decision_url, headers=supervisor, timeout=10) as http:
        r = http.request(method, url.format(pending=sample_cases["awaiting_approval"]), json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-jwt", "Basic c2FtOnNlY3JldA=="],
    ids=["none", "empty-bearer", "garbage", "basic"],
)
def test_without_a_valid_token_every_api_operation_is_401(
    api_schema: Any, decision_url: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=decision_url, timeout=10) as http:
        for method, path in OPERATIONS:
            url = path.replace("{case_id}", "some-case")
            body = {"decision": "approve"} if method == "POST" else None
            r = http.request(method, url, json=body, headers=headers)
            assert r.status_code == 401, (method, path, authorization, r.status_code, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
