"""Deterministic provider and technician choice (DESIGN §3 'Provider choice')."""

from __future__ import annotations

from dataclasses import replace

from services.dispatch.domain.choice import JobRequest, Provider, Technician, choose


def provider(pid: str, **kw: object) -> Provider:
    base = Provider(
        provider_id=pid,
        trades=("hvac",),
        zips=("10001",),
        in_network=True,
        accepts_second_opinions=True,
        rating=4.0,
        active=True,
        technicians=(Technician(f"{pid}-T1", False),),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


JOB = JobRequest("hvac", "10001", "P1", "T1", False)
P1 = provider("P1", technicians=(Technician("T1", False), Technician("T2", True), Technician("T0", False)))


def test_best_rating_wins_and_the_original_provider_is_excluded():
    chosen = choose([P1, provider("P2", rating=4.8), provider("P3", rating=4.2)], JOB)
    assert (chosen.provider_id, chosen.technician_id, chosen.network) == ("P2", "P2-T1", "in_network")


def test_in_network_before_a_better_rated_out_of_network():
    chosen = choose([provider("P2", rating=3.0), provider("P3", rating=5.0, in_network=False)], JOB)
    assert chosen.provider_id == "P2"


def test_out_of_network_when_no_in_network_is_eligible():
    providers = [
        P1,
        provider("P2", accepts_second_opinions=False, rating=4.9),
        provider("P3", active=False, rating=5.0),
        provider("P4", in_network=False, rating=3.1),
    ]
    chosen = choose(providers, JOB)
    assert (chosen.provider_id, chosen.network) == ("P4", "out_of_network")


def test_ties_break_by_provider_id_code_point():
    assert choose([provider("Pb"), provider("PB"), provider("Pa")], JOB).provider_id == "PB"


def test_zip_is_matched_exactly_and_trade_must_be_served():
    providers = [provider("P2", zips=("10001-1234",)), provider("P3", trades=("plumbing",))]
    assert choose(providers, JOB) is None


def test_same_company_different_technician_prefers_senior_other_technician():
    job = replace(JOB, prefer_same_company_different_technician=True)
    chosen = choose([P1, provider("P2", rating=5.0)], job)
    assert (chosen.provider_id, chosen.technician_id) == ("P1", "T2")


def test_same_company_falls_back_when_it_has_no_other_technician():
    job = replace(JOB, prefer_same_company_different_technician=True)
    lonely = provider("P1", technicians=(Technician("T1", True),))
    assert choose([lonely, provider("P2")], job).provider_id == "P2"


def test_technician_ascending_among_non_seniors_and_omitted_when_none_listed():
    many = provider("P2", technicians=(Technician("b", False), Technician("a", False)))
    assert choose([many], JOB).technician_id == "a"
    assert choose([provider("P2", technicians=())], JOB).technician_id is None


def test_never_the_original_technician_even_at_another_company():
    moved = provider("P2", technicians=(Technician("T1", True), Technician("T9", False)))
    assert choose([moved], JOB).technician_id == "T9"
