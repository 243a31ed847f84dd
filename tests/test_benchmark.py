"""scripts/benchmark.py runs end to end on tiny settings and writes every section it promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_benchmark_smoke(benchmark, tmp_path: Path) -> None:
    out = tmp_path / "benchmark.json"
    benchmark.main(["--threads", "1", "--batch", "2", "--size", "64", "--warmup", "0", "--runs", "1",
                    "--matmul-n", "128", "--probe-images", "100", "--engine-steps", "6", "--engine-repeats", "1",
                    "--out", str(out)])  # fmt: skip
    r = json.loads(out.read_text())
    assert set(r["matmul_peak"]) == {"fp32", "bf16"} and r["threads"] == 1
    assert set(r["efficientnet_lite0"]["variants"]) == {"fp32", "channels_last", "channels_last_bf16"}
    for v in r["efficientnet_lite0"]["variants"].values():
        assert v["images_per_s"] > 0 and 0 < v["fraction_of_peak"] and {"load_avg_1min", "cpu_s_per_wall_s"} <= set(v)
    assert r["machine"]["cores"] and r["machine"]["cpu_capability"]
    eng = r["engine_overhead"]
    assert eng["steps"] == 6 and all(eng["seconds_per_step"][k] > 0 for k in ("bare", "engine"))
    assert eng["overhead"] == eng["seconds_per_step"]["engine"] / eng["seconds_per_step"]["bare"] - 1
    down = r["bf16_vs_fp32_downstream"]
    assert set(down["delta_points"]) == {"probe_accuracy", "recall@1", "recall@5"}
    assert down["feature_cosine"]["min"] > 0.98
