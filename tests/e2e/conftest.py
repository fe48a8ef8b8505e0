"""End-to-end fixtures: one stack on PostgreSQL for this folder, and Debian's headless Chromium.

The stack is package-scoped (started once for every module here, stopped before the next
folder's tests start theirs on the same ports) and labelled apart from the `stack` fixture's,
so its databases and consumer groups are its own. Its groups start at the topics' current end:
the broker may be shared and hold other runs' history, which these tests neither need nor
should wait for (each test publishes its own directory entries, reports and requests).

The browser is the system's Chromium, driven by Playwright through `executable_path`
(Playwright's own browser builds are never downloaded); `CHROMIUM_PATH` overrides the path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from services.common.settings import SERVICES, KafkaSettings, StackSettings, group_id
from services.operator_tools.replay import input_topics
from services.ops import kafka, postgres
from tests.faults.probes import skip_history
from tests.support.stack import ROOT, STACK_ID, Infra, running_stack

if TYPE_CHECKING:
    from tests.support.stack import TestStack

SCREENSHOTS = ROOT / ".run" / "screenshots"


def chromium_path() -> str:
    given = os.environ.get("CHROMIUM_PATH")
    found = given or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        pytest.fail(
            f"no Chromium at {given or 'chromium on PATH'}: install Debian's `chromium` package "
            "(make install does) or set CHROMIUM_PATH",
            pytrace=False,
        )
    return found


def _on_postgres(infra: Infra) -> Infra:
    """The e2e stack always runs on PostgreSQL, even when the session's stacks do not."""
    if infra.postgres_url:
        return infra
    if os.environ.get("TEST_INFRA", "local") != "local":
        pytest.skip("end-to-end tests need PostgreSQL: set TEST_POSTGRES_URL")
    settings = StackSettings()
    postgres.ensure_running(settings)
    return Infra(infra.bootstrap_servers, settings.postgres_url)


LABEL_SUFFIX = "e2e"
# How running_stack names the consumer groups of a postgres stack with this suffix (checked below).
GROUP_PREFIX = f"second-opinion-test-pg_{LABEL_SUFFIX}" + (f"_{STACK_ID}" if STACK_ID else "")


async def _start_groups_at_end(bootstrap: str, group_prefix: str) -> None:
    """Commits every service group's offsets at the current end of each of its input topics."""
    ks = KafkaSettings(bootstrap_servers=bootstrap, group_prefix=group_prefix)
    for svc in SERVICES:
        await skip_history(bootstrap, group_id(svc, ks), input_topics(svc))


@pytest.fixture(scope="package")
def e2e_stack(infra: Infra, work_dir: Path) -> Iterator[TestStack]:
    kafka.create_topics(KafkaSettings(bootstrap_servers=infra.bootstrap_servers))
    asyncio.run(_start_groups_at_end(infra.bootstrap_servers, GROUP_PREFIX))
    with running_stack(_on_postgres(infra), "postgres", work_dir, label_suffix=LABEL_SUFFIX) as running:
        assert running.group_prefix == GROUP_PREFIX, "running_stack names its groups differently now"
        yield running


@pytest.fixture(scope="package")
def decision_url(e2e_stack: TestStack) -> str:
    return e2e_stack.services["decision"].url


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def new_page(browser: Browser, decision_url: str) -> AsyncIterator[Callable[[], Awaitable[Page]]]:
    """Pages in their own browser contexts (their own cookies), closed after the test."""
    contexts: list[BrowserContext] = []

    async def make() -> Page:
        context = await browser.new_context(base_url=decision_url, viewport={"width": 1400, "height": 900})
        context.set_default_timeout(10_000)
        contexts.append(context)
        return await context.new_page()

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[..., Awaitable[Path]]:
    """Saves a full-page screenshot as .run/screenshots/<test>[-<step>].png."""

    async def take(page: Page, step: str = "") -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name}{'-' + step if step else ''}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    return take
