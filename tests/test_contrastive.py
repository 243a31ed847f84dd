"""CLIP/LiT-style alignment: heads, learnable temperature, training, checkpoints, baselines and zero-shot helpers."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmhelpers.alignment_baselines import bag_of_words, cca_embeddings, fit_cca
from mmhelpers.contrastive import AlignConfig, AlignData, DualEncoder, TextTower, evaluate_retrieval, train_alignment
from mmhelpers.losses import info_nce
from mmhelpers.retrieval import retrieval_metrics
from mmhelpers.zero_shot import class_embeddings, conse_embeddings, few_shot_probe, seen_classes, zero_shot_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_pairs(n_images: int = 120, caps: int = 3, d_img: int = 24, d_txt: int = 16, seed: int = 0) -> AlignData:
    """Images with latent content z; captions are a different linear view of the same z plus noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_images, 8, generator=g)
    a, b = torch.randn(8, d_img, generator=g), torch.randn(8, d_txt, generator=g)
    img = torch.relu(z @ a)  # like post-ReLU CNN features
    views = torch.stack([img, img + 0.05 * torch.randn(img.shape, generator=g)], dim=1)  # (I, 2, d_img)
    owner = torch.arange(n_images).repeat_interleave(caps)
    tokens = (z[owner] @ b)[:, None, :] + 0.3 * torch.randn(len(owner), 4, d_txt, generator=g)  # (C, 4 tokens, d)
    mask = torch.ones(len(owner), 4, dtype=torch.long)
    mask[::2, 3] = 0  # some padding
    return AlignData(views, tokens, mask, owner)


def small_cfg(**kw) -> AlignConfig:
    base = AlignConfig(dim=16, dropout=0.1, weight_decay=0.01, lr=1e-2, unfreeze_text_layers=0, batch_size=32,
                       steps=150, warmup=10, eval_every=50, seed=0)  # fmt: skip
    return replace(base, **kw)


def test_dual_encoder_loss_is_info_nce_at_the_learned_temperature():
    data = synthetic_pairs()
    model = DualEncoder(24, 16, small_cfg(temperature=0.1)).eval()
    x, h, m = data.image_feats[:8, 0], data.text_hidden[:8], data.text_mask[:8]
    expected = info_nce(model.encode_image(x), model.encode_text(h, m), 0.1)
    loss = model.loss(x, h, m)
    assert abs(loss.item() - expected.item()) < 1e-5
    assert abs(model.temperature - 0.1) < 1e-6
    loss.backward()
    assert model.log_scale.grad is not None and model.log_scale.grad.abs() > 0  # the temperature learns
    fixed = DualEncoder(24, 16, small_cfg(learn_temperature=False))
    assert not fixed.log_scale.requires_grad


def test_temperature_is_clamped_at_one_hundredth():
    model = DualEncoder(24, 16, small_cfg(temperature=0.001)).eval()
    data = synthetic_pairs()
    x, h, m = data.image_feats[:8, 0], data.text_hidden[:8], data.text_mask[:8]
    expected = info_nce(model.encode_image(x), model.encode_text(h, m), 0.01)
    assert abs(model.loss(x, h, m).item() - expected.item()) < 1e-4


def test_text_tower_ignores_padding():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

    class HFStyle(nn.Module):  # transformers layers take an additive mask as attention_mask
        def __init__(self):
            super().__init__()
            self.inner = layer

        def forward(self, h, attention_mask):
            return (self.inner(h, src_mask=None, src_key_padding_mask=attention_mask[:, 0, 0] < 0),)

    tower = TextTower([HFStyle()], 16, 8, dropout=0.0).eval()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, 16, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = tower(h, mask)
    h2 = h.clone()
    h2[0, 3:] = 100.0  # garbage in the padded positions
    assert torch.allclose(tower(h2, mask), out, atol=1e-5)
    assert torch.allclose(tower(h[:1, :3], mask[:1, :3]), out[:1], atol=1e-5)  # same as no padding at all


def test_captions_of_maps_rows_to_local_positions():
    data = synthetic_pairs(n_images=5, caps=2)
    rows, local = data.captions_of([3, 1])
    assert rows.tolist() == [2, 3, 6, 7] and local.tolist() == [1, 1, 0, 0]


def test_alignment_learns_and_an_untrained_model_does_not():
    data = synthetic_pairs()
    train, val, test = torch.arange(0, 80), torch.arange(80, 100), torch.arange(100, 120)
    untrained = DualEncoder(24, 16, small_cfg())
    before = evaluate_retrieval(untrained, data, test)
    model = DualEncoder(24, 16, small_cfg())
    hist = train_alignment(model, data, train, val, progress=False)
    after = evaluate_retrieval(model, data, test)
    assert before["t2i"]["R@1"] < 0.4  # chance is 1/20
    assert after["t2i"]["R@1"] > 0.7 and after["i2t"]["R@1"] > 0.7
    assert hist.step_loss[-1] < 0.5 * hist.step_loss[0]
    assert len(hist.temperature) == 150 and hist.val_steps == [50, 100, 150]
    assert hist.lr[5] < hist.lr[20] and hist.lr[-1] < 0.05 * max(hist.lr)  # warm-up, then cosine to ~0


