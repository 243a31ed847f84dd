"""Epoch-style classifier training on the one engine (:mod:`mmhelpers.engine`): dict batches, schedules, early stopping.

Batches are dicts of tensors such as ``{"audio": ..., "image": ..., "label": ...}``. The model is called as
``model(batch)`` with the whole dict (label included) and must ignore keys it does not use. The default loss is
cross-entropy on ``batch[config.label_key]``; multitask models return a dict of logits and pass their own
``loss_fn(logits, batch)`` and ``predict_fn(logits) -> class ids`` (used for accuracy).

:class:`Trainer` only translates epochs into engine steps (a seeded permutation per epoch, validation once per
epoch, accuracy from the per-step counts) and the engine's step history into per-epoch curves; the loop,
devices, processes, precision and checkpoints are the engine's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR
from torch.utils.data import Dataset

from mmhelpers.encoders import count_parameters
from mmhelpers.engine import FitConfig, accelerator, eval_mode, fit, warmup_cosine
from mmhelpers.features import fingerprint
from mmhelpers.precision import PRECISIONS, autocast
from mmhelpers.utils import set_seed

Batch = dict[str, Any]
Logits = torch.Tensor | dict[str, torch.Tensor]
LossFn = Callable[[Any, Batch], torch.Tensor]
PredictFn = Callable[[Any], torch.Tensor]

SCHEDULES = ("onecycle", "cosine", "constant")
MONITORS = ("val_acc", "val_loss")
# settings that are not part of a run's identity (they do not change what it learns)
_RUN_ONLY = ("device", "checkpoint_dir", "resume", "checkpoint_every", "progress", "log_every_epoch")

__all__ = [
    "EpochBatches",
    "History",
    "OnKey",
    "OnModalities",
    "TensorDictDataset",
    "TrainConfig",
    "Trainer",
    "batches",
    "build_scheduler",
    "count_parameters",
    "measure_latency",
]


# ---------------------------------------------------------------- configuration and history


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults suit the cookbook's small fusion heads."""

    epochs: int = 20
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-4
    batch_size: int = 64  # the global batch of one optimizer step (split over processes)
    grad_clip: float | None = 1.0  # max total gradient norm; None = off
    schedule: str = "onecycle"  # "onecycle" | "cosine" | "constant", stepped every batch
    warmup_epochs: int = 0  # linear warm-up before the cosine decay ("cosine" only)
    label_smoothing: float = 0.0  # for the default cross-entropy loss
    early_stopping_patience: int | None = None  # epochs without improvement of `monitor`; None = off
    monitor: str = "val_acc"  # "val_acc" (maximised) or "val_loss" (minimised)
    precision: str = "auto"  # "auto" (bf16 where the device has fast bf16) | "bf16" | "fp16" (CUDA) | "fp32"
    device: str = "auto"
    seed: int | None = 0  # None = leave the random generators as they are
    checkpoint_dir: str | None = None  # the run's folder: checkpoint.pt every checkpoint_every epochs and at the end
    checkpoint_every: int = 1  # epochs between checkpoints; 0 = only at the end (a head trained in seconds)
    resume: str | None = None  # None = fresh run | "latest" = continue checkpoint_dir's checkpoint | a path
    progress: bool = True  # tqdm bar over steps
    log_every_epoch: bool = True  # one printed line per epoch
    label_key: str = "label"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("schedule", self.schedule, SCHEDULES),
            ("monitor", self.monitor, MONITORS),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, got {value!r}")
        if self.epochs < 1 or self.batch_size < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, 0 <= warmup_epochs <= epochs: {self}")
        if self.checkpoint_every < 0:
            raise ValueError(
                f"TrainConfig.checkpoint_every must be 0 (at the end only) or more: {self.checkpoint_every}"
            )


