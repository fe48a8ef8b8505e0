"""A service still waiting for an unreachable broker at start-up stops when it is told to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.migrate import upgrade
from tests.support.stack import ROOT


def test_sigterm_during_startup_retries_ends_the_process(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'decision.db'}"
    upgrade("decision", url)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing listens there
        "DECISION_DATABASE_URL": url,
        "DECISION_HTTP_PORT": "18999",
        "DECISION_LOG_FORMAT": "text",
    }
    log = tmp_path / "decision.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "decision"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + 30
            while b"not reachable yet" not in log.read_bytes():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"no retry line in 30 s:\n{log.read_text()}"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code != 0, "a start-up cut short is not a clean run"
    assert "stopping before kafka producer was reachable" in log.read_text()
