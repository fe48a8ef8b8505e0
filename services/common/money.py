"""Money on the wire is a two-decimal string; inside, integer cents. Never float."""

from __future__ import annotations

from decimal import Decimal


def to_cents(amount: str) -> int:
    cents = Decimal(amount) * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount!r} has more than two decimal places")
    return int(cents)


def to_str(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"
