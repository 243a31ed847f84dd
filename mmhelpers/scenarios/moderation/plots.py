"""Figures of the moderation notebooks: posts with their label and text box, OCR boxes, score distributions."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Polygon, Rectangle

LABEL_COLOURS = {0: "tab:green", 1: "tab:red"}


def show_post(ax: Axes, picture: np.ndarray, title: str = "", label: int | None = None,
              box: tuple[int, int, int, int] | None = None, width: int = 34) -> None:  # fmt: skip
    """A post, its title wrapped under it (green: allowed, red: flagged) and, if given, the text's box dashed."""
    ax.imshow(picture)
    if box is not None:
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.5, ls="--"))
    ax.set_title("\n".join(textwrap.wrap(title, width)), fontsize=9,
                 color=LABEL_COLOURS.get(label, "black") if label is not None else "black")  # fmt: skip
    ax.axis("off")


def draw_ocr_boxes(ax: Axes, picture: np.ndarray, lines: Sequence[object], title: str = "") -> None:
    """A picture with each OCR line's box (4 corners) outlined and its confidence written beside it."""
    ax.imshow(picture)
    for line in lines:
        box = np.asarray(line.box)  # type: ignore[attr-defined]
        ax.add_patch(Polygon(box, closed=True, fill=False, ec="yellow", lw=1.5))
        ax.text(box[0, 0], box[0, 1] - 3, f"{line.confidence:.2f}", color="yellow", fontsize=7,  # type: ignore[attr-defined]
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})  # fmt: skip
    ax.set_title("\n".join(textwrap.wrap(title, 40)), fontsize=8)
    ax.axis("off")


def plot_score_histograms(ax: Axes, scores: np.ndarray, labels: np.ndarray, title: str = "", bins: int = 30) -> None:
    """Overlapping histograms of a method's scores for allowed (green) and flagged (red) posts."""
    edges = np.histogram_bin_edges(scores, bins=bins)
    for lab, name in ((0, "allowed"), (1, "flagged")):
        ax.hist(scores[labels == lab], bins=edges, alpha=0.55, color=LABEL_COLOURS[lab], label=name)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("flag score")
    ax.legend(fontsize=8)
