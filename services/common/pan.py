"""Card numbers (PAN) in raw bytes: found before parsing, masked in place for the DLQ."""

from __future__ import annotations

import re

# 13-19 digits, first 2-6, optionally split by single spaces or dashes, standing on their own:
# no letter or digit right before or after, so a longer number, a hex id or a hash is not read
# as a card number hiding inside it.
_CANDIDATE = re.compile(rb"(?<![0-9A-Za-z])[2-6](?:[ -]?[0-9]){12,18}(?![0-9A-Za-z])")
# A UUID (8-4-4-4-12 hex digits) is never a card number, but its digit groups can read as one:
# about 1 random UUID in 800 held a Luhn-valid run, and upstream ids are often UUIDs.
_UUID = re.compile(rb"(?<![0-9A-Za-z])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Za-z])")
# The first rule of this module (any Luhn-valid run between non-digits, UUIDs included). Only
# ids.derive uses it: an id it once skipped must stay skipped, or a replay would mint new ids.
_LEGACY_CANDIDATE = re.compile(rb"(?<![0-9])[2-6](?:[ -]?[0-9]){12,18}(?![0-9])")


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


def _luhn_runs(raw: bytes, candidate: re.Pattern[bytes]) -> list[tuple[int, int]]:
    spans = []
    for match in candidate.finditer(raw):
        digits = _digits(match.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            spans.append(match.span())
    return spans


def _card_spans(raw: bytes) -> list[tuple[int, int]]:
    uuids = [m.span() for m in _UUID.finditer(raw)]
    return [(a, b) for a, b in _luhn_runs(raw, _CANDIDATE) if not any(s <= a and b <= e for s, e in uuids)]


def contains_card_number(raw: bytes) -> bool:
    return bool(_card_spans(raw))


def has_legacy_luhn_run(raw: bytes) -> bool:
    """The first rule (see _LEGACY_CANDIDATE); for ids.derive only."""
    return bool(_luhn_runs(raw, _LEGACY_CANDIDATE))


def mask_card_numbers(raw: bytes) -> bytes:
    """Replace every digit of each card number but the last four with '*', keeping separators."""
    out = bytearray(raw)
    for start, end in _card_spans(raw):
        digit_positions = [i for i in range(start, end) if 48 <= out[i] <= 57]
        for i in digit_positions[:-4]:
            out[i] = ord("*")
    return bytes(out)
