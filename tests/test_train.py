"""Tests for mmhelpers.train: epoch batches, learning, schedules, early stopping, clipping, precision, exact resume."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import mmhelpers.encoders
from mmhelpers import train as train_module
from mmhelpers.engine import CheckpointMismatch
from mmhelpers.metrics import accuracy
from mmhelpers.train import (
    EpochBatches,
    History,
    TensorDictDataset,
    TrainConfig,
    Trainer,
    batches,
    build_scheduler,
    count_parameters,
    measure_latency,
)

CENTERS = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])


def blobs(n: int, seed: int, transform: Any = None) -> TensorDictDataset:
    """Three well-separated 2-D Gaussian blobs (learnable to ~100 %)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = CENTERS[y] + torch.randn(n, 2, generator=gen)
    return TensorDictDataset({"x": x, "label": y}, transform=transform)


def noise(n: int, seed: int) -> TensorDictDataset:
    """Random labels: a big MLP memorises the training set while validation loss only gets worse."""
    gen = torch.Generator().manual_seed(seed)
    return TensorDictDataset({"x": torch.randn(n, 2, generator=gen), "label": torch.randint(0, 3, (n,), generator=gen)})


class MLP(nn.Module):
    """Reads ``batch["x"]`` and ignores every other key."""

    def __init__(self, hidden: int = 32, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 3))
        self.out_dtypes: list[torch.dtype] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.net(batch["x"])
        self.out_dtypes.append(out.dtype)
        return out


def config(**overrides: Any) -> TrainConfig:
    """A quiet, fast config for the toy problems."""
    base: dict[str, Any] = {"epochs": 6, "lr": 1e-2, "batch_size": 64, "progress": False, "log_every_epoch": False,
                            "precision": "fp32"}  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted() -> tuple[Trainer, History, float, TensorDictDataset]:
    """One onecycle run on the blobs: (trainer, history, accuracy before training, val set)."""
    val = blobs(300, seed=2)
    trainer = Trainer(MLP(), config(epochs=8))
    before = trainer.evaluate(val)["acc"]
    history = trainer.fit(blobs(600, seed=1), val)
    return trainer, history, before, val


# ---------------------------------------------------------------- data


def test_tensordict_length_mismatch_names_keys() -> None:
    with pytest.raises(ValueError, match=r"'audio': 4.*'label': 3"):
        TensorDictDataset({"audio": torch.zeros(4, 2), "label": torch.zeros(3)})
    ds = TensorDictDataset({"x": torch.arange(6).reshape(3, 2), "label": [0, 1, 2]})  # lists become tensors
    assert len(ds) == 3 and torch.equal(ds[1]["x"], torch.tensor([2, 3])) and ds[2]["label"].item() == 2


def test_batches_cover_every_index_once_and_epochs_are_seeded() -> None:
    ds = TensorDictDataset({"i": torch.arange(10), "label": torch.arange(10) % 3})
    plain = list(batches(ds, 3))
    assert [len(b["i"]) for b in plain] == [3, 3, 3, 1] and torch.equal(
        torch.cat([b["i"] for b in plain]), ds.tensors["i"]
    )

    def epoch(seed: int, e: int) -> torch.Tensor:
        steps = EpochBatches(ds, 4, seed)
        assert steps.per_epoch == 3
        got = [steps(e * 3 + j) for j in range(3)]
        assert [len(b["i"]) for b in got] == [4, 4, 2]
        assert all(torch.equal(b["label"], b["i"] % 3) for b in got)  # keys stay aligned
        return torch.cat([b["i"] for b in got])

    first = epoch(0, 0)
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, torch.arange(10))
    assert torch.equal(first, epoch(0, 0)) and not torch.equal(first, epoch(1, 0))
    assert sorted(epoch(0, 1).tolist()) == list(range(10)) and not torch.equal(first, epoch(0, 1))
    assert torch.equal(EpochBatches(ds, 4, 0)(4)["i"], epoch(0, 1)[4:8])  # any step can be rebuilt (resume)


