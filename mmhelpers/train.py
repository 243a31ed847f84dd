"""One trainer for every scenario: dict batches, LR schedules, AMP, early stopping, atomic checkpoints and resume.

Batches are dicts of tensors such as ``{"audio": ..., "image": ..., "label": ...}``. The model is called as
``model(batch)`` with the whole dict (label included) and must ignore keys it does not use. The default loss is
cross-entropy on ``batch[config.label_key]``; multitask models return a dict of logits and pass their own
``loss_fn(logits, batch)`` and ``predict_fn(logits) -> class ids`` (used for accuracy).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mmhelpers.atomic import atomic_open
from mmhelpers.encoders import count_parameters
from mmhelpers.utils import get_device, set_seed

Batch = dict[str, Any]
Logits = torch.Tensor | dict[str, torch.Tensor]
LossFn = Callable[[Any, Batch], torch.Tensor]
PredictFn = Callable[[Any], torch.Tensor]

SCHEDULES = ("onecycle", "cosine", "constant")
MONITORS = ("val_acc", "val_loss")
AMP_MODES = ("auto", "bf16", "fp16", "off")
CHECKPOINT_VERSION = 1
_RUN_ONLY = ("device", "checkpoint_dir", "progress", "log_every_epoch")  # may change between a run and its resume

__all__ = [
    "History",
    "TensorDictDataset",
    "TrainConfig",
    "Trainer",
    "batches",
    "build_scheduler",
    "count_parameters",
    "measure_latency",
    "resolve_amp",
]


# ---------------------------------------------------------------- configuration and history


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults suit the cookbook's small fusion heads."""

    epochs: int = 20
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-4
    batch_size: int = 64  # used for TensorDictDatasets; a DataLoader brings its own
    grad_clip: float | None = 1.0  # max total gradient norm; None = off
    schedule: str = "onecycle"  # "onecycle" | "cosine" | "constant", stepped every batch
    warmup_epochs: int = 0  # linear warm-up before the cosine decay ("cosine" only)
    label_smoothing: float = 0.0  # for the default cross-entropy loss
    early_stopping_patience: int | None = None  # epochs without improvement of `monitor`; None = off
    monitor: str = "val_acc"  # "val_acc" (maximised) or "val_loss" (minimised)
    amp: str = "auto"  # "auto" (bf16 on CUDA if supported, else fp16; off on CPU) | "bf16" | "fp16" | "off"
    device: str = "auto"
    seed: int | None = 0  # None = leave the random generators as they are
    checkpoint_dir: str | None = None  # last.pt every epoch, best.pt on improvement; fit resumes from last.pt
    progress: bool = True  # tqdm bar over epochs
    log_every_epoch: bool = True  # one printed line per epoch
    label_key: str = "label"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("schedule", self.schedule, SCHEDULES),
            ("monitor", self.monitor, MONITORS),
            ("amp", self.amp, AMP_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, got {value!r}")
        if self.epochs < 1 or self.batch_size < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, 0 <= warmup_epochs <= epochs: {self}")


@dataclass
class History:
    """Per-epoch curves of a run (lists indexed by epoch, 0-based) and its summary."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # empty without validation data
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate of each epoch's last step
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1  # index of the best epoch by the monitored metric; -1 before any
    best_metric: float = math.nan
    total_seconds: float = 0.0  # wall time of all fit calls that made this run (resumes included)
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs trained."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON and checkpoints)."""
        return asdict(self)


# ---------------------------------------------------------------- data


class TensorDictDataset(Dataset):
    """A dict of equal-length tensors; item ``i`` is ``{key: tensor[i]}``.

    ``transform(batch) -> batch`` runs on whole training batches (cheap batched augmentation such as
    SpecAugment masks, random affine or re-pairing); it gets its own copy, never a view of the data.
    """

    def __init__(self, tensors: Mapping[str, Any], transform: Callable[[Batch], Batch] | None = None):
        self.tensors = {k: torch.as_tensor(v) for k, v in tensors.items()}
        lengths = {k: (len(v) if v.ndim else 0) for k, v in self.tensors.items()}
        if not lengths:
            raise ValueError("TensorDictDataset needs at least one tensor")
        if len(set(lengths.values())) > 1:
            raise ValueError(f"TensorDictDataset tensors differ in length (first dimension): {lengths}")
        self.transform = transform
        self.n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Batch:
        return {k: v[i] for k, v in self.tensors.items()}


def batches(
    dataset: TensorDictDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: bool = True,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Dict batches sliced straight from the tensors (every index once per pass); ``augment`` applies the transform."""
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else None
    transform = dataset.transform if augment else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            batch = {k: v[start : start + batch_size] for k, v in dataset.tensors.items()}  # views
            if transform is not None:
                batch = {k: v.clone() for k, v in batch.items()}
        else:
            idx = order[start : start + batch_size]
            batch = {k: v[idx] for k, v in dataset.tensors.items()}  # copies
        yield transform(batch) if transform is not None else batch


def steps_per_epoch(data: TensorDictDataset | Iterable[Batch], batch_size: int) -> int:
    """Optimizer steps in one pass over ``data``."""
    if isinstance(data, TensorDictDataset):
        return math.ceil(len(data) / batch_size)
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "training data needs a length (a DataLoader or TensorDictDataset) to plan the schedule"
        ) from None


def _to_device(batch: Any, device: torch.device) -> Batch:
    """Move a batch's tensors to ``device``; other values (e.g. lists of strings) pass through."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"batches must be dicts of tensors, got {type(batch).__name__}")
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _batch_len(batch: Batch, key: str | None = None) -> int:
    """Number of examples in a batch: length of ``batch[key]``, else of its first tensor."""
    if key is not None and isinstance(batch.get(key), torch.Tensor):
        return len(batch[key])
    return next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))


