"""The one training loop of the cookbook, on Hugging Face Accelerate: any device, several processes, safe checkpoints.

Every recipe trains through :func:`fit`. A recipe brings four things:

- ``model``: an ``nn.Module``; ``loss_fn(model, batch)`` calls it (through ``forward``, so that DDP sees the call)
  and returns the loss, or ``(loss, logs)`` with extra per-step scalars to record (e.g. correct predictions);
- ``optimizer`` and ``scheduler``: built by the recipe (schedules from ``transformers`` or ``torch``);
- ``data(step) -> batch``: the *global* batch of an optimizer step as a dict of tensors (a function of the step,
  so a resumed run sees the batches it would have seen); the engine shards it over the processes and moves it to
  the device. Stateful sources (a generator) can be handed in ``state`` to be checkpointed with the run;
- ``evaluate(model) -> {name: value}``: optional validation every ``eval_every`` steps, on every process (the
  model is unwrapped, in eval mode, without gradients), used to keep the best weights and to stop early.

The same code runs on the CPU, one GPU, or several processes started by ``torchrun`` or ``accelerate launch``
(gloo on CPUs, NCCL on GPUs): each process takes its slice of every global batch, DDP averages the gradients, and
only the main process writes. Checkpoints hold everything a resume needs (model, optimizer, schedule, RNG states,
history) in one file, written atomically, read with ``torch.load(weights_only=True)``, and carry a *fingerprint*
(config and data hashes): resuming is explicit (``resume="latest"`` or a path), a different fingerprint is an error
that says what differs, and a run never overwrites another run's checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from mmhelpers.atomic import atomic_open, clean_stale_temps
from mmhelpers.precision import PRECISIONS, autocast, resolve_precision

Batch = dict[str, Any]
LossFn = Callable[[nn.Module, Batch], "torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]"]

CHECKPOINT = "checkpoint.pt"
FORMAT = 1  # checkpoint layout version

__all__ = [
    "PRECISIONS",
    "FitConfig",
    "History",
    "CheckpointMismatch",
    "accelerator",
    "fit",
    "resolve_precision",
    "shard",
    "epoch_batch",
    "length_grouped_batch",
    "warmup_cosine",
    "load_checkpoint",
    "eval_mode",
]


@dataclass
class FitConfig:
    """How to run the loop (what to train and on what is the recipe's business)."""

    steps: int  # optimizer steps in the whole run (the schedule spans them)
    grad_clip: float | None = 1.0  # max total gradient norm; None = off
    grad_accum: int = 1  # micro-batches per optimizer step (each process splits its shard into this many)
    precision: str = "auto"  # "auto": bf16 where the device has fast bf16 (AMX/AVX512-BF16 CPUs, recent GPUs) | ...
    device: str = "auto"  # "auto" (cuda, then mps, then cpu) | "cpu" | "cuda" | "mps"
    eval_every: int = 0  # validate every this many steps (and at the end); 0 = only at the end, if evaluate given
    checkpoint_every: int = 0  # write the checkpoint every this many steps (and at the end); 0 = only at the end
    monitor: str | None = None  # a key of evaluate()'s result: the best weights by it are restored at the end
    mode: str = "max"  # "max" or "min": which way the monitored value improves
    patience: int | None = None  # stop after this many evaluations without improvement; None = never
    restore_best: bool = True  # end with the best weights by `monitor` (else the last ones)
    progress: bool = True  # tqdm bar over steps
    desc: str = "train"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.grad_accum < 1:
            raise ValueError(f"need steps >= 1 and grad_accum >= 1, got {self.steps} and {self.grad_accum}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience is not None and self.monitor is None:
            raise ValueError("patience needs a monitor (a key of evaluate()'s result)")


@dataclass
class History:
    """What a run recorded: per-step loss, learning rate and logs; every evaluation; the best step."""

    step: int = 0  # optimizer steps done
    loss: list[float] = field(default_factory=list)  # per step (the main process's shard)
    lr: list[float] = field(default_factory=list)  # per step, of the first parameter group
    logs: dict[str, list[float]] = field(default_factory=dict)  # extra per-step scalars from loss_fn
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step": s, **evaluate(model)}
    best_step: int = -1
    best_metric: float = math.nan
    stopped_early: bool = False
    seconds: float = 0.0  # wall time of training and evaluation, summed over resumed sessions


class CheckpointMismatch(ValueError):
    """A checkpoint belongs to another run (different config or data) than the one asked to resume it."""


# ---------------------------------------------------------------- devices, processes, precision

_ACCELERATORS: dict[bool, Accelerator] = {}


def accelerator(device: str = "auto") -> Accelerator:
    """The process's Accelerator (one per process, as Accelerate wants); ``device="cpu"`` keeps it off GPUs."""
    kind = None if device in ("auto", "cpu") else torch.device(device).type
    if kind is not None and not _available(kind):
        raise RuntimeError(f"DEVICE={device!r} asked for, but there is no {kind} device here; use 'auto' or 'cpu'")
    cpu = device == "cpu"
    if cpu not in _ACCELERATORS:
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # recipes may leave a branch unused
        _ACCELERATORS[cpu] = Accelerator(cpu=cpu, kwargs_handlers=[ddp])
    acc = _ACCELERATORS[cpu]
    if kind is not None and acc.device.type != kind:
        raise RuntimeError(f"this process already trains on {acc.device}; start a new process for DEVICE={device!r}")
    return acc


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    return kind == "mps" and mps is not None and mps.is_available()


def epoch_batch(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices (into ``n`` examples) of the batch of optimizer step ``step``: each epoch is a permutation seeded by
    ``(seed, epoch)``, so ``data(step)`` can rebuild any step's batch, as a resumed run needs."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size : (k + 1) * batch_size]


def length_grouped_batch(lengths: Sequence[int], batch_size: int, step: int, seed: int, group: int = 50
                         ) -> np.ndarray:  # fmt: skip
    """:func:`epoch_batch` with less padding: each epoch's permutation is cut into megabatches of ``group`` batches,
    each megabatch sorted by ``lengths`` and cut into batches of similar lengths, and the epoch's batches are then
    shuffled, as transformers' ``LengthGroupedSampler`` (``group_by_length``) does. Deterministic per step."""
    n = len(lengths)
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    rng = np.random.default_rng([seed, epoch])
    perm, lengths = rng.permutation(n)[: per_epoch * batch_size], np.asarray(lengths)
    batches = []
    for a in range(0, len(perm), batch_size * group):
        mega = perm[a : a + batch_size * group]
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches += [mega[b : b + batch_size] for b in range(0, len(mega), batch_size)]
    return batches[rng.permutation(len(batches))[k]]


def shard(batch: Batch, index: int, count: int) -> Batch:
    """This process's contiguous slice of a global batch (tensors and lists split on their first dimension)."""
    if count == 1:
        return batch
    out: Batch = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.ndim:
            out[k] = torch.tensor_split(v, count)[index]
        elif isinstance(v, list):
            bounds = np.linspace(0, len(v), count + 1).astype(int)
            out[k] = v[bounds[index] : bounds[index + 1]]
        else:
            out[k] = v
    return out


def _to(batch: Batch, device: torch.device) -> Batch:
    if not isinstance(batch, Mapping):
        raise TypeError(f"data(step) must return a dict of tensors, got {type(batch).__name__}")
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; every submodule's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, min_factor: float = 0.0, decay: int | None = None
) -> LambdaLR:
    """Linear warm-up over ``warmup`` steps, the first at ``1 / warmup`` of the peak, then cosine decay to
    ``min_factor`` of the peak at step ``total``; with ``decay``, the peak holds until ``total - decay`` and the
    cosine spans the last ``decay`` steps only (warm-up, stable, decay: "WSD", as in MiniCPM).

    ``transformers.get_cosine_schedule_with_warmup`` spends its first step at learning rate 0; this schedule's
    first step already learns, which is what the committed results were trained with (its smoke runs are
    sensitive to that one step), so it stays, on torch's ``LambdaLR``.
    """
    if decay is not None and not 0 < decay <= total - warmup:
        raise ValueError(f"decay must be in [1, total - warmup] = [1, {total - warmup}], got {decay}")
    start = warmup if decay is None else total - decay
    return LambdaLR(
        optimizer, functools.partial(_warmup_cosine, warmup=warmup, start=start, total=total, min_factor=min_factor)
    )


def _warmup_cosine(step: int, warmup: int, start: int, total: int, min_factor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(0, step - start) / max(1, total - start))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- checkpoints


def _plain(obj: Any) -> Any:
    """JSON-normalised copy (tuples -> lists, paths -> str), as fingerprints are stored and compared."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "python": _plain(random.getstate()),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_checkpoint(path: str | Path, fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint written by :func:`fit` (``weights_only=True``); with ``fingerprint``, it must match it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or damaged file fails in many ways inside torch.load
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); delete it to start over") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint of this engine (format {FORMAT}); delete it to start over")
    if fingerprint is not None:
        want, have = _plain(fingerprint), ckpt["fingerprint"]
        diff = {k: {"now": want.get(k), "checkpoint": have.get(k)} for k in sorted(want.keys() | have.keys())
                if want.get(k) != have.get(k)}  # fmt: skip
        if diff:
            raise CheckpointMismatch(f"{path} was written by another run; what differs: {json.dumps(diff)[:2000]}")
    return ckpt


def _state_of(obj: Any) -> Any:
    """The state of a stateful data source: a ``torch.Generator`` or anything with ``state_dict``."""
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _load_state_of(obj: Any, state: Any) -> None:
    obj.set_state(state) if isinstance(obj, torch.Generator) else obj.load_state_dict(state)


def _save(path: Path, state: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


# ---------------------------------------------------------------- the loop


def _resume_source(resume: str | Path | None, ckpt_path: Path | None) -> Path | None:
    """The checkpoint to continue from (None: start fresh); a fresh start refuses to overwrite a checkpoint."""
    if resume == "latest":
        return ckpt_path if ckpt_path is not None and ckpt_path.is_file() else None
    if resume is not None:
        return Path(resume)
    if ckpt_path is not None and ckpt_path.is_file():
        raise FileExistsError(f"{ckpt_path} holds an earlier run's checkpoint; pass resume='latest' to continue "
                              "or load it, or give another run_dir (a run never overwrites another's)")  # fmt: skip
    return None


def _optimizer_step(optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler | None,
                    params: list[nn.Parameter], grad_clip: float | None) -> None:  # fmt: skip
    """Unscale (fp16), clip, step the optimizer and the schedule, clear the gradients."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Callable[[int], Batch],
    loss_fn: LossFn,
    cfg: FitConfig,
    *,
    scheduler: Any = None,
    evaluate: Callable[[nn.Module], Mapping[str, Any]] | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    stop_at: int | None = None,
) -> History:
    """Train ``model`` for ``cfg.steps`` optimizer steps; return its :class:`History` (see the module docstring).

    ``run_dir``: where the run's checkpoint goes (``checkpoint.pt``). ``resume``: None starts fresh (and refuses a
    ``run_dir`` that holds another checkpoint), ``"latest"`` continues the checkpoint in ``run_dir`` if there is
    one (a finished run is just loaded), a path continues that file. ``fingerprint``: what identifies the run
    (config, data hashes); a resumed checkpoint must carry the same. ``state``: stateful data sources
    (``torch.Generator`` objects, or anything with ``state_dict``/``load_state_dict``) saved with the run.
    ``stop_at`` stops after that step with a checkpoint, as an interruption would.
    """
    acc = accelerator(cfg.device)
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_dir / CHECKPOINT if run_dir is not None else None
    fingerprint = _plain(fingerprint or {})
    extra = dict(state or {})
    if run_dir is not None and acc.is_main_process:
        clean_stale_temps(run_dir)

    source = _resume_source(resume, ckpt_path)
    model = model.to(acc.device)
    precision = resolve_precision(cfg.precision, acc.device)
    scaler = torch.amp.GradScaler(acc.device.type) if precision == "fp16" else None
    hist, best_state = History(), None
    if source is not None:
        ckpt = load_checkpoint(source, fingerprint)
        for name, obj in {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}.items():
            if obj is not None and ckpt[name] is not None:
                obj.load_state_dict(ckpt[name])
        hist, best_state = History(**ckpt["history"]), ckpt["best_state"]
        _set_rng_state(ckpt["rng"])
        for name, obj in extra.items():
            _load_state_of(obj, ckpt["state"][name])

    wrapped, optimizer = acc.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]  # in model order: the clipped norm's sum order

    def save() -> None:
        if ckpt_path is None or not acc.is_main_process:
            return
        _save(ckpt_path, {
            "format": FORMAT, "fingerprint": fingerprint, "step": hist.step, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
            "scaler": scaler.state_dict() if scaler else None, "history": asdict(hist), "best_state": best_state,
            "rng": _rng_state(), "state": {k: _state_of(v) for k, v in extra.items()},
        })  # fmt: skip

    def validate() -> bool:
        """Evaluate, record, track the best weights; True if patience ran out."""
        nonlocal best_state
        with eval_mode(model), autocast(precision, acc.device):
            metrics = dict(evaluate(model))
        hist.evals.append({"step": hist.step, **metrics})
        if cfg.monitor is None:
            return False
        value = float(metrics[cfg.monitor])
        better = value > hist.best_metric if cfg.mode == "max" else value < hist.best_metric
        if hist.best_step < 0 or better:
            hist.best_step, hist.best_metric = hist.step, value
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        evals_since = sum(1 for e in hist.evals if e["step"] > hist.best_step)
        return cfg.patience is not None and evals_since >= cfg.patience

    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    bar = tqdm(total=cfg.steps, initial=hist.step, desc=cfg.desc, disable=not cfg.progress or not acc.is_main_process)
    t0 = time.perf_counter()
    wrapped.train()
    while hist.step < end and not hist.stopped_early:
        micro = shard(data(hist.step), acc.process_index, acc.num_processes)
        pieces = [shard(micro, i, cfg.grad_accum) for i in range(cfg.grad_accum)]
        logs: dict[str, float] = {}
        total = 0.0
        for i, piece in enumerate(pieces):
            # gradients are averaged over the processes once per optimizer step, after the last micro-batch
            with acc.no_sync(wrapped) if i < len(pieces) - 1 else contextlib.nullcontext():
                with autocast(precision, acc.device):
                    out = loss_fn(wrapped, _to(piece, acc.device))
                loss, step_logs = out if isinstance(out, tuple) else (out, {})
                loss = loss.float() / cfg.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
            total += loss.item()
            for k, v in step_logs.items():
                logs[k] = logs.get(k, 0.0) + float(v)
        hist.lr.append(optimizer.param_groups[0]["lr"])
        _optimizer_step(optimizer, scheduler, scaler, params, cfg.grad_clip)
        hist.step += 1
        hist.loss.append(total)
        for k, v in logs.items():
            hist.logs.setdefault(k, []).append(v)
        bar.update(1)
        if evaluate is not None and (hist.step == cfg.steps or (cfg.eval_every and hist.step % cfg.eval_every == 0)):
            hist.stopped_early = validate()
            bar.set_postfix({k: f"{v:.3f}" for k, v in hist.evals[-1].items() if isinstance(v, float)})
        else:
            bar.set_postfix(loss=f"{total:.3f}")
        if hist.step == end or hist.stopped_early or (cfg.checkpoint_every and hist.step % cfg.checkpoint_every == 0):
            hist.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save()
    hist.seconds += time.perf_counter() - t0
    bar.close()
    if cfg.restore_best and best_state is not None and (hist.step >= cfg.steps or hist.stopped_early):
        model.load_state_dict(best_state)
    acc.wait_for_everyone()
    model.eval()
    return hist
