"""The project's own broker answers and carries every topic of the v1 contract."""

from __future__ import annotations

import pytest

from schemas.v1 import ALL_TOPICS, SERVICE_PROVIDER_UPDATED, TOPICS
from services.common.settings import KafkaSettings, StackSettings
from services.ops import kafka

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def ks() -> KafkaSettings:
    # Idempotent: reuses a running broker. Deliberately not stopped: other tests share it.
    settings = KafkaSettings()
    kafka.start(StackSettings(), settings)
    return settings


def test_broker_answers(ks: KafkaSettings) -> None:
    assert kafka.is_up(ks)
    assert kafka.status(StackSettings(), ks)["cluster_id"]


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
