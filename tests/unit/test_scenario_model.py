"""Pure rules of the scenario runner: tokens, substitution, matching, scoping, counting."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemas.v1 import ALL_TOPICS
from services.common import dlq_headers as h
from services.scenario.model import (
    Expectation,
    Record,
    ScenarioError,
    bind_fields,
    distinct_id,
    distinct_ids,
    evaluate,
    first_match,
    in_scope,
    new_run_token,
    new_run_tokens,
    payload,
    record_matches,
    resolve_step,
    subset_match,
    substitute,
    substitute_text,
)
from services.scenario.spec import AwaitStep, PublishStep, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[3] / "shared" / "scenarios"
TOKEN = re.compile(r"[a-z][a-z0-9]{7}")
GRANTED, DENIED = "second_opinion.granted", "second_opinion.denied"
REPORT_DLQ = "service_report.received.dlq"


def rec(topic: str, value: Any, key: str | None = "SO-1", offset: int = 0, **kw: Any) -> Record:
    """A record whose value is JSON-encoded, unless it is already bytes (raw) or None."""
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return Record(topic, kw.get("partition", 0), offset, key and key.encode(), raw, kw.get("headers", ()))


def dlq(origin_offset: int, offset: int, key: str = "SO-1", value: bytes = b"{not json") -> Record:
    headers = (
        (h.ORIGINAL_TOPIC, b"service_report.received"),
        (h.ORIGINAL_PARTITION, b"1"),
        (h.ORIGINAL_OFFSET, str(origin_offset).encode()),
        (h.ERROR_CLASS, b"not_json"),
        (h.ERROR_MESSAGE, b"bad"),
    )
    return rec(REPORT_DLQ, value, key, offset, headers=headers)


# ---------------------------------------------------------------- run token


def test_run_token_format() -> None:
    assert all(TOKEN.fullmatch(new_run_token()) for _ in range(500))


def test_run_tokens_are_distinct() -> None:
    tokens = new_run_tokens(300)
    assert len(set(tokens)) == 300
    assert all(TOKEN.fullmatch(t) for t in tokens)


# ---------------------------------------------------------------- substitution


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SO-{run}", "SO-abc12345"),
        ("{run}-{run}", "abc12345-abc12345"),
        ("{not json", "{not json"),
        ('{"a": 1, "b": "{run}"}', '{"a": 1, "b": "abc12345"}'),
        ("{unknown} {job}", "{unknown} JOB-9"),
        ("{{run}}", "{abc12345}"),
        ("{ run }", "{ run }"),
        ("no braces", "no braces"),
    ],
)
def test_substitute_text_replaces_only_known_names(text: str, expected: str) -> None:
    assert substitute_text(text, {"run": "abc12345", "job": "JOB-9"}) == expected


def test_substitute_walks_values_keys_and_lists() -> None:
    value = {"id": "E-{run}", "{run}": ["x-{run}", {"deep": "{job}"}], "n": 4, "b": True}
    out = substitute(value, {"run": "r1234567", "job": "J1"})
    assert out == {
        "id": "E-r1234567",
        "r1234567": ["x-r1234567", {"deep": "J1"}],
        "n": 4,
        "b": True,
    }


@pytest.mark.parametrize(
    ("template", "bound", "expected"),
    [
        ("{n}", 3, 3),  # a whole placeholder keeps the bound JSON type
        ("{flag}", False, False),
        ("n={n}", 3, "n=3"),
        ("{job}", "JOB-1", "JOB-1"),
    ],
)
def test_substitute_bound_types(template: str, bound: Any, expected: Any) -> None:
    names = {"n": bound, "flag": bound, "job": bound}
    assert substitute({"f": template}, names) == {"f": expected}


def test_resolve_publish_step_substitutes_key_value_and_raw() -> None:
    value_step = PublishStep("t", "SO-{run}", {"service_job_id": "{job}", "x": "{run}"})
    raw_step = PublishStep("t", "SO-{run}", raw='{"broken": "{run}", {not json')
    names = {"run": "q1234567", "job": "JOB-2"}
    resolved = resolve_step(value_step, names)
    assert resolved == PublishStep("t", "SO-q1234567", {"service_job_id": "JOB-2", "x": "q1234567"})
    raw = resolve_step(raw_step, names)
    assert payload(raw) == b'{"broken": "q1234567", {not json'
    assert json.loads(payload(resolved)) == resolved.value


def test_resolve_await_step_substitutes_match() -> None:
    step = AwaitStep("t", {"service_order_id": "SO-{run}"}, {"job": "job_id"}, 5)
    assert resolve_step(step, {"run": "z"}).match == {"service_order_id": "SO-z"}


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("pattern", "value", "ok"),
    [
        ({}, {"a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {"b": 1}, False),
        ({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}, True),  # nested objects as subsets
        ({"a": {"x": 1}}, {"a": {"y": 2}}, False),
        ({"a": {"x": 1}}, {"a": [1]}, False),
        ({"l": [1, 2]}, {"l": [1, 2]}, True),
        ({"l": [1, 2]}, {"l": [1, 2, 3]}, False),  # lists exactly
        ({"l": [1, 2]}, {"l": [2, 1]}, False),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1, "y": 2}]}, False),  # no subset inside lists
        ({"l": []}, {"l": []}, True),
        ({"b": True}, {"b": 1}, False),  # JSON true is not 1
        ({"n": 4}, {"n": 4.0}, True),
        ({"v": None}, {"v": None}, True),
        ({"v": None}, {}, False),
        ({"s": "1"}, {"s": 1}, False),
        ({"a": 1}, [1], False),
    ],
)
def test_subset_match(pattern: dict[str, Any], value: Any, ok: bool) -> None:
    assert subset_match(pattern, value) is ok


@pytest.mark.parametrize(
    ("value", "match", "ok"),
    [
        (b"{not json", {}, True),  # an empty match takes anything on the topic
        (b"{not json", {"a": 1}, False),  # a non-empty one never takes non-JSON
        (b"\xff\xfe", {"a": 1}, False),  # not UTF-8
        (None, {}, True),
        (None, {"a": 1}, False),
        ({"a": 1}, {"a": 1}, True),
        ([1, 2], {"a": 1}, False),
    ],
)
def test_record_matches(value: Any, match: dict[str, Any], ok: bool) -> None:
    assert record_matches(rec(GRANTED, value), match) is ok


# ---------------------------------------------------------------- scoping


@pytest.mark.parametrize(
    ("key", "value", "scoped"),
    [
        ("SO-1", {"x": 1}, True),  # by key
        ("OTHER", {"service_order_id": "SO-1"}, True),  # by service_order_id
        (None, {"service_order_id": "P-1"}, True),
        ("OTHER", {"service_order_id": "SO-2"}, False),
        ("OTHER", {"service_order_id": ["SO-1"]}, False),  # malformed, and unhashable
        ("OTHER", b"{not json", False),
        ("SO-1", b"{not json", True),
        (None, None, False),
    ],
)
def test_in_scope(key: str | None, value: Any, scoped: bool) -> None:
    assert in_scope(rec(GRANTED, value, key), {"SO-1", "P-1"}) is scoped


def test_first_match_is_scoped_and_binds() -> None:
    records = [
        rec("service_job.created", {"service_order_id": "SO-X", "job_id": "J0"}, "SO-X"),
        rec("service_job.created", {"service_order_id": "SO-1", "job_id": "J1", "n": {"m": 2}}),
        rec("service_job.created", {"service_order_id": "SO-1", "job_id": "J2"}, offset=1),
    ]
    hit = first_match(records, "service_job.created", {}, ["SO-1"])
    assert hit is records[1]
    assert bind_fields(hit, {"job": "job_id", "m": "n.m"}) == {"job": "J1", "m": 2}
    with pytest.raises(KeyError):
        bind_fields(hit, {"x": "missing"})
    assert first_match(records, GRANTED, {}, ["SO-1"]) is None


# ---------------------------------------------------------------- counting


def test_distinct_ids_by_event_id() -> None:
    records = [rec(GRANTED, {"event_id": "e1"}, offset=i) for i in range(3)]
    records.append(rec(GRANTED, {"event_id": "e2"}, offset=3))
    assert distinct_ids(records) == ["e1", "e2"]


def test_records_without_event_id_each_count() -> None:
    records = [rec(GRANTED, b"{not json", offset=0), rec(GRANTED, {"x": 1}, offset=1)]
    assert len(distinct_ids(records)) == 2


def test_distinct_ids_of_dlq_records_by_original_offset() -> None:
    # The same bad record dead-lettered twice (a redelivery) is one; another original is another.
    records = [dlq(origin_offset=5, offset=0), dlq(5, 1), dlq(6, 2)]
    assert distinct_ids(records) == ["service_report.received[1]@5", "service_report.received[1]@6"]


def test_dlq_record_without_origin_headers_counts_alone() -> None:
    bare = rec(REPORT_DLQ, b"x", offset=7)
    assert "no origin headers" in distinct_id(bare)


# ---------------------------------------------------------------- evaluation


def granted(event_id: str, key: str = "SO-1", offset: int = 0, **fields: Any) -> Record:
    return rec(GRANTED, {"event_id": event_id, "service_order_id": key, **fields}, key, offset)


SO1 = {"service_order_id": "SO-1"}


@pytest.mark.parametrize(
    ("records", "match", "count", "failed"),
    [
        ([granted("e1")], SO1, 1, False),
        ([granted("e1"), granted("e1", offset=1)], SO1, 1, False),  # a duplicate is one event
        ([granted("e1"), granted("e2", offset=1)], SO1, 1, True),
        ([], SO1, 1, True),
        ([], SO1, 0, False),
        ([granted("e1", key="SO-OTHER")], {}, 0, False),  # another scenario's event
        ([granted("e1", source="x")], {"source": "customer"}, 1, True),
        ([granted("e1", source="x")], {"source": "customer"}, 0, False),
    ],
)
def test_count_expectation(records: list[Record], match: dict[str, Any], count: int, failed: bool) -> None:
    failures = evaluate([Expectation(GRANTED, match, count)], [], records, ["SO-1"])
    assert bool(failures) is failed


def test_count_failure_reports_ids_and_differences() -> None:
    records = [granted("e1", source="authorizations"), granted("e2", offset=1, source="customer")]
    exp = Expectation(GRANTED, {"source": "customer"}, 2)
    [failure] = evaluate([exp], [], records, ["SO-1"])
    assert failure.kind == "count" and "count=2" in failure.expected
    assert "1 distinct matching (e2)" in failure.saw
    assert any('source: want "customer", got "authorizations"' in d for d in failure.details)


def test_absent_topic_hit_fails_and_others_do_not() -> None:
    records = [rec(DENIED, {"event_id": "d1", "service_order_id": "SO-1"})]
    [failure] = evaluate([], [DENIED, GRANTED], records, ["SO-1"])
    assert (failure.kind, failure.topic) == ("absent", DENIED)
    assert evaluate([], [DENIED], records, ["SO-OTHER"]) == []


def test_unexpected_dlq_record_fails_unless_named() -> None:
    records = [dlq(5, 0)]
    [failure] = evaluate([], [], records, ["SO-1"])
    assert failure.kind == "unexpected_dlq" and failure.topic == REPORT_DLQ
    assert "not_json" in failure.details[0]
    assert evaluate([Expectation(REPORT_DLQ, {}, 1)], [], records, ["SO-1"]) == []
    assert evaluate([], [], records, ["SO-OTHER"]) == []  # another scenario's bad input


def test_dlq_count_with_match_reads_the_original_bytes() -> None:
    bad = json.dumps({"event_id": "bad2", "service_order_id": "SO-1"}).encode()
    records = [dlq(1, 0, value=bad), dlq(1, 1, value=bad), dlq(2, 2)]
    exp = [Expectation(REPORT_DLQ, {"event_id": "bad2"}, 1)]
    assert evaluate(exp, [], records, ["SO-1"]) == []
    assert evaluate([Expectation(REPORT_DLQ, {}, 2)], [], records, ["SO-1"]) == []


# ---------------------------------------------------------------- the file format


def test_every_shared_scenario_parses() -> None:
    files = sorted(SCENARIOS.glob("*.json"))
    if not files:
        pytest.skip("no shared scenarios beside the project")
    for path in files:
        scenario = load_scenario(path.read_text(), path.stem, ALL_TOPICS)
        assert scenario.name == path.stem and scenario.steps


def minimal(**overrides: Any) -> dict[str, Any]:
    base = {"name": "n", "steps": [{"topic": GRANTED, "key": "k", "value": {}}], "expect": []}
    return base | overrides


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "top level"),
        (minimal(steps=[{"topic": "nope", "key": "k", "value": {}}]), "unknown topic"),
        (minimal(steps=[{"topic": GRANTED, "key": "k"}]), "exactly one of"),
        (minimal(steps=[{"topic": GRANTED, "key": "k", "value": {}, "raw": "x"}]), "exactly one"),
        (minimal(steps=[{"topic": GRANTED, "key": 1, "value": {}}]), "key"),
        (minimal(steps=[{"topic": GRANTED, "key": "k", "vaule": {}}]), "unknown field"),
        (minimal(expect=[{"topic": GRANTED, "count": -1}]), "count"),
        (minimal(expect=[{"topic": GRANTED, "count": True}]), "count"),
        (minimal(expect=[{"topic": GRANTED, "match": []}]), "match"),
        (minimal(absent=["nope"]), "unknown topic"),
        (minimal(steps=[{"await": {"topic": GRANTED, "bind": {"run": "x"}}}]), "bad name"),
        (minimal(steps=[{"await": {"topic": GRANTED, "timeout_s": 0}}]), "timeout_s"),
        (
            minimal(
                steps=[
                    {"topic": GRANTED, "key": "{job}", "value": {}},
                    {"await": {"topic": GRANTED, "bind": {"job": "job_id"}}},
                ]
            ),
            "before the await",
        ),
    ],
)
def test_invalid_scenarios_are_rejected(data: Any, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data, "default", ALL_TOPICS)


def test_defaults() -> None:
    data = minimal(
        steps=[{"await": {"topic": GRANTED}}, {"topic": GRANTED, "key": "k", "raw": "{x"}],
        expect=[{"topic": GRANTED}],
    )
    del data["name"]
    scenario = parse_scenario(data, "file-stem", ALL_TOPICS)
    assert scenario.name == "file-stem" and scenario.absent == ()
    assert scenario.steps[0] == AwaitStep(GRANTED, {}, {}, 30.0)
    assert scenario.expect[0] == Expectation(GRANTED, {}, 1)
