"""Every acceptance scenario (shared ones and ours) against the real stack, on each database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.scenario.runner import RunnerSettings, run_scenario_file, scenario_files

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIRS = (ROOT.parent / "shared" / "scenarios", ROOT / "tests" / "scenarios" / "files")


def _scenario_dirs() -> list[Path]:
    configured = os.environ.get("SCENARIO_DIRS")
    dirs = [Path(p) for p in configured.split(os.pathsep)] if configured else list(DEFAULT_DIRS)
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise RuntimeError(f"scenario folder(s) not found: {missing} (set SCENARIO_DIRS)")
    return dirs


FILES = scenario_files(_scenario_dirs())


@pytest.mark.scenario
@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_scenario(stack, path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = RunnerSettings.for_stack(kafka=stack.kafka)
    result = await run_scenario_file(path, settings)
    assert result.passed, result.explain()
