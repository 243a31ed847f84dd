"""Drawing helpers of the mini-VLM scenario: patch grids, the architecture diagram, attention masks, slot maps."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from mmhelpers.loss_curves import plot_loss_curves  # the core's; importable from here as before

__all__ = ["show_grid", "draw_architecture", "plot_attention_mask", "plot_slot_attention", "plot_loss_curves"]


def show_grid(ax: Axes, image: np.ndarray, cells: int, title: str = "") -> None:
    """Show an (H, W, 3) image with a ``cells`` x ``cells`` grid over it, each cell numbered in token order."""
    h, w = image.shape[:2]
    ax.imshow(image)
    for k in range(1, cells):
        ax.axhline(k * h / cells - 0.5, color="k", lw=0.6)
        ax.axvline(k * w / cells - 0.5, color="k", lw=0.6)
    if cells <= 8:
        for r in range(cells):
            for c in range(cells):
                ax.text((c + 0.1) * w / cells, (r + 0.35) * h / cells, str(r * cells + c), fontsize=6, color="0.3")
    ax.set_title(title)
    ax.axis("off")


def _box(ax: Axes, xy: tuple[float, float], text: str, color: str, w: float = 2.2, h: float = 0.7) -> None:
    """A rounded box with centred text, lower-left corner at ``xy``."""
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.05", fc=color, ec="k", lw=1))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=8)


def _arrow(ax: Axes, a: tuple[float, float], b: tuple[float, float], style: str = "-|>") -> None:
    """An arrow from a to b."""
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, lw=1.2, color="k"))


def draw_architecture(ax: Axes, fusion: str, n_visual: int = 49, n_layer: int = 3, image_size: int = 224) -> None:
    """Boxes and arrows of a MiniVLM: frozen encoder -> projector -> decoder, with ``fusion`` "prefix" or "cross"."""
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6.2)
    ax.axis("off")
    _box(ax, (0.2, 0.3), f"image\n{image_size}x{image_size}", "#eeeeee", w=1.8)
    _box(ax, (0.2, 1.7), f"EfficientNet-Lite0\n(frozen) {n_visual} cells", "#cfe2f3", w=1.8, h=0.9)
    _box(ax, (0.2, 3.3), "projector\n(trained)", "#d9ead3", w=1.8)
    _arrow(ax, (1.1, 1.0), (1.1, 1.7))
    _arrow(ax, (1.1, 2.6), (1.1, 3.3))
    _box(ax, (6.6, 0.3), "<bos> a red circle ...", "#eeeeee", w=3.0)
    _box(ax, (6.6, 5.2), "next-word logits", "#eeeeee", w=3.0)
    if fusion == "prefix":
        _box(ax, (3.2, 1.5), f"decoder: {n_layer} x [causal self-attn + MLP]\nover [visual tokens ; text tokens]",
             "#fce5cd", w=6.4, h=2.6)  # fmt: skip
        _arrow(ax, (2.0, 3.65), (3.2, 3.3))
        _arrow(ax, (8.1, 1.0), (8.1, 1.5))
        _arrow(ax, (8.1, 4.1), (8.1, 5.2))
        ax.set_title("prefix fusion (LLaVA-style): visual tokens are the first positions of the sequence")
    else:
        _box(ax, (4.2, 1.5), f"decoder: {n_layer} x [causal self-attn\n+ cross-attn to visual + MLP]\nover text only",
             "#fce5cd", w=5.4, h=2.6)  # fmt: skip
        _arrow(ax, (2.0, 3.65), (4.2, 2.8))
        ax.text(2.4, 3.55, "keys/values of\ncross-attention", fontsize=7)
        _arrow(ax, (8.1, 1.0), (8.1, 1.5))
        _arrow(ax, (8.1, 4.1), (8.1, 5.2))
        ax.set_title("cross-attention fusion (Flamingo-style): text queries read the visual tokens")


def plot_attention_mask(ax: Axes, mask: torch.Tensor, n_prefix: int, title: str = "") -> None:
    """Draw a boolean (query, key) mask: white = may attend; lines separate the visual prefix from the text."""
    ax.imshow(mask.cpu().numpy(), cmap="Greys_r", vmin=0, vmax=1)
    if n_prefix:
        for pos in (n_prefix - 0.5,):
            ax.axhline(pos, color="tab:red", lw=1.5)
            ax.axvline(pos, color="tab:red", lw=1.5)
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("query position")
    ax.set_title(title)


def plot_slot_attention(
    image: np.ndarray, attention: torch.Tensor, labels: Sequence[str] | None = None, title: str = ""
) -> plt.Figure:
    """The image, then each slot's attention map (n_slots, R, R) overlaid on it."""
    n = attention.shape[0]
    fig, axes = plt.subplots(1, n + 1, figsize=(2.0 * (n + 1), 2.3))
    axes[0].imshow(image)
    axes[0].set_title(title or "scene", fontsize=8)
    h, w = image.shape[:2]
    for k, ax in enumerate(axes[1:]):
        ax.imshow(image, alpha=0.35)
        ax.imshow(attention[k].cpu().numpy(), cmap="magma", alpha=0.75, extent=(0, w, h, 0))
        ax.set_title(labels[k] if labels else f"slot {k}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
