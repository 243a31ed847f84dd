"""Classification metrics, calibration (ECE, reliability curve) and their plots; torch tensors or NumPy arrays in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A NumPy array from a tensor (any device, bf16/fp16 become float32), array or list."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _class_ids(logits_or_preds: ArrayLike, labels: np.ndarray) -> np.ndarray:
    """Class ids: argmax of the last axis when given scores with one more dimension than the labels."""
    x = to_numpy(logits_or_preds)
    return x.argmax(axis=-1) if x.ndim == labels.ndim + 1 else x


def accuracy(logits_or_preds: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of correct predictions; accepts class ids (N,) or scores (N, C)."""
    y = to_numpy(labels)
    return float(np.mean(_class_ids(logits_or_preds, y) == y))


def macro_f1(preds: ArrayLike, labels: ArrayLike, n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 (sklearn, zero_division=0); over range(n_classes) if given."""
    y = to_numpy(labels)
    classes = list(range(n_classes)) if n_classes is not None else None
    return float(f1_score(y, _class_ids(preds, y), labels=classes, average="macro", zero_division=0))


def confusion(preds: ArrayLike, labels: ArrayLike, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    y = to_numpy(labels)
    return confusion_matrix(y, _class_ids(preds, y), labels=list(range(n_classes)))


def _confidence_correct(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Top-class probability and whether the top class is right, from probabilities (N, C)."""
    p, y = to_numpy(probs).astype(np.float64), to_numpy(labels)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, C) class probabilities, got shape {p.shape}; for binary use [1-p, p]")
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def reliability_curve(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (lo, hi]: centre, accuracy, mean confidence (NaN when empty) and count."""
    conf, correct = _confidence_correct(probs, labels)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    centers = (np.arange(n_bins) + 0.5) / n_bins
    return {"bin_centers": centers, "accuracy": acc, "confidence": mean_conf, "count": count}


def _ece_from_curve(curve: Mapping[str, np.ndarray]) -> float:
    """sum_b |B|/N * |acc(B) - conf(B)| over the non-empty bins of a reliability curve."""
    count = np.asarray(curve["count"])
    full = count > 0
    gaps = np.abs(np.asarray(curve["accuracy"])[full] - np.asarray(curve["confidence"])[full])
    return float(np.sum(count[full] / count.sum() * gaps))


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """ECE over ``n_bins`` equal-width confidence bins: sum_b |B|/N * |acc(B) - conf(B)|."""
    return _ece_from_curve(reliability_curve(probs, labels, n_bins))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al., ICML 2017): the T > 0 that minimises the cross-entropy of ``logits / T``
    on held-out examples (fit on validation data, apply to test). Accuracy is unchanged; confidence is not."""
    logits, labels = torch.as_tensor(logits).float().detach(), torch.as_tensor(labels).long()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def accuracy_coverage(probs: ArrayLike, labels: ArrayLike) -> dict[str, np.ndarray]:
    """Selective prediction: answer only the examples the model is surest of. Sorted by falling confidence, for
    every k the coverage k/N, the accuracy on those k answers and the confidence of the k-th (the threshold)."""
    conf, correct = _confidence_correct(probs, labels)
    order = np.argsort(-conf, kind="stable")
    k = np.arange(1, len(conf) + 1)
    return {"coverage": k / max(len(conf), 1), "accuracy": np.cumsum(correct[order]) / k, "threshold": conf[order]}


def coverage_at_accuracy(probs: ArrayLike, labels: ArrayLike, target: float = 0.99) -> dict[str, float]:
    """The largest coverage whose answers are at least ``target`` accurate, and the confidence threshold that
    gives it (answer when the top-class probability is at least the threshold); coverage 0 when none is."""
    curve = accuracy_coverage(probs, labels)
    ok = np.flatnonzero(curve["accuracy"] >= target)
    if not len(ok):
        return {"coverage": 0.0, "threshold": 1.0, "accuracy": float("nan")}
    k = int(ok[-1])
    return {"coverage": float(curve["coverage"][k]), "threshold": float(curve["threshold"][k]),
            "accuracy": float(curve["accuracy"][k])}  # fmt: skip


# ---------------------------------------------------------------- plots


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (4.5, 4.0)) -> Axes:
    import matplotlib.pyplot as plt

    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def plot_confusion(
    cm: ArrayLike, class_names: Sequence[str] | None = None, ax: Axes | None = None, normalize: bool = True
) -> Axes:
    """Confusion matrix as an image (rows = true class), row-normalised by default, cells annotated up to 20 classes."""
    counts = to_numpy(cm).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    values = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
    n = len(values)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    ax = _new_axes(ax, (1.0 + 0.5 * n, 0.8 + 0.5 * n) if n > 8 else (4.5, 4.0))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    if n <= 20:
        threshold = (values.max() or 1) / 2
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
                color = "white" if values[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (row-normalised)" if normalize else "confusion (counts)")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_reliability(curve: Mapping[str, np.ndarray], ax: Axes | None = None) -> Axes:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the ECE in the title."""
    ax = _new_axes(ax)
    centers, count = np.asarray(curve["bin_centers"]), np.asarray(curve["count"])
    full = count > 0
    width = 1.0 / len(centers)
    ax.bar(centers[full], np.asarray(curve["accuracy"])[full], width=width, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE = {_ece_from_curve(curve):.3f})")
    ax.legend(loc="upper left")
    return ax


def plot_history(history: Any, ax: Axes | Sequence[Axes] | None = None) -> tuple[Axes, Axes]:
    """Loss and accuracy per epoch, train and val, from a ``train.History`` or its dict; returns (loss_ax, acc_ax).

    ``ax``: None (a new 1x2 figure), a pair of Axes, or one Axes (accuracy then goes on a twin y-axis).
    """
    import matplotlib.pyplot as plt

    get = history.get if isinstance(history, Mapping) else lambda k, d=None: getattr(history, k, d)
    if ax is None:
        loss_ax, acc_ax = plt.subplots(1, 2, figsize=(9, 3.5))[1]
    elif isinstance(ax, Sequence | np.ndarray):
        loss_ax, acc_ax = ax
    else:
        loss_ax, acc_ax = ax, ax.twinx()
    for axis, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        for split, style in (("train", "-"), ("val", "--")):
            values = list(get(f"{split}_{metric}") or [])
            if values:
                axis.plot(range(1, len(values) + 1), values, style, marker=".", label=f"{split} {metric}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.legend(loc="best")
    best = get("best_epoch", -1)
    if best is not None and best >= 0:
        acc_ax.axvline(best + 1, color="gray", linestyle=":", linewidth=1)
    return loss_ax, acc_ax
