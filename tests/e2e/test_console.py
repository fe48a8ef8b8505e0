"""The supervisor console in headless Chromium against the running stack (PostgreSQL, real broker).

Events go in through Kafka as the upstream systems would send them; the browser logs in, reads
the queue and decides; the outcome is checked on the case page and on the topics themselves,
read from the end offsets noted before anything was published.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import jwt
import pytest
from aiokafka import AIOKafkaConsumer
from playwright.async_api import Locator, Page, expect
from pydantic import SecretStr

from schemas import v1
from services.common.auth import AuthSettings, issue
from services.common.kafka_offsets import partitions
from tests.e2e.orders import REASON_DETAIL, SETTLE_S, Order, poll
from tests.support.kafka_client import Tap
from tests.support.stack import TEST_AUTH_SECRET

if TYPE_CHECKING:
    from tests.support.stack import TestStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WATCHED = [
    v1.APPROVAL_RECORDED,
    v1.SECOND_OPINION_GRANTED,
    v1.SECOND_OPINION_DENIED,
    v1.SERVICE_JOB_CREATED,
    v1.PAYOUT_ISSUED,
]


async def log_in(page: Page, token: str) -> None:
    await page.goto("/console/login")
    await page.get_by_label("token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/console/queue"))


async def queue_row(page: Page, case_id: str) -> Locator:
    """The queue row of the case, reloading the page until the decision service has queued it."""
    row = page.locator(f'tr[data-case-id="{case_id}"]')

    async def queued() -> bool:
        await page.goto("/console/queue")
        return await row.count() == 1

    assert await poll(queued), f"case {case_id} not in the approval queue within {SETTLE_S}s"
    return row


async def caught_up(tap: Tap, topic: str) -> bool:
    """The tap has read everything the topic held when this was called."""
    ends_reader = AIOKafkaConsumer(bootstrap_servers=tap.bootstrap)
    await ends_reader.start()
    try:
        parts = await partitions(tap.bootstrap, topic)
        ends = await ends_reader.end_offsets(parts)
    finally:
        await ends_reader.stop()

    async def read_all() -> bool:
        return all([await tap.consumer.position(tp) >= end for tp, end in ends.items()])

    return await poll(read_all, timeout=10)


async def test_a_supervisor_approves_a_customer_request_and_it_is_dispatched_and_paid(
    e2e_stack: TestStack, new_page, shot
) -> None:  # type: ignore[no-untyped-def]
    o = Order("approve")
    async with Tap(e2e_stack.bootstrap_servers, WATCHED) as tap:
        await o.publish_pending_customer_request(tap, e2e_stack)
        page = await new_page()
        await log_in(page, e2e_stack.token("sam", "supervisor"))
        await expect(page.get_by_test_id("who")).to_contain_text("sam (supervisor)")

        row = await queue_row(page, o.case_id)
        await expect(row).to_contain_text(o.order)
        await expect(row).to_contain_text("conflicting_reports")
        await expect(row).to_contain_text(REASON_DETAIL)
        await expect(row.locator("td").nth(3)).to_have_text("delivered")  # the soft no
        diagnosis = row.locator("td").nth(4)
        for shown in ("failure found: yes", "component: compressor", "cause: pre_existing", "covered: no"):
            await expect(diagnosis).to_contain_text(shown)
        await row.get_by_placeholder("note").fill("reports conflict; customer asked")
        await shot(page, "queue")

        await row.get_by_role("button", name="Approve").click()
        await expect(page).to_have_url(re.compile(r"/console/queue\?flash="))
        await expect(page.get_by_role("status")).to_contain_text(f"approve of case {o.case_id} recorded")

        status = page.get_by_test_id("status")

        async def dispatched() -> bool:
            await page.goto(f"/console/cases/{o.case_id}")
            return (await status.inner_text()).strip() == "dispatched"

        assert await poll(dispatched), f"case page shows {await status.inner_text()!r}, not dispatched"
        timeline = page.locator("#timeline")
        for topic in (
            v1.SECOND_OPINION_REQUESTED,
            v1.SERVICE_REPORT_RECEIVED,
            v1.APPROVAL_RECORDED,
            v1.SECOND_OPINION_GRANTED,
            v1.SERVICE_JOB_CREATED,
        ):
            await expect(timeline.locator(f'tr[data-topic="{topic}"]')).to_have_count(1)
        await expect(timeline.locator(f'tr[data-topic="{v1.SECOND_OPINION_GRANTED}"]')).to_contain_text('"sam"')
        await expect(page.locator("#audit")).to_contain_text("reports conflict; customer asked")
        await shot(page)
        await page.goto("/console/queue")
        await expect(page.locator(f'tr[data-case-id="{o.case_id}"]')).to_have_count(0)

        def all_out() -> bool:
            return bool(
                tap.values(v1.SECOND_OPINION_GRANTED, o.mine)
                and tap.values(v1.SERVICE_JOB_CREATED, o.mine)
                and len(tap.distinct(v1.PAYOUT_ISSUED, o.mine)) >= 2
            )

        assert await tap.wait_for(all_out, timeout=SETTLE_S), "grant, job and payouts not all on Kafka"
        [recorded] = tap.distinct(v1.APPROVAL_RECORDED, o.mine).values()
        assert recorded["approver"] == {"id": "sam", "role": "supervisor"} and recorded["service_job_id"] == o.job
        assert recorded["note"] == "reports conflict; customer asked"
        [grant] = tap.distinct(v1.SECOND_OPINION_GRANTED, o.mine).values()
        assert grant["case_id"] == o.case_id and grant["decided_by"] == {"id": "sam", "role": "supervisor"}
        assert grant["source"] == "customer" and grant["customer_disclosures"]
        [job] = tap.distinct(v1.SERVICE_JOB_CREATED, o.mine).values()
        assert (job["case_id"], job["provider_id"]) == (o.case_id, o.second_provider)
        payouts = tap.distinct(v1.PAYOUT_ISSUED, o.mine).values()
        assert sorted((p["fee_type"], p["amount"]) for p in payouts) == [
            ("original_diagnosis", "45.00"),
            ("original_service_call", "89.00"),
        ]
        assert {p["case_id"] for p in payouts} == {o.case_id}
        assert tap.values(v1.SECOND_OPINION_DENIED, o.mine) == []


async def test_an_agent_cannot_approve_from_the_page(e2e_stack: TestStack, new_page, shot) -> None:  # type: ignore[no-untyped-def]
    o, sentinel = Order("agent"), Order("sentinel")
    async with Tap(e2e_stack.bootstrap_servers, WATCHED) as tap:
        await o.publish_pending_customer_request(tap, e2e_stack)
        page = await new_page()
        await log_in(page, e2e_stack.token("ann", "agent"))
        row = await queue_row(page, o.case_id)
        await expect(page.get_by_role("note")).to_contain_text("only a supervisor or manager may approve or deny")
        approve = row.get_by_role("button", name="Approve")
        await expect(approve).to_be_disabled()
        await expect(row.get_by_role("button", name="Deny")).to_be_disabled()
        await expect(row.get_by_placeholder("note")).to_be_disabled()
        await shot(page, "queue")

        # The page's own form, enabled by hand and submitted: the server says no.
        await approve.evaluate("button => button.removeAttribute('disabled')")
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await approve.click()
        assert (await answer.value).status == 403
        await expect(page.get_by_test_id("error")).to_contain_text("supervisor or manager")
        await shot(page)

        # The same from the page's context with its session cookie and the form's CSRF token.
        await page.goto("/console/queue")
        csrf = await page.locator(f'tr[data-case-id="{o.case_id}"] input[name="csrf"]').input_value()
        answer2 = await page.request.post(
            f"/console/cases/{o.case_id}/approval", form={"decision": "deny", "csrf": csrf, "note": "no"}
        )
        assert answer2.status == 403, await answer2.text()

        # Settled: a request published after the refusals has been decided and its grant read,
        # and the tap has read every approval record there is. None is for this order.
        await sentinel.publish_denied_request(tap)
        assert await tap.wait_for(
            lambda: bool(tap.values(v1.SECOND_OPINION_DENIED, sentinel.mine)), timeout=SETTLE_S
        ), "the sentinel request was not decided"
        assert await caught_up(tap, v1.APPROVAL_RECORDED)
        assert tap.values(v1.APPROVAL_RECORDED, o.mine) == []
        assert tap.values(v1.SECOND_OPINION_GRANTED, o.mine) == tap.values(v1.SECOND_OPINION_DENIED, o.mine) == []

        await page.goto(f"/console/cases/{o.case_id}")
        await expect(page.get_by_test_id("status")).to_have_text("awaiting_approval")
        audit = page.locator("#audit tr:has(td)")
        await expect(audit).to_have_count(2)
        for i in range(2):
            await expect(audit.nth(i)).to_contain_text("forbidden")


async def test_pages_without_a_session_go_to_the_login_and_a_bad_token_is_refused(
    e2e_stack: TestStack, new_page, shot
) -> None:  # type: ignore[no-untyped-def]
    page = await new_page()
    await page.goto("/console/queue")
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)  # a first visit is no error
    await shot(page, "redirected")

    wrong_key = jwt.encode({"sub": "mallory", "role": "supervisor"}, "another-key-" + "y" * 32, algorithm="HS256")
    for bad in ("not-a-jwt", wrong_key):
        await page.get_by_label("token").fill(bad)
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.get_by_role("button", name="Log in").click()
        assert (await answer.value).status == 401
        await expect(page).to_have_url(re.compile(r"/console/login$"))
        await expect(page.get_by_role("alert")).to_contain_text("invalid token")
    assert await page.context.cookies() == []
    await shot(page)

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    expired = issue(
        AuthSettings(jwt_secret=SecretStr(TEST_AUTH_SECRET)),
        "sam",
        "supervisor",
        ttl=timedelta(minutes=5),
        now=an_hour_ago,
    )
    await page.get_by_label("token").fill(expired)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("token expired")


async def test_the_ops_page_shows_lag_and_dead_letters(e2e_stack: TestStack, new_page, shot) -> None:  # type: ignore[no-untyped-def]
    page = await new_page()
    await log_in(page, e2e_stack.token("olga", "supervisor"))
    await page.get_by_role("link", name="Operations").click()
    await expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)  # the broker was reachable
    lag, dlq = page.locator("#lag tr:has(td)"), page.locator("#dlq tr:has(td)")
    await expect(lag.first).to_be_visible()
    await expect(dlq.first).to_be_visible()
    for svc in ("decision", "dispatch", "payout"):
        await expect(lag.filter(has_text=f"{e2e_stack.group_prefix}-{svc}").first).to_be_visible()
    await expect(dlq.filter(has_text=f"{v1.SECOND_OPINION_REQUESTED}.dlq")).to_have_count(1)
    await expect(page.locator("#recent")).to_be_visible()
    await shot(page)
