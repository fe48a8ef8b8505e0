"""Capped exponential backoff with full jitter, for transient faults (database or broker down)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.2
    cap_s: float = 5.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(attempt, 16)))
        return random.uniform(ceiling / 2, ceiling)
