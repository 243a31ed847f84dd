"""Toy sequence tasks and a tiny causal language model built from ``mmhelpers.attention`` blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmhelpers.attention import DecoderBlock, sinusoidal_positional_encoding


@dataclass
class CopyTask:
    """Sequences ``BOS a_1..a_n SEP a_1..a_n``: after SEP the model must copy what it saw.

    Token ids: 0 = BOS, 1 = SEP, 2.. = symbols. Copying needs attention to look back
    exactly ``n + 1`` positions, so a model without working attention and positions fails.
    """

    n: int = 8
    n_symbols: int = 10

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 2

    @property
    def seq_len(self) -> int:
        return 2 * self.n + 2

    def batch(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs (B, T-1), targets (B, T-1)); targets are -100 (ignored) before the copy half."""
        sym = torch.randint(2, self.vocab_size, (batch_size, self.n), generator=generator)
        bos = torch.zeros(batch_size, 1, dtype=torch.long)
        sep = torch.ones(batch_size, 1, dtype=torch.long)
        seq = torch.cat([bos, sym, sep, sym], dim=1)  # (B, 2n+2)
        x, y = seq[:, :-1], seq[:, 1:].clone()
        y[:, : self.n] = -100  # the first half is random: nothing to learn there
        return x, y


@dataclass
class TinyLMConfig:
    """Size of the tiny causal LM (defaults train on the copy task in well under a minute on a CPU)."""

    vocab_size: int = 12
    max_len: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.0


class TinyCausalLM(nn.Module):
    """Token embedding + sinusoidal positions -> causal DecoderBlocks (pre-norm) -> LayerNorm -> logits."""

    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.tok.weight, std=0.02)
        self.register_buffer("pos", sinusoidal_positional_encoding(cfg.max_len, cfg.d_model), persistent=False)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, "gelu", norm_first=True, cross_attention=False
            )
            for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab)."""
        x = self.tok(idx) + self.pos[: idx.shape[1]]  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over positions whose target is not -100."""
        logits = self(idx)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


@torch.no_grad()
def copy_accuracy(
    model: nn.Module, task: CopyTask, n_batches: int = 4, batch_size: int = 256, seed: int = 1234
) -> float:
    """Fraction of copied tokens the model predicts right (teacher-forced), on fresh seeded sequences."""
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    correct = total = 0
    for _ in range(n_batches):
        x, y = task.batch(batch_size, g)
        pred = model(x).argmax(-1)
        keep = y != -100
        correct += (pred[keep] == y[keep]).sum().item()
        total += keep.sum().item()
    model.train(was_training)
    return correct / total