def test_transform_applied_to_training_batches_only_and_data_untouched() -> None:
    calls: list[int] = []

    def shift(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls.append(len(batch["x"]))
        batch["x"] += 100.0  # in place: must not reach the dataset
        return batch

    ds = blobs(50, seed=0, transform=shift)
    original = ds.tensors["x"].clone()
    assert all(b["x"].min() > 50 for b in batches(ds, 16, augment=True))
    assert all(b["x"].min() < 50 for b in batches(ds, 16))
    assert all(EpochBatches(ds, 16)(s)["x"].min() > 50 for s in range(4))
    assert torch.equal(ds.tensors["x"], original)
    trainer = Trainer(MLP(), config(epochs=2, batch_size=16))
    calls.clear()
    trainer.fit(ds, ds)
    assert calls == [16, 16, 16, 2] * 2  # training batches only, not the validation passes
    calls.clear()
    trainer.evaluate(ds)
    trainer.predict(ds)
    assert calls == []


# ---------------------------------------------------------------- learning and schedules


def test_fit_learns_blobs_from_chance(fitted: tuple[Trainer, History, float, TensorDictDataset]) -> None:
    trainer, h, before, val = fitted
    assert before < 0.5  # untrained: near chance (1/3)
    assert h.val_acc[-1] > 0.95 and trainer.evaluate(val)["acc"] == pytest.approx(h.val_acc[-1])
    assert h.epochs == 8 and len(h.val_loss) == len(h.lr) == 8
    assert h.train_loss[-1] < 0.2 * h.train_loss[0] and h.train_loss[2] < h.train_loss[0]
    assert h.val_acc[h.best_epoch] == h.best_metric == max(h.val_acc) and not h.stopped_early
    assert h.total_seconds > 0
    logits, labels = trainer.predict(val)
    assert logits.shape == (300, 3) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert torch.equal(labels, val.tensors["label"])
    assert accuracy(logits, labels) == pytest.approx(h.val_acc[-1])
    assert not trainer.model.training  # the engine hands the trained model back in eval mode
    trainer.model.train()
    trainer.predict(val)
    trainer.evaluate(val)
    assert trainer.model.training  # predict/evaluate restore the mode they found


def test_onecycle_lr_rises_then_falls(fitted: tuple[Trainer, History, float, TensorDictDataset]) -> None:
    lrs = fitted[1].lr
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert 0 < peak < len(lrs) - 1 and max(lrs) <= 1e-2
    assert all(a < b for a, b in zip(lrs[: peak + 1], lrs[1 : peak + 1], strict=False))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
    assert lrs[-1] < 1e-2 / 1000


def test_cosine_warmup_is_linear_then_decays_to_zero() -> None:
    cfg = config(schedule="cosine", epochs=10, warmup_epochs=2, lr=0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([0.1 * (k + 1) / 10 for k in range(10)])  # linear over 2 epochs x 5 steps
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[10] == pytest.approx(0.1)
    assert lrs[-1] < 0.01 * 0.1 and lrs[30] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 20 / 40)))
    # the same schedule through fit: each epoch records its last step's LR
    h = Trainer(MLP(), config(schedule="cosine", epochs=5, warmup_epochs=2, lr=0.1)).fit(blobs(256, seed=1))
    assert h.lr[:2] == pytest.approx([0.05, 0.1]) and h.lr[2] < 0.1 and h.lr[-1] < 0.03 * 0.1
    assert h.val_acc == [] and h.best_epoch >= 0 and h.best_metric == max(h.train_acc)  # no val: train metric


def test_constant_schedule_and_config_validation() -> None:
    h = Trainer(MLP(), config(schedule="constant", epochs=2, lr=3e-3)).fit(blobs(128, seed=1))
    assert h.lr == [3e-3, 3e-3]
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="val_f1")
    with pytest.raises(ValueError, match="needs val_data"):
        Trainer(MLP(), config(early_stopping_patience=2)).fit(blobs(64, seed=1))


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
def test_early_stopping_stops_and_restores_best(monitor: str) -> None:
    if monitor == "val_loss":  # random labels: val loss is best early and then only grows
        model, train, val = MLP(hidden=256), noise(128, seed=1), noise(128, seed=2)
        cfg = config(epochs=60, lr=1e-2, schedule="constant", monitor=monitor, early_stopping_patience=3)
    else:  # blobs: val accuracy saturates after a couple of epochs
        model, train, val = MLP(), blobs(600, seed=1), blobs(300, seed=2)
        cfg = config(epochs=30, monitor=monitor, early_stopping_patience=2)
    trainer = Trainer(model, cfg)
    h = trainer.fit(train, val)
    assert h.stopped_early and h.epochs < cfg.epochs
    assert h.epochs - 1 - h.best_epoch == cfg.early_stopping_patience  # stopped exactly `patience` epochs later
    key = monitor.removeprefix("val_")
    last = getattr(h, monitor)[-1]
    assert trainer.evaluate(val)[key] == pytest.approx(h.best_metric, abs=1e-7)  # best weights restored
    if monitor == "val_loss":
        assert h.best_metric < last - 1e-3 and h.best_metric == min(h.val_loss)


