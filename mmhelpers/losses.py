"""Contrastive losses: NT-Xent (SimCLR, one modality, two views) and symmetric InfoNCE (CLIP, two modalities)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor, names: str) -> None:
    """ValueError unless a and b are (B, D) of one shape with B >= 1, and a plain-number temperature is > 0."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be (B, D) of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) == 0:
        raise ValueError(f"empty batch: {names} have 0 rows; a contrastive loss needs at least one pair")
    if not isinstance(temperature, torch.Tensor) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of pairs (a_i, b_i): row i of a must pick b_i among all b, and back.

    a, b: (B, D), L2-normalised inside. The mean of the two cross-entropies (CLIP's loss).
    """
    _check_pair(a, b, temperature, "a and b")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature  # (B, B): similarity of every a to every b
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2B views must find its partner among the other 2B - 1 views.

    z1, z2: (B, D) embeddings of two augmentations of the same B examples.
    """
    _check_pair(z1, z2, temperature, "z1 and z2")
    z = F.normalize(torch.cat([z1, z2]), dim=-1)  # (2B, D)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))  # never yourself
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # partner of i is i +- B
    return F.cross_entropy(sim, target)
