"""The published v1 contract: a JSON Schema per topic and the AsyncAPI 3.0 document of every topic.

Both are generated from the pydantic models of `schemas/v1.py` and committed under `schemas/`
(`schemas/json/<topic>.schema.json`, `schemas/asyncapi.json`). `second-opinion contracts generate`
rewrites them; `second-opinion contracts check` fails when the files there differ from what
the code generates.

The AsyncAPI document comes from a specification-only `KafkaBroker` that is never connected:
a subscriber per topic a service consumes (taken from the service's routes) and a publisher per
topic a service produces, each typed with the contract model. The running services do not use
this broker: they consume raw bytes and decode them with the same models.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import schemas
from schemas import v1
from services.common.settings import SERVICES, KafkaSettings, group_id

SCHEMAS_DIR = Path(schemas.__file__).resolve().parent
JSON_DIR = "json"
ASYNCAPI_FILE = "asyncapi.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE_HINT = "run `second-opinion contracts generate` (or `make contracts`) and commit the result"

# Who writes each topic: one of the services, or a system outside them. Which services read a
# topic is not declared here: it comes from their routes (services/<svc>/entrypoints/consumers.py).
PRODUCERS: dict[str, str] = {
    v1.SERVICE_REPORT_RECEIVED: "upstream claim systems",
    v1.SECOND_OPINION_REQUESTED: "upstream claim systems",
    v1.APPROVAL_RECORDED: "supervisor console / CRM",
    v1.SERVICE_PROVIDER_UPDATED: "provider directory",
    v1.SECOND_OPINION_GRANTED: "decision",
    v1.SECOND_OPINION_DENIED: "decision",
    v1.PROVIDER_FEEDBACK_RECORDED: "decision",
    v1.SERVICE_JOB_CREATED: "dispatch",
    v1.DISPATCH_UNASSIGNED: "dispatch",
    v1.CUSTOMER_NOTIFICATION_REQUESTED: "dispatch",
    v1.SECOND_OPINION_CONCLUDED: "decision",
    v1.PAYOUT_ISSUED: "payout",
    v1.CUSTOMER_CHARGE_ASSESSED: "payout",
}
# Readers outside the services, for the documentation of a topic.
EXTERNAL_CONSUMERS: dict[str, tuple[str, ...]] = {
    v1.SECOND_OPINION_DENIED: ("downstream systems",),
    v1.PROVIDER_FEEDBACK_RECORDED: ("the SP feedback tracker",),
    v1.CUSTOMER_NOTIFICATION_REQUESTED: ("notifications",),
    v1.PAYOUT_ISSUED: ("billing",),
    v1.CUSTOMER_CHARGE_ASSESSED: ("billing",),
}

ASYNCAPI_DESCRIPTION = """\
Events of the Second Opinion services (decision, dispatch, payout), contract version 1.

Every record value is a UTF-8 JSON object validated by the pydantic models of `schemas/v1.py`. \
Producers may add fields; consumers ignore unknown fields, so additions are v1 compatible. \
Validation is strict: wrong types, unknown enum values, timestamps without an offset, malformed \
money (a two-decimal string) and currencies other than USD are rejected.

A record a service cannot use (not UTF-8, not JSON, schema-invalid, carrying a card number) goes \
to `<topic>.dlq` with its original key and bytes (card numbers masked) and the headers \
`x-original-topic`, `x-original-partition`, `x-original-offset`, `x-original-timestamp`, \
`x-error-class` and `x-error-message`.

