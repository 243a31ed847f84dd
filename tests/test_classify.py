"""The own-data classification recipe: any modality names, any number of classes, text and image features."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmhelpers.classify import fusion_classifier, image_features, predict, text_features, train_classifier
from mmhelpers.encoders import build_image_encoder, build_text_encoder
from mmhelpers.metrics import accuracy
from mmhelpers.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = TrainConfig(epochs=25, lr=3e-3, batch_size=32, seed=0, device="cpu", progress=False, log_every_epoch=False)


def two_modalities(n_classes: int, n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """'photo' carries the class in its first half of classes, 'caption' in its second: only fusion gets all."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    centres = torch.randn(n_classes, 16, generator=torch.Generator().manual_seed(99)) * 3
    photo, caption = torch.randn(n, 16, generator=g), torch.randn(n, 12, generator=g)
    half = n_classes // 2
    photo += torch.where((y < half)[:, None], centres[y], centres[y % half] * 0)  # classes >= half look alike
    caption[:, :12] += torch.where((y >= half)[:, None], centres[y, :12], centres[y % half, :12] * 0.0)
    caption[:, 0] += (y < half).float() * 4  # caption says which half
    return {"photo": photo, "caption": caption}, y


@pytest.mark.parametrize("n_classes", [8, 12])
@pytest.mark.parametrize("method", ["concat", "gated", "transformer"])
def test_fusion_of_any_named_modalities_learns_any_number_of_classes(n_classes: int, method: str) -> None:
    train, y = two_modalities(n_classes, 40 * n_classes, seed=0)
    test, y_test = two_modalities(n_classes, 20 * n_classes, seed=1)
    torch.manual_seed(0)  # the untrained model's accuracy must not depend on which tests ran before
    model = fusion_classifier(method, train, n_classes, modality_dropout=0.1)
    untrained = accuracy(predict(model, test), y_test)
    history = train_classifier(model, train, y, CFG)
    fused = accuracy(predict(model, test), y_test)
    photo_only = accuracy(predict(model, test, drop=["caption"]), y_test)
    assert model.n_classes == n_classes and history.epochs == CFG.epochs
    # an untrained network already separates these clustered classes a little (up to ~0.35 seen), never like this
    assert fused > untrained + 0.4, (fused, untrained)
    assert fused > 0.85, fused  # each modality alone can tell at most about half of the classes apart
    assert fused > photo_only + 0.15, (fused, photo_only)


def test_late_fusion_of_unimodal_logits() -> None:
    train, y = two_modalities(8, 320, seed=0)
    test, y_test = two_modalities(8, 160, seed=1)
    logits_train, logits_test = {}, {}
    for m in train:  # one unimodal classifier per modality, then late fusion over their logits
        uni = fusion_classifier("concat", {m: train[m]}, 8)
        train_classifier(uni, {m: train[m]}, y, CFG)
        logits_train[m], logits_test[m] = predict(uni, {m: train[m]}), predict(uni, {m: test[m]})
    late = fusion_classifier("late_learned", logits_train, 8)
    train_classifier(late, logits_train, y, CFG)
    best_single = max(accuracy(logits_test[m], y_test) for m in logits_test)
    assert accuracy(predict(late, logits_test), y_test) > best_single + 0.1


def test_bad_inputs_are_clear_errors() -> None:
    feats, y = two_modalities(8, 64, seed=0)
    with pytest.raises(ValueError, match="same number of examples"):
        fusion_classifier("concat", {"a": torch.zeros(4, 3), "b": torch.zeros(5, 3)}, 8)
    with pytest.raises(ValueError, match="at least 2"):
        fusion_classifier("concat", feats, 1)
    model = fusion_classifier("concat", feats, 8)
    with pytest.raises(ValueError, match=r"class ids in 0\.\.7"):
        train_classifier(model, feats, y + 1, CFG)
    with pytest.raises(ValueError, match="same number of examples"):
        train_classifier(model, feats, y[:10], CFG)


TOPICS = {
    "shoes": ["running shoes", "leather boots", "sneakers", "sandals for summer", "hiking boots"],
    "phones": ["smartphone with camera", "mobile phone case", "android phone", "phone charger", "cell phone"],
    "kitchen": ["frying pan", "chef knife", "cooking pot", "kitchen blender", "cutting board"],
    "toys": ["teddy bear", "toy car for kids", "building blocks", "doll house", "puzzle game for children"],
    "books": ["mystery novel", "cookbook with recipes", "history book", "poetry collection", "science fiction novel"],
    "garden": ["garden hose", "lawn mower", "flower seeds", "plant pot", "pruning shears"],
    "music": ["acoustic guitar", "piano keyboard", "drum set", "violin strings", "headphones for music"],
    "sports": ["tennis racket", "football", "yoga mat", "basketball", "golf clubs"],
}


def test_text_classifier_on_sentence_embeddings_and_its_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(TOPICS)
    texts = [f"{adj} {item}" for c in names for item in TOPICS[c] for adj in ("new", "cheap", "blue", "best")]
    y = torch.tensor([names.index(c) for c in names for _ in TOPICS[c] for _ in range(4)])
    encoder = build_text_encoder()
    feats = text_features(texts, encoder, progress=False)
    assert feats.shape == (len(texts), encoder.dim)
    test_items = np.arange(len(texts)) % 5 == 4  # hold out one item of each class (all its four phrasings)
    train_idx, test_idx = np.flatnonzero(~test_items), np.flatnonzero(test_items)
    model = fusion_classifier("concat", {"title": feats[train_idx]}, len(names))
    train_classifier(model, {"title": feats[train_idx]}, y[train_idx], CFG)
    acc = accuracy(predict(model, {"title": feats[test_idx]}), y[test_idx])
    assert acc > 0.6, acc  # unseen products; chance 1/8

    calls = []
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: calls.append(1))
    again = text_features(texts, encoder, progress=False)  # from the cache: the encoder is not called
    assert not calls and torch.equal(again, feats)


def test_image_features_of_files_of_any_size_and_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i, shape in enumerate([(40, 60), (90, 30, 3), (50, 50, 4), (224, 300, 3)]):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, shape, dtype=np.uint8))
        files.append(path)
    encoder = build_image_encoder(pretrained=False)
    feats = image_features(files, encoder, progress=False)
    assert feats.shape == (4, encoder.dim) and torch.isfinite(feats).all()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # random weights give tiny features: relative tolerance
        return torch.allclose(a, b, rtol=1e-4, atol=0)

    assert not same(feats[0], feats[1])
    cv2.imwrite(str(files[0]), rng.integers(0, 255, (40, 60), dtype=np.uint8))  # new content, same name
    changed = image_features(files, encoder, progress=False)
    assert not same(changed[0], feats[0]) and same(changed[1:], feats[1:])
