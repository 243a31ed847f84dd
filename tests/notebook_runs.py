"""How the scenario notebook tests run a notebook: smoke settings, the embedded data, one thread (faster on a busy
2-core machine), the executed copy and the key figures written under the test's folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mmhelpers.run_notebooks import discover, execute


def scenario_runner(scenario: str) -> Callable[..., dict]:
    """``run(stem, tmp_path, **params) -> metrics`` for the notebooks of ``scenario`` (e.g. "06_customer_service")."""
    notebooks = discover(scenario)

    def run(stem: str, tmp_path: Path, **params: object) -> dict:
        (path,) = [p for p in notebooks if p.stem == stem]
        return execute(path, {"SMOKE": True, "DATA": "embedded", "THREADS": 1, **params},
                       out_dir=tmp_path / "executed", metrics_json=tmp_path / "metrics.json")  # fmt: skip

    return run
