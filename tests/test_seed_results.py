"""A results file gathered over seeds: means, spreads, stale settings dropped, and the runtime stamp."""

import json
import os
from pathlib import Path

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
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["results.json"]  # atomic: no temporaries


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


def _merge_in_process(path, seed, barrier):
    barrier.wait()  # every process reads and writes the file at the same moment
    merge_seed(path, record(seed, 0.1 * (seed + 1)), seed=seed)


def test_seeds_that_finish_at_once_all_land_in_the_file(tmp_path, monkeypatch):
    import multiprocessing as mp

    monkeypatch.setenv("MMHELPERS_CACHE", str(tmp_path / "cache"))  # the lock file's home, as the children see it
    path = tmp_path / "scenario.json"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_merge_in_process, args=(path, s, barrier)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    out = json.loads(path.read_text())
    assert out["seeds"] == [0, 1, 2, 3]  # without the lock, a read-modify-write loses seeds
    assert out["caption"]["bleu4"] == pytest.approx(0.25)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock") or p.name.startswith(".")]


def test_run_seeds_runs_each_seed_in_its_own_build_folder_and_stamps_the_wall_time(tmp_path, monkeypatch):
    import subprocess

    from mmhelpers import run_notebooks

    monkeypatch.setenv("MMHELPERS_BUILD", str(tmp_path / "build"))
    monkeypatch.setenv("MMHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(run_notebooks.os, "cpu_count", lambda: 4)
    results = tmp_path / "results" / "scenario.json"
    calls = []

    def fake_child(cmd, env, stdout, stderr, cwd):  # what one seed's `python -m mmhelpers.run_notebooks` leaves
        seed = int(cmd[cmd.index("SEED") + 1])
        params = {cmd[i + 1]: cmd[i + 2] for i, a in enumerate(cmd) if a == "-p"}
        calls.append((seed, params, env["MMHELPERS_THREADS"], "--no-site" in cmd))
        build = Path(env["MMHELPERS_BUILD"])
        (build / "executed-real" / "09_x").mkdir(parents=True)
        (build / "executed-real" / "09_x" / "05_b.ipynb").write_text(f"seed {seed}")
        if seed == 3:
            return subprocess.CompletedProcess(cmd, 1)
        merge_seed(results, record(seed, 0.1 * (seed + 1)), seed=seed)
        metrics = {"results_json": str(results), "_context": {"seed": seed}}
        summary = {"notebooks": {"09_x__05_b": {"status": "ok", "seconds": 10.0 * (seed + 1), "metrics": metrics}}}
        run_notebooks._stamp_results(summary)
        (build / "summary.json").write_text(json.dumps(summary))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(run_notebooks.subprocess, "run", fake_child)
    command = 'make notebooks ARGS="--only 09_x -p DATA real --seeds 0 1 --jobs 2"'
    failed = run_notebooks.run_seeds([0, 1], jobs=2, p=[["DATA", "real"]], only="09_x", command=command)
    assert failed == 0
    assert sorted(calls) == [(0, {"DATA": "real", "THREADS": "2", "SEED": "0"}, "2", True),
                             (1, {"DATA": "real", "THREADS": "2", "SEED": "1"}, "2", True)]  # fmt: skip
    out = json.loads(results.read_text())
    assert out["seeds"] == [0, 1] and out["runtime_s"] == pytest.approx(15.0)
    assert out["command"] == command  # what ran, not the per-seed command the notebook wrote
    assert {out["per_seed"][s]["command"] for s in ("0", "1")} == {command}
    for s in ("0", "1"):
        assert out["per_seed"][s]["all_seeds"]["seeds"] == [0, 1]
        assert out["per_seed"][s]["all_seeds"]["jobs"] == 2
    assert out["all_seeds"]["wall_s"] >= 0 and out["all_seeds"]["threads_per_job"] == 2
    build = tmp_path / "build"
    assert (build / "executed-real" / "09_x" / "05_b.ipynb").read_text() == "seed 0"  # the site shows the first seed
    summary = json.loads((build / "summary.json").read_text())
    assert set(summary["seeds"]) == {"0", "1"} and summary["all_seeds"]["jobs"] == 2

    # a seed that fails is counted, and a second run starts its folder afresh
    calls.clear()
    assert run_notebooks.run_seeds([1, 3], jobs=1, p=[["THREADS", "1"]]) == 1
    assert sorted(c[2] for c in calls) == ["1", "1"]
    assert (build / "seeds" / "seed3.log").exists()


def test_a_seeds_run_records_the_command_that_repeats_it(monkeypatch):
    from mmhelpers.run_notebooks import seeds_command

    monkeypatch.delenv("MMHELPERS_MIRROR", raising=False)
    argv = ["--only", "04_assistant", "-p", "DATA", "real", "--seeds", "0", "1", "2"]
    # the default --jobs depends on the machine's cores: written out
    assert seeds_command(argv, 2) == 'make notebooks ARGS="--only 04_assistant -p DATA real --seeds 0 1 2 --jobs 2"'
    monkeypatch.setenv("MMHELPERS_MIRROR", "../shared/data")
    assert seeds_command([*argv, "--jobs", "1"], 1) == (
        'MMHELPERS_MIRROR=../shared/data make notebooks ARGS="--only 04_assistant -p DATA real --seeds 0 1 2 --jobs 1"'
    )


def test_a_seeds_run_records_the_mirror_as_typed_not_made_absolute(monkeypatch):
    from mmhelpers import run_notebooks

    got = {}
    monkeypatch.setattr(run_notebooks, "run_seeds", lambda *a, command=None, **k: got.update(command=command) or 0)
    monkeypatch.setenv("MMHELPERS_MIRROR", "../shared/data")
    assert run_notebooks.main(["--only", "04_assistant", "--seeds", "0", "--jobs", "1", "--no-site"]) == 0
    assert got["command"] == 'MMHELPERS_MIRROR=../shared/data make notebooks ARGS="--only 04_assistant --seeds 0 --jobs 1 --no-site"'
    assert os.environ["MMHELPERS_MIRROR"] != "../shared/data"  # the kernels got it absolute


def test_seeds_and_a_seed_parameter_do_not_mix():
    from mmhelpers.run_notebooks import main

    with pytest.raises(SystemExit):
        main(["--only", "00_foundations", "--seeds", "0", "1", "-p", "SEED", "2"])
    with pytest.raises(SystemExit):
        main(["--only", "00_foundations", "--jobs", "2"])
    with pytest.raises(SystemExit):
        main(["--only", "00_foundations", "--seeds", "0", "0"])
    with pytest.raises(SystemExit):
        main(["--only", "00_foundations", "--seeds", "0", "1", "--jobs", "0"])
    from mmhelpers.run_notebooks import run_seeds

    with pytest.raises(ValueError, match="THREADS"):
        run_seeds([0], jobs=1, p=[["THREADS", "None"]])
