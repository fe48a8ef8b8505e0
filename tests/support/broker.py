"""The test session's own Kafka broker: never the one `make up` runs on 9092.

A stack started by `make up` on the tests' broker would read the tests' events (its dispatch
would answer their grants, its payout pay them) and publish its answers where the tests look.
The broker's storage is under .run/test-kafka-<port>/; it is left running for the next session and
stopped by `make down` (or `python -m tests.support.broker stop`). Two sessions at once set
TEST_KAFKA_PORT (and its port + 1, the controller's) apart, as they set TEST_PORT_BASE.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from services.common.settings import KafkaSettings, StackSettings
from services.ops import kafka

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("TEST_KAFKA_PORT", "19092"))


def settings() -> tuple[StackSettings, KafkaSettings]:
    home = ROOT / ".run" / f"test-kafka-{PORT}"
    st = StackSettings(run_dir=home / "run", data_dir=home / "data", kafka_port=PORT, kafka_controller_port=PORT + 1)
    return st, KafkaSettings(bootstrap_servers=f"127.0.0.1:{PORT}")


def start() -> KafkaSettings:
    """Starts the tests' broker, or reuses it when it runs; its settings."""
    st, ks = settings()
    kafka.ensure_jars(st)
    kafka.start(st, ks)
    return ks


def stop() -> bool:
    return kafka.stop(settings()[0])


if __name__ == "__main__":
    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: python -m tests.support.broker stop")
    print(f"tests' broker (127.0.0.1:{PORT}):")
    stop()  # says itself whether one was running
