"""A results file gathered over seeds: means, spreads, stale settings dropped, and the runtime stamp."""

import json

import pytest

from mmhelpers.run_notebooks import _stamp_results
from mmhelpers.seed_results import mean_and_spread, merge_seed


def record(seed, bleu, steps=250, reply="a dog"):
    return {
        "caption": {"bleu4": bleu, "beams": 3},
        "format_ok": True,
        "chat": {"reply": reply},
        "config": {"seed": str(seed), "stage2_steps": str(steps)},
    }


def test_three_seeds_give_mean_spread_and_the_records(tmp_path):
    path = tmp_path / "results.json"
    merge_seed(path, record(2, 0.30, reply="third"), seed=2)
    merge_seed(path, record(0, 0.10, reply="first"), seed=0)
    out = merge_seed(path, record(1, 0.20), seed=1)
    assert out == json.loads(path.read_text())
    assert out["seeds"] == [0, 1, 2]
    assert out["caption"]["bleu4"] == pytest.approx(0.20)
    assert out["spread"]["caption"]["bleu4"] == pytest.approx(0.10)  # sample standard deviation of .1 .2 .3
    assert out["caption"]["beams"] == 3 and out["spread"]["caption"]["beams"] == 0.0
    assert out["format_ok"] is True and "format_ok" not in out["spread"]  # a boolean is not averaged
    assert out["chat"]["reply"] == "first"  # text: the lowest seed's
    assert out["per_seed"]["2"]["caption"]["bleu4"] == 0.30
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # atomic: no temporary files left


def test_rerunning_a_seed_replaces_it(tmp_path):
    path = tmp_path / "r.json"
    merge_seed(path, record(0, 0.10), seed=0)
    out = merge_seed(path, record(0, 0.40), seed=0)
    assert out["seeds"] == [0] and out["caption"]["bleu4"] == 0.40 and out["spread"]["caption"]["bleu4"] == 0.0


def test_other_settings_start_the_file_afresh(tmp_path):
    path = tmp_path / "r.json"
    merge_seed(path, record(0, 0.10), seed=0)
    merge_seed(path, record(1, 0.20), seed=1)
    out = merge_seed(path, record(2, 0.90, steps=500), seed=2)
    assert out["seeds"] == [2] and out["caption"]["bleu4"] == 0.90


def test_a_config_with_tuples_matches_the_file_it_was_written_to(tmp_path):
    path = tmp_path / "r.json"
    for seed in (0, 1):  # a dataclass's tuple fields come back from JSON as lists: still the same settings
        out = merge_seed(path, {"acc": 0.5 + seed / 10, "config": {"seed": seed, "channels": (32, 64)}}, seed=seed)
    assert out["seeds"] == [0, 1] and out["acc"] == pytest.approx(0.55)


def test_a_file_from_before_seeds_is_replaced_and_bad_json_named(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"caption": {"bleu4": 0.5}, "command": "old"}))
    assert merge_seed(path, record(0, 0.1), seed=0)["seeds"] == [0]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="r.json is not valid JSON"):
        merge_seed(path, record(0, 0.1), seed=0)
    with pytest.raises(ValueError, match="belong to the merged file"):
        merge_seed(tmp_path / "x.json", {"per_seed": {}}, seed=0)
    with pytest.raises(ValueError, match="no seeds"):
        mean_and_spread({})


def test_runtime_is_stamped_on_the_seed_that_ran(tmp_path):
    path = tmp_path / "scenario.json"
    merge_seed(path, record(0, 0.1), seed=0)
    merge_seed(path, record(1, 0.2), seed=1)

    def summary(seed, seconds):
        metrics = {"results_json": str(path), "_context": {"seed": seed}}
        return {"notebooks": {"04_x__01_a": {"seconds": seconds, "metrics": {}},
                              "04_x__05_b": {"seconds": seconds, "metrics": metrics}}}  # fmt: skip

    _stamp_results(summary(0, 100.0))
    _stamp_results(summary(1, 200.0))
    out = json.loads(path.read_text())
    assert out["per_seed"]["0"]["runtime_s"] == 200.0 and out["per_seed"]["1"]["runtime_s"] == 400.0
    assert out["runtime_s"] == pytest.approx(300.0)  # the mean run
    assert out["caption"]["bleu4"] == pytest.approx(0.15)  # the numbers stay as merged
