"""The moderation recipe: features of every post, an image-text alignment score, fusion classifiers through the
engine, and the scores a moderation queue runs on.

1. **Features**, each cached by content: the post picture through the frozen EfficientNet-Lite0 (a pooled vector,
   and a ``grid`` x ``grid`` of cells for the attention fusions) and the post's text through the frozen MiniLM (a
   sentence embedding, and its token states).
2. **Alignment**: the image-text recipe of scenario 02 (``mmhelpers.contrastive``, a dual encoder trained with
   in-batch negatives) on the training split's allowed posts, each photo with all its captions; its cosine
   between a post's picture and its text is a score that needs no post labels, and its two embeddings are a
   shared space for the fusion head ("aligned").
3. **Fusion heads** on those features (``mmhelpers.classify``, the one engine), one per method of ``METHODS``,
   trained on the training split's allowed and flagged posts, selected on validation.
4. **Scores**: the flagged-class logit minus the allowed one; AUROC, accuracy at the validation threshold, and
   precision at a fixed recall per evaluation set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_curve, roc_auc_score

from mmhelpers.classify import fusion_classifier, predict, text_features, train_classifier
from mmhelpers.contrastive import (
    AlignConfig,
    AlignData,
    DualEncoder,
    build_dual_encoder,
    text_hidden_states,
    train_alignment,
)
from mmhelpers.encoders import ImageEncoder, TextEncoder, build_image_encoder, build_text_encoder
from mmhelpers.features import extract_features, fingerprint
from mmhelpers.fusion import MultimodalClassifier
from mmhelpers.ocr import OcrResult, TextReader, character_error_rate, read_text
from mmhelpers.paths import cache_root
from mmhelpers.scenarios.moderation.data import PostData
from mmhelpers.text_overlay import Overlay, render_text
from mmhelpers.train import TrainConfig
from mmhelpers.zero_shot import conse_embeddings, imagenet_label_embeddings

# name -> (fusion method of mmhelpers.fusion, the feature modalities it reads)
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "text only": ("concat", ("text",)),
    "image only": ("concat", ("image",)),
    "concat": ("concat", ("image", "text")),
    "gated": ("gated", ("image", "text")),
    "low-rank bilinear": ("low_rank", ("image", "text")),
    "cross-attention": ("cross_attention", ("grid", "tokens")),
    "aligned": ("concat", ("aligned",)),
}
UNIMODAL = ("text only", "image only")
# scored without a head of their own: the alignment cosine, ConSE's zero-shot cosine, the unimodal heads' average
SCORE_ONLY = ("similarity", "zero-shot", "late")


@dataclass(frozen=True)
class ModerationConfig:
    """The recipe's sizes and schedules; ``smoke()`` runs in seconds."""

    grid: int = 3  # image cells per side for the attention fusions (3: 9 tokens per post)
    align_steps: int = 300  # alignment steps (batch of 128 photos)
    epochs: int = 30  # fusion-head epochs
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    d_model: int = 128
    hidden_dim: int = 128  # one hidden layer in every head: early fusion can then model interactions
    dropout: float = 0.1
    patience: int = 8  # epochs without a lower validation loss before stopping; the best epoch's weights are kept
    train_negatives: str = "both"  # flagged training posts: "random", "hard" or "both" (allowed posts repeated)
    seed: int = 0
    device: str = "cpu"  # the notebooks pass DEVICE; the features stay on the CPU and batches move to the device

    def smoke(self) -> ModerationConfig:
        return replace(self, align_steps=60, epochs=8)


def run_dir(kind: str, key: dict[str, Any]) -> Path:
    """The checkpoint folder of one training run, named by a hash of everything that decides it: a finished run is
    loaded instead of trained again, an interrupted one resumes, and a changed setting never reuses a stale one."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root() / "moderation" / f"{kind}-{digest}"


@dataclass
class PostFeatures:
    """Frozen features of every post: picture (pooled and cells) and text (sentence and tokens)."""

    image: torch.Tensor  # (N, 1280)
    grid: torch.Tensor  # (N, g*g, 1280) float16
    text: torch.Tensor  # (N, 384), unit length
    tokens: torch.Tensor  # (N, T, 384) float16, MiniLM's last hidden states, padding zeroed
    mask: torch.Tensor  # (N, T) 1 = a real token

    def with_text(self, other: PostFeatures) -> PostFeatures:
        """These pictures with ``other``'s texts (e.g. the OCR reading instead of the rendered text)."""
        return replace(self, text=other.text, tokens=other.tokens, mask=other.mask)