Each channel below is one side of a topic: a service sending it or a service receiving it; its \
`address` is the topic. Channel descriptions name the producer, the consumers and the key."""


@dataclass(frozen=True)
class Topic:
    name: str
    model: type[v1.Event]
    key: str
    producer: str
    consumers: tuple[str, ...]  # the services reading the topic, in SERVICES order
    external_consumers: tuple[str, ...]
    compacted: bool

    @property
    def description(self) -> str:
        readers = [*self.consumers, *self.external_consumers]
        text = (
            f"`{self.name}`: {self.model.__name__}. Produced by {self.producer}; "
            f"consumed by {', '.join(readers) if readers else 'no service'}. "
            f"Key: `{self.key}`."
        )
        if self.compacted:
            text += " Compacted (`cleanup.policy=compact`): the latest record per key is kept."
        return text


def consumed_topics() -> dict[str, dict[str, type[v1.Event]]]:
    """Per service, the topics its routes consume and the model each route decodes with."""
    from services.common.consumer import RouteContext
    from services.common.metrics import ServiceMetrics
    from services.serve import load_spec

    result: dict[str, dict[str, type[v1.Event]]] = {}
    for service in SERVICES:
        routes = load_spec(service).build_routes(RouteContext(ServiceMetrics(service)))
        result[service] = {route.topic: route.model for route in routes}
    return result


def key_field(model: type[v1.Event]) -> str:
    if issubclass(model, v1.OrderEvent):
        return "service_order_id"
    if model is v1.ServiceProviderUpdated:
        return "provider_id"
    raise ValueError(f"no partition key known for {model.__name__}")


def topics() -> list[Topic]:
    """Every v1 topic with its producer, consumers and key; refuses an inconsistent picture."""
    from services.ops.kafka import TOPIC_CONFIGS

    consumed = consumed_topics()
    problems = [f"{t}: no producer declared" for t in v1.TOPICS if t not in PRODUCERS]
    problems += [
        f"{t}: producer declared for a topic that is not in schemas.v1" for t in PRODUCERS if t not in v1.MODELS
    ]
    for service, routes in consumed.items():
        for topic, model in routes.items():
            if v1.MODELS.get(topic) is not model:
                contract = v1.MODELS.get(topic)
                problems.append(f"{service} decodes {topic} with {model.__name__}, not the contract's {contract}")
            if PRODUCERS.get(topic) == service:
                problems.append(f"{service} both produces and consumes {topic}")
    if problems:
        raise ValueError("inconsistent topic map: " + "; ".join(problems))
    return [
        Topic(
            name=topic,
            model=model,
            key=key_field(model),
            producer=PRODUCERS[topic],
            consumers=tuple(s for s in SERVICES if topic in consumed[s]),
            external_consumers=EXTERNAL_CONSUMERS.get(topic, ()),
            compacted=TOPIC_CONFIGS.get(topic, {}).get("cleanup.policy") == "compact",
        )
        for topic, model in v1.MODELS.items()
    ]


# ---------------------------------------------------------------- JSON Schema


def json_schema_id(topic: str) -> str:
    return f"urn:second-opinion:schema:v{v1.SCHEMA_VERSION}:{topic}"


def json_schema(topic: str) -> dict[str, Any]:
    """The validation-mode JSON Schema of a topic's model, with `$schema`, `$id` and a title."""
    model = v1.MODELS[topic]
    body = model.model_json_schema(mode="validation")
    body.pop("title", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": json_schema_id(topic),
        "title": f"{topic} (v{v1.SCHEMA_VERSION})",
        "description": (
            f"The value of a record on the Kafka topic `{topic}`, contract v{v1.SCHEMA_VERSION} "
            f"(`schemas.v1.{model.__name__}`), keyed by `{key_field(model)}`. "
            "Consumers ignore properties not listed here."
        ),
        **body,
    }


# ---------------------------------------------------------------- AsyncAPI


def _subscriber_stub(model: type[v1.Event]) -> Any:
    """A handler typed with the contract model, so FastStream documents the payload; never called."""

    async def receive(event: Any) -> None:
        raise NotImplementedError("specification only")

    # Set the type itself: with postponed annotations the name `model` would not resolve.
    receive.__annotations__ = {"event": model, "return": None}
    return receive


