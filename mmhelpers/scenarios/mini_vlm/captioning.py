"""The image-captioning recipe: frozen image features -> MiniVLM, pre-trained as a language model, then fine-tuned.

1. Data (:func:`load_caption_data`): images with several captions each, split by image into train/val/test,
   plus a text-only *language-model corpus* of captions of other images. ``data="real"``: the Flickr8k
   1,000-image subset (800/100/100 by image) and all 40,455 Flickr8k captions minus those of the val and
   test images. ``data="embedded"`` (no mirror needed): generated Sort-of-CLEVR scenes with 5 template
   captions each; the LM corpus is the captions of the training scenes plus those of further scenes that
   are never rendered. The toy captions name colours, shapes, positions and counts, so they can only be
   right by looking at the image, and a small model learns them in seconds. A path: your own images and
   captions (``captions.jsonl`` in LLaVA's format, see :mod:`~mmhelpers.data.llava_folder`), split
   80/10/10 by image; the LM corpus is the training images' captions.
2. A word-level tokenizer trained on the LM corpus (so it never sees a val or test caption).
3. Frozen EfficientNet-Lite0 grid features (:func:`image_features`), one visual token per cell (7x7 at
   224 px), cached on disk.
4. :func:`pretrain_lm`: the decoder alone learns the captions' language (no image).
5. :func:`finetune`: for each fusion design (prefix, gated cross-attention) a MiniVLM is trained on the
   training images' captions, once from the pre-trained decoder and once from scratch with the same
   budget, so the difference is what pre-training buys.
6. :func:`perplexity` of the test captions (teacher-forced, with the image), :func:`generate_captions`
   and :func:`evaluate_captions` (BLEU, CIDEr-D) against nearest-neighbour and most-frequent baselines.

Every training run is checkpointed atomically (model, optimizer, step, RNG, loss history) under a name
keyed by its settings, so an interrupted run resumes and a finished one is loaded instead of retrained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from mmhelpers.caption_metrics import caption_scores, most_frequent_caption, nearest_neighbour_captions
from mmhelpers.caption_tokenizer import CaptionTokenizer, train_caption_tokenizer
from mmhelpers.data.folders import read_llava
from mmhelpers.data.llava_folder import is_own_data, llava_file, split_by_image
from mmhelpers.engine import FitConfig, epoch_batch, fit, warmup_cosine
from mmhelpers.features import fingerprint
from mmhelpers.generate import generate
from mmhelpers.image_grids import grid_features
from mmhelpers.paths import cache_root
from mmhelpers.vlm import MiniVLM, VLMConfig

__all__ = [
    "CaptionConfig",
    "CaptionData",
    "CaptionResult",
    "load_caption_data",
    "build_tokenizer",
    "image_features",
    "grid_features",
    "build_model",
    "caption_loss",
    "pretrain_lm",
    "finetune",
    "perplexity",
    "generate_captions",
    "baseline_captions",
    "evaluate_captions",
    "run_captioning",
]

# Fields that change only the evaluation, never a trained model (left out of checkpoint keys).
_EVAL_FIELDS = (
    "fusions",
    "strategy",
    "num_beams",
    "suppress_unk",
    "nn_ks",
    "checkpoint_every",
    "eval_batch_size",
    "device",
)
_FINETUNE_FIELDS = ("finetune_steps", "finetune_batch_size", "finetune_lr", "gated_cross")


@dataclass
class CaptionConfig:
    """Data, model sizes, schedules and decoding of the captioning recipe; ``smoke()`` runs in seconds."""

    # "real" (Flickr8k subset, needs the mirror) | "embedded" (generated Sort-of-CLEVR) | your own data: a folder
    # with captions.jsonl (LLaVA style, see mmhelpers.data.llava_folder) or the path of such a file
    data: str = "real"
    seed: int = 0
    # the data's seed: the photos' split (and the embedded scenes); None: ``seed``, as the committed runs drew it, so
    # each training seed held out other photos. Fix it (e.g. 0) to train several seeds on the same held-out photos
    data_seed: int | None = None
    split: tuple[int, int, int] = (800, 100, 100)  # images: train, val, test (embedded: scenes); own data: 80/10/10 %
    n_lm_scenes: int = 4000  # embedded: extra text-only scenes whose captions join the LM corpus
    image_size: int = 224  # encoder input; the grid has (image_size // 32)^2 cells
    vocab_size: int = 2000  # tokenizer: at most this many ids ...
    min_frequency: int = 3  # ... of words seen at least this often in the LM corpus
    max_len: int = 24  # token ids per caption incl. <bos> and <eos> (longer captions are truncated)
    # model (VLMConfig)
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    projector: str = "queries"  # "linear" | "mlp" | "queries"
    n_queries: int = 8
    # Flamingo's tanh gate (starting at 0) keeps a frozen LM intact, but here the decoder is fine-tuned anyway and
    # the gate slows learning: on Flickr8k (250 steps) test CIDEr 0.11 gated vs 0.23 ungated.
    gated_cross: bool = False
    # text-only pre-training of the decoder
    pretrain_steps: int = 300
    pretrain_batch_size: int = 128
    pretrain_lr: float = 3e-3
    # fine-tuning with images (frozen encoder; projector and decoder trained)
    finetune_steps: int = 250
    finetune_batch_size: int = 64
    finetune_lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    min_lr_factor: float = 0.1  # cosine decay ends at this fraction of the peak learning rate
    # evaluation
    fusions: tuple[str, ...] = ("prefix", "cross")
    strategy: str = "beam"  # "greedy" | "beam" | "sample"
    num_beams: int = 3
    suppress_unk: bool = True  # never generate <unk> (it matches no reference word)
    nn_ks: tuple[int, ...] = (1, 5)  # nearest-neighbour baseline: k picked on the validation images
    eval_batch_size: int = 50
    checkpoint_every: int = 100
    # the engine: where, and in which precision (the committed results are fp32; "auto" = bf16 on AMX CPUs)
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.data = str(self.data)
        if is_own_data(self.data) and not Path(self.data).exists():
            raise ValueError(f"data must be 'real', 'embedded' or an existing folder or file, got {self.data!r}")
        if self.image_size % 32 != 0:
            raise ValueError(f"image_size must be a multiple of 32 (the encoder's stride), got {self.image_size}")
        self.split, self.fusions, self.nn_ks = tuple(self.split), tuple(self.fusions), tuple(self.nn_ks)

    def smoke(self) -> CaptionConfig:
        """A tiny run on the embedded scenes (~40 s on one CPU thread); it still beats the most-frequent caption."""
        return replace(self, data="embedded", split=(240, 30, 30), n_lm_scenes=1500, image_size=128,
                       vocab_size=200, min_frequency=1, max_len=20, n_layer=2, n_embd=64, n_queries=8,
                       pretrain_steps=120, pretrain_batch_size=64, finetune_steps=150, finetune_batch_size=32,
                       warmup_steps=10, nn_ks=(1, 5), checkpoint_every=50)  # fmt: skip


# ---------------------------------------------------------------- data


@dataclass
class CaptionData:
    """Images (paths or RGB arrays) with their captions, split indices, and the text-only LM corpus."""

    images: list[Path] | list[np.ndarray]
    image_ids: list[str]  # one name per image (file name or scene id)
    captions: list[list[str]]  # reference captions of each image
    splits: dict[str, np.ndarray]  # "train", "val", "test" -> sorted image indices
    lm_corpus: list[str]  # captions for text-only pre-training (none of a val or test image)
    lm_image_ids: list[str]  # the image each LM caption describes
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def split_captions(self, split: str) -> list[list[str]]:
        """The reference captions of the images of one split."""
        return [self.captions[i] for i in self.splits[split]]


def _data_seed(cfg: CaptionConfig) -> int:
    return cfg.seed if cfg.data_seed is None else cfg.data_seed


def _split_indices(n: int, sizes: tuple[int, int, int], seed: int) -> dict[str, np.ndarray]:
    """A seeded split of image indices into train/val/test."""
    if sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} need {sum(sizes)} images, have {n}")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum((0, *sizes))
    return {
        name: np.sort(perm[a:b]) for name, a, b in zip(("train", "val", "test"), bounds[:-1], bounds[1:], strict=True)
    }


def _load_real(cfg: CaptionConfig) -> CaptionData:
    """Flickr8k subset; LM corpus = all Flickr8k captions except those of the val and test images."""
    from mmhelpers.data.flickr8k import load_flickr8k, load_flickr8k_all_captions

    ds = load_flickr8k(progress=False)
    train, val, test = ds.split(cfg.split, seed=_data_seed(cfg))
    names = [p.name for p in ds.image_paths]
    held_out = {names[i] for i in np.concatenate([val, test])}
    by_image = load_flickr8k_all_captions(exclude_images=held_out)
    lm_ids = [k for k, caps in by_image.items() for _ in caps]
    corpus = [c for caps in by_image.values() for c in caps]
    return CaptionData(list(ds.image_paths), names, ds.captions, {"train": train, "val": val, "test": test},
                       corpus, lm_ids, f"{ds.source}; LM corpus: all Flickr8k captions minus val/test images")  # fmt: skip


def _load_embedded(cfg: CaptionConfig) -> CaptionData:
    """Sort-of-CLEVR scenes with 5 captions each; LM corpus = training scenes' + unrendered scenes' captions."""
    from mmhelpers.data.sort_of_clevr import make_scenes, render_scene, scene_captions

    n = sum(cfg.split)
    seed = _data_seed(cfg)
    scenes = make_scenes(n + cfg.n_lm_scenes, seed)  # the first n are the image set, the rest text only
    captions = [scene_captions(s, n=5, seed=seed) for s in scenes]
    ids = [f"scene{i:05d}" for i in range(len(scenes))]
    splits = _split_indices(n, cfg.split, seed)
    lm_images = [*splits["train"].tolist(), *range(n, len(scenes))]
    return CaptionData([render_scene(s) for s in scenes[:n]], ids[:n], captions[:n], splits,
                       [c for i in lm_images for c in captions[i]], [ids[i] for i in lm_images for _ in captions[i]],
                       f"embedded: {n} generated Sort-of-CLEVR scenes (64 px), 5 template captions each; "
                       f"LM corpus adds {cfg.n_lm_scenes} unrendered scenes")  # fmt: skip


def _load_own(cfg: CaptionConfig) -> CaptionData:
    """A user's LLaVA captions file: every answer is a caption of its record's image; LM corpus = training captions."""
    source = llava_file(cfg.data, "captions")
    by_image: dict[Path, list[str]] = {}
    for record in read_llava(source):
        by_image.setdefault(record.image, []).extend(answer for _, answer in record.turns)
    images = list(by_image)
    captions = [by_image[p] for p in images]
    splits = split_by_image(images, seed=_data_seed(cfg))
    train = splits["train"].tolist()
    ids = [str(p.relative_to(source.parent)) if p.is_relative_to(source.parent) else str(p) for p in images]
    return CaptionData(images, ids, captions, splits, [c for i in train for c in captions[i]],
                       [ids[i] for i in train for _ in captions[i]],
                       f"own data: {source} ({len(images)} images, {sum(map(len, captions))} captions; "
                       f"split by image {len(train)}/{len(splits['val'])}/{len(splits['test'])}; "
                       f"LM corpus: the training captions)")  # fmt: skip


def load_caption_data(cfg: CaptionConfig) -> CaptionData:
    """The images, captions, split and LM corpus of ``cfg.data`` ("real" needs the Flickr8k mirror; a path is
    a user's folder with ``captions.jsonl``, see :mod:`~mmhelpers.data.llava_folder`)."""
    if cfg.data == "real":
        return _load_real(cfg)
    return _load_embedded(cfg) if cfg.data == "embedded" else _load_own(cfg)


def build_tokenizer(data: CaptionData, cfg: CaptionConfig) -> CaptionTokenizer:
    """A word-level tokenizer trained on the LM corpus (which holds no val or test caption)."""
    return train_caption_tokenizer(data.lm_corpus, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency)


def image_features(data: CaptionData, cfg: CaptionConfig, progress: bool = True) -> Tensor:
    """Frozen EfficientNet-Lite0 grid features of every image as visual tokens (N, (size/32)^2, 1280), cached."""
    return grid_features(data.images, cfg.image_size, progress)


# ---------------------------------------------------------------- model and training


def build_model(cfg: CaptionConfig, vocab_size: int, fusion: str = "prefix", n_visual: int | None = None) -> MiniVLM:
    """A MiniVLM of the recipe's sizes for one fusion design (seeded, so both designs start alike)."""
    torch.manual_seed(cfg.seed)
    vcfg = VLMConfig(vocab_size=vocab_size, block_size=cfg.max_len - 1, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, dropout=cfg.dropout, fusion=fusion, d_visual=1280,
                     n_visual=n_visual or (cfg.image_size // 32) ** 2, projector=cfg.projector,
                     n_queries=cfg.n_queries, gated_cross=cfg.gated_cross)  # fmt: skip
    return MiniVLM(vcfg)


def _optimizer(model: MiniVLM, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms, gates, position tables)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith("pos")]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.endswith("pos"))]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def _shift(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Padded ids (B, L) -> inputs (B, T) and targets (B, T), trimmed to the longest caption, padding -> -100."""
    T = int((ids != 0).sum(1).max()) - 1
    idx, targets = ids[:, :T], ids[:, 1 : T + 1].clone()
    targets[targets == 0] = -100
    return idx, targets


def _run_key(cfg: CaptionConfig, stage: str, **extra: Any) -> str:
    """A short hash of the settings a training stage depends on (pre-training ignores the fine-tuning ones)."""
    skip = _EVAL_FIELDS + (_FINETUNE_FIELDS if stage == "pretrain" else ())
    blob = {k: v for k, v in asdict(cfg).items() if k not in skip} | extra | {"stage": stage}
    if blob.pop("data_seed") not in (None, cfg.seed):  # the same data as the default: the same key
        blob["data_seed"] = cfg.data_seed
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def caption_loss(model: torch.nn.Module, batch: dict[str, Any]) -> Tensor:
    """The engine's loss: next-token cross-entropy of the captions (with their images' tokens, if any)."""
    return model(batch["idx"], batch.get("visual"), batch["targets"])[1]


def _train(
    model: MiniVLM,
    batch_fn: Callable[[int], dict[str, Tensor]],
    steps: int,
    lr: float,
    cfg: CaptionConfig,
    run_dir: Path | None,
    key: str,
    progress: bool,
    desc: str,
    stop_at: int | None = None,
    resume: str | Path | None = None,
) -> list[float]:
    """Train through the engine on ``batch_fn(step) -> {"idx", "targets", "visual"}``; return every step's loss.

    AdamW (decay on matrices only), warm-up then cosine decay to ``cfg.min_lr_factor`` of the peak, gradients
    clipped at 1. With ``run_dir`` a checkpoint is written every ``cfg.checkpoint_every`` steps and at the end;
    ``resume="latest"`` continues it (a finished run is just loaded). ``stop_at`` stops after that step.
    """
    opt = _optimizer(model, lr, cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup_steps, steps, cfg.min_lr_factor)
    fit_cfg = FitConfig(steps=steps, grad_clip=1.0, precision=cfg.precision, device=cfg.device,
                        checkpoint_every=cfg.checkpoint_every, progress=progress, desc=desc)  # fmt: skip
    hist = fit(model, opt, batch_fn, caption_loss, fit_cfg, scheduler=sched, run_dir=run_dir, resume=resume,
               fingerprint={"recipe": "captioning-2", "key": key}, stop_at=stop_at)  # fmt: skip
    return hist.loss


def pretrain_lm(
    model: MiniVLM,
    tokenizer: CaptionTokenizer,
    corpus: Sequence[str],
    cfg: CaptionConfig,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    resume: str | Path | None = None,
) -> list[float]:
    """Train the decoder alone as a language model on ``corpus`` (no image); returns per-step losses."""
    ids = tokenizer.encode(list(corpus), cfg.max_len)  # (M, L)
    B = min(cfg.pretrain_batch_size, len(ids))

    def batch(step: int) -> dict[str, Tensor]:
        idx, targets = _shift(ids[epoch_batch(len(ids), B, step, cfg.seed)])
        return {"idx": idx, "targets": targets}

    key = _run_key(cfg, "pretrain", corpus=fingerprint(list(corpus)), vocab=tokenizer.vocab_size)
    run_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"pretrain-{key}"
    return _train(model, batch, cfg.pretrain_steps, cfg.pretrain_lr, cfg, run_dir, key, progress,
                  "pre-train LM (text only)", stop_at, resume)  # fmt: skip


def _pairs(captions: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """Every (image row, caption) pair: image rows (M,) and the flat caption list."""
    rows = np.array([i for i, caps in enumerate(captions) for _ in caps])
    return rows, [c for caps in captions for c in caps]


def finetune(
    model: MiniVLM,
    feats: Tensor,
    captions: Sequence[Sequence[str]],
    tokenizer: CaptionTokenizer,
    cfg: CaptionConfig,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    desc: str = "fine-tune",
    stop_at: int | None = None,
    run_tag: str = "finetune",
    resume: str | Path | None = None,
) -> list[float]:
    """Train projector + decoder on (image features (N, P, D), caption) pairs; returns per-step losses."""
    rows, flat = _pairs(captions)
    ids = tokenizer.encode(flat, cfg.max_len)
    B = min(cfg.finetune_batch_size, len(ids))

    def batch(step: int) -> dict[str, Tensor]:
        pick = epoch_batch(len(ids), B, step, cfg.seed + 1)
        idx, targets = _shift(ids[pick])
        return {"idx": idx, "targets": targets, "visual": feats[rows[pick]]}

    key = _run_key(cfg, "finetune", tag=run_tag, fusion=model.cfg.fusion, data=fingerprint(flat),
                   feats=fingerprint(feats), n=len(feats), vocab=tokenizer.vocab_size)  # fmt: skip
    run_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"{run_tag}-{key}"
    return _train(model, batch, cfg.finetune_steps, cfg.finetune_lr, cfg, run_dir, key, progress, desc, stop_at, resume)


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def perplexity(
    model: MiniVLM,
    feats: Tensor | None,
    captions: Sequence[Sequence[str]],
    tokenizer: CaptionTokenizer,
    max_len: int = 24,
    batch_size: int = 100,
) -> float:
    """exp(mean negative log-likelihood per predicted token, <eos> included) of every caption, teacher-forced.

    ``feats`` (N, P, D) gives each image's visual tokens (one row per entry of ``captions``); None scores
    the captions as plain text (the language model alone).
    """
    rows, flat = _pairs(captions)
    ids = tokenizer.encode(flat, max_len)
    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    total, count = 0.0, 0
    for s in range(0, len(ids), batch_size):
        idx, targets = (t.to(device) for t in _shift(ids[s : s + batch_size]))
        visual = None if feats is None else feats[rows[s : s + batch_size]].to(device)
        logits, _ = model(idx, visual)
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum").item()
        count += int((targets != -100).sum())
    model.train(was_training)
    return math.exp(total / count)


@contextlib.contextmanager
def _suppressed(model: MiniVLM, token_ids: Sequence[int]) -> Iterator[None]:
    """While active, the model's output logits of ``token_ids`` are -inf (a forward hook on the LM head)."""

    def hook(module: torch.nn.Module, args: tuple[Tensor, ...], logits: Tensor) -> Tensor:
        return logits.index_fill(-1, torch.tensor(list(token_ids), device=logits.device), float("-inf"))

    handle = model.lm_head.register_forward_hook(hook) if token_ids else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def generate_captions(
    model: MiniVLM,
    feats: Tensor,
    tokenizer: CaptionTokenizer,
    strategy: str = "beam",
    num_beams: int = 3,
    batch_size: int = 50,
    suppress_unk: bool = True,
    progress: bool = False,
) -> list[str]:
    """One caption per image (N, P, D) by ``strategy`` ("greedy", "beam", "sample"), up to block_size words."""
    out: list[str] = []
    max_new = model.cfg.block_size
    with _suppressed(model, [tokenizer.unk_id] if suppress_unk else []):
        for s in tqdm(range(0, len(feats), batch_size), desc=f"caption ({strategy})", disable=not progress):
            visual = feats[s : s + batch_size].to(model.lm_head.weight.device)
            prompt = torch.full((len(visual), 1), tokenizer.bos_id, dtype=torch.long, device=visual.device)
            ids = generate(model, visual, prompt, max_new, strategy=strategy, num_beams=num_beams)
            out.extend(tokenizer.decode(ids.cpu()))
    return out


