"""MNIST and Fashion-MNIST from the registry (IDX files, header and hashes checked)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmhelpers.data.fetch import fetch
from mmhelpers.data.idx import read_idx

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@dataclass
class ImageSet:
    """Images (N, H, W) uint8 with integer labels, class names and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def _load_idx_pair(name: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    folder = fetch(name, [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"])
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", expect_ndim=3)
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", expect_ndim=1).astype(np.int64)
    if len(images) != len(labels):
        from mmhelpers.errors import DataError

        raise DataError(folder, f"{len(images)} images but {len(labels)} labels in {prefix} split")
    return images, labels


def load_mnist(split: str = "test") -> ImageSet:
    """The MNIST test set (10,000 digits); the mirror has no training images, so only ``"test"``."""
    if split != "test":
        raise ValueError("only split='test' is available: the MNIST training images are not in the mirror")
    images, labels = _load_idx_pair("mnist", "t10k")
    return ImageSet(images, labels, DIGIT_CLASSES, "MNIST test set (registry: mnist)")


def load_fashion_mnist(split: str = "test") -> ImageSet:
    """Fashion-MNIST, ``"train"`` (60,000) or ``"test"`` (10,000)."""
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"unknown split {split!r}; Fashion-MNIST has 'train' and 'test'")
    prefix = prefixes[split]
    images, labels = _load_idx_pair("fashion_mnist", prefix)
    return ImageSet(images, labels, FASHION_CLASSES, f"Fashion-MNIST {split} (registry: fashion_mnist)")
