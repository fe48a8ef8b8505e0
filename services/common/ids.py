"""Deterministic identifiers: a replay or re-run regenerates the same ids, so consumers dedupe."""

from __future__ import annotations

import uuid

NAMESPACE = uuid.UUID("6f1c1c7e-5b0a-4d8e-9a55-2f3c4e5d6a7b")


def derive(*parts: str) -> str:
    """A UUIDv5 of the parts joined with '|'; the same parts always give the same id."""
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))
