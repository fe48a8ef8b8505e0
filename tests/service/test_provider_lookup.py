"""Dispatch reads only the providers that may serve a grant's zip, and never misses one that does.

The zips are a JSON array in a text column; the lookup is a substring test on the encoded zip
(LIKE with its wildcards escaped), and the choice checks the zip exactly. Zips with LIKE
wildcards, quotes, backslashes and non-ASCII letters are where such a test would go wrong.
"""

from __future__ import annotations

import json
import random

import pytest

from schemas import v1
from services.dispatch.adapters.repository import DispatchRepository
from tests.support.bus import ServiceUnderTest
from tests.support.events import provider

TRICKY = ["10001", "1000", "100", "%", "_", "1_0", "1%0", 'q"uote', "back\\slash", "ünïcode", "Z 1", "Z,1", '", "']


@pytest.fixture
def dispatch_svc(bus) -> ServiceUnderTest:  # type: ignore[no-untyped-def]
    return next(s for s in bus.services if s.spec.name == "dispatch")


async def load(svc: ServiceUnderTest, providers: dict[str, list[str]], inactive: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    async with svc.sessions() as session, session.begin():
        repo = DispatchRepository(session)
        for pid, zips in providers.items():
            entry = provider(pid, zips[0], zips=zips, active=pid not in inactive)
            await repo.upsert_provider(v1.ServiceProviderUpdated.model_validate_json(json.dumps(entry)))


async def serving(svc: ServiceUnderTest, zip_: str) -> set[str]:
    async with svc.sessions() as session:
        return {p.provider_id for p in await DispatchRepository(session).providers_serving(zip_)}


async def test_the_lookup_finds_every_provider_of_a_zip_and_few_others(dispatch_svc: ServiceUnderTest) -> None:
    rng = random.Random(11)
    providers = {f"P{n:02d}": rng.sample(TRICKY, rng.randint(1, 4)) for n in range(40)}
    await load(dispatch_svc, providers)
    for zip_ in [*TRICKY, "9999", "0"]:
        exact = {pid for pid, zips in providers.items() if zip_ in zips}
        found = await serving(dispatch_svc, zip_)
        assert exact <= found, f"{zip_!r}: missed {exact - found}"
        # Let through only where the encoded zip is inside another zip's encoding (quotes in zips).
        assert all('"' in "".join(providers[pid]) for pid in found - exact), f"{zip_!r}: {found - exact}"


async def test_inactive_providers_are_not_read(dispatch_svc: ServiceUnderTest) -> None:
    await load(dispatch_svc, {"PA": ["10001"], "PB": ["10001"]}, inactive={"PB"})
    assert await serving(dispatch_svc, "10001") == {"PA"}
