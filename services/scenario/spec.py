"""The scenario file format (DESIGN.md §4): frozen data, parsing, substitution; no I/O."""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from re import Match
from typing import Any

DEFAULT_COUNT = 1
DEFAULT_AWAIT_TIMEOUT_S = 30.0
RUN = "run"
_TOKEN_REST = string.ascii_lowercase + string.digits
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PUBLISH_KEYS = {"topic", "key", "value", "raw"}
_AWAIT_KEYS = {"topic", "match", "bind", "timeout_s"}
_EXPECT_KEYS = {"topic", "match", "count"}


class ScenarioError(ValueError):
    """The scenario file is not in the format of §4; the message says where."""


@dataclass(frozen=True)
class PublishStep:
    topic: str
    key: str
    value: Any = None
    raw: str | None = None  # when set, published byte for byte instead of `value`


@dataclass(frozen=True)
class AwaitStep:
    topic: str
    match: dict[str, Any] = field(default_factory=dict)
    bind: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_AWAIT_TIMEOUT_S


Step = PublishStep | AwaitStep


@dataclass(frozen=True)
class Expectation:
    topic: str
    match: dict[str, Any] = field(default_factory=dict)
    count: int = DEFAULT_COUNT


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...]
    absent: tuple[str, ...]


def load_scenario(text: str, default_name: str, topics: Collection[str]) -> Scenario:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ScenarioError(f"not JSON: {exc}") from exc
    return parse_scenario(data, default_name, topics)


def parse_scenario(data: Any, default_name: str, topics: Collection[str]) -> Scenario:
    """Check the whole file up front, so a typo fails before anything is published."""
    _require(isinstance(data, dict), "top level", "must be an object")
    steps = tuple(_parse_step(s, f"steps[{i}]", topics) for i, s in enumerate(_list(data, "steps")))
    expect = tuple(_parse_expectation(e, f"expect[{i}]", topics) for i, e in enumerate(_list(data, "expect")))
    absent = tuple(_topic(t, f"absent[{i}]", topics) for i, t in enumerate(_list(data, "absent")))
    name = data.get("name", default_name)
    _require(isinstance(name, str) and name != "", "name", "must be a non-empty string")
    scenario = Scenario(name, str(data.get("description", "")), steps, expect, absent)
    _check_binds_before_use(scenario)
    return scenario


def _parse_step(raw: Any, where: str, topics: Collection[str]) -> Step:
    _require(isinstance(raw, dict), where, "must be an object")
    if "await" in raw:
        _require(set(raw) == {"await"}, where, "an await step has only the `await` key")
        return _parse_await(raw["await"], f"{where}.await", topics)
    _only(raw, _PUBLISH_KEYS, where)
    _require(isinstance(raw.get("key"), str), f"{where}.key", "must be a string")
    _require(("value" in raw) != ("raw" in raw), where, "needs exactly one of `value` and `raw`")
    if "raw" in raw:
        _require(isinstance(raw["raw"], str), f"{where}.raw", "must be a string")
    topic = _topic(raw.get("topic"), f"{where}.topic", topics)
    return PublishStep(topic, raw["key"], raw.get("value"), raw.get("raw"))


def _parse_await(raw: Any, where: str, topics: Collection[str]) -> AwaitStep:
    _require(isinstance(raw, dict), where, "must be an object")
    _only(raw, _AWAIT_KEYS, where)
    bind = raw.get("bind", {})
    _require(isinstance(bind, dict), f"{where}.bind", "must be an object")
    for name, path in bind.items():
        _require(_NAME.fullmatch(name) is not None and name != RUN, f"{where}.bind", f"bad name {name!r}")
        _require(isinstance(path, str) and path != "", f"{where}.bind.{name}", "must name a field")
    timeout = raw.get("timeout_s", DEFAULT_AWAIT_TIMEOUT_S)
    _require(_is_number(timeout) and timeout > 0, f"{where}.timeout_s", "must be a positive number")
    topic = _topic(raw.get("topic"), f"{where}.topic", topics)
    return AwaitStep(topic, _match(raw, where), dict(bind), float(timeout))


