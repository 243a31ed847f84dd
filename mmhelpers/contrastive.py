"""CLIP/LiT-style alignment of frozen image and text encoders: projection heads, learnable temperature, InfoNCE.

LiT (Zhai et al. 2022) keeps a pretrained image tower locked and trains the text side to match it;
here both towers are pretrained (EfficientNet-Lite0 and MiniLM), the image tower stays locked, and
what is trained is a projection head on each side, the temperature, and optionally the top layers
of the text tower. The frozen parts run once and are cached (``mmhelpers.image_text``), so training
only ever touches small tensors.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mmhelpers.losses import info_nce
from mmhelpers.retrieval import retrieval_metrics
from mmhelpers.train import _atomic_save, _cosine_factor


@dataclass
class AlignConfig:
    """Alignment recipe (defaults: the full Flickr8k run; ``smoke()`` for tests)."""

    dim: int = 256  # shared embedding size
    dropout: float = 0.5  # on the frozen features before each head: the main regulariser with 800 images
    weight_decay: float = 0.5
    lr: float = 1e-3  # heads and temperature
    text_lr: float = 2e-5  # the unfrozen top text layers (a fine-tuning rate)
    unfreeze_text_layers: int = 1  # top MiniLM layers that train (0 = locked text tower too)
    temperature: float = 0.07  # initial value (CLIP's); learned unless learn_temperature is False
    learn_temperature: bool = True
    batch_size: int = 128  # in-batch negatives: each image against batch_size - 1 other captions
    steps: int = 200
    warmup: int = 50  # linear warm-up steps, then cosine decay to zero
    eval_every: int = 50  # validation recall (and checkpoint) every this many steps
    flip: bool = True  # random horizontal flip (a cached flipped view of every image)
    seed: int = 0

    def smoke(self) -> AlignConfig:
        """A few dozen steps: enough to align clearly, fast enough for the tests."""
        return replace(self, steps=60, warmup=10, eval_every=20, unfreeze_text_layers=min(self.unfreeze_text_layers, 1))


@dataclass
class AlignData:
    """Cached frozen features of a captioned image set, ready for alignment.

    image_feats (I, V, D_img): pooled image features for V views (view 0 = centre crop, view 1 = flipped);
    text_hidden (C, T, D_txt): text-encoder hidden states below the trainable layers, text_mask (C, T);
    caption_image (C,): the image each caption describes.
    """

    image_feats: torch.Tensor
    text_hidden: torch.Tensor
    text_mask: torch.Tensor
    caption_image: torch.Tensor

    def captions_of(self, images: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption rows of the given images and, for each, the position of its image in ``images``."""
        images = torch.as_tensor(images, dtype=torch.long)
        where = torch.full((int(self.caption_image.max()) + 1,), -1, dtype=torch.long)
        where[images] = torch.arange(len(images))
        rows = torch.nonzero(where[self.caption_image] >= 0).squeeze(1)
        return rows, where[self.caption_image[rows]]


class ProjectionHead(nn.Module):
    """Dropout then a linear map into the shared space (LiT's heads are linear too)."""

    def __init__(self, d_in: int, dim: int, dropout: float):
        super().__init__()
        self.drop, self.proj = nn.Dropout(dropout), nn.Linear(d_in, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(x))  # (B, d_in) -> (B, dim)


