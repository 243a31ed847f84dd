"""The audio-visual digits recipe: unimodal encoders, then every fusion method on their frozen outputs.

Per fold of a protocol (see ``mmhelpers.scenarios.av_digits.data``):

1. the training clips are split into an *encoder* part (80%) and a *fusion* part (20%), and so is the
   image training pool;
2. an ``AudioCNN`` (log-mel, SpecAugment, time shifts) and an ``ImageCNN`` (random affine) are trained
   as unimodal classifiers on the encoder part;
3. both encoders are frozen; for every clip and image of the fusion part and of the test set they give
   tokens (for attention fusion), a pooled vector (for feature-level fusion) and logits (for late fusion);
4. each fusion head is trained on the fusion part, each clip re-paired with a random image of its digit
   in every batch, with modality dropout so it learns to cope with a missing modality;
5. everything is scored on the test clips, each paired with one fixed test-pool image.

Training the heads on examples the encoders never saw matters: on their own training data the encoders
are nearly always right, so a head trained there would learn to trust both modalities blindly. Every
training run is checkpointed (atomically) under the cache, keyed by its configuration, so an interrupted
run resumes and a second notebook reuses the trained models instead of training them again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmhelpers.augment import augment_spectrogram, random_affine
from mmhelpers.encoders import AudioCNN, ImageCNN, count_parameters
from mmhelpers.features import fingerprint
from mmhelpers.fusion import FUSION_METHODS, MultimodalClassifier, build_fusion
from mmhelpers.metrics import accuracy, macro_f1
from mmhelpers.paths import cache_root
from mmhelpers.scenarios.av_digits.data import (
    AVDigits,
    Fold,
    audio_features,
    degrade_audio,
    degrade_images,
    pair_images,
    protocol_folds,
)
from mmhelpers.splits import stratified_holdout
from mmhelpers.train import History, OnKey, OnModalities, TensorDictDataset, TrainConfig, Trainer

MODALITIES = ("audio", "image")
TOKEN_METHODS = ("cross_attention", "transformer")
LATE_METHODS = ("late_mean", "late_vote", "late_learned")
UNTRAINED_METHODS = ("late_mean", "late_vote")


@dataclass
class AVConfig:
    """Sizes and schedules of the recipe; ``smoke()`` gives a configuration that runs in seconds."""

    audio_epochs: int = 20
    image_epochs: int = 12
    fusion_epochs: int = 20
    audio_channels: int = 16
    audio_blocks: int = 4
    image_channels: int = 32
    image_blocks: int = 3
    embed_dim: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    batch_size: int = 64
    fusion_fraction: float = 0.2
    d_model: int = 64
    modality_dropout: float = 0.3
    methods: tuple[str, ...] = tuple(FUSION_METHODS)
    # the hard protocol: images cut to a few principal components plus noise, audio buried in noise
    hard_components: int = 5
    hard_image_noise: float = 0.3
    hard_snr_db: float = -12.0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # the engine's "auto" picks bf16 on CPUs with AMX; the committed results are fp32
    resume: str | None = None  # "latest": reuse/continue this configuration's checkpoints (notebooks share them)

    def smoke(self) -> AVConfig:
        """Tiny epochs for tests and quick looks (the numbers are then far from the targets). On a small folder of
        your own, smaller batches (``batch_size``) give enough optimizer steps in so few epochs."""
        return replace(self, audio_epochs=3, image_epochs=2, fusion_epochs=4)


def _key_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


_FUSION_FIELDS = ("fusion_epochs", "d_model", "modality_dropout", "methods", "device", "resume")


def checkpoint_root(av: AVDigits, cond: Condition, cfg: AVConfig, cache: Path | None = None) -> Path:
    """Checkpoint folder of one data condition and encoder configuration (fusion settings do not change it)."""
    enc_cfg = {k: v for k, v in asdict(cfg).items() if k not in _FUSION_FIELDS}
    data = fingerprint([cond.audio, cond.images, av.labels, av.image_labels])
    return (cache or cache_root()) / "av_digits" / _key_hash({"source": av.source, "cond": cond.name, "data": data,
                                                              **enc_cfg})  # fmt: skip


def _fusion_dir(root: Path, fold: str, method: str, cfg: AVConfig) -> Path:
    key = _key_hash({k: getattr(cfg, k) for k in ("fusion_epochs", "d_model", "modality_dropout")})
    return root / f"fusion-{fold}-{method}-{key}"


def _train_config(cfg: AVConfig, epochs: int, ckpt: Path | None, progress: bool) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                       label_smoothing=cfg.label_smoothing, seed=cfg.seed, device=cfg.device, progress=progress,
                       precision=cfg.precision, log_every_epoch=False, checkpoint_dir=str(ckpt) if ckpt else None,
                       resume=cfg.resume if ckpt else None)  # fmt: skip


# ---------------------------------------------------------------- data for one condition


@dataclass
class Condition:
    """The inputs of one protocol: clean or degraded audio features and images."""

    name: str
    audio: torch.Tensor  # (N, n_mels, frames)
    images: torch.Tensor  # (M, 1, 28, 28)


def condition(av: AVDigits, protocol: str, cfg: AVConfig) -> Condition:
    """Clean inputs for ``official`` and ``speaker``; degraded ones for ``hard``."""
    if protocol != "hard":
        return Condition("clean", av.audio, av.images)
    images = degrade_images(
        av.images, av.images[av.image_pools["train"]], cfg.hard_components, cfg.hard_image_noise, cfg.seed
    )
    audio = audio_features(degrade_audio(av.waves, cfg.hard_snr_db, cfg.seed), av.sr)
    return Condition(f"hard-pca{cfg.hard_components}-n{cfg.hard_image_noise}-snr{cfg.hard_snr_db}", audio, images)


# ---------------------------------------------------------------- unimodal encoders


def _n_classes(labels: torch.Tensor, n_classes: int | None) -> int:
    """``n_classes``, or the number the labels imply (largest id + 1)."""
    return n_classes if n_classes is not None else int(labels.max()) + 1


def train_audio_encoder(audio: torch.Tensor, labels: torch.Tensor, cfg: AVConfig, ckpt: Path | None = None,
                        progress: bool = True, n_classes: int | None = None) -> tuple[AudioCNN, History]:  # fmt: skip
    """Train an AudioCNN classifier on log-mel clips with time shifts and SpecAugment."""
    torch.manual_seed(cfg.seed)
    model = AudioCNN(n_mels=audio.shape[1], dim=cfg.embed_dim, n_classes=_n_classes(labels, n_classes), channels=cfg.audio_channels,
                     n_blocks=cfg.audio_blocks, dropout=0.3)  # fmt: skip
    data = TensorDictDataset({"audio": audio, "label": labels},
                             transform=lambda b: {**b, "audio": augment_spectrogram(b["audio"])})  # fmt: skip
    history = Trainer(OnKey(model, "audio"), _train_config(cfg, cfg.audio_epochs, ckpt, progress)).fit(data)
    return model.eval(), history


def train_image_encoder(images: torch.Tensor, labels: torch.Tensor, cfg: AVConfig, ckpt: Path | None = None,
                        progress: bool = True, n_classes: int | None = None) -> tuple[ImageCNN, History]:  # fmt: skip
    """Train an ImageCNN classifier on (B, C, H, W) images with small random affine warps."""
    torch.manual_seed(cfg.seed)
    model = ImageCNN(in_channels=images.shape[1], dim=cfg.embed_dim, n_classes=_n_classes(labels, n_classes), channels=cfg.image_channels,
                     n_blocks=cfg.image_blocks, dropout=0.3)  # fmt: skip
    data = TensorDictDataset({"image": images, "label": labels},
                             transform=lambda b: {**b, "image": random_affine(b["image"])})  # fmt: skip
    history = Trainer(OnKey(model, "image"), _train_config(cfg, cfg.image_epochs, ckpt, progress)).fit(data)
    return model.eval(), history


@torch.inference_mode()
def encode(model: AudioCNN | ImageCNN, x: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Frozen-encoder outputs for every input: tokens (N, T, C), pooled (N, dim) and logits (N, classes)."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {"tokens": [], "pooled": [], "logits": []}
    for i in range(0, len(x), batch_size):
        h = model.feature_map(x[i : i + batch_size].to(device))  # (B, C, H', W')
        pooled = model.proj(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))
        out["tokens"].append(h.flatten(2).transpose(1, 2).cpu())
        out["pooled"].append(pooled.cpu())
        out["logits"].append(model.head(pooled).cpu())
    return {k: torch.cat(v) for k, v in out.items()}


# ---------------------------------------------------------------- fusion heads


def feature_kind(method: str) -> str:
    """Which encoder output a fusion method reads: tokens, pooled vectors or logits."""
    return "tokens" if method in TOKEN_METHODS else "logits" if method in LATE_METHODS else "pooled"


def build_fusion_model(method: str, audio_feats: dict[str, torch.Tensor], image_feats: dict[str, torch.Tensor],
                       cfg: AVConfig) -> MultimodalClassifier:  # fmt: skip
    """A MultimodalClassifier whose 'encoders' are identities over cached encoder outputs."""
    kind = feature_kind(method)
    dims = {"audio": audio_feats[kind].shape[-1], "image": image_feats[kind].shape[-1]}
    n_classes = audio_feats["logits"].shape[-1]
    fusion = build_fusion(method, dims, n_classes=n_classes, d_model=cfg.d_model)
    return MultimodalClassifier({m: nn.Identity() for m in MODALITIES}, fusion, n_classes=n_classes, dropout=0.1,
                                modality_dropout=cfg.modality_dropout)  # fmt: skip


def train_fusion_head(method: str, audio_feats: dict[str, torch.Tensor], labels: torch.Tensor,
                      image_feats: dict[str, torch.Tensor], image_labels: torch.Tensor, cfg: AVConfig,
                      ckpt: Path | None = None, progress: bool = False) -> tuple[MultimodalClassifier, History | None]:  # fmt: skip
    """Train one fusion head; each batch pairs every clip with a random image of its digit from the fusion pool."""
    torch.manual_seed(cfg.seed)
    model = build_fusion_model(method, audio_feats, image_feats, cfg)
    if method in UNTRAINED_METHODS:
        return model.eval(), None
    kind = feature_kind(method)
    pool = np.arange(len(image_labels))
    g = torch.Generator().manual_seed(cfg.seed)

    def pair(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        idx = pair_images(batch["label"], image_labels, pool, g)
        return {**batch, "image": image_feats[kind][idx]}

    data = TensorDictDataset({"audio": audio_feats[kind], "label": labels}, transform=pair)
    history = Trainer(OnModalities(model, MODALITIES), _train_config(cfg, cfg.fusion_epochs, ckpt, progress)).fit(data)
    return model.eval(), history


@torch.inference_mode()
def fused_logits(model: MultimodalClassifier, audio: torch.Tensor, image: torch.Tensor,
                 drop: str | None = None) -> torch.Tensor:  # fmt: skip
    """Logits of a fusion head on paired features; ``drop`` zeroes one modality's encoded features."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    inputs = {"audio": audio.to(device), "image": image.to(device)}
    if drop is not None:
        inputs[drop] = torch.zeros_like(inputs[drop])
    return model(inputs).cpu()


