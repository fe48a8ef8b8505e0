"""Pure scenario rules (DESIGN.md §4): substitution, matching, scoping, counting, evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from services.common import dlq_headers
from services.scenario import spec

# Substitution lives with the file format (spec.py); re-exported so callers need one module.
Expectation = spec.Expectation
ScenarioError = spec.ScenarioError
new_run_token = spec.new_run_token
new_run_tokens = spec.new_run_tokens
payload = spec.payload
resolve_expectation = spec.resolve_expectation
resolve_step = spec.resolve_step
substitute = spec.substitute
substitute_text = spec.substitute_text

DLQ_SUFFIX = ".dlq"
NOT_JSON: Any = type("NotJson", (), {"__repr__": lambda self: "NOT_JSON"})()


# ---------------------------------------------------------------- records


@dataclass
class Record:
    """One consumed Kafka record, as plain data."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None

    @cached_property
    def json(self) -> Any:
        """The parsed value, or NOT_JSON when it is absent, not UTF-8 or not JSON."""
        if self.value is None:
            return NOT_JSON
        try:
            return json.loads(self.value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # nested past the parser's depth
            return NOT_JSON

    @cached_property
    def key_text(self) -> str | None:
        try:
            return None if self.key is None else self.key.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @cached_property
    def header_map(self) -> dict[str, str]:
        return {k: (v or b"").decode("utf-8", errors="replace") for k, v in self.headers}

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def is_dlq(topic: str) -> bool:
    return topic.endswith(DLQ_SUFFIX)


# ---------------------------------------------------------------- matching, scoping, counting


def values_equal(expected: Any, actual: Any) -> bool:
    """JSON equality: `true` is not `1`, but `4` equals `4.0`; lists and objects exactly."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(values_equal, expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        same_keys = expected.keys() == actual.keys()
        return same_keys and all(values_equal(v, actual[k]) for k, v in expected.items())
    return type(expected) is type(actual) and expected == actual


def subset_match(pattern: Mapping[str, Any], actual: Any) -> bool:
    """Objects match as subsets (recursively); everything else, lists included, exactly."""
    if not isinstance(actual, dict):
        return False
    for key, want in pattern.items():
        if key not in actual:
            return False
        got = actual[key]
        ok = subset_match(want, got) if isinstance(want, dict) else values_equal(want, got)
        if not ok:
            return False
    return True


def record_matches(record: Record, match: Mapping[str, Any]) -> bool:
    # An empty match is "anything on the topic", bad bytes included (DLQ records often are).
    return not match or subset_match(match, record.json)


def in_scope(record: Record, keys: Iterable[str]) -> bool:
    """The record is the scenario's when its key or its `service_order_id` is a step key."""
    keys = keys if isinstance(keys, set | frozenset) else set(keys)
    if record.key_text in keys:
        return True
    order = record.json.get("service_order_id") if isinstance(record.json, dict) else None
    return isinstance(order, str) and order in keys


def distinct_id(record: Record) -> str:
    """What makes an event distinct: its `event_id`, or for DLQ records the original offset."""
    if is_dlq(record.topic):
        return _dlq_origin(record)
    data = record.json
    if isinstance(data, dict) and data.get("event_id") is not None:
        return str(data["event_id"])
    # No event_id to dedupe on: each record stands for itself.
    return f"(no event_id) {record.where}"


def _dlq_origin(record: Record) -> str:
    h = record.header_map
    origin = [h.get(n) for n in _ORIGIN_HEADERS]
    if None in origin:
        return f"(no origin headers) {record.where}"
    return f"{origin[0]}[{origin[1]}]@{origin[2]}"


_ORIGIN_HEADERS = (
    dlq_headers.ORIGINAL_TOPIC,
    dlq_headers.ORIGINAL_PARTITION,
    dlq_headers.ORIGINAL_OFFSET,
)


def distinct_ids(records: Iterable[Record]) -> list[str]:
    return list(dict.fromkeys(distinct_id(r) for r in records))


def scoped(records: Iterable[Record], keys: Iterable[str]) -> list[Record]:
    key_set = set(keys)
    return [r for r in records if in_scope(r, key_set)]


def matching(records: Iterable[Record], topic: str, match: Mapping[str, Any]) -> list[Record]:
    return [r for r in records if r.topic == topic and record_matches(r, match)]


def first_match(records: Iterable[Record], topic: str, match: Mapping[str, Any], keys: Iterable[str]) -> Record | None:
    return next(iter(matching(scoped(records, keys), topic, match)), None)


def bind_fields(record: Record, bind: Mapping[str, str]) -> dict[str, Any]:
    """Read each bound field (a dotted path for nested ones); KeyError names what is missing."""
    return {name: field_value(record.json, path) for name, path in bind.items()}


def field_value(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            raise KeyError(path)
        data = data[part]
    return data


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Failure:
    """One rule that does not hold, with what was expected and what was seen instead."""

    kind: str  # count | absent | unexpected_dlq | await | provider_wait | error
    topic: str | None
    expected: str
    saw: str
    details: tuple[str, ...] = field(default=())


def evaluate(
    expect: Iterable[Expectation],
    absent: Iterable[str],
    records: Iterable[Record],
    keys: Iterable[str],
) -> list[Failure]:
    """Every failed rule: counts, absent topics, and DLQ records no expectation names."""
    expect, absent = list(expect), list(absent)
    mine = scoped(records, keys)
    failures = [f for e in expect if (f := check_count(e, mine))]
    failures += [f for t in absent if (f := check_absent(t, mine))]
    named = {e.topic for e in expect} | set(absent)
    return failures + check_unexpected_dlq(mine, named)


def check_count(exp: Expectation, mine: list[Record]) -> Failure | None:
    ids = distinct_ids(matching(mine, exp.topic, exp.match))
    if len(ids) == exp.count:
        return None
    on_topic = [r for r in mine if r.topic == exp.topic]
    seen = f"{len(ids)} distinct matching" + (f" ({', '.join(ids)})" if ids else "")
    seen += f"; {len(on_topic)} record(s) of the scenario on the topic"
    details = tuple(describe(r, exp.match) for r in on_topic[:MAX_DETAILS])
    return Failure("count", exp.topic, f"count={exp.count} of {compact(exp.match)}", seen, details)


def check_absent(topic: str, mine: list[Record]) -> Failure | None:
    hits = [r for r in mine if r.topic == topic]
    if not hits:
        return None
    details = tuple(describe(r) for r in hits[:MAX_DETAILS])
    return Failure("absent", topic, "no event of the scenario", f"{len(hits)} record(s)", details)


def check_unexpected_dlq(mine: list[Record], named: set[str]) -> list[Failure]:
    failures = []
    for topic in dict.fromkeys(r.topic for r in mine if is_dlq(r.topic) and r.topic not in named):
        hits = [r for r in mine if r.topic == topic]
        details = tuple(describe(r) for r in hits[:MAX_DETAILS])
        saw = f"{len(hits)} unexpected dead-letter record(s)"
        failures.append(Failure("unexpected_dlq", topic, "no DLQ record", saw, details))
    return failures


# ---------------------------------------------------------------- compact descriptions

MAX_DETAILS = 10
MAX_TEXT = 240


def compact(value: Any, limit: int = MAX_TEXT) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(record: Record, match: Mapping[str, Any] | None = None) -> str:
    """One line: where, key, then the fields that differ from `match` or the value itself."""
    head = f"{record.where} key={record.key_text!r}"
    if is_dlq(record.topic):
        head += " " + _describe_dlq(record)
    data = record.json
    if data is NOT_JSON:
        raw = (record.value or b"")[:80]
        return f"{head} not JSON: {raw!r}"
    if match and isinstance(data, dict):
        diffs = differences(match, data)
        verdict = "differs: " + "; ".join(diffs) if diffs else "matches"
        return f"{head} id={distinct_id(record)} {verdict}"
    return f"{head} {compact(data)}"


def _describe_dlq(record: Record) -> str:
    h = record.header_map
    error = f"{h.get(dlq_headers.ERROR_CLASS, '?')}: {h.get(dlq_headers.ERROR_MESSAGE, '')}"
    return f"origin={_dlq_origin(record)} error={compact(error, 120)}"


def differences(pattern: Mapping[str, Any], actual: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`path: want X, got Y` for each field of `pattern` that `actual` does not match."""
    out: list[str] = []
    for key, want in pattern.items():
        path = f"{prefix}{key}"
        got = actual.get(key, _MISSING)
        if isinstance(want, dict) and isinstance(got, dict):
            out += differences(want, got, path + ".")
        elif got is _MISSING:
            out.append(f"{path}: want {compact(want, 60)}, missing")
        elif not values_equal(want, got):
            out.append(f"{path}: want {compact(want, 60)}, got {compact(got, 60)}")
    return out


_MISSING = object()
