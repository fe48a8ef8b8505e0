"""Deterministic identifiers: a replay or re-run regenerates the same ids, so consumers dedupe."""

from __future__ import annotations

import itertools
import uuid

from services.common.pan import has_legacy_luhn_run

NAMESPACE = uuid.UUID("6f1c1c7e-5b0a-4d8e-9a55-2f3c4e5d6a7b")


def derive(*parts: str) -> str:
    """A UUIDv5 of the parts joined with '|'; the same parts always give the same id.

    A UUID whose first groups happen to be all digits can read as a Luhn-valid card number
    (e.g. 42613507-1234-5...), and every consumer dead-letters records carrying one. Such a
    candidate is skipped for the next one in a fixed sequence, so the id stays deterministic.
    The skip rule is frozen (pan.has_legacy_luhn_run): the card detector no longer reads digits
    inside a UUID, but ids issued under the first rule must come out the same on a replay.
    """
    name = "|".join(parts)
    for attempt in itertools.count():
        candidate = str(uuid.uuid5(NAMESPACE, name if attempt == 0 else f"{name}#{attempt}"))
        if not has_legacy_luhn_run(candidate.encode()):
            return candidate
    raise AssertionError("unreachable")