@dataclass
class History:
    """Per-epoch curves of a run (lists indexed by epoch, 0-based) and its summary."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # empty without validation data
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate of each epoch's last step
    best_epoch: int = -1  # index of the best epoch by the monitored metric; -1 before any
    best_metric: float = math.nan
    total_seconds: float = 0.0  # wall time of all sessions that made this run (resumes included)
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs trained."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
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


def batches(dataset: TensorDictDataset, batch_size: int, augment: bool = False) -> Iterator[Batch]:
    """Dict batches in order (every index once), for evaluation; ``augment`` applies the transform."""
    for start in range(0, len(dataset), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in dataset.tensors.items()}  # views
        if augment and dataset.transform is not None:
            batch = dataset.transform({k: v.clone() for k, v in batch.items()})
        yield batch


class EpochBatches:
    """``step -> batch`` for the engine: epoch ``e`` is the ``e``-th permutation drawn from a generator seeded
    with ``seed``, cut into batches.

    The last batch of an epoch may be smaller. The training transform is applied to every batch (it may draw
    from the global RNG, which the engine's checkpoints restore). A function of the step: resuming needs no state.
    """

    def __init__(self, dataset: TensorDictDataset, batch_size: int, seed: int = 0):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.per_epoch = math.ceil(len(dataset) / batch_size)
        self._perms: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(seed)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch`` (draws the permutations up to it once)."""
        while len(self._perms) <= epoch:
            self._perms.append(torch.randperm(len(self.dataset), generator=self._gen))
        return self._perms[epoch]

    def __call__(self, step: int) -> Batch:
        epoch, j = divmod(step, self.per_epoch)
        idx = self.permutation(epoch)[j * self.batch_size : (j + 1) * self.batch_size]
        batch = {k: v[idx] for k, v in self.dataset.tensors.items()}  # copies
        return self.dataset.transform(batch) if self.dataset.transform is not None else batch


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> LRScheduler:
    """The per-step LR schedule ``config.schedule`` for ``config.epochs * steps_per_epoch`` steps."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    if config.schedule == "cosine":
        return warmup_cosine(optimizer, config.warmup_epochs * steps_per_epoch, total)
    from transformers import get_constant_schedule  # here, not at the top: importing it costs 2 s (peft, trainer)

    return get_constant_schedule(optimizer)


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


def _batch_len(batch: Batch, key: str | None = None) -> int:
    """Number of examples in a batch: length of ``batch[key]``, else of its first tensor."""
    if key is not None and isinstance(batch.get(key), torch.Tensor):
        return len(batch[key])
    return next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))


class OnKey(nn.Module):
    """Adapter for the Trainer: ``model(batch)`` -> ``inner(batch[key])`` (a unimodal model on its input)."""

    def __init__(self, inner: nn.Module, key: str):
        super().__init__()
        self.inner, self.key = inner, key

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.inner(batch[self.key])


class OnModalities(nn.Module):
    """Adapter for the Trainer: ``model(batch)`` -> ``inner({m: batch[m] for m in modalities})`` (a fusion model)."""

    def __init__(self, inner: nn.Module, modalities: Iterable[str]):
        super().__init__()
        self.inner, self.modalities = inner, tuple(modalities)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.inner({m: batch[m] for m in self.modalities})


# ---------------------------------------------------------------- trainer


class Trainer:
    """Fit ``model(batch) -> logits`` for whole epochs with AdamW, a per-step LR schedule and early stopping."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        loss_fn: LossFn | None = None,
        predict_fn: PredictFn | None = None,
    ):
        self.config = config or TrainConfig()
        self.device = accelerator(self.config.device).device
        self.model = model.to(self.device)
        self.loss_fn = loss_fn or self._cross_entropy
        self.predict_fn = predict_fn or _argmax
        self.history = History()

    def fit(
        self, train_data: TensorDictDataset, val_data: TensorDictDataset | Iterable[Batch] | None = None
    ) -> History:
        """Train for ``config.epochs`` (or until early stopping) and return the per-epoch history."""
        cfg = self.config
        if not isinstance(train_data, TensorDictDataset):
            raise TypeError(f"train_data must be a TensorDictDataset, got {type(train_data).__name__}")
        if cfg.early_stopping_patience is not None and val_data is None:
            raise ValueError("early_stopping_patience needs val_data")
        if cfg.seed is not None:
            set_seed(cfg.seed)
        data = EpochBatches(train_data, cfg.batch_size, cfg.seed or 0)
        steps = cfg.epochs * data.per_epoch
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = build_scheduler(optimizer, cfg, data.per_epoch)
        monitor = cfg.monitor if val_data is not None else None
        fit_cfg = FitConfig(
            steps=steps, grad_clip=cfg.grad_clip, precision=cfg.precision, device=cfg.device,
            eval_every=data.per_epoch, checkpoint_every=cfg.checkpoint_every * data.per_epoch, monitor=monitor,
            mode="min" if cfg.monitor == "val_loss" else "max", patience=cfg.early_stopping_patience,
            restore_best=cfg.early_stopping_patience is not None,
            progress=cfg.progress, desc="train",
        )  # fmt: skip
        key = {k: v for k, v in asdict(cfg).items() if k not in _RUN_ONLY}
        ident = {"config": key, "data": fingerprint(train_data.tensors), "model": _architecture(self.model)}
        if val_data is not None:
            ident["val_data"] = fingerprint(val_data.tensors) if isinstance(val_data, TensorDictDataset) else "given"
        hist = fit(
            self.model, optimizer, data, self._step_loss, fit_cfg, scheduler=scheduler,
            evaluate=(lambda m: {f"val_{k}": v for k, v in self.evaluate(val_data).items()}) if val_data is not None else None,
            run_dir=cfg.checkpoint_dir, resume=cfg.resume, fingerprint=ident,
        )  # fmt: skip
        self.history = _per_epoch(hist, data.per_epoch, val_data is not None)
        if self.history.best_epoch < 0 and self.history.epochs:  # no validation: the best epoch by train accuracy
            best = max(range(self.history.epochs), key=lambda e: self.history.train_acc[e])
            self.history.best_epoch, self.history.best_metric = best, self.history.train_acc[best]
        if cfg.log_every_epoch:
            for e in range(self.history.epochs):
                print(self._log_line(e))
        return self.history

    def _step_loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The engine's loss: the recipe's loss, plus counts for per-epoch loss and accuracy."""
        logits = model(batch)
        loss = self.loss_fn(logits, batch)
        n = _batch_len(batch, self.config.label_key)
        logs = {"n": float(n), "loss_sum": float(loss.detach()) * n}
        labels = batch.get(self.config.label_key)
        if isinstance(labels, torch.Tensor):
            logs["correct"] = float((self.predict_fn(logits) == labels).sum())
        return loss, logs

    def evaluate(self, data: TensorDictDataset | Iterable[Batch]) -> dict[str, float]:
        """Mean loss and accuracy over ``data`` (eval mode, no gradients, no augmentation)."""
        loss_sum, correct, n, n_labeled = 0.0, 0, 0, 0
        with eval_mode(self.model):
            for batch in self._iterate(data):
                with self._autocast():
                    logits = self.model(batch)
                    loss = self.loss_fn(logits, batch)
                b = _batch_len(batch, self.config.label_key)
                loss_sum, n = loss_sum + float(loss) * b, n + b
                labels = batch.get(self.config.label_key)
                if isinstance(labels, torch.Tensor):
                    correct += int((self.predict_fn(logits) == labels).sum())
                    n_labeled += len(labels)
        return {"loss": loss_sum / n if n else math.nan, "acc": correct / n_labeled if n_labeled else math.nan}

    def predict(self, data: TensorDictDataset | Iterable[Batch]) -> tuple[Logits, torch.Tensor | None]:
        """All logits (N, C) as float32 on CPU (a dict of them for dict outputs) and labels (N,), or None without labels."""
        outs: list[Logits] = []
        labels: list[torch.Tensor] = []
        with eval_mode(self.model):
            for batch in self._iterate(data):
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

    def _iterate(self, data: TensorDictDataset | Iterable[Batch]) -> Iterator[Batch]:
        source = batches(data, self.config.batch_size) if isinstance(data, TensorDictDataset) else data
        for batch in source:
            if not isinstance(batch, Mapping):
                raise TypeError(f"batches must be dicts of tensors, got {type(batch).__name__}")
            yield {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _autocast(self) -> Any:
        return autocast(self.config.precision, self.device)

    def _cross_entropy(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Default loss: cross-entropy on ``batch[label_key]`` with the configured label smoothing."""
        labels = batch[self.config.label_key]
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)

    def _log_line(self, epoch: int) -> str:
        h = self.history
        parts = [f"epoch {epoch + 1}/{self.config.epochs}", f"loss {h.train_loss[epoch]:.3f}"]
        parts.append(f"acc {h.train_acc[epoch]:.3f}")
        if h.val_loss:
            parts += [f"val_loss {h.val_loss[epoch]:.3f}", f"val_acc {h.val_acc[epoch]:.3f}"]
        parts.append(f"lr {h.lr[epoch]:.2e}")
        return "  ".join(parts) + ("  (best)" if h.best_epoch == epoch else "")