# ---------------------------------------------------------------- one fold, end to end


@dataclass
class FoldResult:
    """Everything one fold produced: accuracies, predictions, trained models and their costs."""

    name: str
    accuracy: dict[str, float]  # "audio", "image" and every fusion method
    macro_f1: dict[str, float]
    logits: dict[str, torch.Tensor]  # test logits per model
    labels: torch.Tensor
    missing: dict[str, dict[str, float]]  # method -> {"audio_missing": acc, "image_missing": acc}
    parameters: dict[str, int]
    train_seconds: dict[str, float]
    histories: dict[str, History] = field(default_factory=dict, repr=False)
    models: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    test_images: np.ndarray | None = None  # image index paired with each test clip


def run_fold(av: AVDigits, fold: Fold, cond: Condition, cfg: AVConfig, image_model: tuple[ImageCNN, History] | None = None,
             progress: bool = True, cache: Path | None = None) -> FoldResult:  # fmt: skip
    """Train the encoders (or load them from their checkpoints) and every fusion head for one fold; score the test set."""
    root = checkpoint_root(av, cond, cfg, cache)
    enc_clips, fus_clips = stratified_holdout(fold.train, av.labels, cfg.fusion_fraction, cfg.seed)
    img_enc, img_fus = stratified_holdout(av.image_pools["train"], av.image_labels, cfg.fusion_fraction, cfg.seed)
    if image_model is None:
        image_model = train_image_encoder(cond.images[img_enc], av.image_labels[img_enc], cfg, root / "image", progress,
                                          av.n_classes)  # fmt: skip
    image_cnn, image_hist = image_model
    audio_cnn, audio_hist = train_audio_encoder(cond.audio[enc_clips], av.labels[enc_clips], cfg,
                                                root / f"audio-{fold.name}", progress, av.n_classes)  # fmt: skip
    a_fus, a_test = encode(audio_cnn, cond.audio[fus_clips]), encode(audio_cnn, cond.audio[fold.test])
    i_fus = encode(image_cnn, cond.images[img_fus])
    test_imgs = pair_images(av.labels[fold.test], av.image_labels, av.image_pools["test"],
                            torch.Generator().manual_seed(cfg.seed + 1)).numpy()  # fmt: skip
    i_test = encode(image_cnn, cond.images[test_imgs])
    y_test = av.labels[fold.test]
    logits = {"audio": a_test["logits"], "image": i_test["logits"]}
    params = {"audio": count_parameters(audio_cnn), "image": count_parameters(image_cnn)}
    seconds = {"audio": audio_hist.total_seconds, "image": image_hist.total_seconds}
    histories = {"audio": audio_hist, "image": image_hist}
    models: dict[str, nn.Module] = {"audio": audio_cnn, "image": image_cnn}
    missing = {}
    for method in cfg.methods:
        kind = feature_kind(method)
        head, hist = train_fusion_head(method, a_fus, av.labels[fus_clips], i_fus, av.image_labels[img_fus], cfg,
                                       _fusion_dir(root, fold.name, method, cfg))  # fmt: skip
        logits[method] = fused_logits(head, a_test[kind], i_test[kind]).float()
        missing[method] = {
            "audio_missing": accuracy(fused_logits(head, a_test[kind], i_test[kind], drop="audio"), y_test),
            "image_missing": accuracy(fused_logits(head, a_test[kind], i_test[kind], drop="image"), y_test),
        }
        params[method] = count_parameters(head)
        seconds[method] = hist.total_seconds if hist else 0.0
        models[method] = head
        if hist:
            histories[method] = hist
    acc = {k: accuracy(v, y_test) for k, v in logits.items()}
    f1 = {k: macro_f1(v.argmax(1), y_test) for k, v in logits.items()}
    return FoldResult(fold.name, acc, f1, logits, y_test, missing, params, seconds, histories, models, test_imgs)


