"""Card numbers (PAN) in raw bytes: found before parsing, masked in place for the DLQ."""

from __future__ import annotations

import re

# 13-19 digits, first 2-6, optionally split by single spaces or dashes. Digit boundaries on
# both sides so a longer number is not read as a card number hiding inside it.
_CANDIDATE = re.compile(rb"(?<![0-9])[2-6](?:[ -]?[0-9]){12,18}(?![0-9])")


def _luhn_ok(digits: bytes) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = char - 48
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(run: bytes) -> bytes:
    return bytes(c for c in run if 48 <= c <= 57)


def _card_spans(raw: bytes) -> list[tuple[int, int]]:
    spans = []
    for match in _CANDIDATE.finditer(raw):
        digits = _digits(match.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            spans.append(match.span())
    return spans


def contains_card_number(raw: bytes) -> bool:
    return bool(_card_spans(raw))


def mask_card_numbers(raw: bytes) -> bytes:
    """Replace every digit of each card number but the last four with '*', keeping separators."""
    out = bytearray(raw)
    for start, end in _card_spans(raw):
        digit_positions = [i for i in range(start, end) if 48 <= out[i] <= 57]
        for i in digit_positions[:-4]:
            out[i] = ord("*")
    return bytes(out)
