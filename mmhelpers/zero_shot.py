"""Zero-shot classification by prompts (CLIP-style), with the baselines it must be judged against.

A class is "seen" when its name occurs in the alignment training captions (so the text head has
been trained on that word with matching images) and "unseen" otherwise; zero-shot accuracy on the
unseen classes is measured among those classes only, against chance ``1 / n_unseen``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

FASHION_NAMES = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a {} on a white background.",
    "a product photo of a {}.",
    "a black and white photo of a {}.",
    "a close-up photo of a {}.",
    "a picture of a {}.",
)


def word_counts(texts: Sequence[str]) -> Counter[str]:
    """Lower-case word counts over a list of texts."""
    return Counter(w for t in texts for w in re.findall(r"[a-z]+", t.lower()))


def seen_classes(names: Sequence[str], captions: Sequence[str], min_count: int = 10) -> list[bool]:
    """A class is seen when some word of its name (singular or plural) occurs ``min_count`` times in ``captions``."""
    counts = word_counts(captions)
    return [max(counts[w] + counts[w + "s"] for w in re.findall(r"[a-z]+", n.lower())) >= min_count for n in names]


def gray_to_rgb(images: np.ndarray, invert: bool = True) -> list[np.ndarray]:
    """(N, H, W) uint8 -> N RGB images; ``invert`` gives dark objects on white, like product photos."""
    x = 255 - images if invert else images
    return [np.repeat(im[..., None], 3, axis=-1) for im in x]


def class_embeddings(
    encode_texts: Callable[[list[str]], torch.Tensor], names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(K, D) unit-length class embeddings: each the mean of its prompts' embeddings (prompt ensembling)."""
    prompts = [t.format(n) for n in names for t in templates]
    z = F.normalize(encode_texts(prompts).float(), dim=-1).view(len(names), len(templates), -1)
    return F.normalize(z.mean(dim=1), dim=-1)


def zero_shot_accuracy(
    image_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor | np.ndarray,
    classes: Sequence[int] | None = None,
) -> float:  # fmt: skip
    """Accuracy of nearest-class-prompt prediction; with ``classes``, only their images, choosing among them."""
    labels = torch.as_tensor(labels)
    classes = list(range(len(class_emb))) if classes is None else list(classes)
    keep = torch.isin(labels, torch.tensor(classes))
    if not bool(keep.any()):
        raise ValueError(f"no images of classes {classes}")
    sim = F.normalize(image_emb[keep].float(), dim=-1) @ class_emb[classes].T  # (n, k)
    pred = torch.tensor(classes)[sim.argmax(dim=1)]
    return float((pred == labels[keep]).double().mean())


def few_shot_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, shots: int = 1,
    repeats: int = 10, classes: Sequence[int] | None = None, seed: int = 0,
) -> float:  # fmt: skip
    """Mean accuracy of a logistic-regression probe trained on ``shots`` labelled images per class (``repeats`` draws)."""
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, test_x, test_y = map(np.asarray, (train_x, train_y, test_x, test_y))
    classes = sorted(set(train_y.tolist())) if classes is None else list(classes)
    keep = np.isin(test_y, classes)
    rng, accs = np.random.default_rng(seed), []
    for _ in range(repeats):
        idx = np.concatenate([rng.choice(np.nonzero(train_y == c)[0], shots, replace=False) for c in classes])
        clf = LogisticRegression(max_iter=2000).fit(train_x[idx], train_y[idx])  # no scaler: 1 example per class
        accs.append(float((clf.predict(test_x[keep]) == test_y[keep]).mean()))
    return float(np.mean(accs))


def imagenet_label_embeddings(encode_texts: Callable[[list[str]], torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """The 1,000 ImageNet class names (torchvision's public metadata) and their text embeddings, for ConSE."""
    from torchvision.models import EfficientNet_B0_Weights

    names = list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])
    return names, encode_texts([f"a photo of a {n}." for n in names])


def conse_embeddings(logits: torch.Tensor, label_emb: torch.Tensor, top: int = 10) -> torch.Tensor:
    """ConSE (Norouzi et al. 2014): an image as the probability-weighted mean of its top ImageNet labels' text embeddings.

    Needs no training at all: the classifier's own label space is the bridge into the text space.
    logits (N, L), label_emb (L, D) -> (N, D) unit length.
    """
    p = logits.float().softmax(dim=-1).topk(min(top, logits.shape[1]), dim=-1)
    z = torch.einsum("nt,ntd->nd", p.values, label_emb[p.indices].float())
    return F.normalize(z, dim=-1)
