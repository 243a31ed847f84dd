"""Figures of the assistant scenario: a conversation's tokens with the loss mask, attention masks, examples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Patch, Rectangle

from mmhelpers.scenarios.assistant.chat import IGNORE, EncodedChat

KIND_COLOURS = {"prompt": "#d9d9d9", "image": "#9ecae1", "reply": "#a1d99b"}


def token_kinds(encoded: EncodedChat) -> list[str]:
    """Each position's kind: "image" (a placeholder), "reply" (its token is a loss target) or "prompt"."""
    image = set(encoded.image_positions.tolist())
    return ["image" if k in image else "reply" if int(lab) != IGNORE else "prompt"
            for k, lab in enumerate(encoded.labels)]  # fmt: skip


def plot_chat_tokens(ax: Axes, tokenizer, encoded: EncodedChat, per_row: int = 14, title: str = "") -> None:
    """The conversation as its tokens in reading order, coloured by kind: the loss mask drawn."""
    kinds = token_kinds(encoded)
    pieces = [tokenizer.convert_ids_to_tokens(int(t)) for t in encoded.input_ids]
    rows = (len(pieces) + per_row - 1) // per_row
    for k, (piece, kind) in enumerate(zip(pieces, kinds, strict=True)):
        r, c = divmod(k, per_row)
        text = piece.replace("Ġ", "·").replace("Ċ", "\\n")
        ax.add_patch(Rectangle((c, rows - r - 1), 0.95, 0.9, color=KIND_COLOURS[kind]))
        ax.text(c + 0.47, rows - r - 0.55, text[:11], ha="center", va="center", fontsize=6.5)
    ax.set_xlim(0, per_row)
    ax.set_ylim(0, rows)
    ax.axis("off")
    ax.legend(handles=[Patch(color=v, label=k + (" (loss)" if k == "reply" else "")) for k, v in KIND_COLOURS.items()],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)  # fmt: skip
    if title:
        ax.set_title(title, fontsize=10)


def plot_mask(ax: Axes, mask: torch.Tensor, image_positions: Sequence[int], title: str = "") -> None:
    """A (L, L) boolean attention mask (row: query, column: key), the image block outlined."""
    ax.imshow(mask.float().numpy(), cmap="Greys", vmin=0, vmax=1.3, interpolation="nearest")
    a, b = min(image_positions) - 0.5, max(image_positions) + 0.5
    ax.plot([a, b, b, a, a], [a, a, b, b, a], color="tab:blue", lw=1.5)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_title(title, fontsize=10)


def show_example(ax: Axes, image: np.ndarray, question: str, reply: str, truth: str | None = None, width: int = 38
                 ) -> None:  # fmt: skip
    """An image with its question and reply (and the reference) underneath, wrapped."""
    import textwrap

    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    ax.axis("off")
    lines = [*textwrap.wrap("Q: " + question, width), *textwrap.wrap("A: " + reply, width)]
    if truth is not None:
        lines += textwrap.wrap("ref: " + truth, width)
    ax.set_title("\n".join(lines), fontsize=8, loc="left")
