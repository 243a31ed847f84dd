"""Training curves: per-step losses, smoothed, several runs on one axis (the engine's ``History.loss``).

    fig, ax = plt.subplots()
    plot_loss_curves(ax, {"stage 1": h1.loss, "stage 2": h2.loss}, smooth=10, title="training")

Used by every scenario's training notebook.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes

__all__ = ["plot_loss_curves"]


def plot_loss_curves(ax: Axes, curves: dict[str, Sequence[float]], smooth: int = 10, title: str = "") -> None:
    """Per-step losses, each smoothed by a moving average of ``smooth`` steps (fewer for a short run)."""
    for name, losses in curves.items():
        y = np.asarray(losses, dtype=float)
        k = max(1, min(smooth, len(y) // 5))
        ys = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(ys)) + k, ys, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.legend(fontsize=8)
