"""What a scenario run is configured with (RunnerSettings) and what it yields (ScenarioResult)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from schemas.v1 import ALL_TOPICS, SERVICE_PROVIDER_UPDATED
from services.common.settings import SERVICES, KafkaSettings, group_id
from services.scenario.model import Failure


@dataclass(frozen=True)
class RunnerSettings:
    """Where and how long to look. `for_stack()` fills in the project's broker and groups."""

    bootstrap_servers: str
    groups: tuple[str, ...] = ()  # groups whose lag must drain before the final check
    provider_group: str | None = None  # group that must consume provider updates; None: no wait
    provider_topic: str = SERVICE_PROVIDER_UPDATED
    topics: tuple[str, ...] = ALL_TOPICS
    timeout_s: float = 60.0
    lag_timeout_s: float = 15.0
    settle_s: float = 1.0
    provider_wait_s: float = 60.0
    catch_up_s: float = 10.0

    @classmethod
    def for_stack(
        cls,
        bootstrap_servers: str | None = None,
        kafka: KafkaSettings | None = None,
        **overrides: Any,
    ) -> RunnerSettings:
        kafka = kafka or KafkaSettings()
        stack = cls(
            bootstrap_servers=bootstrap_servers or kafka.bootstrap_servers,
            groups=tuple(group_id(s, kafka) for s in SERVICES),
            provider_group=group_id("dispatch", kafka),
        )
        return replace(stack, **overrides)


@dataclass
class ScenarioResult:
    name: str
    path: str
    run: str
    passed: bool
    duration_s: float
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records_seen: int = 0  # records of the scenario the collector read

    def explain(self) -> str:
        """The report of this scenario: a PASS/FAIL line, then each failure and warning."""
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{verdict} {self.name} ({self.duration_s:.1f}s, run {self.run})"]
        for f in self.failures:
            where = f" {f.topic}" if f.topic else ""
            lines.append(f"  - {f.kind}{where}: expected {f.expected}; saw {f.saw}")
            lines += [f"      {d}" for d in f.details]
        lines += [f"  ! {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"duration_s": round(self.duration_s, 3)}