def run_protocol(av: AVDigits, protocol: str, cfg: AVConfig, progress: bool = True,
                 folds: list[str] | None = None) -> list[FoldResult]:  # fmt: skip
    """Every fold of a protocol (or only those named in ``folds``); the image encoder is shared by the folds."""
    cond = condition(av, protocol, cfg)
    root = checkpoint_root(av, cond, cfg)
    img_enc, _ = stratified_holdout(av.image_pools["train"], av.image_labels, cfg.fusion_fraction, cfg.seed)
    image_model = train_image_encoder(cond.images[img_enc], av.image_labels[img_enc], cfg, root / "image", progress,
                                      av.n_classes)  # fmt: skip
    chosen = [f for f in protocol_folds(av, protocol) if folds is None or f.name in folds]
    return [run_fold(av, f, cond, cfg, image_model, progress) for f in chosen]


def summarise(results: list[FoldResult]) -> dict[str, Any]:
    """Mean accuracy per model over folds, the best fusion method, and per-fold figures when there are several."""
    names = list(results[0].accuracy)
    mean = {k: float(np.mean([r.accuracy[k] for r in results])) for k in names}
    methods = {k: v for k, v in mean.items() if k not in MODALITIES}
    best = max(methods, key=methods.get)
    out: dict[str, Any] = {"image": mean["image"], "audio": mean["audio"], "best_fusion": methods[best],
                           "best_method": best, "methods": methods}  # fmt: skip
    if len(results) > 1:
        out["per_speaker"] = {r.name: {k: r.accuracy[k] for k in ("audio", "image", best)} for r in results}
        out["worst_speaker_audio"] = min(r.accuracy["audio"] for r in results)
    return out


