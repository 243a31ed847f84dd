"""CLIP/LiT-style alignment of frozen image and text encoders: projection heads, learnable temperature, InfoNCE.

LiT (Zhai et al. 2022) keeps a pretrained image tower locked and trains the text side to match it;
here both towers are pretrained (EfficientNet-Lite0 and MiniLM), the image tower stays locked, and
what is trained is a projection head on each side, the temperature, and optionally the top layers
of the text tower. The frozen parts run once and are cached (``mmhelpers.scenarios.image_text.data``), so training
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

from mmhelpers.encoders import TextEncoder
from mmhelpers.engine import FitConfig, fit, warmup_cosine
from mmhelpers.features import extract_features, fingerprint
from mmhelpers.losses import info_nce
from mmhelpers.retrieval import retrieval_metrics


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

    def forward(self, image_feats: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The training loss (:meth:`loss`), through ``forward`` so that DDP sees the call."""
        return self.loss(image_feats, hidden, mask)

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
    device = model.log_scale.device
    images = torch.as_tensor(images, dtype=torch.long)
    rows, local = data.captions_of(images)
    zi = model.encode_image(data.image_feats[images, 0].float().to(device))
    zt = torch.cat([
        model.encode_text(data.text_hidden[rows[i : i + batch_size]].to(device),
                          data.text_mask[rows[i : i + batch_size]].to(device))
        for i in range(0, len(rows), batch_size)
    ])  # fmt: skip
    model.train(was_training)
    return zi.cpu(), zt.cpu(), local


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
    resume: str | Path | None = None,
    device: str = "auto",
    precision: str = "fp32",
    max_steps: int | None = None,
) -> AlignHistory:
    """Train through the engine with in-batch negatives and caption sampling; keep the best validation weights.

    Each step draws ``batch_size`` distinct training images, one of each image's captions at random
    (caption sampling: every epoch pairs an image with a different description) and, with
    ``cfg.flip``, the flipped view of half the images. Linear warm-up then cosine decay
    (:func:`~mmhelpers.engine.warmup_cosine`). With a ``checkpoint_dir`` the run is checkpointed every ``eval_every`` steps;
    ``resume="latest"`` continues it to the same result; ``max_steps`` stops
    early (with a checkpoint), as an interruption would. Under several processes each one contrasts its own
    slice of the batch (fewer negatives per process than one process sees).
    """
    cfg = model.cfg
    train = torch.as_tensor(train_images, dtype=torch.long)
    text_params = list(model.text_tower.layers.parameters())
    text_ids = {id(p) for p in text_params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in text_ids and p.requires_grad], "lr": cfg.lr}]
    if text_params:
        groups.append({"params": text_params, "lr": cfg.text_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows_of = [torch.nonzero(data.caption_image == i).squeeze(1) for i in range(int(data.caption_image.max()) + 1)]
    n_views = data.image_feats.shape[1] if cfg.flip else 1

    def batch(step: int) -> dict[str, torch.Tensor]:
        images = train[torch.randperm(len(train), generator=gen)[: cfg.batch_size]]
        pick = torch.randint(0, 1 << 30, (len(images),), generator=gen)
        rows = torch.stack([rows_of[int(i)][int(p) % len(rows_of[int(i)])] for i, p in zip(images, pick, strict=True)])
        views = torch.randint(0, n_views, (len(images),), generator=gen)
        return {"image": data.image_feats[images, views].float(), "hidden": data.text_hidden[rows],
                "mask": data.text_mask[rows]}  # fmt: skip

    def loss_fn(wrapped: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return wrapped(b["image"], b["hidden"], b["mask"]), {"temperature": model.temperature}

    def evaluate(m: nn.Module) -> dict[str, Any]:
        metrics = evaluate_retrieval(m, data, val_images)
        return {"score": _score(metrics), "metrics": metrics}

    fit_cfg = FitConfig(steps=cfg.steps, grad_clip=None, precision=precision, device=device,
                        eval_every=cfg.eval_every, checkpoint_every=cfg.eval_every,
                        monitor="score" if val_images is not None else None, progress=progress, desc="align")  # fmt: skip
    ident = {"recipe": "alignment-2", "config": asdict(cfg), "train": train.tolist(),
             "val": None if val_images is None else torch.as_tensor(val_images).tolist(),
             "data": fingerprint([data.image_feats, data.text_hidden, data.text_mask, data.caption_image])}  # fmt: skip
    h = fit(model, opt, batch, loss_fn, fit_cfg, scheduler=sched, evaluate=evaluate if val_images is not None else None,
            run_dir=checkpoint_dir, resume=resume, fingerprint=ident, state={"sampler": gen},
            stop_at=max_steps)  # fmt: skip
    return AlignHistory(step_loss=h.loss, temperature=h.logs["temperature"], lr=h.lr,
                        val_steps=[e["step"] for e in h.evals], val=[e["metrics"] for e in h.evals],
                        best_step=h.best_step if h.best_step >= 0 else cfg.steps)  # fmt: skip


# ---------------------------------------------------------------- frozen text states, cached


def text_hidden_states(
    encoder: TextEncoder,
    texts: Sequence[str],
    layer: int,
    batch_size: int = 128,
    progress: bool = True,
    cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states after ``layer`` (0 = embeddings) for every text, padded to one length; cached unless ``cache=False``.

    Returns (hidden (N, T, D) float16, attention mask (N, T)). The layers above ``layer`` are the
    ones alignment may train; below it everything is frozen and computed once.
    """
    tok = encoder.tokenize(list(texts))  # pads every text to the longest one
    ids, mask = tok["input_ids"], tok["attention_mask"]

    def encode(rows: Sequence[int]) -> torch.Tensor:
        r = torch.as_tensor(rows)
        out = encoder.model(input_ids=ids[r], attention_mask=mask[r], output_hidden_states=True)
        return out.hidden_states[layer].half()  # (b, T, D)

    cached = {"model_id": encoder.model_id, "preprocess": {**encoder.preprocessing(), "padding": "longest"},
              "data": list(texts), "key": {"what": "text_hidden", "layer": layer, "rounded": "float16"}} if cache else {}  # fmt: skip
    hidden = extract_features(encode, list(range(len(ids))), **cached, batch_size=batch_size,
                              progress=progress, desc=f"text hidden states (layer {layer})")  # fmt: skip
    return hidden, mask


def frozen_layer(encoder: TextEncoder, unfreeze_text_layers: int) -> int:
    """The hidden-state layer to cache when the top ``unfreeze_text_layers`` layers will train."""
    n = encoder.model.config.num_hidden_layers
    if not 0 <= unfreeze_text_layers <= n:
        raise ValueError(f"unfreeze_text_layers must be in 0..{n}, got {unfreeze_text_layers}")
    return n - unfreeze_text_layers
