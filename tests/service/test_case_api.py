"""The case API and console on the decision service's real handlers and database (in-memory bus).

The app is the decision service's own routers, without the Kafka lifespan: the bus delivers what
the API stages in the outbox, the same way the relay and the broker would.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import jwt
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select

from services.common.auth import AuthSettings, Tokens, issue
from services.common.settings import KafkaSettings
from services.decision.adapters.orm import approval_audit
from services.decision.entrypoints import api, console
from tests.service.test_flows import directory
from tests.support.events import report, request

SECRET = "test-secret-" + "x" * 32
AUTH = AuthSettings(jwt_secret=SecretStr(SECRET))
ORDER, JOB = "SO-C1", "SO-C1-J1"
CUSTOMER = {"source": "customer", "soft_no_delivered": True, "reason_detail": "second tech disagrees"}


def token(role: str, user: str = "alice", **kw) -> str:  # type: ignore[no-untyped-def]
    return issue(AUTH, user, role, ttl=timedelta(minutes=10), **kw)


def bearer(role: str, user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, user)}"}


@pytest.fixture
async def client(bus):  # type: ignore[no-untyped-def]
    decision = next(s for s in bus.services if s.spec.name == "decision")
    app = FastAPI()
    app.include_router(api.router)
    app.include_router(console.router)
    api.configure(app)
    console.configure(app)
    app.state.runtime = SimpleNamespace(
        sessions=decision.sessions, spec=decision.spec, relay=None, kafka=KafkaSettings()
    )
    app.state.tokens = Tokens(AUTH)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:
        http.bus, http.decision = bus, decision  # type: ignore[attr-defined]
        yield http


async def pending_case(bus) -> str:  # type: ignore[no-untyped-def]
    await directory(bus)
    await bus.publish("service_report.received", ORDER, report(ORDER, JOB))
    await bus.publish("second_opinion.requested", ORDER, request(ORDER, JOB, "R-C1", **CUSTOMER))
    await bus.settle()
    assert bus.events("second_opinion.granted") == [] and bus.events("second_opinion.denied") == []
    return api_case_id("R-C1")


def api_case_id(request_event_id: str) -> str:
    from services.decision.app.mapping import case_id_for

    return case_id_for(request_event_id)


class TestWhoMayDoWhat:
    async def test_no_token_is_401(self, client):
        for method, path in (("GET", "/api/cases"), ("GET", "/api/approvals/queue"), ("POST", "/api/cases/x/approval")):
            r = await client.request(method, path, json={"decision": "approve"})
            assert r.status_code == 401, (path, r.text)
            assert r.json()["detail"] == "missing bearer token"

    @pytest.mark.parametrize(
        "bad",
        [
            "not-a-jwt",
            jwt.encode({"sub": "a", "role": "supervisor"}, "another-key-" + "y" * 32, algorithm="HS256"),
            jwt.encode({"sub": "a", "role": "supervisor"}, None, algorithm="none"),
        ],
        ids=["garbage", "wrong-key", "alg-none"],
    )
    async def test_bad_token_is_401(self, client, bad):
        r = await client.get("/api/cases", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.json()["detail"].startswith("invalid token")

    async def test_expired_token_is_401(self, client):
        old = issue(AUTH, "alice", "supervisor", ttl=timedelta(minutes=1), now=datetime.now(UTC) - timedelta(hours=1))
        r = await client.get("/api/cases", headers={"Authorization": f"Bearer {old}"})
        assert (r.status_code, r.json()["detail"]) == (401, "token expired")

    async def test_an_agent_cannot_approve_and_the_attempt_is_audited(self, client):
        case_id = await pending_case(client.bus)
        r = await client.post(f"/api/cases/{case_id}/approval", json={"decision": "approve"}, headers=bearer("agent"))
        assert r.status_code == 403 and "supervisor or manager" in r.json()["detail"]
        await client.bus.settle()
        assert client.bus.events("second_opinion.approval_recorded") == []
        detail = (await client.get(f"/api/cases/{case_id}", headers=bearer("agent"))).json()
        assert detail["status"] == "awaiting_approval"
        assert [(a["user_id"], a["role"], a["outcome"]) for a in detail["approvals_audit"]] == [
            ("alice", "agent", "forbidden")
        ]

    async def test_roles_are_compared_exactly(self, client):
        case_id = await pending_case(client.bus)
        forged = jwt.encode(
            {"sub": "bob", "role": "Supervisor", "iss": AUTH.issuer, "aud": AUTH.audience,
             "iat": int(datetime.now(UTC).timestamp()), "exp": int(datetime.now(UTC).timestamp()) + 60},
            SECRET, algorithm="HS256",
        )  # fmt: skip
        r = await client.post(
            f"/api/cases/{case_id}/approval",
            json={"decision": "approve"},
            headers={"Authorization": f"Bearer {forged}"},
        )
        assert r.status_code == 403


class TestApproval:
    async def test_supervisor_approval_grants_dispatches_and_pays(self, client):
        bus = client.bus
        case_id = await pending_case(bus)
        [queued] = (await client.get("/api/approvals/queue", headers=bearer("agent"))).json()
        assert (queued["case_id"], queued["reason_code"], queued["soft_no_delivered"]) == (
            case_id,
            "conflicting_reports",
            True,
        )
        assert queued["diagnosis"] == {
            "failure_found": True,
            "component": "compressor",
            "cause": "pre_existing",
            "covered": False,
        }
        r = await client.post(
            f"/api/cases/{case_id}/approval",
            json={"decision": "approve", "note": "reports conflict"},
            headers=bearer("supervisor", "sam"),
        )
        assert r.status_code == 202 and r.json()["status"] == "recorded"
        await bus.settle()
        [recorded] = bus.events("second_opinion.approval_recorded")
        assert recorded["approver"] == {"id": "sam", "role": "supervisor"} and recorded["service_job_id"] == JOB
        [grant] = bus.events("second_opinion.granted")
        assert (grant["case_id"], grant["decided_by"]) == (case_id, {"id": "sam", "role": "supervisor"})
        assert len(bus.events("service_job.created")) == 1 and len(bus.events("payout.issued")) == 2
        assert (await client.get("/api/approvals/queue", headers=bearer("agent"))).json() == []

        detail = (await client.get(f"/api/cases/{case_id}", headers=bearer("agent"))).json()
        stamps = [
            detail["created_at"],
            *(e["occurred_at"] for e in detail["timeline"]),
            detail["approvals_audit"][0]["at"],
        ]
        assert all(datetime.fromisoformat(t).utcoffset() is not None for t in stamps), stamps
        assert detail["status"] == "dispatched" and detail["decided_by"] == {"id": "sam", "role": "supervisor"}
        assert detail["policy_version"] and detail["rules"]
        steps = [(e["direction"], e["topic"]) for e in detail["timeline"]]
        assert steps == [
            ("in", "second_opinion.requested"),
            ("in", "service_report.received"),
            ("in", "second_opinion.approval_recorded"),
            ("out", "second_opinion.granted"),
            ("in", "service_job.created"),
        ]
        granted_entry = detail["timeline"][3]["summary"]
        assert granted_entry["rules"] == detail["rules"] and granted_entry["policy_version"] == detail["policy_version"]
        assert [(a["user_id"], a["outcome"], a["note"]) for a in detail["approvals_audit"]] == [
            ("sam", "recorded", "reports conflict")
        ]

    async def test_manager_denial_denies_the_case(self, client):
        case_id = await pending_case(client.bus)
        r = await client.post(f"/api/cases/{case_id}/approval", json={"decision": "deny"}, headers=bearer("manager"))
        assert r.status_code == 202
        await client.bus.settle()
        [denied] = client.bus.events("second_opinion.denied")
        assert (denied["case_id"], denied["denial_code"]) == (case_id, "approval_denied")
        detail = (await client.get(f"/api/cases/{case_id}", headers=bearer("agent"))).json()
        assert detail["decided_by"] == {"id": "alice", "role": "manager"}

    async def test_a_double_submit_sends_one_event(self, client):
        case_id = await pending_case(client.bus)
        first = await client.post(
            f"/api/cases/{case_id}/approval", json={"decision": "approve"}, headers=bearer("supervisor")
        )
        again = await client.post(
            f"/api/cases/{case_id}/approval", json={"decision": "approve"}, headers=bearer("supervisor")
        )
        assert (first.json()["status"], again.json()["status"]) == ("recorded", "duplicate")
        audit = (await client.get(f"/api/cases/{case_id}", headers=bearer("agent"))).json()["approvals_audit"]
        assert [a["outcome"] for a in audit] == ["recorded", "duplicate"]
        assert first.json()["event_id"] == again.json()["event_id"]
        await client.bus.settle()
        assert len(client.bus.events("second_opinion.approval_recorded")) == 1

    async def test_a_late_second_approver_decides_nothing_later(self, client):
        # Approve and deny race on one case: the first applies; the other is kept on that case and
        # never decides the job's next request.
        bus = client.bus
        case_id = await pending_case(bus)
        approve = await client.post(
            f"/api/cases/{case_id}/approval", json={"decision": "approve"}, headers=bearer("supervisor", "sam")
        )
        deny = await client.post(
            f"/api/cases/{case_id}/approval", json={"decision": "deny"}, headers=bearer("manager", "mia")
        )
        assert (approve.status_code, deny.status_code) == (202, 202)
        await bus.settle()
        [grant] = bus.events("second_opinion.granted")
        assert grant["decided_by"]["id"] == "sam"
        detail = (await client.get(f"/api/cases/{case_id}", headers=bearer("agent"))).json()
        approvals_seen = [
            e["summary"]["approver"]["id"]
            for e in detail["timeline"]
            if e["topic"] == "second_opinion.approval_recorded"
        ]
        assert approvals_seen == ["sam", "mia"]
        # The case concludes; a new customer request on the same job waits for its own approval.
        await bus.publish(
            "service_report.received", ORDER, report(ORDER, bus.events("service_job.created")[0]["job_id"])
        )
        await bus.settle()
        await bus.publish("second_opinion.requested", ORDER, request(ORDER, JOB, "R-C1-again", **CUSTOMER))
        await bus.settle()
        again = (await client.get(f"/api/cases/{api_case_id('R-C1-again')}", headers=bearer("agent"))).json()
        assert again["status"] == "awaiting_approval", again
        assert len(bus.events("second_opinion.granted")) == 1 and bus.events("second_opinion.denied") == []

    async def test_a_decided_case_is_409_and_an_unknown_one_404(self, client):
        case_id = await pending_case(client.bus)
        await client.post(f"/api/cases/{case_id}/approval", json={"decision": "approve"}, headers=bearer("supervisor"))
        await client.bus.settle()
        r = await client.post(
            f"/api/cases/{case_id}/approval", json={"decision": "deny"}, headers=bearer("manager", "m")
        )
        assert r.status_code == 409 and "not awaiting_approval" in r.json()["detail"]
        r = await client.post("/api/cases/nope/approval", json={"decision": "deny"}, headers=bearer("manager"))
        assert (r.status_code, r.json()["detail"]) == (404, "no case nope")

    async def test_a_card_number_in_the_note_is_refused_and_stored_nowhere(self, client):
        case_id = await pending_case(client.bus)
        pan = "4111 1111 1111 1111"
        r = await client.post(
            f"/api/cases/{case_id}/approval",
            json={"decision": "approve", "note": f"paid with {pan}"},
            headers=bearer("supervisor"),
        )
        assert r.status_code == 422 and pan not in r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "note"] and "card number" in error["msg"]
        async with client.decision.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(approval_audit)) == 0
        await client.bus.settle()
        assert client.bus.events("second_opinion.approval_recorded") == []

    async def test_unencodable_or_oversized_input_is_a_client_error_that_echoes_nothing(self, client):
        case_id = await pending_case(client.bus)
        url, h = f"/api/cases/{case_id}/approval", bearer("supervisor")
        surrogate = b'{"decision": "approve", "note": "\\ud83d"}'
        r = await client.post(url, content=surrogate, headers={**h, "content-type": "application/json"})
        assert r.status_code == 422 and "ud83d" not in r.text
        r = await client.post(url, json={"decision": "4111111111111111"}, headers=h)
        assert r.status_code == 422 and "4111" not in r.text
        r = await client.post(url, json={"decision": "approve", "note": "x" * 100_000}, headers=h)
        assert r.status_code == 413 and len(r.content) < 200

    @pytest.mark.parametrize(
        "body",
        [{}, {"decision": "maybe"}, {"decision": "approve", "extra": 1}, {"decision": "deny", "note": "x" * 2001}],
    )
    async def test_invalid_bodies_are_422_with_a_reason(self, client, body):
        r = await client.post("/api/cases/any/approval", json=body, headers=bearer("supervisor"))
        assert r.status_code == 422 and r.json()["detail"][0]["msg"]


class TestCaseList:
    async def test_filters(self, client):
        bus = client.bus
        case_id = await pending_case(bus)
        await bus.publish("service_report.received", "SO-C2", report("SO-C2", "SO-C2-J1"))
        await bus.publish(
            "second_opinion.requested", "SO-C2", request("SO-C2", "SO-C2-J1", "R-C2", reason="high_pricing")
        )
        await bus.settle()
        h = bearer("agent")

        async def ids(**params) -> list[str]:  # type: ignore[no-untyped-def]
            body = (await client.get("/api/cases", params=params, headers=h)).json()
            assert body["total"] == len(body["cases"])  # every page here holds all matches
            return [c["case_id"] for c in body["cases"]]

        denied = api_case_id("R-C2")
        assert await ids() == [denied, case_id]  # newest first
        assert await ids(status="awaiting_approval") == [case_id]
        assert await ids(source="customer") == [case_id]
        assert await ids(reason_code="high_pricing") == [denied]
        assert await ids(service_order_id="SO-C2") == [denied]
        assert await ids(max_age_s=3600) == [denied, case_id]
        assert await ids(min_age_s=3600) == []
        page = (await client.get("/api/cases", params={"limit": 1, "offset": 1}, headers=h)).json()
        assert (page["total"], [c["case_id"] for c in page["cases"]]) == (2, [case_id])
        r = await client.get("/api/cases", params={"status": "bogus"}, headers=h)
        assert r.status_code == 422
        r = await client.get("/api/cases", params={"stauts": "denied"}, headers=h)  # a typo is not "no filter"
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "stauts"]


class TestConsole:
    async def login(self, client, role: str, user: str = "sam") -> None:  # type: ignore[no-untyped-def]
        r = await client.post("/console/login", data={"token": token(role, user)})
        assert r.status_code == 303 and r.headers["location"] == "/console/queue"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")

    async def test_pages_need_a_session(self, client):
        for path in ("/console/queue", "/console/ops", "/console/cases/x"):
            r = await client.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
        r = await client.post("/console/login", data={"token": "garbage"})
        assert r.status_code == 401 and "invalid token" in r.text

    async def test_supervisor_approves_in_the_queue_page(self, client):
        case_id = await pending_case(client.bus)
        await self.login(client, "supervisor")
        page = (await client.get("/console/queue")).text
        assert case_id in page and "conflicting_reports" in page and "compressor" in page and "delivered" in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        r = await client.post(
            f"/console/cases/{case_id}/approval", data={"decision": "approve", "note": "ok", "csrf": csrf}
        )
        assert r.status_code == 303 and "recorded" in r.headers["location"]
        await client.bus.settle()
        assert len(client.bus.events("second_opinion.granted")) == 1
        case_page = (await client.get(f"/console/cases/{case_id}")).text
        assert "dispatched" in case_page and "second_opinion.granted" in case_page

    async def test_a_form_without_the_session_csrf_token_is_refused(self, client):
        case_id = await pending_case(client.bus)
        await self.login(client, "supervisor")
        r = await client.post(f"/console/cases/{case_id}/approval", data={"decision": "approve", "csrf": "0" * 64})
        assert r.status_code == 403
        await client.bus.settle()
        assert client.bus.events("second_opinion.approval_recorded") == []

    async def test_a_card_number_in_a_form_note_is_refused_on_the_page(self, client):
        case_id = await pending_case(client.bus)
        await self.login(client, "supervisor")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', (await client.get("/console/queue")).text).group(1)
        data = {"decision": "approve", "csrf": csrf, "note": "card 4111-1111-1111-1111"}
        r = await client.post(f"/console/cases/{case_id}/approval", data=data)
        assert r.status_code == 422 and "card number" in r.text and "4111-1111-1111-1111" not in r.text

    async def test_an_agent_sees_disabled_buttons_and_is_refused(self, client):
        case_id = await pending_case(client.bus)
        await self.login(client, "agent", "ann")
        page = (await client.get("/console/queue")).text
        assert "only a supervisor or manager may approve" in page
        assert re.search(r'value="approve"[^>]*disabled', page)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        r = await client.post(f"/console/cases/{case_id}/approval", data={"decision": "approve", "csrf": csrf})
        assert r.status_code == 403 and "supervisor or manager" in r.text