def test_interrupted_training_resumes_to_the_same_result(tmp_path: Path):
    data = synthetic_pairs()
    train, val = torch.arange(0, 80), torch.arange(80, 100)
    torch.manual_seed(0)  # same initial weights and dropout draws for both runs
    full = DualEncoder(24, 16, small_cfg(steps=100))
    train_alignment(full, data, train, val, checkpoint_dir=tmp_path / "a", progress=False)
    # interrupted after 50 steps (a checkpoint is written there), then resumed explicitly
    torch.manual_seed(0)
    part = DualEncoder(24, 16, small_cfg(steps=100))
    ckpt = tmp_path / "b"
    train_alignment(part, data, train, val, checkpoint_dir=ckpt, progress=False, max_steps=50)
    assert torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"] == 50
    resumed = DualEncoder(24, 16, small_cfg(steps=100))
    hist = train_alignment(resumed, data, train, val, checkpoint_dir=ckpt, progress=False, resume="latest")
    assert len(hist.step_loss) == 100
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_cca_aligns_correlated_views():
    g = np.random.default_rng(0)
    z = g.normal(size=(300, 5))
    x, y = z @ g.normal(size=(5, 30)), z @ g.normal(size=(5, 20)) + 0.1 * g.normal(size=(300, 20))
    zi, zt = cca_embeddings(x[:200], y[:200], x[200:], y[200:], n_components=5, pca_dim=20)
    m = retrieval_metrics(zt, zi, torch.arange(100))
    assert m["t2i"]["R@1"] > 0.5 and m["t2i"]["R@5"] > 0.9  # chance is 0.01 and 0.05


def test_fit_cca_matches_scikit_learn():
    from sklearn.cross_decomposition import CCA

    g = np.random.default_rng(1)
    z = g.normal(size=(400, 3))
    x = z @ g.normal(size=(3, 6)) + 0.5 * g.normal(size=(400, 6))
    y = z @ g.normal(size=(3, 5)) + 0.5 * g.normal(size=(400, 5))
    a, b, corr = fit_cca(x, y, 3, reg=0.0)
    xs, ys = CCA(n_components=3, scale=False, max_iter=5000, tol=1e-10).fit(x, y).transform(x, y)
    sk_corr = [abs(np.corrcoef(xs[:, k], ys[:, k])[0, 1]) for k in range(3)]
    ours = [abs(np.corrcoef((x - x.mean(0)) @ a[:, k], (y - y.mean(0)) @ b[:, k])[0, 1]) for k in range(3)]
    assert np.allclose(ours, corr, atol=1e-6)  # the SVD's singular values are the canonical correlations
    assert np.allclose(ours, sk_corr, atol=1e-3)
    assert corr[0] >= corr[1] >= corr[2]


def test_bag_of_words_vocabulary_comes_from_training_texts_only():
    v = bag_of_words(["a dog runs", "a dog jumps"], ["dog", "zebra", "dog runs"])
    assert v.shape[0] == 3 and v[1].abs().sum() == 0  # "zebra" is unknown
    assert v[0].abs().sum() > 0


def test_seen_classes_counts_singular_and_plural():
    caps = ["a man in a red shirt"] * 6 + ["two shirts"] * 4 + ["a dog"]
    assert seen_classes(["t-shirt", "sandal", "dog"], caps, min_count=10) == [True, False, False]
    assert seen_classes(["dog"], caps, min_count=1) == [True]


def test_zero_shot_accuracy_hand_case():
    classes = torch.eye(3)
    images = torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.2], [1.0, 0.0, 0.9], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert zero_shot_accuracy(images, classes, labels) == 0.75  # image 2 looks like class 0
    assert zero_shot_accuracy(images, classes, labels, classes=[1, 2]) == 1.0  # choosing among classes 1, 2 only
    with pytest.raises(ValueError, match="no images"):
        zero_shot_accuracy(images, classes, labels, classes=[5])


def test_class_embeddings_average_the_prompts():
    table = {"a cat": [1.0, 0.0], "the cat": [0.0, 1.0], "a dog": [-1.0, 0.0], "the dog": [-1.0, 0.0]}
    emb = class_embeddings(lambda texts: torch.tensor([table[t] for t in texts]), ["cat", "dog"], ["a {}", "the {}"])
    assert torch.allclose(emb[0], torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    assert torch.allclose(emb[1], torch.tensor([-1.0, 0.0]))


def test_conse_is_the_probability_weighted_label_embedding():
    label_emb = torch.eye(3)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    z = conse_embeddings(logits, label_emb, top=2)  # top-2 labels 0 and 1, weights 0.7 and 0.2
    expected = torch.tensor([[0.7, 0.2, 0.0]]) / math.hypot(0.7, 0.2)
    assert torch.allclose(z, expected, atol=1e-6)


def test_few_shot_probe_on_separable_data():
    g = np.random.default_rng(0)
    centres = g.normal(size=(4, 10)) * 5
    y = g.permutation(np.repeat(np.arange(4), 30))
    x = centres[y] + g.normal(size=(120, 10))
    assert few_shot_probe(x[:60], y[:60], x[60:], y[60:], shots=1, repeats=3) > 0.9
    assert few_shot_probe(x[:60], y[:60], x[60:], y[60:], shots=1, repeats=3, classes=[0, 1]) > 0.9
