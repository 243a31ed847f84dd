"""The one training engine: learning, explicit and exact resume, safe checkpoints, devices, precision, processes."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mmhelpers.engine import (
    CHECKPOINT,
    CheckpointMismatch,
    FitConfig,
    accelerator,
    fit,
    load_checkpoint,
    shard,
    warmup_cosine,
)
from mmhelpers.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def blobs(n: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) + 2.0 * y[:, None] * torch.tensor([1.0, -1.0, 0.5, 0.0])
    return {"x": x, "y": y}


class Net(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(batch["x"])
    return nn.functional.cross_entropy(logits, batch["y"]), {"correct": float((logits.argmax(1) == batch["y"]).sum())}


def run(
    steps: int = 40, run_dir: Path | None = None, resume: str | None = None, stop_at: int | None = None,
    dropout: float = 0.1, **cfg_kw: object,
) -> tuple[nn.Module, object]:  # fmt: skip
    torch.manual_seed(0)
    data = blobs()
    model = Net(dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)

    def batch(step: int) -> dict[str, torch.Tensor]:
        idx = torch.randperm(256, generator=torch.Generator().manual_seed(step))[:32]
        return {k: v[idx] for k, v in data.items()}

    def evaluate(m: nn.Module) -> dict[str, float]:
        val = blobs(128, seed=1)
        return {"acc": float((m(val["x"]).argmax(1) == val["y"]).float().mean())}

    cfg = FitConfig(**({"steps": steps, "eval_every": 10, "checkpoint_every": 10, "monitor": "acc", "progress": False,
                        "precision": "fp32", "device": "cpu"} | cfg_kw))  # fmt: skip
    hist = fit(model, opt, batch, loss_fn, cfg, scheduler=sched, evaluate=evaluate, run_dir=run_dir,
               resume=resume, fingerprint={"lr": 1e-2, "steps": steps}, stop_at=stop_at)  # fmt: skip
    return model, hist


def test_fit_learns_and_records_steps_and_evaluations() -> None:
    _, hist = run()
    assert hist.step == 40 and len(hist.loss) == len(hist.lr) == len(hist.logs["correct"]) == 40
    assert [e["step"] for e in hist.evals] == [10, 20, 30, 40]
    assert hist.evals[-1]["acc"] > 0.9 and hist.loss[-1] < 0.5 * hist.loss[0]
    assert hist.lr[0] > hist.lr[-1]  # the schedule stepped
    assert hist.best_metric == max(e["acc"] for e in hist.evals)


def test_early_stopping_after_patience_evaluations() -> None:
    model, hist = run(steps=200, eval_every=5, patience=2, dropout=0.0)
    assert hist.stopped_early and hist.step < 200
    assert sum(e["step"] > hist.best_step for e in hist.evals) == 2


def test_resume_is_explicit_and_exact(tmp_path: Path) -> None:
    full, fh = run(dropout=0.3)  # dropout: the resume must restore the RNG too
    part, ph = run(run_dir=tmp_path, stop_at=20, dropout=0.3)
    assert ph.step == 20 and load_checkpoint(tmp_path / CHECKPOINT)["step"] == 20
    with pytest.raises(FileExistsError, match="resume='latest'"):  # never overwrites another run's checkpoint
        run(run_dir=tmp_path, dropout=0.3)
    resumed, rh = run(run_dir=tmp_path, resume="latest", dropout=0.3)
    assert rh.loss == fh.loss and rh.evals == fh.evals
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    again, ah = run(run_dir=tmp_path, resume="latest", dropout=0.3)  # a finished run is loaded, not retrained
    assert ah.loss == fh.loss
    # a path resumes too, and the new checkpoint goes to the new run folder
    part2, _ = run(run_dir=tmp_path / "p", stop_at=10, dropout=0.3)
    shutil.copy(tmp_path / "p" / CHECKPOINT, tmp_path / "copy.pt")
    _, ch = run(run_dir=tmp_path / "q", resume=str(tmp_path / "copy.pt"), dropout=0.3)
    assert ch.loss == fh.loss and (tmp_path / "q" / CHECKPOINT).is_file()


def test_another_runs_checkpoint_is_an_error_saying_what_differs(tmp_path: Path) -> None:
    run(steps=20, run_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match='"steps"'):
        run(steps=30, run_dir=tmp_path, resume="latest")
    with pytest.raises(FileNotFoundError):
        run(run_dir=tmp_path / "x", resume=str(tmp_path / "missing.pt"))


class _Planted:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {PLANTED_MARK}",))


PLANTED_MARK = Path("/tmp/mmhelpers-planted-checkpoint-ran")


def test_planted_pickle_checkpoint_never_runs(tmp_path: Path) -> None:
    PLANTED_MARK.unlink(missing_ok=True)
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / CHECKPOINT, "wb") as f:
        pickle.dump({"format": 1, "model": _Planted()}, f)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        run(run_dir=tmp_path, resume="latest")
    assert not PLANTED_MARK.exists()
    (tmp_path / CHECKPOINT).write_bytes(b"truncated")
    with pytest.raises(ValueError, match=str(tmp_path / CHECKPOINT)):
        run(run_dir=tmp_path, resume="latest")


def test_stale_temporary_files_are_cleaned_and_none_left(tmp_path: Path) -> None:
    stale = tmp_path / f".{CHECKPOINT}.pid999999.x1.tmp"  # a writer that died (no such process)
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"partial")
    run(steps=20, run_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]


def test_device_is_honoured() -> None:
    model, _ = run(steps=5)
    assert all(p.device == accelerator("cpu").device for p in model.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            run(steps=5, device="cuda")


def test_gradient_accumulation_matches_one_big_batch() -> None:
    one, h1 = run(steps=10, dropout=0.0)
    two, h2 = run(steps=10, dropout=0.0, grad_accum=2)
    for k, v in one.state_dict().items():
        torch.testing.assert_close(v, two.state_dict()[k], atol=1e-5, rtol=1e-4)
    assert h2.loss == pytest.approx(h1.loss, rel=1e-4)


def test_bf16_precision_trains_under_autocast() -> None:
    seen: list[torch.dtype] = []

    def spy(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["x"])
        seen.append(out.dtype)
        return nn.functional.cross_entropy(out.float(), batch["y"])

    model = Net()
    data = blobs()
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda s: data, spy,
        FitConfig(steps=3, precision="bf16", device="cpu", progress=False))  # fmt: skip
    assert seen == [torch.bfloat16] * 3
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))


def test_shard_splits_tensors_and_lists() -> None:
    batch = {"x": torch.arange(10), "names": list("abcdefghij"), "scale": 2.0}
    parts = [shard(batch, i, 3) for i in range(3)]
    assert torch.cat([p["x"] for p in parts]).tolist() == list(range(10))
    assert sum((p["names"] for p in parts), []) == list("abcdefghij")
    assert all(p["scale"] == 2.0 for p in parts)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="precision"):
        FitConfig(steps=1, precision="half")
    with pytest.raises(ValueError, match="monitor"):
        FitConfig(steps=1, patience=2)
    with pytest.raises(ValueError, match="steps"):
        FitConfig(steps=0)


@pytest.mark.slow
def test_two_processes_train_a_recipe_like_one(tmp_path: Path) -> None:
    """torchrun, 2 CPU processes over gloo, the same global batch: same accuracy within 1 point; one writer."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMHELPERS_THREADS": "1", "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "scripts" / "ddp_check.py")
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", script, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, script, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    r2 = json.loads((tmp_path / "two" / "result.json").read_text())
    r1 = json.loads((tmp_path / "one" / "result.json").read_text())
    assert r2["processes"] == 2 and "MULTI_CPU" in r2["distributed_type"] and r1["processes"] == 1
    ranks = [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert r1["test_acc"] > 0.9 and abs(r2["test_acc"] - r1["test_acc"]) <= 0.01, (r1["test_acc"], r2["test_acc"])
    assert math.isclose(r2["train_loss"][-1], r1["train_loss"][-1], rel_tol=0.15)
    # only the main process wrote: one checkpoint, one result, no temporary files
    written = sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert written == ["result.json", "run/checkpoint.pt"], written


def test_length_grouped_batches_cover_each_epoch_once_with_less_padding():
    import numpy as np

    from mmhelpers.engine import epoch_batch, length_grouped_batch

    lengths = np.random.default_rng(0).choice([50, 60, 200], size=400)
    for epoch in range(2):
        batches = [length_grouped_batch(lengths, 16, epoch * 25 + k, seed=3, group=5) for k in range(25)]
        assert sorted(np.concatenate(batches).tolist()) == list(range(400))  # every example once an epoch
    grouped = np.mean([lengths[length_grouped_batch(lengths, 16, k, seed=3, group=5)].max() for k in range(25)])
    plain = np.mean([lengths[epoch_batch(400, 16, k, seed=3)].max() for k in range(25)])
    assert plain > 190 and grouped < 0.8 * plain  # padded to the batch's longest: far less padding grouped
    assert np.array_equal(length_grouped_batch(lengths, 16, 7, 3), length_grouped_batch(lengths, 16, 7, 3))
    assert not np.array_equal(length_grouped_batch(lengths, 16, 7, 3), length_grouped_batch(lengths, 16, 7, 4))


def test_epoch_batch_walks_seeded_permutations_so_any_step_can_be_rebuilt():
    import numpy as np

    from mmhelpers.engine import epoch_batch

    first_epoch = np.concatenate([epoch_batch(10, 3, step, seed=1) for step in range(3)])
    assert len(set(first_epoch.tolist())) == 9 and first_epoch.max() < 10  # one epoch: 3 full batches, no repeat
    assert np.array_equal(epoch_batch(10, 3, 4, seed=1), epoch_batch(10, 3, 4, seed=1))
    assert not np.array_equal(epoch_batch(10, 3, 0, seed=1), epoch_batch(10, 3, 3, seed=1))  # a new epoch, reshuffled


def test_warmup_cosine_warms_up_then_decays_and_can_hold_the_peak_first() -> None:
    """The plain schedule decays from the end of warm-up; with ``decay`` it holds the peak until ``total - decay``."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    plain = warmup_cosine(opt, warmup=10, total=110).lr_lambdas[0]
    assert [plain(s) for s in (0, 9)] == [0.1, 1.0]
    assert plain(60) == pytest.approx(0.5) and plain(110) == pytest.approx(0.0)
    wsd = warmup_cosine(opt, warmup=10, total=110, decay=20, min_factor=0.1).lr_lambdas[0]
    assert [wsd(s) for s in (0, 9, 50, 90)] == [0.1, 1.0, 1.0, 1.0]
    assert wsd(100) == pytest.approx(0.55) and wsd(110) == pytest.approx(0.1)
    for bad in (0, 101):
        with pytest.raises(ValueError, match="decay"):
            warmup_cosine(opt, warmup=10, total=110, decay=bad)