def test_grad_clip_bounds_the_gradient_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.nn.utils.clip_grad_norm_
    seen: list[tuple[float, float, float]] = []  # (max_norm, norm before, norm after)

    def recording_clip(params: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        params = list(params)
        before = real(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        seen.append((max_norm, float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    Trainer(MLP(), config(epochs=2, grad_clip=1e-3)).fit(blobs(256, seed=1))
    assert len(seen) == 2 * 4 and all(m == 1e-3 for m, _, _ in seen)  # once per optimizer step
    assert all(before > 1e-3 for _, before, _ in seen)  # clipping had work to do ...
    assert all(after <= 1e-3 * (1 + 1e-4) for _, _, after in seen)  # ... and did it
    seen.clear()
    Trainer(MLP(), config(epochs=1, grad_clip=None)).fit(blobs(256, seed=1))
    assert seen == []


# ---------------------------------------------------------------- checkpoints and resume


class Interrupt(RuntimeError):
    """Raised by the loss function to simulate a crash."""


def counting_loss(raise_at: int | None = None) -> tuple[Any, list[int]]:
    """Cross-entropy that counts training calls and raises on call number ``raise_at`` (1-based)."""
    calls: list[int] = []

    def loss_fn(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled():  # training steps only, not validation
            calls.append(1)
            if len(calls) == raise_at:
                raise Interrupt(f"simulated crash at training step {raise_at}")
        return nn.functional.cross_entropy(logits.float(), batch["label"])

    return loss_fn, calls


def jitter(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Random augmentation from the global torch RNG (a resume must restore it)."""
    batch["x"] = batch["x"] + 0.3 * torch.randn_like(batch["x"])
    return batch


def test_resume_after_crash_matches_uninterrupted_run(tmp_path: Path) -> None:
    cfg = config(epochs=4, batch_size=64)
    train, val, steps = blobs(200, seed=1, transform=jitter), blobs(100, seed=2), 4
    reference = Trainer(MLP(dropout=0.2), cfg)  # dropout, augmentation and shuffling all draw random numbers
    ref_h = reference.fit(train, val)

    ckpt = tmp_path / "ckpt"
    cfg_ckpt = config(epochs=4, batch_size=64, checkpoint_dir=str(ckpt))
    loss_fn, calls = counting_loss(raise_at=2 * steps + 1)  # first step of epoch 3
    with pytest.raises(Interrupt):
        Trainer(MLP(dropout=0.2), cfg_ckpt, loss_fn=loss_fn).fit(train, val)
    assert sorted(os.listdir(ckpt)) == ["checkpoint.pt"]  # nothing half-written left behind
    assert torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"] == 2 * steps

    with pytest.raises(FileExistsError, match="resume='latest'"):  # resuming is explicit
        Trainer(MLP(dropout=0.2), cfg_ckpt).fit(train, val)
    loss_fn, calls = counting_loss()
    resume = config(epochs=4, batch_size=64, checkpoint_dir=str(ckpt), resume="latest")
    resumed = Trainer(MLP(dropout=0.2, seed=123), resume, loss_fn=loss_fn)  # other init: weights come from the file
    h = resumed.fit(train, val)
    assert len(calls) == 2 * steps  # only epochs 3 and 4 were trained
    assert h.epochs == 4 and h.train_loss == ref_h.train_loss and h.val_acc == ref_h.val_acc
    ref_state = reference.model.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in resumed.model.state_dict().items())

    # a finished run resumes to its end without training again
    loss_fn, calls = counting_loss()
    again = Trainer(MLP(dropout=0.2, seed=7), resume, loss_fn=loss_fn)
    assert again.fit(train, val).train_loss == h.train_loss and calls == []
    assert all(torch.equal(v, ref_state[k]) for k, v in again.model.state_dict().items())


def test_resume_of_early_stopped_run_restores_best(tmp_path: Path) -> None:
    cfg = config(epochs=30, early_stopping_patience=2, checkpoint_dir=str(tmp_path), resume="latest")
    first = Trainer(MLP(), cfg)
    h = first.fit(blobs(600, seed=1), blobs(300, seed=2))
    assert h.stopped_early
    second = Trainer(MLP(seed=5), cfg)
    assert second.fit(blobs(600, seed=1), blobs(300, seed=2)).epochs == h.epochs
    assert all(torch.equal(v, first.model.state_dict()[k]) for k, v in second.model.state_dict().items())


def test_checkpoint_of_other_data_or_config_is_an_error_and_kept(tmp_path: Path) -> None:
    cfg = config(epochs=2, checkpoint_dir=str(tmp_path), resume="latest")
    Trainer(MLP(), cfg).fit(blobs(128, seed=1))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointMismatch, match="data"):  # other data: never the old model, silently
        Trainer(MLP(), cfg).fit(blobs(128, seed=3))
    with pytest.raises(CheckpointMismatch, match="lr"):
        Trainer(MLP(), config(epochs=2, lr=5e-3, checkpoint_dir=str(tmp_path), resume="latest")).fit(blobs(128, seed=1))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # the earlier run's file is untouched
    last = tmp_path / "checkpoint.pt"
    last.write_bytes(before[: len(before) // 2])  # truncated by a crash mid-copy
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        Trainer(MLP(), cfg).fit(blobs(128, seed=1))


# ---------------------------------------------------------------- precision, multitask, latency


def test_bf16_on_cpu_trains_under_autocast() -> None:
    model = MLP()
    trainer = Trainer(model, config(epochs=6, precision="bf16", device="cpu"))
    h = trainer.fit(blobs(600, seed=1), blobs(300, seed=2))
    assert h.val_acc[-1] > 0.9 and set(model.out_dtypes) == {torch.bfloat16}
    model.out_dtypes.clear()
    Trainer(model, config(epochs=1, precision="fp32")).fit(blobs(64, seed=1))
    assert set(model.out_dtypes) == {torch.float32}
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="off")


def test_multitask_dict_logits_with_custom_loss_and_predict() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.cls, self.reg = nn.Linear(2, 16), nn.Linear(16, 3), nn.Linear(16, 1)

        def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            z = torch.relu(self.body(batch["x"]))
            return {"cls": self.cls(z), "radius": self.reg(z).squeeze(-1)}

    def loss_fn(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ce = nn.functional.cross_entropy(out["cls"], batch["target"])
        return ce + nn.functional.mse_loss(out["radius"], batch["x"].norm(dim=1))

    def retarget(ds: TensorDictDataset) -> TensorDictDataset:
        return TensorDictDataset({"x": ds.tensors["x"], "target": ds.tensors["label"]})

    train, val = retarget(blobs(600, seed=1)), retarget(blobs(300, seed=2))
    trainer = Trainer(TwoHeads(), config(epochs=8, label_key="target"), loss_fn, lambda out: out["cls"].argmax(-1))
    h = trainer.fit(train, val)
    assert h.val_acc[-1] > 0.95
    out, labels = trainer.predict(val)
    assert set(out) == {"cls", "radius"} and out["cls"].shape == (300, 3) and out["radius"].shape == (300,)
    assert torch.equal(labels, val.tensors["target"])


def test_measure_latency_restores_each_modules_mode() -> None:
    model = MLP(dropout=0.5)
    model.train()
    model.net[2].eval()  # a mixed state (e.g. a frozen part) must come back exactly
    modes = [m.training for m in model.modules()]
    seconds = measure_latency(model, {"x": torch.randn(1, 2), "label": torch.tensor([0])}, n_warmup=1, n_runs=5)
    assert isinstance(seconds, float) and 0 < seconds < 1
    assert [m.training for m in model.modules()] == modes
    assert len(model.out_dtypes) == 6


def test_count_parameters_is_the_encoders_one() -> None:
    assert count_parameters is mmhelpers.encoders.count_parameters
    assert count_parameters(MLP(hidden=4)) == 2 * 4 + 4 + 4 * 3 + 3
    assert "count_parameters" in train_module.__all__


def test_checkpoint_every_sets_how_often_the_run_is_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every epoch by default; ``checkpoint_every=0`` only at the end (and the run reloads the same either way, as
    the setting is not part of the run's identity)."""
    import mmhelpers.engine as engine

    saves: list[Path] = []
    real_save = engine._save
    monkeypatch.setattr(engine, "_save", lambda path, obj: (saves.append(Path(path)), real_save(path, obj)))
    Trainer(MLP(), config(epochs=3, checkpoint_dir=str(tmp_path / "each"), resume="latest")).fit(blobs(128, seed=1))
    assert len(saves) == 3
    saves.clear()
    last = config(epochs=3, checkpoint_dir=str(tmp_path / "end"), resume="latest", checkpoint_every=0)
    trained = Trainer(MLP(), last)
    trained.fit(blobs(128, seed=1))
    assert saves == [tmp_path / "end" / "checkpoint.pt"]
    loaded = Trainer(MLP(seed=5), config(epochs=3, checkpoint_dir=str(tmp_path / "end"), resume="latest"))
    assert loaded.fit(blobs(128, seed=1)).epochs == 3 and len(saves) == 1  # loaded, not trained nor saved again
    assert all(torch.equal(v, trained.model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    with pytest.raises(ValueError, match="checkpoint_every"):
        config(checkpoint_every=-1)
