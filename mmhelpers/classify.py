"""Classification on your own data: any set of named modalities, any number of classes, the one engine.

The recipe is four calls, each a notebook cell a user can copy::

    feats = {"image": image_features(paths), "title": text_features(titles)}   # frozen encoders, cached
    model = fusion_classifier("gated", feats, n_classes)                       # heads over those features
    history = train_classifier(model, feats, labels, TrainConfig(epochs=30))   # through the engine
    logits = predict(model, test_feats)

Modality names are whatever the dict says. One modality gives a unimodal classifier (a text classifier
on sentence embeddings, for instance); its logits, or those of several, feed late fusion
(``fusion_classifier("late_learned", {"image": image_logits, "title": title_logits}, n_classes)``).
Vectors (N, D) suit every method; token sequences (N, T, D) suit the attention methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmhelpers.encoders import ImageEncoder, TextEncoder, build_image_encoder, build_text_encoder
from mmhelpers.features import extract_features
from mmhelpers.fusion import MultimodalClassifier, build_fusion
from mmhelpers.image import load_image
from mmhelpers.train import Batch, History, OnModalities, TensorDictDataset, TrainConfig, Trainer

Features = Mapping[str, torch.Tensor]

__all__ = ["fusion_classifier", "image_features", "predict", "text_features", "train_classifier"]


def _check(features: Features, labels: torch.Tensor | None = None) -> int:
    """Number of examples; ValueError naming the modality when lengths differ or a modality is empty."""
    if not features:
        raise ValueError("features is empty: give {modality name: tensor (N, ...)}")
    lengths = {m: len(x) for m, x in features.items()}
    if labels is not None:
        lengths["labels"] = len(labels)
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every modality (and the labels) needs the same number of examples, got {lengths}")
    return next(iter(lengths.values()))


def fusion_classifier(method: str, features: Features, n_classes: int, d_model: int = 64,
                      modality_dropout: float = 0.0, hidden_dim: int | None = None,
                      dropout: float = 0.1, **fusion_kw: Any) -> MultimodalClassifier:  # fmt: skip
    """A ``MultimodalClassifier`` over precomputed features: identity encoders, ``method`` fusion, a head.

    ``method`` is one of ``mmhelpers.fusion.FUSION_METHODS``; input sizes come from ``features`` (last dim);
    ``fusion_kw`` go to the fusion (``n_heads``, ``rank``, ``mask_zero_tokens=True`` for zero-padded token
    sequences, ...).
    """
    _check(features)
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    dims = {m: int(x.shape[-1]) for m, x in features.items()}
    fusion = build_fusion(method, dims, n_classes=n_classes, d_model=d_model, **fusion_kw)
    return MultimodalClassifier({m: nn.Identity() for m in dims}, fusion, n_classes, dropout=dropout,
                                modality_dropout=modality_dropout, hidden_dim=hidden_dim)  # fmt: skip


def train_classifier(model: MultimodalClassifier, features: Features, labels: torch.Tensor,
                     config: TrainConfig | None = None, val: tuple[Features, torch.Tensor] | None = None,
                     transform: Callable[[Batch], Batch] | None = None) -> History:  # fmt: skip
    """Train ``model`` on paired examples ``features[m][i]`` with ``labels[i]`` (class ids 0..K-1) through the engine.

    ``val`` = (features, labels) validates every epoch (early stopping and best weights as ``config`` says);
    ``transform(batch)`` augments each training batch. Returns the per-epoch history; the model is left in eval mode.
    """
    _check(features, labels)
    labels = torch.as_tensor(labels).long()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= model.n_classes):
        raise ValueError(
            f"labels must be class ids in 0..{model.n_classes - 1}, got {int(labels.min())}..{int(labels.max())}"
        )
    data = TensorDictDataset({**features, "label": labels}, transform=transform)
    val_data = None
    if val is not None:
        _check(val[0], val[1])
        val_data = TensorDictDataset({**val[0], "label": torch.as_tensor(val[1]).long()})
    history = Trainer(OnModalities(model, model.modalities), config).fit(data, val_data)
    model.eval()
    return history


@torch.inference_mode()
def predict(model: MultimodalClassifier, features: Features, batch_size: int = 512,
            drop: Sequence[str] = ()) -> torch.Tensor:  # fmt: skip
    """Logits (N, n_classes) on the CPU in float32; ``drop`` zeroes those modalities (a missing-modality test)."""
    n = _check(features)
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    out = []
    for i in range(0, n, batch_size):
        inputs = {m: x[i : i + batch_size].to(device) for m, x in features.items()}
        for m in drop:
            inputs[m] = torch.zeros_like(inputs[m])
        out.append(model(inputs).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.n_classes)


def text_features(texts: Sequence[str], encoder: TextEncoder | None = None, batch_size: int = 64,
                  progress: bool = True) -> torch.Tensor:  # fmt: skip
    """Sentence embeddings (N, D) of ``texts`` (default: the packaged MiniLM, 384-d), cached by weights and texts."""
    encoder = encoder or build_text_encoder()
    texts = [str(t) for t in texts]
    return extract_features(lambda batch: encoder.encode(batch, batch_size=len(batch)), texts,
                            model_id=encoder.model_id, preprocess=encoder.preprocessing(),
                            key={"what": "sentence embedding", "normalize": True}, batch_size=batch_size,
                            progress=progress, desc="text features")  # fmt: skip


def image_features(images: Sequence[str | Path | np.ndarray], encoder: ImageEncoder | None = None,
                   batch_size: int = 32, progress: bool = True) -> torch.Tensor:  # fmt: skip
    """Pooled image features (N, D) of image files or RGB arrays (default: EfficientNet-Lite0, 1280-d), cached.

    Files of any size and channel count are decoded to RGB; the cache key holds the file contents, the
    encoder's weights and its preprocessing (size, normalisation, precision).
    """
    encoder = encoder or build_image_encoder()
    items = list(images)

    def encode(batch: Sequence[str | Path | np.ndarray]) -> torch.Tensor:
        arrays = [load_image(x) if isinstance(x, str | Path) else x for x in batch]
        device = encoder.mean.device
        return encoder(encoder.preprocess(arrays).to(device)).float()

    paths = all(isinstance(x, str | Path) for x in items)
    return extract_features(encode, items, model_id=encoder.model_id, preprocess=encoder.preprocessing(),
                            data=[Path(x) for x in items] if paths else None, key={"what": "pooled"},
                            batch_size=batch_size, progress=progress, desc="image features")  # fmt: skip