def picture_features(pd: PostData, grid: int = 3, encoder: ImageEncoder | None = None, batch_size: int = 32,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(pooled (N, C), cells (N, grid*grid, C) float16) of every post picture in one pass, cached by the posts'
    content (photos, texts, styles), the encoder and its preprocessing."""
    encoder = encoder or build_image_encoder()

    def encode(idx: list[int]) -> torch.Tensor:
        x = encoder.preprocess([pd.picture(i) for i in idx])
        g = encoder.grid(x)  # (b, C, h, w)
        cells = F.adaptive_avg_pool2d(g, grid).flatten(2).transpose(1, 2)  # (b, grid*grid, C)
        return torch.cat([g.mean(dim=(2, 3))[:, None], cells], dim=1)  # (b, 1 + grid*grid, C)

    out = extract_features(encode, list(range(len(pd))), model_id=encoder.model_id,
                           preprocess=encoder.preprocessing(), data=pd.content,
                           key={"what": "post pictures: pooled + cells", "grid": grid}, batch_size=batch_size,
                           progress=progress, desc="post pictures")  # fmt: skip
    return out[:, 0], out[:, 1:].half()


def text_side(texts: list[str], encoder: TextEncoder | None = None, progress: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(sentence embeddings (N, D), token states (N, T, D) float16 with padding zeroed, mask (N, T)), cached."""
    encoder = encoder or build_text_encoder()
    texts = [t if t.strip() else "[empty]" for t in texts]  # nothing read: one placeholder token, not a crash
    sentence = text_features(texts, encoder, progress=progress)
    tokens, mask = text_hidden_states(encoder, texts, encoder.model.config.num_hidden_layers, progress=progress)
    return sentence, tokens * mask[..., None].to(tokens.dtype), mask


def post_features(pd: PostData, cfg: ModerationConfig = ModerationConfig(), texts: list[str] | None = None,
                  progress: bool = True) -> PostFeatures:  # fmt: skip
    """Every post's features, with ``texts`` (default: the texts written on the posts) as the text side."""
    image, grid = picture_features(pd, cfg.grid, progress=progress)
    text, tokens, mask = text_side(pd.texts if texts is None else list(texts), progress=progress)
    return PostFeatures(image, grid, text, tokens, mask)


# ---------------------------------------------------------------- alignment: scenario 02's recipe on allowed posts


def alignment_data(pd: PostData, feats: PostFeatures) -> tuple[AlignData, list[int]]:
    """The training split's allowed posts as an ``AlignData``: one image per photo (its allowed posts are its
    views), its captions all the photo's captions where known (generated posts) or its posts' texts. Returns the
    data and the photo ids of its images."""
    captions = pd.captions
    train = pd.split("train")
    allowed = train[pd.labels[train] == 0]
    photos = sorted(set(pd.groups[allowed].tolist()))
    views = [allowed[pd.groups[allowed] == g] for g in photos]
    n_views = max(len(v) for v in views)
    image_feats = torch.stack([feats.image[torch.as_tensor(np.resize(v, n_views))] for v in views])  # (I, V, C)
    texts = [captions[g] if captions else [pd.texts[i] for i in v] for g, v in zip(photos, views, strict=True)]
    flat = [t for caps in texts for t in caps]
    owner = torch.tensor([i for i, caps in enumerate(texts) for _ in caps])
    encoder = build_text_encoder()
    hidden, mask = text_hidden_states(encoder, flat, encoder.model.config.num_hidden_layers, progress=False)
    return AlignData(image_feats, hidden, mask, owner), photos


def train_aligner(pd: PostData, feats: PostFeatures, cfg: ModerationConfig = ModerationConfig(),
                  progress: bool = True) -> DualEncoder:  # fmt: skip
    """Scenario 02's dual encoder (locked MiniLM, projection heads) trained on the allowed training posts."""
    data, _ = alignment_data(pd, feats)
    # flip=True: each step draws one of a photo's views, here one of its allowed posts (another font, place, ink)
    align_cfg = AlignConfig(unfreeze_text_layers=0, steps=cfg.align_steps, warmup=min(50, cfg.align_steps // 4),
                            eval_every=cfg.align_steps, flip=True, seed=cfg.seed,
                            batch_size=min(128, len(data.image_feats)))  # fmt: skip
    model = build_dual_encoder(data, align_cfg)
    run = run_dir("aligner", {"config": asdict(align_cfg), "data": fingerprint([data.image_feats, data.text_hidden])})
    train_alignment(model, data, torch.arange(len(data.image_feats)), checkpoint_dir=run, progress=progress,
                    resume="latest", device=cfg.device)  # fmt: skip
    return model.eval()


@torch.no_grad()
def aligned_features(model: DualEncoder, feats: PostFeatures, zero_shot: torch.Tensor | None = None,
                     batch_size: int = 512) -> dict[str, torch.Tensor]:  # fmt: skip
    """The aligner's view of every post: its picture and text embeddings (unit length), their cosine, and the
    ``aligned`` feature of the "aligned" head: [product of the embeddings, cosine, ``zero_shot`` cosine if given]."""
    model.eval()
    dev = model.log_scale.device  # the features stay on the CPU; batches go to the model's device
    zi, zt = [], []
    for i in range(0, len(feats.image), batch_size):
        zi.append(F.normalize(model.encode_image(feats.image[i : i + batch_size].float().to(dev)), dim=-1).cpu())
        zt.append(F.normalize(model.encode_text(feats.tokens[i : i + batch_size].float().to(dev),
                                                feats.mask[i : i + batch_size].to(dev)), dim=-1).cpu())  # fmt: skip
    image, text = torch.cat(zi), torch.cat(zt)
    cosine = (image * text).sum(-1)
    extra = [cosine[:, None]] if zero_shot is None else [cosine[:, None], zero_shot[:, None]]
    out = {"image": image, "text": text, "cosine": cosine, "aligned": torch.cat([image * text, *extra], 1)}
    if zero_shot is not None:
        out["zero_shot"] = zero_shot
    return out


@torch.no_grad()
def zero_shot_cosine(feats: PostFeatures, encoder: ImageEncoder | None = None) -> torch.Tensor:
    """(N,) cosine between each post's text and its picture as ConSE describes it (the ImageNet labels the frozen
    classifier sees, weighted by probability, in MiniLM's space): an image-text score with no training at all."""
    encoder = encoder or build_image_encoder()
    logits = encoder.head(feats.image.float())  # the classifier head on the cached pooled features
    _, labels = imagenet_label_embeddings(lambda names: text_features(names, progress=False))
    return (conse_embeddings(logits, labels) * feats.text).sum(-1)


# ---------------------------------------------------------------- fusion heads


def method_inputs(feats: PostFeatures, aligned: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every modality a method may read: image, grid, text, tokens and (with an aligner) aligned."""
    out = {"image": feats.image, "grid": feats.grid.float(), "text": feats.text, "tokens": feats.tokens.float()}
    if aligned is not None:
        out["aligned"] = aligned["aligned"]
    return out


def training_posts(pd: PostData, negatives: str = "both") -> np.ndarray:
    """Training post indices: the allowed posts and the flagged ones of ``negatives`` ("random", "hard" or "both";
    with both, the allowed posts are repeated so the classes stay balanced)."""
    if negatives not in ("random", "hard", "both"):
        raise ValueError(f"negatives must be 'random', 'hard' or 'both', got {negatives!r}")
    sets = pd.index["train"]
    if "all" in sets:  # your folder: one set
        return sets["all"]
    allowed = sets["random"][pd.labels[sets["random"]] == 0]
    flagged = {k: sets[k][pd.labels[sets[k]] == 1] for k in ("random", "hard")}
    if negatives == "both":
        return np.concatenate([allowed, allowed, flagged["random"], flagged["hard"]])
    return np.concatenate([allowed, flagged[negatives]])


def train_method(name: str, inputs: dict[str, torch.Tensor], pd: PostData, cfg: ModerationConfig = ModerationConfig(),
                 train: np.ndarray | None = None, progress: bool = False) -> MultimodalClassifier:  # fmt: skip
    """Train the head of method ``name`` (a key of METHODS) through the engine on the posts ``train`` (default: the
    config's training posts); the validation loss picks the epoch. The per-epoch history is ``model.history``."""
    fusion, modalities = METHODS[name]
    x = {m: inputs[m] for m in modalities}
    train = training_posts(pd, cfg.train_negatives) if train is None else train
    val = pd.split("val")
    model = fusion_classifier(fusion, x, 2, d_model=cfg.d_model, hidden_dim=cfg.hidden_dim, dropout=cfg.dropout)
    t, v = torch.as_tensor(train), torch.as_tensor(val)
    labels = torch.as_tensor(pd.labels)
    run = run_dir("head", {"method": name, "config": asdict(cfg), "data": fingerprint([x[m][t] for m in modalities]),
                           "labels": fingerprint(labels[t]), "val": fingerprint(v.tolist())})  # fmt: skip
    tc = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                     seed=cfg.seed, device=cfg.device, progress=progress, log_every_epoch=False, monitor="val_loss",
                     early_stopping_patience=cfg.patience, checkpoint_dir=str(run), resume="latest")  # fmt: skip
    val_data = ({m: a[v] for m, a in x.items()}, labels[v])
    model.history = train_classifier(model, {m: a[t] for m, a in x.items()}, labels[t], tc, val=val_data)
    return model


def flag_scores(model: MultimodalClassifier, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) how strongly each post is flagged: the flagged logit minus the allowed one."""
    logits = predict(model, {m: inputs[m] for m in model.modalities})
    return logits[:, 1] - logits[:, 0]


# ---------------------------------------------------------------- scores


def precision_at_recall(labels: np.ndarray, scores: np.ndarray, recall: float = 0.9) -> float:
    """The best precision among thresholds that catch at least ``recall`` of the flagged posts."""
    precision, rec, _ = precision_recall_curve(labels, scores)
    return float(precision[rec >= recall].max())


def val_threshold(pd: PostData, scores: torch.Tensor) -> float:
    """The score threshold with the best accuracy on the validation posts, averaged over the evaluation sets (each
    balanced; their union is not: the allowed posts are shared by the random and the hard set)."""
    sets = [(scores[idx].numpy(), pd.labels[idx]) for idx in pd.index["val"].values()]
    candidates = np.unique(np.concatenate([s for s, _ in sets]))
    acc = [np.mean([((s >= c) == y).mean() for s, y in sets]) for c in candidates]
    return float(candidates[int(np.argmax(acc))])


def score_sets(pd: PostData, scores: torch.Tensor, split: str = "test", threshold: float | None = None,
               recall: float = 0.9) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per evaluation set of ``split``: AUROC, accuracy at ``threshold`` (default: chosen on validation), and
    precision at ``recall``."""
    threshold = val_threshold(pd, scores) if threshold is None else threshold
    out = {}
    for name, idx in pd.index[split].items():
        y, s = pd.labels[idx], scores[idx].numpy()
        out[name] = {"auroc": float(roc_auc_score(y, s)), "accuracy": float(((s >= threshold) == y).mean()),
                     f"precision_at_recall_{round(recall * 100)}": precision_at_recall(y, s, recall)}  # fmt: skip
    return out


def run_methods(pd: PostData, feats: PostFeatures, aligned: dict[str, torch.Tensor], cfg: ModerationConfig = ModerationConfig(),
                names: tuple[str, ...] = tuple(METHODS), progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train every method of ``names`` and score it, plus the alignment cosine alone ("similarity"), ConSE's
    zero-shot cosine ("zero-shot") and the average of the unimodal heads' scores ("late"); returns {"models",
    "scores", "results"} keyed by method."""
    from tqdm.auto import tqdm

    inputs = method_inputs(feats, aligned)
    models, scores = {}, {}
    for name in tqdm(names, desc="fusion methods", disable=not progress):
        models[name] = train_method(name, inputs, pd, cfg)
        scores[name] = flag_scores(models[name], inputs)
    scores["similarity"] = -aligned["cosine"]  # a low cosine flags
    if "zero_shot" in aligned:
        scores["zero-shot"] = -aligned["zero_shot"]
    if all(u in scores for u in UNIMODAL):
        scores["late"] = (torch.sigmoid(scores["text only"]) + torch.sigmoid(scores["image only"])) / 2
    return {"models": models, "scores": scores, "results": {k: score_sets(pd, s) for k, s in scores.items()}}


# ---------------------------------------------------------------- OCR of the posts


def read_posts(pd: PostData, idx: np.ndarray | list[int], reader: TextReader | None = None,
               progress: bool = True) -> list[OcrResult]:  # fmt: skip
    """OCR of the posts ``idx`` (one reader for all), cached by the posts' content and the reader's settings."""
    idx = [int(i) for i in idx]
    return read_text(idx, reader, load=pd.picture, data={"posts": pd.content, "idx": idx}, progress=progress)


def ocr_texts(pd: PostData, idx: np.ndarray | list[int], results: list[OcrResult]) -> list[str]:
    """Every post's text with the OCR reading in place of the written text for the posts ``idx``."""
    texts = list(pd.texts)
    for i, r in zip(idx, results, strict=True):
        texts[int(i)] = r.text
    return texts


def cer_by_style(pd: PostData, idx: np.ndarray | list[int], results: list[OcrResult]) -> dict[str, Any]:
    """Character error rate of the readings against the written texts: overall, by font and by size."""
    idx = [int(i) for i in idx]
    refs, hyps = [pd.texts[i] for i in idx], [r.text for r in results]
    out: dict[str, Any] = {"cer": character_error_rate(refs, hyps), "n": len(idx),
                           "nothing_read": sum(not h for h in hyps)}  # fmt: skip
    if pd.posts:
        for key, value in (("by_font", lambda p: p.style.font), ("by_size", lambda p: f"{p.style.size:.2f}"),
                           ("by_outline", lambda p: "outlined" if p.style.outline else "plain")):  # fmt: skip
            groups: dict[str, list[int]] = {}
            for k, i in enumerate(idx):
                groups.setdefault(value(pd.posts[i]), []).append(k)
            out[key] = {g: character_error_rate([refs[k] for k in ks], [hyps[k] for k in ks])
                        for g, ks in sorted(groups.items())}  # fmt: skip
    return out


# ---------------------------------------------------------------- training strategies: hard-negative mining, augmentation


def mine_hard_negatives(pd: PostData, scores: torch.Tensor, keep: float = 0.5) -> np.ndarray:
    """Training posts for a second round: every allowed training post and the ``keep`` share of the flagged ones
    (random and hard together) that ``scores`` (a first-round model) finds least suspicious, i.e. its mistakes
    and near misses; the allowed posts are repeated to keep the classes balanced."""
    sets = pd.index["train"]
    pool = np.unique(np.concatenate(list(sets.values())))
    allowed, flagged = pool[pd.labels[pool] == 0], pool[pd.labels[pool] == 1]
    n = max(1, round(keep * len(flagged)))
    hardest = flagged[np.argsort(scores[flagged].numpy(), kind="stable")[:n]]
    repeats = max(1, round(n / len(allowed)))
    return np.concatenate([np.tile(allowed, repeats), hardest])


def augmented_posts(pd: PostData, seed: int = 1, crop: float = 0.8, jitter: float = 0.15) -> PostData:
    """A label-keeping copy of every generated training post: the same photo and text, the photo randomly cropped
    (to ``crop`` of each side at least) and colour-jittered (brightness and per-channel gains within ``jitter``),
    then the text written anew in a random style (font, size, ink, position). The crop comes before the text, so
    the text is never cut. Returns a PostData of the copies (one split, "train")."""
    from mmhelpers.scenarios.moderation.posts import Post, post_canvas, sample_style

    if not pd.posts:
        raise ValueError("augmented_posts re-renders generated posts; a folder of finished posts has no photo to reuse")
    rng = np.random.default_rng(seed)
    train = np.unique(np.concatenate(list(pd.index["train"].values())))
    copies, boxes, gains = [], [], []
    for i in train:
        p = pd.posts[int(i)]
        copies.append(Post(p.photo, p.text, p.text_of, p.label, sample_style(rng), p.negatives))
        f = rng.uniform(crop, 1.0, size=2)
        boxes.append((f, rng.uniform(0, 1 - f)))  # (kept fraction, offset) per axis (h, w)
        gains.append(rng.uniform(1 - jitter, 1 + jitter, size=3) * rng.uniform(1 - jitter, 1 + jitter))

    def draw(k: int) -> Overlay:
        photo = _photo_of(pd, copies[k].photo)
        h, w = photo.shape[:2]
        (fh, fw), (oh, ow) = boxes[k]
        y0, x0 = int(oh * h), int(ow * w)
        cut = photo[y0 : y0 + max(16, int(fh * h)), x0 : x0 + max(16, int(fw * w))]
        jittered = np.clip(cut.astype(np.float32) * gains[k], 0, 255).astype(np.uint8)
        return render_text(post_canvas(jittered), copies[k].text, copies[k].style)

    content = {"of": pd.content, "train": train.tolist(), "seed": seed, "crop": crop, "jitter": jitter,
               "augment": "crop, colour gains, new text style v1"}  # fmt: skip
    return PostData(source=f"augmented copies of the {len(train)} training posts (seed {seed})",
                    texts=[c.text for c in copies], labels=np.array([c.label for c in copies]), groups=pd.groups[train],
                    index={"train": {"all": np.arange(len(train))}}, content=content, draw=draw, posts=copies,
                    class_names=pd.class_names, photo_names=pd.photo_names, captions=pd.captions, photo=pd.photo)  # fmt: skip


def _photo_of(pd: PostData, photo: int) -> np.ndarray:
    """The photo behind generated posts (the loader ``load_posts`` keeps on ``pd.photo``)."""
    if pd.photo is None:
        raise ValueError("these posts carry no photo loader")
    return pd.photo(photo)
