"""The provider lookup of tests/service/test_provider_lookup.py, on PostgreSQL (its LIKE and escaping)."""

from __future__ import annotations

import asyncio

import pytest

from services.migrate import upgrade
from services.serve import load_spec
from tests.service.test_provider_lookup import (  # noqa: F401  (collected here with the fixture below)
    test_inactive_providers_are_not_read,
    test_the_lookup_finds_every_provider_of_a_zip_and_few_others,
)
from tests.support.bus import ServiceUnderTest
from tests.support.stack import fresh_postgres_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def dispatch_svc(infra):  # type: ignore[no-untyped-def]
    if infra.postgres_url is None:
        pytest.skip("needs PostgreSQL (TEST_DATABASES includes postgres)")
    url = fresh_postgres_url(infra, "provider_lookup")
    await asyncio.to_thread(upgrade, "dispatch", url)
    svc = ServiceUnderTest(load_spec("dispatch"), url)
    await svc.start()
    yield svc
    await svc.stop()
