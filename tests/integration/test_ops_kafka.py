"""The project's own broker answers and carries every topic of the v1 contract."""

from __future__ import annotations

import pytest

from schemas.v1 import ALL_TOPICS, SERVICE_PROVIDER_UPDATED, TOPICS
from services.common.settings import KafkaSettings
from services.ops import kafka
from tests.support import broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def ks() -> KafkaSettings:
    # Idempotent: reuses a running broker. Deliberately not stopped: other tests share it.
    st, settings = broker.settings()
    kafka.start(st, settings)
    return settings


def test_broker_answers(ks: KafkaSettings) -> None:
    assert kafka.is_up(ks)
    assert kafka.status(broker.settings()[0], ks)["cluster_id"]


def test_create_topics_is_idempotent(ks: KafkaSettings) -> None:
    kafka.create_topics(ks)
    assert kafka.create_topics(ks) == []


def test_every_topic_exists_with_configured_partitions(ks: KafkaSettings) -> None:
    kafka.create_topics(ks)
    counts = kafka.describe_topics(ks)
    assert {t: counts.get(t) for t in ALL_TOPICS} == {t: ks.partitions for t in ALL_TOPICS}


def test_provider_topic_is_compacted_and_others_are_not(ks: KafkaSettings) -> None:
    kafka.create_topics(ks)
    assert kafka.topic_config(ks, SERVICE_PROVIDER_UPDATED)["cleanup.policy"] == "compact"
    other = next(t for t in TOPICS if t != SERVICE_PROVIDER_UPDATED)
    assert kafka.topic_config(ks, other)["cleanup.policy"] == "delete"


async def test_the_operator_tools_producer_sends_records_as_large_as_the_topics_accept(ks: KafkaSettings) -> None:
    """A replay or a DLQ redrive re-sends what the services accepted: a 5 MiB record must go through."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from services.operator_tools.kafka_io import MAX_REQUEST_BYTES, safe_producer

    topic = "ops-test.large-records"  # its own topic: the contract's topics stay free of test data
    admin = AIOKafkaAdminClient(bootstrap_servers=ks.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": str(MAX_REQUEST_BYTES)})])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    producer = safe_producer(ks.bootstrap_servers)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"x" * (5 * 1024 * 1024), key=b"big")
    finally:
        await producer.stop()
    assert meta.offset >= 0