def _parse_expectation(raw: Any, where: str, topics: Collection[str]) -> Expectation:
    _require(isinstance(raw, dict), where, "must be an object")
    _only(raw, _EXPECT_KEYS, where)
    count = raw.get("count", DEFAULT_COUNT)
    ok = isinstance(count, int) and not isinstance(count, bool) and count >= 0
    _require(ok, f"{where}.count", "must be an integer >= 0")
    return Expectation(_topic(raw.get("topic"), f"{where}.topic", topics), _match(raw, where), count)


def _check_binds_before_use(scenario: Scenario) -> None:
    """A step that says `{name}` for a name bound only by a later await would go out literally."""
    pending = {n for s in scenario.steps if isinstance(s, AwaitStep) for n in s.bind}
    for i, step in enumerate(scenario.steps):
        early = _names_in(step) & pending
        _require(not early, f"steps[{i}]", f"uses {sorted(early)} before the await that binds it")
        if isinstance(step, AwaitStep):
            pending -= set(step.bind)


def _names_in(step: Step) -> set[str]:
    text = json.dumps(step.match) if isinstance(step, AwaitStep) else json.dumps([step.key, step.value, step.raw])
    return set(PLACEHOLDER.findall(text))


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    _require(isinstance(value, list), key, "must be a list")
    return value


def _match(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    match = raw.get("match", {})
    _require(isinstance(match, dict), f"{where}.match", "must be an object")
    return match


def _topic(value: Any, where: str, topics: Collection[str]) -> str:
    _require(isinstance(value, str), where, "must be a topic name")
    _require(value in topics, where, f"unknown topic {value!r} (the runner reads {len(topics)} topics)")
    return value


def _only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    _require(not unknown, where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ScenarioError(f"{where}: {message}")


# ---------------------------------------------------------------- run token and substitution


def new_run_token() -> str:
    """A lower-case letter then 7 of [a-z0-9]: valid in topic keys, ids and zips alike."""
    first = secrets.choice(string.ascii_lowercase)
    return first + "".join(secrets.choice(_TOKEN_REST) for _ in range(7))


def new_run_tokens(count: int) -> list[str]:
    """`count` distinct tokens, one per file of a run."""
    tokens: dict[str, None] = {}
    while len(tokens) < count:
        tokens[new_run_token()] = None
    return list(tokens)


def substitute_text(text: str, names: Mapping[str, Any]) -> str:
    """Replace `{name}` for known names only; any other brace stays (raw bad input has some)."""

    def replace(m: Match[str]) -> str:
        name = m.group(1)
        return _as_text(names[name]) if name in names else m.group(0)

    return PLACEHOLDER.sub(replace, text)


def substitute(obj: Any, names: Mapping[str, Any]) -> Any:
    """Substitute in every string of a JSON value, object keys included.

    A string that is exactly one bound placeholder takes the bound value with its JSON type, so a
    bound number or bool compares equal to the original field.
    """
    if isinstance(obj, str):
        whole = PLACEHOLDER.fullmatch(obj)
        if whole and whole.group(1) in names:
            return names[whole.group(1)]
        return substitute_text(obj, names)
    if isinstance(obj, dict):
        return {substitute_text(k, names): substitute(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, names) for v in obj]
    return obj


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def resolve_step(step: Step, names: Mapping[str, Any]) -> Step:
    if isinstance(step, AwaitStep):
        return AwaitStep(step.topic, substitute(step.match, names), step.bind, step.timeout_s)
    raw = None if step.raw is None else substitute_text(step.raw, names)
    value = None if step.raw is not None else substitute(step.value, names)
    return PublishStep(step.topic, substitute_text(step.key, names), value, raw)


def resolve_expectation(exp: Expectation, names: Mapping[str, Any]) -> Expectation:
    return Expectation(exp.topic, substitute(exp.match, names), exp.count)


def payload(step: PublishStep) -> bytes:
    """Raw steps go out byte for byte; value steps as their JSON text."""
    if step.raw is not None:
        return step.raw.encode("utf-8")
    return json.dumps(step.value).encode("utf-8")
