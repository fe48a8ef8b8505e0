"""The published contract: committed JSON Schemas and AsyncAPI match the code, and v1 consumers are tolerant."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemas import v1
from services import contracts
from services.cli import main
from services.common.consumer import BadInput, RouteContext, decode
from services.common.metrics import ServiceMetrics
from services.common.settings import SERVICES
from services.serve import load_spec
from tests.support import events

SCHEMAS_DIR = Path(v1.__file__).resolve().parent
README = SCHEMAS_DIR.parent / "README.md"
HINT = "run `second-opinion contracts generate` (or `make contracts`) and commit the result"

ORDER = "SO-1"
AT = "2026-11-03T10:00:00+00:00"
CHARGES = {"service_call_fee": "89.00", "diagnosis_fee": "45.00", "currency": "USD"}

# One valid value per topic with every property the contract defines (optional ones included).
SAMPLES: dict[str, dict[str, Any]] = {
    v1.SERVICE_REPORT_RECEIVED: events.report(ORDER, "J-1"),
    v1.SECOND_OPINION_REQUESTED: events.request(
        ORDER,
        "J-1",
        "evt-req-1",
        reason_detail="two reports disagree",
        soft_no_delivered=True,
        offered_by_agent=True,
        approved_by={"id": "SUP-1", "role": "supervisor"},
        provider_attempts={"manufacturer_hotline": "called", "second_technician_sent": False},
        prefer_same_company_different_technician=True,
    ),
    v1.APPROVAL_RECORDED: {**events.approval(ORDER, "J-1", "evt-apr-1"), "note": "ok to proceed", "case_id": "CASE-1"},
    v1.SERVICE_PROVIDER_UPDATED: events.provider("P2", "10001", techs=[{"technician_id": "P2-T1", "senior": True}]),
    v1.SECOND_OPINION_GRANTED: {
        "event_id": "evt-grant-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "case_id": "CASE-1",
        "original_job_id": "J-1",
        "original_provider_id": "P1",
        "original_technician_id": "T1",
        "customer_id": "CUST-1",
        "trade": "hvac",
        "property_zip": "10001",
        "source": "customer",
        "reason_code": "conflicting_reports",
        "decided_by": {"id": "policy", "role": "system"},
        "policy_version": "1",
        "rules": ["valid_reason"],
        "deductible_waived": True,
        "diagnostic_charges": "customer_unless_covered_difference",
        "customer_disclosures": ["no_charge_if_different_and_covered", "customer_pays_if_same_evaluation"],
        "prefer_same_company_different_technician": False,
        "original_charges": CHARGES,
    },
    v1.SECOND_OPINION_DENIED: {
        "event_id": "evt-deny-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "case_id": "CASE-2",
        "original_job_id": "J-1",
        "source": "customer",
        "reason_code": "high_pricing",
        "denial_code": "case_already_open",
        "guidance": ["approve_provider_pricing"],
        "policy_version": "1",
        "rules": ["one_open_case"],
        "open_case_id": "CASE-1",
    },
    v1.PROVIDER_FEEDBACK_RECORDED: {
        "event_id": "evt-fb-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "provider_id": "P1",
        "category": "high_cost",
        "case_id": "CASE-1",
    },
    v1.SERVICE_JOB_CREATED: {
        "event_id": "evt-job-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "job_id": "J-2",
        "case_id": "CASE-1",
        "provider_id": "P2",
        "technician_id": "P2-T1",
        "kind": "second_opinion",
        "deductible_waived": True,
        "network": "in_network",
    },
    v1.DISPATCH_UNASSIGNED: {
        "event_id": "evt-un-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "case_id": "CASE-1",
        "reason": "no_eligible_provider",
    },
    v1.CUSTOMER_NOTIFICATION_REQUESTED: {
        "event_id": "evt-note-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "case_id": "CASE-1",
        "customer_id": "CUST-1",
        "template": "second_opinion_scheduled",
        "reason_code": "conflicting_reports",
        "disclosures": ["no_charge_if_different_and_covered"],
    },
    v1.SECOND_OPINION_CONCLUDED: {
        "event_id": "evt-done-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "case_id": "CASE-1",
        "outcome": "same_evaluation",
        "covered": None,
        "second_visit_charges": "customer",
        "second_job_id": "J-2",
        "second_provider_id": "P2",
        "customer_id": "CUST-1",
        "visit_charges": {"amount": "134.00", "currency": "USD"},
    },
    v1.PAYOUT_ISSUED: {
        "event_id": "evt-pay-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "payout_id": "PAY-1",
        "case_id": "CASE-1",
        "claim_id": ORDER,
        "job_id": "J-1",
        "provider_id": "P1",
        "amount": "89.00",
        "currency": "USD",
        "fee_type": "original_service_call",
    },
    v1.CUSTOMER_CHARGE_ASSESSED: {
        "event_id": "evt-chg-1",
        "occurred_at": AT,
        "service_order_id": ORDER,
        "case_id": "CASE-1",
        "customer_id": "CUST-1",
        "amount": "134.00",
        "currency": "USD",
        "reason": "same_evaluation",
    },
}


def committed_schema(topic: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / "json" / f"{topic}.schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / "asyncapi.json").read_text(encoding="utf-8"))


def raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def resolve(document: dict[str, Any], pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = document
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def nested_ref(prop: dict[str, Any]) -> str | None:
    """The `$ref` of an object property (possibly nullable, possibly a list of objects)."""
    if "$ref" in prop:
        return prop["$ref"]
    if prop.get("type") == "array":
        return nested_ref(prop.get("items", {}))
    for option in prop.get("anyOf", ()):
        if ref := nested_ref(option):
            return ref
    return None


def nested_objects(schema: dict[str, Any], sample: dict[str, Any]):
    """(path, object schema) for every nested object in the sample: its first element for lists."""
    for name, prop in schema["properties"].items():
        ref = nested_ref(prop)
        value = sample.get(name)
        if ref is None or value is None:
            continue
        path = [name, 0] if isinstance(value, list) else [name]
        yield path, resolve(schema, ref)


def at(data: Any, path: list[Any]) -> Any:
    for step in path:
        data = data[step]
    return data


# ---------------------------------------------------------------- (a) no drift


def test_committed_contract_files_match_the_code():
    drifted = contracts.drift(SCHEMAS_DIR)
    assert not drifted, f"schemas/ differs from what the code generates ({', '.join(drifted)}): {HINT}"


def test_generation_is_deterministic():
    assert contracts.render() == contracts.render()


def test_schema_files_are_the_models_validation_schemas():
    for topic, model in v1.MODELS.items():
        published = committed_schema(topic)
        expected = model.model_json_schema(mode="validation")
        assert published["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert published["$id"] == f"urn:second-opinion:schema:v1:{topic}"
        assert topic in published["title"]
        for key in ("type", "properties", "required", "$defs"):
            assert published.get(key) == expected.get(key), f"{topic}: {key} is not the model's validation schema"


def test_check_names_changed_missing_and_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["contracts", "generate", "--dir", str(tmp_path)]) == 0
    assert main(["contracts", "check", "--dir", str(tmp_path)]) == 0
    changed = tmp_path / "json" / f"{v1.PAYOUT_ISSUED}.schema.json"
    changed.write_text(changed.read_text().replace('"minLength": 1', '"minLength": 2', 1))
    (tmp_path / "asyncapi.json").unlink()
    (tmp_path / "json" / "payout.reversed.schema.json").write_text("{}\n")
    capsys.readouterr()

    assert main(["contracts", "check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    for name in ("json/payout.issued.schema.json", "asyncapi.json", "json/payout.reversed.schema.json"):
        assert f"drifted: {tmp_path / name}" in err
    assert "second-opinion contracts generate" in err
    assert contracts.drift(tmp_path) == sorted(
        ["asyncapi.json", "json/payout.issued.schema.json", "json/payout.reversed.schema.json"]
    )

    assert main(["contracts", "generate", "--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "json" / "payout.reversed.schema.json").exists()
    assert contracts.drift(tmp_path) == []


# ---------------------------------------------------------------- (b) v1 consumers are tolerant


def test_every_topic_has_a_complete_sample():
    for topic in v1.TOPICS:
        properties = set(committed_schema(topic)["properties"])
        assert set(SAMPLES.get(topic, {})) == properties, f"the sample of {topic} must set every property"


@pytest.mark.parametrize("topic", v1.TOPICS)
def test_a_consumer_accepts_the_sample(topic: str):
    event = decode(raw(SAMPLES[topic]), v1.MODELS[topic])
    assert event.model_dump(mode="json") == SAMPLES[topic]


@pytest.mark.parametrize("topic", v1.TOPICS)
def test_a_consumer_ignores_unknown_fields(topic: str):
    value = copy.deepcopy(SAMPLES[topic])
    value["added_in_a_later_minor"] = {"anything": [1, 2]}
    schema = committed_schema(topic)
    for path, _ in nested_objects(schema, value):
        at(value, path)["nested_addition"] = "x"

    event = decode(raw(value), v1.MODELS[topic])

    assert event.model_dump(mode="json") == SAMPLES[topic]


@pytest.mark.parametrize("topic", v1.TOPICS)
def test_a_consumer_accepts_a_missing_optional_field(topic: str):
    schema = committed_schema(topic)
    model = v1.MODELS[topic]
    for name in sorted(set(schema["properties"]) - set(schema["required"])):
        value = {k: v for k, v in SAMPLES[topic].items() if k != name}
        event = decode(raw(value), model)
        assert getattr(event, name) == model.model_fields[name].default, f"{topic}.{name}"


def test_some_topics_have_optional_fields():
    optional = {t for t in v1.TOPICS if set(committed_schema(t)["properties"]) - set(committed_schema(t)["required"])}
    assert {v1.SECOND_OPINION_REQUESTED, v1.APPROVAL_RECORDED, v1.SERVICE_JOB_CREATED} <= optional


@pytest.mark.parametrize("topic", v1.TOPICS)
def test_a_consumer_rejects_a_missing_required_field(topic: str):
    schema = committed_schema(topic)
    assert schema["required"], topic
    for name in schema["required"]:
        value = {k: v for k, v in SAMPLES[topic].items() if k != name}
        with pytest.raises(BadInput) as caught:
            decode(raw(value), v1.MODELS[topic])
        assert caught.value.error_class == "schema_invalid"
        assert name in str(caught.value), f"{topic}: the error should name {name}"


@pytest.mark.parametrize("topic", v1.TOPICS)
def test_a_consumer_rejects_a_missing_required_nested_field(topic: str):
    schema = committed_schema(topic)
    for path, nested in nested_objects(schema, SAMPLES[topic]):
        for name in nested.get("required", ()):
            value = copy.deepcopy(SAMPLES[topic])
            del at(value, path)[name]
            with pytest.raises(BadInput, match=re.escape(name)):
                decode(raw(value), v1.MODELS[topic])


# ---------------------------------------------------------------- (c) every topic is published


def topic_constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(v1).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z_]+\.[a-z_]+", value)
    }


def test_every_topic_constant_is_a_contract_topic():
    constants = topic_constants()
    assert len(constants) == 13
    assert set(constants.values()) == set(v1.TOPICS) == set(v1.MODELS)


def test_every_topic_has_a_schema_file_and_nothing_else_does():
    files = sorted(p.name for p in (SCHEMAS_DIR / "json").iterdir())
    assert files == sorted(f"{t}.schema.json" for t in topic_constants().values())


def test_every_topic_is_a_channel(asyncapi: dict[str, Any]):
    addresses = {channel["address"] for channel in asyncapi["channels"].values()}
    missing = sorted(set(topic_constants().values()) - addresses)
    assert not missing, f"topics without an AsyncAPI channel: {missing}"
    assert addresses == set(v1.TOPICS)


# ---------------------------------------------------------------- (d) the AsyncAPI document


def test_asyncapi_version(asyncapi: dict[str, Any]):
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["version"] == str(v1.SCHEMA_VERSION)


def test_each_channel_carries_its_topics_model(asyncapi: dict[str, Any]):
    for key, channel in asyncapi["channels"].items():
        model = v1.MODELS[channel["address"]]
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
        assert len(channel["messages"]) == 1, key
        for message_ref in channel["messages"].values():
            message = resolve(asyncapi, message_ref["$ref"])
            assert message["payload"] == {"$ref": f"#/components/schemas/{model.__name__}"}, key


def test_component_schemas_are_the_models(asyncapi: dict[str, Any]):
    components = asyncapi["components"]["schemas"]
    for model in v1.MODELS.values():
        expected = json.loads(json.dumps(model.model_json_schema()).replace("#/$defs/", "#/components/schemas/"))
        defs = expected.pop("$defs", {})
        assert components[model.__name__] == expected, model.__name__
        for name, body in defs.items():
            assert components[name] == body, f"{model.__name__}: {name}"


def operations(asyncapi: dict[str, Any], action: str) -> dict[str, set[str]]:
    """topic -> the services with an operation of that action on it (channel keys are `<topic>:<service>`)."""
    found: dict[str, set[str]] = {}
    for operation in asyncapi["operations"].values():
        if operation["action"] != action:
            continue
        key = operation["channel"]["$ref"].removeprefix("#/channels/")
        topic, service = key.rsplit(":", 1)
        assert asyncapi["channels"][key]["address"] == topic
        found.setdefault(topic, set()).add(service)
    return found


def test_receive_operations_are_the_services_routes(asyncapi: dict[str, Any]):
    routes: dict[str, set[str]] = {}
    for service in SERVICES:
        for route in load_spec(service).build_routes(RouteContext(ServiceMetrics(service))):
            routes.setdefault(route.topic, set()).add(service)
    assert operations(asyncapi, "receive") == routes


def test_each_service_topic_has_one_sender(asyncapi: dict[str, Any]):
    sent = operations(asyncapi, "send")
    assert all(len(services) == 1 for services in sent.values()), sent
    assert {t: s for t, (s,) in sent.items()} == {t: p for t, p in contracts.PRODUCERS.items() if p in SERVICES}


def readme_topics() -> dict[str, tuple[set[str], set[str]]]:
    """topic -> (producing services, consuming services) as the README's topic table names them."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Topics\n", 1)[1].split("\n## ", 1)[0]

    def named(cell: str) -> set[str]:
        return {s for s in SERVICES if re.search(rf"\b{s}\b", cell)}

    table: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([^`]+)`[^|]*\|([^|]*)\|([^|]*)\|", line)
        if match:
            topic, producer, consumers = match.groups()
            table[topic] = (named(producer), named(consumers))
    return table


def test_the_readme_topic_table_agrees(asyncapi: dict[str, Any]):
    table = readme_topics()
    assert set(table) == set(v1.TOPICS)
    sent, received = operations(asyncapi, "send"), operations(asyncapi, "receive")
    for topic, (producers, consumers) in table.items():
        assert sent.get(topic, set()) == producers, f"{topic}: producer"
        assert received.get(topic, set()) == consumers, f"{topic}: consumers"


def test_channel_descriptions_name_producer_consumers_and_key(asyncapi: dict[str, Any]):
    for key, channel in asyncapi["channels"].items():
        topic = channel["address"]
        text = channel["description"]
        assert f"Produced by {contracts.PRODUCERS[topic]}" in text, key
        assert f"Key: `{contracts.key_field(v1.MODELS[topic])}`" in text, key
    provider_channels = [c for c in asyncapi["channels"].values() if c["address"] == v1.SERVICE_PROVIDER_UPDATED]
    assert all("provider_id" in c["description"] and "Compacted" in c["description"] for c in provider_channels)


def test_service_outputs_are_exactly_the_topics_the_services_produce() -> None:
    produced = {t for t, producer in contracts.PRODUCERS.items() if producer in SERVICES}
    assert set(v1.SERVICE_OUTPUTS) == produced
    assert set(v1.UPSTREAM_INPUTS) == set(v1.TOPICS) - produced
