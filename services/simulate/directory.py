"""A seeded provider directory: a metro with plenty of alternates and two thin rural zips."""

from __future__ import annotations

import random
from typing import Any

TRADES = ("hvac", "plumbing", "appliance", "electrical")
METRO_ZIPS = ("78701", "78702", "78704", "78745", "78748", "78750", "78753", "78758")
RURAL_ZIPS = ("78613", "78620")
REGULAR_PER_TRADE = {"hvac": 8, "plumbing": 7, "appliance": 6, "electrical": 5}
MIN_ALTERNATES = 3  # active, accepting providers per metro (zip, trade): the original plus two

NAME_STEMS = (
    "Lone Star",
    "Hill Country",
    "Capitol",
    "Bluebonnet",
    "Riverside",
    "Cedar Park",
    "Travis",
    "Barton Creek",
    "Lakeway",
    "Round Rock",
    "Oak Hill",
    "Mueller",
    "Zilker",
    "Brushy Creek",
    "Pecan Street",
    "Balcones",
    "Onion Creek",
    "Shoal Creek",
    "Walnut Creek",
    "Manor Road",
)
TRADE_NAMES = {
    "hvac": "Heating & Air",
    "plumbing": "Plumbing",
    "appliance": "Appliance Repair",
    "electrical": "Electric",
}

# Hand-made rural markets so thin markets occur on every seed: (zip index, trade, in_network,
# accepts_second_opinions, active, rating, technicians). With these, grants go out of network
# (78613 hvac, 78620 appliance) or find nobody (78613 plumbing, 78620 electrical).
RURAL_MARKET = (
    (0, "hvac", True, True, True, 4.1, 2),
    (0, "hvac", False, True, True, 3.4, 1),
    (0, "hvac", True, False, True, 4.8, 2),
    (0, "plumbing", True, True, True, 4.0, 1),
    (1, "electrical", True, True, True, 4.3, 3),
    (1, "electrical", True, True, False, 4.9, 1),
    (1, "appliance", False, True, True, 3.9, 2),
    (1, "appliance", True, True, True, 3.6, 1),
)


def zip_code(base: str, run: str) -> str:
    # Dispatch keeps every provider it ever saw and matches zips exactly: a per-run zip keeps a
    # previous run's providers out of this run's choices, so intended outcomes stay exact.
    return f"{base}-{run}"


def _technicians(rng: random.Random, provider_id: str, count: int) -> list[dict[str, Any]]:
    return [{"technician_id": f"{provider_id}-T{n}", "senior": rng.random() < 0.3} for n in range(1, count + 1)]


def _provider(rng: random.Random, run: str, number: int, trade: str, **fields: Any) -> dict[str, Any]:
    provider_id = f"SP-{run}-{number:02d}"
    techs = fields.pop("technicians", rng.randint(1, 4))
    return {
        "event_id": f"evt-{run}-prov-{number:02d}",
        "occurred_at": "2026-11-02T06:00:00+00:00",
        "provider_id": provider_id,
        "company_name": f"{rng.choice(NAME_STEMS)} {TRADE_NAMES[trade]}",
        "trades": [trade],
        "in_network": True,
        "accepts_second_opinions": True,
        "rating": round(rng.uniform(3.0, 5.0), 1),
        "active": True,
        "technicians": _technicians(rng, provider_id, techs),
        **fields,
    }


def _regular(rng: random.Random, run: str) -> list[dict[str, Any]]:
    providers = []
    for trade, count in REGULAR_PER_TRADE.items():
        for _ in range(count):
            zips = sorted(rng.sample(METRO_ZIPS, rng.randint(2, 4)))
            fields = {"zips": [zip_code(z, run) for z in zips], "in_network": rng.random() < 0.88}
            providers.append(_provider(rng, run, len(providers) + 1, trade, **fields))
    for index in rng.sample(range(len(providers)), 4):
        flag = "active" if index % 2 else "accepts_second_opinions"
        providers[index][flag] = False
    return providers


def _serves(p: dict[str, Any], trade: str, zip_value: str) -> bool:
    return trade in p["trades"] and zip_value in p["zips"]


def _fill_metro(rng: random.Random, run: str, providers: list[dict[str, Any]]) -> None:
    """Top up every metro (zip, trade) to MIN_ALTERNATES willing providers."""
    for trade in TRADES:
        willing = [p for p in providers if trade in p["trades"]]
        willing = [p for p in willing if p["active"] and p["accepts_second_opinions"]]
        for base in METRO_ZIPS:
            zip_value = zip_code(base, run)
            missing = [p for p in willing if zip_value not in p["zips"]]
            shortfall = MIN_ALTERNATES - (len(willing) - len(missing))
            for p in rng.sample(missing, max(0, min(shortfall, len(missing)))):
                p["zips"] = sorted([*p["zips"], zip_value])


def _rural(rng: random.Random, run: str, first_number: int) -> list[dict[str, Any]]:
    providers = []
    for offset, (zip_index, trade, network, accepts, active, rating, techs) in enumerate(RURAL_MARKET):
        fields = {
            "zips": [zip_code(RURAL_ZIPS[zip_index], run)],
            "in_network": network,
            "accepts_second_opinions": accepts,
            "active": active,
            "rating": rating,
            "technicians": techs,
        }
        providers.append(_provider(rng, run, first_number + offset, trade, **fields))
    return providers


def build_directory(seed: int, run: str) -> tuple[dict[str, Any], ...]:
    """The `service_provider.updated` values of one run, same market for the same seed."""
    rng = random.Random(f"directory/{seed}")
    providers = _regular(rng, run)
    _fill_metro(rng, run, providers)
    return tuple(providers + _rural(rng, run, len(providers) + 1))
