"""Deterministic choice of the provider and technician for a second-opinion job. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Technician:
    technician_id: str
    senior: bool


@dataclass(frozen=True)
class Provider:
    provider_id: str
    trades: tuple[str, ...]
    zips: tuple[str, ...]
    in_network: bool
    accepts_second_opinions: bool
    rating: float
    active: bool
    technicians: tuple[Technician, ...]


@dataclass(frozen=True)
class JobRequest:
    trade: str
    property_zip: str
    original_provider_id: str
    original_technician_id: str
    prefer_same_company_different_technician: bool


@dataclass(frozen=True)
class Assignment:
    provider_id: str
    technician_id: str | None
    network: str  # in_network | out_of_network


def _serves(p: Provider, job: JobRequest) -> bool:
    return p.active and p.accepts_second_opinions and job.trade in p.trades and job.property_zip in p.zips


def _other_technicians(p: Provider, original_technician_id: str) -> list[Technician]:
    return [t for t in p.technicians if t.technician_id != original_technician_id]


def _technician(p: Provider, original_technician_id: str) -> str | None:
    candidates = sorted(
        _other_technicians(p, original_technician_id),
        key=lambda t: (not t.senior, t.technician_id),
    )
    return candidates[0].technician_id if candidates else None


def _rank(p: Provider) -> tuple[bool, float, str]:
    # in-network first, then higher rating, then provider_id ascending by code point
    return (not p.in_network, -p.rating, p.provider_id)


def choose(providers: Iterable[Provider], job: JobRequest) -> Assignment | None:
    """The best eligible provider for the job, or None when nobody is eligible."""
    eligible = [p for p in providers if _serves(p, job)]
    if job.prefer_same_company_different_technician:
        original = next((p for p in eligible if p.provider_id == job.original_provider_id), None)
        if original is not None and _other_technicians(original, job.original_technician_id):
            return _assign(original, job)
    others = sorted((p for p in eligible if p.provider_id != job.original_provider_id), key=_rank)
    return _assign(others[0], job) if others else None


def _assign(p: Provider, job: JobRequest) -> Assignment:
    return Assignment(
        provider_id=p.provider_id,
        technician_id=_technician(p, job.original_technician_id),
        network="in_network" if p.in_network else "out_of_network",
    )
