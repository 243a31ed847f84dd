"""Cross-modal retrieval metrics: ranks, recall@K and median rank, text-to-image and image-to-text.

The Flickr8k convention (Hodosh et al. 2013; Karpathy & Fei-Fei 2015): every caption is a query over
all images and has exactly one correct image; every image is a query over all captions and is
answered correctly by any of its (usually 5) captions, so its rank is that of the best-ranked one.
Ranks are 1-based; ties are broken against the query (an irrelevant item with the same score as the
best relevant one counts as ranked above it), so a model that outputs constants gets the worst rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

KS = (1, 5, 10)


def ranks_of_targets(sim: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Rank (1-based) of the best relevant item for each query; ``sim`` (Q, G), ``relevant`` (Q, G) bool."""
    if sim.shape != relevant.shape:
        raise ValueError(f"sim {tuple(sim.shape)} and relevant {tuple(relevant.shape)} must have the same shape")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant item")
    best = sim.masked_fill(~relevant, float("-inf")).max(dim=1).values  # (Q,) score of the best relevant item
    above = sim > best[:, None]
    tied = (sim == best[:, None]) & ~relevant  # ties go against the query
    return (above | tied).sum(dim=1) + 1


def recall_summary(ranks: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """``{"R@1": .., "R@5": .., "R@10": .., "median_rank": ..}`` from 1-based ranks (recalls as fractions)."""
    r = ranks.double()
    out = {f"R@{k}": float((r <= k).double().mean()) for k in ks}
    out["median_rank"] = float(np.median(r.cpu().numpy()))
    return out


def retrieval_metrics(
    text_emb: torch.Tensor, image_emb: torch.Tensor, caption_image: torch.Tensor | Sequence[int]
) -> dict[str, dict[str, float]]:
    """Recall@K and median rank both ways; ``caption_image[j]`` is the row of ``image_emb`` caption j describes.

    text_emb (C, D), image_emb (I, D): cosine similarity (embeddings are L2-normalised here).
    Returns ``{"t2i": {...}, "i2t": {...}}``.
    """
    caption_image = torch.as_tensor(caption_image, dtype=torch.long)
    if len(text_emb) != len(caption_image):
        raise ValueError(f"{len(text_emb)} caption embeddings but {len(caption_image)} caption_image entries")
    if len(caption_image) and (caption_image.min() < 0 or caption_image.max() >= len(image_emb)):
        raise ValueError(f"caption_image must index the {len(image_emb)} images")
    sim = F.normalize(text_emb.float(), dim=-1) @ F.normalize(image_emb.float(), dim=-1).T  # (C, I)
    relevant = caption_image[:, None] == torch.arange(len(image_emb))[None, :]  # (C, I)
    return {
        "t2i": recall_summary(ranks_of_targets(sim, relevant)),
        "i2t": recall_summary(ranks_of_targets(sim.T, relevant.T)),
    }


def top_matches(sim: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Indices of the k most similar gallery items per query, best first (for retrieval galleries)."""
    return sim.topk(min(k, sim.shape[1]), dim=1).indices