class TextTower(nn.Module):
    """Trainable top layers of a BERT-style encoder (may be none), masked mean pooling, projection head."""

    def __init__(self, layers: Sequence[nn.Module], d_in: int, dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(list(layers)))
        self.head = ProjectionHead(d_in, dim, dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D) below the trainable layers, mask (B, T) -> (B, dim)."""
        t = int(mask.sum(1).max())  # trim the padding every caption in this batch has
        h, m = hidden[:, :t].float(), mask[:, :t]
        additive = (1.0 - m[:, None, None, :].float()) * torch.finfo(h.dtype).min  # (B, 1, 1, T)
        for layer in self.layers:
            out = layer(h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
        w = m.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return self.head((h * w).sum(1) / w.sum(1).clamp(min=1.0))


class DualEncoder(nn.Module):
    """Image head + text tower + a learnable temperature; ``loss`` is CLIP's symmetric InfoNCE."""

    def __init__(self, d_image: int, d_text: int, cfg: AlignConfig, text_layers: Sequence[nn.Module] = ()):
        super().__init__()
        self.cfg = cfg
        self.image_head = ProjectionHead(d_image, cfg.dim, cfg.dropout)
        self.text_tower = TextTower(text_layers, d_text, cfg.dim, cfg.dropout)
        log_scale = torch.tensor(math.log(1.0 / cfg.temperature))
        self.log_scale = nn.Parameter(log_scale, requires_grad=cfg.learn_temperature)  # CLIP's logit_scale

    @property
    def temperature(self) -> float:
        return float(1.0 / self.log_scale.detach().exp())

    def encode_image(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_head(feats), dim=-1)  # (B, dim), unit length

    def encode_text(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_tower(hidden, mask), dim=-1)  # (B, dim), unit length

    def loss(self, image_feats: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the batch; the temperature is clamped to at least 0.01 (CLIP caps the scale at 100)."""
        temperature = 1.0 / self.log_scale.clamp(max=math.log(100.0)).exp()
        return info_nce(self.encode_image(image_feats), self.encode_text(hidden, mask), temperature)


def build_dual_encoder(data: AlignData, cfg: AlignConfig, text_encoder: nn.Module | None = None) -> DualEncoder:
    """A DualEncoder sized for ``data``; the top ``cfg.unfreeze_text_layers`` layers are copied from ``text_encoder``."""
    layers: list[nn.Module] = []
    if cfg.unfreeze_text_layers:
        if text_encoder is None:
            raise ValueError("unfreeze_text_layers > 0 needs the text encoder whose top layers to copy")
        layers = list(text_encoder.model.encoder.layer[-cfg.unfreeze_text_layers :])
    return DualEncoder(data.image_feats.shape[-1], data.text_hidden.shape[-1], cfg, layers)


@dataclass
class AlignHistory:
    """Per-step training loss and temperature, and validation recall every ``eval_every`` steps."""

    step_loss: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val: list[dict[str, dict[str, float]]] = field(default_factory=list)
    best_step: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(m: dict[str, dict[str, float]]) -> float:
    """Model selection: mean of R@1, R@5 and R@10 over both directions."""
    return sum(m[d][f"R@{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)) / 6


@torch.no_grad()
def embed(
    model: DualEncoder, data: AlignData, images: Sequence[int] | torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image embeddings, caption embeddings, caption -> image position) for a set of images, in eval mode."""
    was_training = model.training
    model.eval()
    images = torch.as_tensor(images, dtype=torch.long)
    rows, local = data.captions_of(images)
    zi = model.encode_image(data.image_feats[images, 0].float())
    zt = torch.cat([
        model.encode_text(data.text_hidden[rows[i : i + batch_size]], data.text_mask[rows[i : i + batch_size]])
        for i in range(0, len(rows), batch_size)
    ])  # fmt: skip
    model.train(was_training)
    return zi, zt, local


def evaluate_retrieval(model: DualEncoder, data: AlignData, images: Sequence[int] | torch.Tensor) -> dict:
    """Recall@1/5/10 and median rank, text-to-image and image-to-text, over the given images and their captions."""
    zi, zt, local = embed(model, data, images)
    return retrieval_metrics(zt, zi, local)


def train_alignment(
    model: DualEncoder,
    data: AlignData,
    train_images: Sequence[int],
    val_images: Sequence[int] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> AlignHistory:
    """Train with in-batch negatives and caption sampling; keep the weights of the best validation step.

    Each step draws ``batch_size`` distinct training images, one of each image's captions at random
    (caption sampling: every epoch pairs an image with a different description) and, with
    ``cfg.flip``, the flipped view of half the images. Linear warm-up then cosine decay. With a
    ``checkpoint_dir`` the state is saved atomically every ``eval_every`` steps and an
    interrupted run resumes from it (same config) to the same result.
    """
    cfg = model.cfg
    train = torch.as_tensor(train_images, dtype=torch.long)
    text_params = list(model.text_tower.layers.parameters())
    text_ids = {id(p) for p in text_params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in text_ids and p.requires_grad], "lr": cfg.lr}]
    if text_params:
        groups.append({"params": text_params, "lr": cfg.text_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_factor(s, cfg.warmup, cfg.steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    hist, best, start = AlignHistory(), (-1.0, None), 0
    ckpt = Path(checkpoint_dir) / "alignment.pt" if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] == asdict(cfg):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            gen.set_state(state["gen"])
            torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
            hist, best, start = AlignHistory(**state["hist"]), (state["best_score"], state["best_model"]), state["step"]
    rows_of = [torch.nonzero(data.caption_image == i).squeeze(1) for i in range(int(data.caption_image.max()) + 1)]
    n_views = data.image_feats.shape[1] if cfg.flip else 1
    model.train()
    bar = tqdm(range(start, cfg.steps), desc="align", disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        images = train[torch.randperm(len(train), generator=gen)[: cfg.batch_size]]
        pick = torch.randint(0, 1 << 30, (len(images),), generator=gen)
        rows = torch.stack([rows_of[int(i)][int(p) % len(rows_of[int(i)])] for i, p in zip(images, pick, strict=True)])
        views = torch.randint(0, n_views, (len(images),), generator=gen)
        loss = model.loss(data.image_feats[images, views].float(), data.text_hidden[rows], data.text_mask[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.step_loss.append(loss.item())
        hist.temperature.append(model.temperature)
        hist.lr.append(sched.get_last_lr()[0])
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            if val_images is not None:
                m = evaluate_retrieval(model, data, val_images)
                hist.val_steps.append(done)
                hist.val.append(m)
                if _score(m) > best[0]:
                    best = (_score(m), copy.deepcopy(model.state_dict()))
                    hist.best_step = done
                bar.set_postfix(loss=f"{loss.item():.3f}", val_t2i_R5=f"{m['t2i']['R@5']:.3f}")
            if ckpt is not None:
                _atomic_save({"config": asdict(cfg), "model": model.state_dict(), "opt": opt.state_dict(),
                              "sched": sched.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                              "hist": hist.to_dict(),
                              "best_score": best[0], "best_model": best[1], "step": done}, ckpt)  # fmt: skip
    if best[1] is not None:
        model.load_state_dict(best[1])
    else:
        hist.best_step = cfg.steps
    model.eval()
    return hist