# ---------------------------------------------------------------- multitask and pre-training


class MultiTaskAudio(nn.Module):
    """One AudioCNN trunk, two heads: the digit (the class) and the speaker; ``model(batch)`` returns both logits."""

    def __init__(self, n_speakers: int, cfg: AVConfig, n_mels: int, n_classes: int = 10):
        super().__init__()
        self.trunk = AudioCNN(n_mels=n_mels, dim=cfg.embed_dim, n_classes=None, channels=cfg.audio_channels,
                              n_blocks=cfg.audio_blocks, dropout=0.3)  # fmt: skip
        self.digit = nn.Linear(cfg.embed_dim, n_classes)
        self.speaker = nn.Linear(cfg.embed_dim, n_speakers)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.trunk.embed(batch["audio"])
        return {"digit": self.digit(z), "speaker": self.speaker(z)}


def train_multitask_audio(audio: torch.Tensor, digits: torch.Tensor, speakers: torch.Tensor, n_speakers: int,
                          cfg: AVConfig, speaker_weight: float = 0.5, ckpt: Path | None = None,
                          progress: bool = True, n_classes: int | None = None) -> tuple[MultiTaskAudio, History]:  # fmt: skip
    """Train digit and speaker recognition together: loss = CE(digit) + speaker_weight * CE(speaker)."""
    torch.manual_seed(cfg.seed)
    model = MultiTaskAudio(n_speakers, cfg, audio.shape[1], _n_classes(digits, n_classes))
    ls = cfg.label_smoothing

    def loss_fn(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        digit = nn.functional.cross_entropy(out["digit"], batch["label"], label_smoothing=ls)
        return digit + speaker_weight * nn.functional.cross_entropy(
            out["speaker"], batch["speaker"], label_smoothing=ls
        )

    data = TensorDictDataset({"audio": audio, "label": digits, "speaker": speakers},
                             transform=lambda b: {**b, "audio": augment_spectrogram(b["audio"])})  # fmt: skip
    trainer = Trainer(model, _train_config(cfg, cfg.audio_epochs, ckpt, progress), loss_fn=loss_fn,
                      predict_fn=lambda out: out["digit"].argmax(-1))  # fmt: skip
    return model.eval(), trainer.fit(data)


def pretrain_audio_contrastive(audio: torch.Tensor, cfg: AVConfig, epochs: int, temperature: float = 0.2,
                               ckpt: Path | None = None, progress: bool = True) -> tuple[AudioCNN, History]:  # fmt: skip
    """Self-supervised pre-training (SimCLR): two augmented views of each clip must recognise each other.

    Uses no labels at all; the trunk learns what stays the same under time shifts and masking.
    """
    from mmhelpers.losses import nt_xent

    torch.manual_seed(cfg.seed)
    model = AudioCNN(n_mels=audio.shape[1], dim=cfg.embed_dim, n_classes=None, channels=cfg.audio_channels,
                     n_blocks=cfg.audio_blocks, dropout=0.0)  # fmt: skip
    projector = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.ReLU(), nn.Linear(cfg.embed_dim, 64))

    class TwoViews(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.projector = model, projector

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            x = batch["audio"]
            views = torch.cat([augment_spectrogram(x), augment_spectrogram(x)])  # (2B, F, T)
            return self.projector(self.model.embed(views))  # (2B, 64)

    def loss_fn(z: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        n = len(z) // 2
        return nt_xent(z[:n], z[n:], temperature)

    def predict_fn(z: torch.Tensor) -> torch.Tensor:  # "accuracy" = views that find their partner first
        n = len(z) // 2
        zn = nn.functional.normalize(z, dim=-1)
        sim = (zn @ zn.T).fill_diagonal_(-2)
        return (sim.argmax(1) == torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)).long()

    # the "label" is always 1 so that accuracy counts partners found
    data = TensorDictDataset({"audio": audio, "label": torch.ones(len(audio), dtype=torch.long)})
    config = replace(_train_config(cfg, epochs, ckpt, progress), label_smoothing=0.0, batch_size=128)
    trainer = Trainer(TwoViews(), config, loss_fn=loss_fn, predict_fn=lambda z: predict_fn(z)[: len(z) // 2])
    return model.eval(), trainer.fit(data)


def fine_tune_audio(audio: torch.Tensor, labels: torch.Tensor, cfg: AVConfig, init: AudioCNN | None = None,
                    epochs: int | None = None, progress: bool = True,
                    n_classes: int | None = None) -> tuple[AudioCNN, History]:  # fmt: skip
    """Train a digit classifier, from scratch or starting from a pre-trained trunk ``init``."""
    torch.manual_seed(cfg.seed)
    model = AudioCNN(n_mels=audio.shape[1], dim=cfg.embed_dim, n_classes=_n_classes(labels, n_classes), channels=cfg.audio_channels,
                     n_blocks=cfg.audio_blocks, dropout=0.3)  # fmt: skip
    if init is not None:
        state = {k: v for k, v in init.state_dict().items() if not k.startswith("head.")}
        model.load_state_dict(state, strict=False)
    data = TensorDictDataset({"audio": audio, "label": labels},
                             transform=lambda b: {**b, "audio": augment_spectrogram(b["audio"])})  # fmt: skip
    config = _train_config(cfg, epochs or cfg.audio_epochs, None, progress)
    return model.eval(), Trainer(OnKey(model, "audio"), config).fit(data)
