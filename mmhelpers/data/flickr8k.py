"""The Flickr8k 1,000-image subset with 5 captions per image, and all 40,455 captions as text."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmhelpers.data.fetch import fetch
from mmhelpers.errors import DataError
from mmhelpers.text import read_captions_csv


@dataclass
class CaptionedImages:
    """Image paths with their captions (a list per image) and where they came from."""

    image_paths: list[Path]
    captions: list[list[str]]
    source: str

    def __len__(self) -> int:
        return len(self.image_paths)

    def split(self, sizes: tuple[int, ...] = (800, 100, 100), seed: int = 0) -> list[np.ndarray]:
        """A seeded split of image indices (so no caption of a test image is in training)."""
        if sum(sizes) > len(self):
            raise ValueError(f"split sizes {sizes} need {sum(sizes)} images, have {len(self)}")
        perm = np.random.default_rng(seed).permutation(len(self))
        bounds = np.cumsum((0, *sizes))
        return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _group(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    by_image: dict[str, list[str]] = defaultdict(list)
    for image, caption in rows:
        by_image[image].append(caption)
    return by_image


def load_flickr8k(progress: bool = True) -> CaptionedImages:
    """The 1,000 images (sorted by file name), each with its 5 human captions."""
    folder = fetch("flickr8k_subset1000", progress=progress)
    by_image = _group(read_captions_csv(folder / "captions.txt"))
    names = sorted(by_image)
    for name in names:
        if not (folder / "images" / name).is_file():
            raise DataError(folder / "captions.txt", f"caption rows name {name}, which has no image file")
    return CaptionedImages(
        [folder / "images" / n for n in names],
        [by_image[n] for n in names],
        "Flickr8k 1,000-image subset (registry: flickr8k_subset1000)",
    )


def load_flickr8k_all_captions(exclude_images: set[str] | None = None) -> dict[str, list[str]]:
    """All 40,455 Flickr8k captions keyed by image file name, minus ``exclude_images`` (e.g. test images)."""
    folder = fetch("flickr8k_subset1000", ["captions_all_flickr8k.txt"])
    by_image = _group(read_captions_csv(folder / "captions_all_flickr8k.txt"))
    return {k: v for k, v in by_image.items() if not exclude_images or k not in exclude_images}