def specification_broker() -> Any:
    """A `KafkaBroker` that only declares endpoints for the AsyncAPI document; never connect it."""
    from faststream.kafka import KafkaBroker

    defaults = KafkaSettings.model_construct()  # defaults, not the environment: the document is deterministic
    broker = KafkaBroker(
        defaults.bootstrap_servers,
        description="The broker `second-opinion up` starts locally; KAFKA_BOOTSTRAP_SERVERS names any other cluster.",
    )
    for topic in topics():
        if topic.producer in SERVICES:
            broker.publisher(
                topic.name,
                title=f"{topic.name}:{topic.producer}",
                description=f"{topic.producer} sends. {topic.description}",
                schema=topic.model,
            )
        for service in topic.consumers:
            broker.subscriber(
                topic.name,
                group_id=group_id(service, defaults),
                title=f"{topic.name}:{service}",
                description=f"{service} receives. {topic.description}",
            )(_subscriber_stub(topic.model))
    return broker


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every v1 topic, as FastStream generates it."""
    from faststream.specification import AsyncAPI

    spec = AsyncAPI(
        specification_broker(),
        title="Second Opinion events",
        version=str(v1.SCHEMA_VERSION),
        description=ASYNCAPI_DESCRIPTION,
        identifier=f"urn:second-opinion:asyncapi:v{v1.SCHEMA_VERSION}",
        schema_version="3.0.0",
    )
    with warnings.catch_warnings():
        # FastStream warns, and keeps one of them, when two channels or two payload schemas collide.
        warnings.simplefilter("error", RuntimeWarning)
        document: dict[str, Any] = spec.to_specification().to_jsonable()
    for message in document.get("components", {}).get("messages", {}).values():
        # FastStream documents a `correlation_id` header by default; these producers do not set one.
        message.pop("correlationId", None)
    return document


# ---------------------------------------------------------------- files


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_file(topic: str) -> str:
    return f"{JSON_DIR}/{topic}.schema.json"


def render() -> dict[str, str]:
    """Every generated file, by path relative to the schemas directory, with its content."""
    files = {schema_file(topic): dumps(json_schema(topic)) for topic in v1.TOPICS}
    files[ASYNCAPI_FILE] = dumps(asyncapi_document())
    return files


def _stale(directory: Path, expected: Mapping[str, str]) -> list[str]:
    folder = directory / JSON_DIR
    found = sorted(p.relative_to(directory).as_posix() for p in folder.glob("*.schema.json")) if folder.is_dir() else []
    return [path for path in found if path not in expected]


def drift(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Files under `directory` that differ from what the code generates: changed, missing or stale."""
    expected = render()
    drifted = []
    for path, text in expected.items():
        target = directory / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            drifted.append(path)
    return sorted(drifted + _stale(directory, expected))


def write(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Writes the generated files and removes stale schema files; returns what changed."""
    expected = render()
    changed = []
    for path, text in expected.items():
        target = directory / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        changed.append(path)
    for path in _stale(directory, expected):
        (directory / path).unlink()
        changed.append(path)
    return sorted(changed)


# ---------------------------------------------------------------- command


def _display(directory: Path, path: str) -> str:
    target = directory / path
    try:
        return target.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return target.as_posix()


def _generate(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    changed = write(directory)
    for path in changed:
        verb = "wrote" if (directory / path).exists() else "removed"
        print(f"{verb} {_display(directory, path)}")
    if not changed:
        print("contracts up to date")
    return 0


def _check(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    drifted = drift(directory)
    if not drifted:
        print("contracts up to date")
        return 0
    for path in drifted:
        print(f"drifted: {_display(directory, path)}", file=sys.stderr)
    print(f"the contract files differ from what the code generates: {REGENERATE_HINT}", file=sys.stderr)
    return 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("contracts", help="the published event contract: JSON Schemas and AsyncAPI")
    commands = p.add_subparsers(dest="contracts_command", required=True)
    for name, func, text in (
        ("generate", _generate, "write schemas/json/<topic>.schema.json and schemas/asyncapi.json"),
        ("check", _check, "exit 1 naming the files that differ from what the code generates"),
    ):
        c = commands.add_parser(name, help=text)
        c.add_argument("--dir", default=str(SCHEMAS_DIR), help="the schemas directory (default: %(default)s)")
        c.set_defaults(func=func)