def baseline_captions(
    train_feats: Tensor, train_captions: Sequence[Sequence[str]], query_feats: Tensor, nn_k: int = 5
) -> dict[str, list[str]]:
    """Captions without a caption model: "nn" (consensus of the k nearest training images, mean-pooled
    features, cosine) and "most_frequent" (the training set's most frequent caption for every image)."""
    pooled = train_feats.mean(1), query_feats.mean(1)
    nn = nearest_neighbour_captions(pooled[0], train_captions, pooled[1], k=min(nn_k, len(train_feats)))
    return {"nn": nn, "most_frequent": [most_frequent_caption(train_captions)] * len(query_feats)}


_BASELINE_PREFIX = {"nn": "nn", "most_frequent": "mf"}


def evaluate_captions(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], baselines: dict[str, list[str]] | None = None
) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of ``hypotheses``, and of each baseline under ``nn_`` / ``mf_`` prefixes."""
    out = caption_scores(references, hypotheses)
    for name, caps in (baselines or {}).items():
        prefix = _BASELINE_PREFIX.get(name, name)
        out |= {f"{prefix}_{k}": v for k, v in caption_scores(references, caps).items()}
    return out


# ---------------------------------------------------------------- the whole recipe


@dataclass
class CaptionResult:
    """Numbers, trained models, loss curves and generated captions of :func:`run_captioning`."""

    metrics: dict[str, Any]  # see run_captioning
    models: dict[str, MiniVLM]  # fusion -> fine-tuned after pre-training; f"{fusion}_scratch" -> without
    language_model: MiniVLM  # the text-only pre-trained decoder
    tokenizer: CaptionTokenizer
    histories: dict[str, list[float]]  # per-step training losses: "pretrain", fusion, f"{fusion}_scratch"
    captions: dict[str, list[str]]  # test-image captions by model name, plus "nn" and "most_frequent"
    data: CaptionData
    features: Tensor  # (N, P, 1280) visual tokens of every image
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def examples(self, n: int = 5) -> list[dict[str, Any]]:
        """The first ``n`` test images: id, references and every model's and baseline's caption."""
        test = self.data.splits["test"]
        return [{"image": self.data.image_ids[test[i]], "references": self.data.captions[test[i]],
                 **{name: caps[i] for name, caps in self.captions.items()}} for i in range(min(n, len(test)))]  # fmt: skip


def _design_scores(
    model: MiniVLM, feats: Tensor, splits: dict[str, Tensor], refs: dict[str, list[list[str]]],
    tokenizer: CaptionTokenizer, cfg: CaptionConfig,
) -> tuple[dict[str, float], list[str]]:  # fmt: skip
    """Test BLEU/CIDEr, validation CIDEr and test perplexity of one model, and its test captions."""
    caps = {s: generate_captions(model, feats[splits[s]], tokenizer, cfg.strategy, cfg.num_beams, cfg.eval_batch_size,
                                 cfg.suppress_unk)
            for s in ("val", "test")}  # fmt: skip
    scores = caption_scores(refs["test"], caps["test"])
    scores["val_cider"] = caption_scores(refs["val"], caps["val"])["cider"]
    scores["ppl"] = perplexity(model, feats[splits["test"]], refs["test"], tokenizer, cfg.max_len)
    return scores, caps["test"]


def run_captioning(
    cfg: CaptionConfig,
    progress: bool = True,
    checkpoint_dir: Path | str | None = None,
    resume: str | None = None,
) -> CaptionResult:
    """Data, tokenizer, features, LM pre-training, fine-tuning of every fusion (with and without pre-training),
    evaluation on the test images; checkpoints under ``checkpoint_dir`` (default ``<cache>/captioning``).

    ``metrics``: per design in ``fusion_designs`` (BLEU-1..4, CIDEr on test, val CIDEr, perplexities with
    and without pre-training, scores without pre-training), the design with the best validation CIDEr at the
    top level (``chosen_fusion``, ``bleu4``, ``cider``, ``ppl_with_pretraining``, ...), the baselines
    (``nn_*``, ``mf_*``), the text-only perplexity of the pre-trained LM and the decoding strategy.
    """
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else cache_root() / "captioning"
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name], clock = time.perf_counter() - clock, time.perf_counter()

    data = load_caption_data(cfg)
    tokenizer = build_tokenizer(data, cfg)
    lap("data_and_tokenizer")
    feats = image_features(data, cfg, progress=progress)
    lap("features")
    splits = {s: torch.as_tensor(data.splits[s]) for s in ("train", "val", "test")}
    refs = {s: data.split_captions(s) for s in ("train", "val", "test")}
    n_visual = feats.shape[1]

    lm = build_model(cfg, tokenizer.vocab_size, "prefix", n_visual)
    histories = {"pretrain": pretrain_lm(lm, tokenizer, data.lm_corpus, cfg, ckpt_dir, progress, resume=resume)}
    lm_state = lm.language_model_state()
    lap("pretrain")

    models: dict[str, MiniVLM] = {}
    captions: dict[str, list[str]] = {}
    designs: dict[str, dict[str, float]] = {}
    for fusion in cfg.fusions:
        for pretrained in (True, False):
            name = fusion if pretrained else f"{fusion}_scratch"
            model = build_model(cfg, tokenizer.vocab_size, fusion, n_visual)
            if pretrained:
                model.load_language_model_(lm_state)
            desc = f"fine-tune {fusion} ({'pre-trained' if pretrained else 'from scratch'})"
            histories[name] = finetune(model, feats[splits["train"]], refs["train"], tokenizer, cfg, ckpt_dir,
                                       progress, desc, run_tag=name, resume=resume)  # fmt: skip
            lap(f"finetune_{name}")
            scores, captions[name] = _design_scores(model, feats, splits, refs, tokenizer, cfg)
            models[name] = model
            lap(f"eval_{name}")
            suffix = "" if pretrained else "_without_pretraining"
            designs.setdefault(fusion, {}).update({f"{k}{suffix}": v for k, v in scores.items()})
        designs[fusion]["ppl_with_pretraining"] = designs[fusion].pop("ppl")

    train_f, train_refs = feats[splits["train"]], refs["train"]
    val_nn = {k: caption_scores(refs["val"], baseline_captions(train_f, train_refs, feats[splits["val"]], k)["nn"])
              for k in cfg.nn_ks}  # fmt: skip
    nn_k = max(cfg.nn_ks, key=lambda k: (val_nn[k]["cider"], -k))  # k picked on validation CIDEr
    base = baseline_captions(train_f, train_refs, feats[splits["test"]], nn_k)
    captions |= base
    base_scores = evaluate_captions(refs["test"], base["nn"], {"most_frequent": base["most_frequent"]})
    base_scores = {(k if k.startswith("mf_") else f"nn_{k}"): v for k, v in base_scores.items()}
    lap("baselines")

    chosen = max(cfg.fusions, key=lambda f: designs[f]["val_cider"])
    best = designs[chosen]
    metrics: dict[str, Any] = {
        "chosen_fusion": chosen,
        **{k: best[k] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider")},
        **base_scores,
        "nn_k": nn_k,
        "ppl_with_pretraining": best["ppl_with_pretraining"],
        "ppl_without_pretraining": best["ppl_without_pretraining"],
        "lm_text_only_ppl": perplexity(lm, None, refs["test"], tokenizer, cfg.max_len),
        "decoding": f"beam search ({cfg.num_beams} beams)" if cfg.strategy == "beam" else cfg.strategy,
        "fusion_designs": designs,
        "n_images": {s: len(data.splits[s]) for s in ("train", "val", "test")},
        "n_lm_captions": len(data.lm_corpus),
        "vocab_size": tokenizer.vocab_size,
        "source": data.source,
    }
    return CaptionResult(metrics, models, lm, tokenizer, histories, captions, data, feats, timings)