# ---------------------------------------------------------------- schedules, precision, modes


def _cosine_factor(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _constant_factor(step: int) -> float:
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> LRScheduler:
    """The per-step LR schedule ``config.schedule`` for ``config.epochs * steps_per_epoch`` steps."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    if config.schedule == "cosine":
        factor = functools.partial(_cosine_factor, warmup=config.warmup_epochs * steps_per_epoch, total=total)
        return LambdaLR(optimizer, factor)
    return LambdaLR(optimizer, _constant_factor)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device`` (None = full precision)."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA (it uses a GradScaler); use 'bf16' or 'off' elsewhere")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


# ---------------------------------------------------------------- RNG state


def _rng_state(generators: dict[str, torch.Generator | None]) -> dict[str, Any]:
    """States of every generator a run draws from (torch, CUDA, NumPy, Python, shuffling)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    state.update({k: g.get_state() for k, g in generators.items() if g is not None})
    return state


def _set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator | None]) -> None:
    """Restore what ``_rng_state`` saved."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        if g is not None and k in state:
            g.set_state(state[k])


def _config_key(config: TrainConfig) -> dict[str, Any]:
    """The config fields a resume must match (all but where and how it reports)."""
    return {k: v for k, v in asdict(config).items() if k not in _RUN_ONLY}


# ---------------------------------------------------------------- trainer


class _Tally:
    """Running example-weighted loss and accuracy of one pass (kept on the device: no sync per step)."""

    def __init__(self) -> None:
        self.loss_sum: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0
        self.n, self.n_labeled = 0, 0

    def add(self, loss: torch.Tensor, preds: torch.Tensor | None, labels: torch.Tensor | None, n: int) -> None:
        self.loss_sum = self.loss_sum + loss.detach().float() * n
        self.n += n
        if preds is not None and labels is not None:
            self.correct = self.correct + (preds == labels).sum()
            self.n_labeled += len(labels)

    @property
    def loss(self) -> float:
        return float(self.loss_sum) / self.n if self.n else math.nan

    @property
    def acc(self) -> float:
        return int(self.correct) / self.n_labeled if self.n_labeled else math.nan


class Trainer:
    """Fit ``model(batch) -> logits`` with AdamW, a per-step LR schedule, optional AMP, early stopping and checkpoints.

    The model gets the whole batch dict (label included) and must ignore keys it does not use.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        loss_fn: LossFn | None = None,
        predict_fn: PredictFn | None = None,
    ):
        self.config = config or TrainConfig()
        self.device = get_device(self.config.device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn or self._cross_entropy
        self.predict_fn = predict_fn or _argmax
        self.amp_dtype = resolve_amp(self.config.amp, self.device)
        self.history = History()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: LRScheduler | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.generator = torch.Generator()  # shuffles TensorDictDatasets
        self._best_state: dict[str, torch.Tensor] | None = None
        self._loader_generator: torch.Generator | None = None
        self._steps = 0  # optimizer steps per epoch of the current run

    # ---- public API

    def fit(self, train_data: TensorDictDataset | Iterable[Batch], val_data: Any = None) -> History:
        """Train for ``config.epochs`` (resuming from ``checkpoint_dir/last.pt`` if there) and return the history."""
        cfg = self.config
        if cfg.early_stopping_patience is not None and val_data is None:
            raise ValueError("early_stopping_patience needs val_data")
        self._loader_generator = getattr(train_data, "generator", None)
        self._start_run(steps_per_epoch(train_data, cfg.batch_size))
        ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        if ckpt_dir is not None:
            self._resume(ckpt_dir / "last.pt")
        monitor = cfg.monitor if val_data is not None else cfg.monitor.replace("val_", "train_")
        h, t0 = self.history, time.perf_counter()
        base_seconds = h.total_seconds
        epochs = range(h.epochs, cfg.epochs)
        with tqdm(epochs, initial=h.epochs, total=cfg.epochs, desc="epochs", disable=not cfg.progress) as bar:
            for epoch in bar:
                if h.stopped_early:
                    break
                self._run_epoch(train_data, val_data)
                improved = self._track_best(monitor)
                h.stopped_early = self._should_stop(epoch)
                h.total_seconds = base_seconds + time.perf_counter() - t0
                if ckpt_dir is not None:
                    self._save_checkpoints(ckpt_dir, improved)
                bar.set_postfix(self._postfix())
                if cfg.log_every_epoch:
                    (tqdm.write if cfg.progress else print)(self._log_line(epoch))
        if cfg.early_stopping_patience is not None and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        h.total_seconds = base_seconds + time.perf_counter() - t0
        return h

    def evaluate(self, data: TensorDictDataset | Iterable[Batch]) -> dict[str, float]:
        """Mean loss and accuracy over ``data`` (eval mode, no gradients, no augmentation)."""
        tally = _Tally()
        with _eval_mode(self.model), torch.inference_mode():
            for batch in self._iterate(data, train=False):
                with self._autocast():
                    logits = self.model(batch)
                    loss = self.loss_fn(logits, batch)
                tally.add(loss, *self._preds_labels(logits, batch), _batch_len(batch, self.config.label_key))
        return {"loss": tally.loss, "acc": tally.acc}

    def predict(self, data: TensorDictDataset | Iterable[Batch]) -> tuple[Logits, torch.Tensor | None]:
        """All logits (N, C) as float32 on CPU (a dict of them for dict outputs) and labels (N,), or None without labels."""
        outs: list[Logits] = []
        labels: list[torch.Tensor] = []
        with _eval_mode(self.model), torch.inference_mode():
            for batch in self._iterate(data, train=False):
                with self._autocast():
                    out = self.model(batch)
                outs.append(
                    {k: v.float().cpu() for k, v in out.items()} if isinstance(out, Mapping) else out.float().cpu()
                )
                if isinstance(batch.get(self.config.label_key), torch.Tensor):
                    labels.append(batch[self.config.label_key].cpu())
        if outs and isinstance(outs[0], Mapping):
            logits: Logits = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}  # type: ignore[index]
        else:
            logits = torch.cat(outs)  # type: ignore[arg-type]
        return logits, (torch.cat(labels) if labels else None)

    # ---- one epoch

    def _run_epoch(self, train_data: Any, val_data: Any) -> None:
        """Train one pass, validate, and append the epoch's figures to the history."""
        h, t0 = self.history, time.perf_counter()
        tally, lr = _Tally(), math.nan
        self.model.train()
        for batch in self._iterate(train_data, train=True):
            lr = self.optimizer.param_groups[0]["lr"]
            loss, logits = self._train_step(batch)
            with torch.no_grad():
                tally.add(loss, *self._preds_labels(logits, batch), _batch_len(batch, self.config.label_key))
        h.train_loss.append(tally.loss)
        h.train_acc.append(tally.acc)
        h.lr.append(lr)
        if val_data is not None:
            val = self.evaluate(val_data)
            h.val_loss.append(val["loss"])
            h.val_acc.append(val["acc"])
        h.epoch_seconds.append(time.perf_counter() - t0)

    def _train_step(self, batch: Batch) -> tuple[torch.Tensor, Logits]:
        """Forward, backward, clip, optimizer and scheduler step; return the loss and logits."""
        with self._autocast():
            logits = self.model(batch)
            loss = self.loss_fn(logits, batch)
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip(params)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self._clip(params)
            self.optimizer.step()
        self.scheduler.step()
        return loss, logits

    def _clip(self, params: list[torch.Tensor]) -> None:
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)

    def _iterate(self, data: Any, train: bool) -> Iterator[Batch]:
        """Device batches: sliced (and, when training, shuffled and augmented) TensorDictDatasets, else ``data`` as is."""
        if isinstance(data, TensorDictDataset):
            source: Iterable[Any] = batches(
                data, self.config.batch_size, shuffle=train, generator=self.generator if train else None, augment=train
            )
        else:
            source = data
        for batch in source:
            yield _to_device(batch, self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _cross_entropy(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Default loss: cross-entropy on ``batch[label_key]`` with the configured label smoothing."""
        labels = batch[self.config.label_key]
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)

    def _preds_labels(self, logits: Logits, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Predicted and true class ids for accuracy (None when the batch has no labels)."""
        labels = batch.get(self.config.label_key)
        if not isinstance(labels, torch.Tensor):
            return None, None
        return self.predict_fn(logits), labels

    # ---- run set-up, best tracking, early stopping

    def _start_run(self, steps: int) -> None:
        """Seed, and build a fresh optimizer, schedule (``steps`` per epoch), scaler and history."""
        cfg, self._steps = self.config, steps
        if cfg.seed is not None:
            set_seed(cfg.seed)
            self.generator.manual_seed(cfg.seed)
        else:
            self.generator.seed()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg, steps)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.history, self._best_state = History(), None

    def _track_best(self, monitor: str) -> bool:
        """Update best_epoch / best_metric (and the CPU copy of the best weights); True if this epoch is the best."""
        h = self.history
        value = getattr(h, monitor)[-1]
        better = value < h.best_metric if monitor.endswith("loss") else value > h.best_metric
        if h.best_epoch >= 0 and not better:
            return False
        h.best_epoch, h.best_metric = h.epochs - 1, value
        if self.config.early_stopping_patience is not None:
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return True

    def _should_stop(self, epoch: int) -> bool:
        patience = self.config.early_stopping_patience
        return patience is not None and epoch - self.history.best_epoch >= patience and epoch + 1 < self.config.epochs

    # ---- checkpoints

    def _generators(self) -> dict[str, torch.Generator | None]:
        return {"generator": self.generator, "loader_generator": self._loader_generator}

    def _save_checkpoints(self, ckpt_dir: Path, improved: bool) -> None:
        """Write best.pt (on improvement) then last.pt, each atomically."""
        h = self.history
        if improved:
            best = {"model": self.model.state_dict(), "epoch": h.best_epoch, "metric": h.best_metric}
            _atomic_save(
                {**best, "config": _config_key(self.config), "version": CHECKPOINT_VERSION}, ckpt_dir / "best.pt"
            )
        last = {
            "version": CHECKPOINT_VERSION,
            "config": _config_key(self.config),
            "epoch": h.epochs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "history": h.to_dict(),
            "best_state": self._best_state,
            "rng": _rng_state(self._generators()),
        }
        _atomic_save(last, ckpt_dir / "last.pt")

    def _resume(self, path: Path) -> None:
        """Load last.pt if it exists and matches this config; otherwise warn and keep the fresh start."""
        if not path.exists():
            return
        initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if ckpt.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"checkpoint format {ckpt.get('version')!r}, expected {CHECKPOINT_VERSION}")
            diff = {
                k: (v, ckpt["config"].get(k)) for k, v in _config_key(self.config).items() if ckpt["config"].get(k) != v
            }
            if diff:
                raise ValueError(f"config differs (now, stored): {diff}")
            _check_state_matches(self.model, ckpt["model"])
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.scaler is not None and ckpt["scaler"] is not None:
                self.scaler.load_state_dict(ckpt["scaler"])
            self.history = History(**ckpt["history"])
            self._best_state = ckpt["best_state"]
            _set_rng_state(ckpt["rng"], self._generators())
        except Exception as e:  # a truncated file fails in many ways inside torch.load
            warnings.warn(f"{path}: cannot resume ({type(e).__name__}: {e}); starting fresh", stacklevel=3)
            self.model.load_state_dict(initial)
            self._start_run(self._steps)

    # ---- reporting

    def _postfix(self) -> dict[str, str]:
        h = self.history
        out = {"loss": f"{h.train_loss[-1]:.3f}", "acc": f"{h.train_acc[-1]:.3f}"}
        if h.val_loss:
            out.update(val_loss=f"{h.val_loss[-1]:.3f}", val_acc=f"{h.val_acc[-1]:.3f}")
        return out

    def _log_line(self, epoch: int) -> str:
        h = self.history
        parts = [f"epoch {epoch + 1}/{self.config.epochs}"] + [f"{k} {v}" for k, v in self._postfix().items()]
        parts += [f"lr {h.lr[-1]:.2e}", f"{h.epoch_seconds[-1]:.1f}s"]
        return "  ".join(parts) + ("  (best)" if h.best_epoch == epoch else "")


def _check_state_matches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError unless ``state`` has exactly the model's keys and shapes (before anything is copied)."""
    own = model.state_dict()
    if own.keys() != state.keys():
        raise ValueError(f"parameter names differ: {sorted(own.keys() ^ state.keys())[:5]}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise ValueError(f"parameter shapes differ: {bad[:5]}")


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file, renamed into place only when complete."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


# ---------------------------------------------------------------- latency


def measure_latency(model: nn.Module, example_batch: Batch, n_warmup: int = 3, n_runs: int = 20) -> float:
    """Seconds per example of ``model(example_batch)`` (eval mode, inference mode; a batch of 1 is recommended)."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    batch = _to_device(example_batch, device)
    with _eval_mode(model), torch.inference_mode():
        for _ in range(n_warmup):
            model(batch)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n_runs):
            model(batch)
        _sync(device)
        seconds = time.perf_counter() - t0
    return seconds / (n_runs * _batch_len(batch))