def _architecture(model: nn.Module) -> dict[str, Any]:
    """What identifies a model's shape: class name and parameter shapes (part of a run's fingerprint)."""
    return {"class": type(model).__name__, "shapes": fingerprint([list(v.shape) for v in model.state_dict().values()])}


def _per_epoch(hist: Any, per_epoch: int, has_val: bool) -> History:
    """The engine's per-step history as per-epoch curves (example-weighted loss and accuracy)."""
    out = History(total_seconds=hist.seconds, stopped_early=hist.stopped_early)
    logs = hist.logs
    for e in range(math.ceil(hist.step / per_epoch)):
        sl = slice(e * per_epoch, min((e + 1) * per_epoch, hist.step))
        n = sum(logs["n"][sl])
        out.train_loss.append(sum(logs["loss_sum"][sl]) / n)
        out.train_acc.append(sum(logs["correct"][sl]) / n if "correct" in logs else math.nan)
        out.lr.append(hist.lr[sl][-1])
    if has_val:
        out.val_loss = [e["val_loss"] for e in hist.evals]
        out.val_acc = [e["val_acc"] for e in hist.evals]
        if hist.best_step >= 0:
            out.best_epoch, out.best_metric = hist.best_step // per_epoch - 1, hist.best_metric
    return out


# ---------------------------------------------------------------- latency


def measure_latency(model: nn.Module, example_batch: Batch, n_warmup: int = 3, n_runs: int = 20) -> float:
    """Seconds per example of ``model(example_batch)`` (eval mode, no gradients; a batch of 1 is recommended)."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in example_batch.items()}
    with eval_mode(model), torch.inference_mode():
        for _ in range(n_warmup):
            model(batch)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n_runs):
            model(batch)
        _sync(device)
        seconds = time.perf_counter() - t0
    return seconds / (n_runs * _batch_len(batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
