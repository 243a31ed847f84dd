"""The image-text scenario's data and frozen features: captioned images, cached image and text features.

``load_image_text("real")`` is the Flickr8k 1,000-image subset (5 captions each, seeded 800/100/100
split by image, so no caption of a test image is seen in training); ``"embedded"`` is the 16
package-shipped sample photos with captions we wrote (a toy set, split 10/3/3). Features come from
frozen encoders, batched and cached on disk (``mmhelpers.features.extract_features``), keyed by the encoder's
weights, its preprocessing (precision included) and the content of the images or texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmhelpers.contrastive import AlignData, frozen_layer, text_hidden_states  # the last two re-exported
from mmhelpers.encoders import ImageEncoder, TextEncoder
from mmhelpers.errors import DataError
from mmhelpers.features import extract_features
from mmhelpers.image import load_image

VIEWS = ("center", "flip")  # cached views of every image: centre crop, and its mirror image


@dataclass
class ImageTextSet:
    """Captioned images (paths or in-memory arrays), a split by image, and where they came from."""

    images: list[Path] | list[np.ndarray]
    names: list[str]
    captions: list[list[str]]
    split: dict[str, np.ndarray]  # "train" / "val" / "test" -> image indices
    source: str

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Image i as RGB uint8 (loaded from disk when the set holds paths)."""
        item = self.images[i]
        return load_image(item) if isinstance(item, Path) else item

    @property
    def caption_image(self) -> torch.Tensor:
        """For every caption (in order, image by image), the index of its image."""
        return torch.tensor([i for i, caps in enumerate(self.captions) for _ in caps])

    @property
    def all_captions(self) -> list[str]:
        return [c for caps in self.captions for c in caps]


def load_image_text(data: str | Path = "embedded", seed: int = 0) -> ImageTextSet:
    """Flickr8k subset (``"real"``, needs the mirror or network), the embedded toy photos (``"embedded"``), or
    your own folder of captioned images (a path: see ``load_caption_folder``)."""
    if str(data) not in ("real", "embedded"):
        return load_caption_folder(_folder(data), seed=seed)
    if data == "real":
        from mmhelpers.data.flickr8k import load_flickr8k

        ds = load_flickr8k()
        train, val, test = ds.split((800, 100, 100), seed=seed)
        return ImageTextSet(list(ds.image_paths), [p.name for p in ds.image_paths], ds.captions,
                            {"train": train, "val": val, "test": test}, ds.source)  # fmt: skip
    if data == "embedded":
        from mmhelpers.data.embedded import load_sample_photos

        keys, images, captions = load_sample_photos()
        perm = np.random.default_rng(seed).permutation(len(keys))
        split = {"train": np.sort(perm[:10]), "val": np.sort(perm[10:13]), "test": np.sort(perm[13:])}
        return ImageTextSet(images, keys, captions, split,
                            "embedded: 16 scikit-image/scikit-learn sample photos with captions we wrote (a toy set)")  # fmt: skip
    raise ValueError(f"data must be 'real' or 'embedded', got {data!r}")


CAPTION_TABLES = ("captions.csv", "captions.tsv", "captions.jsonl")
FILE_COLUMNS = ("file_name", "filename", "image", "path")


def _folder(data: str | Path) -> Path:
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise ValueError(f"data must be 'real', 'embedded' or a folder; {str(data)!r} is not a folder")
    return folder


def _split_images(n: int, seed: int, fractions: tuple[float, float] = (0.1, 0.1)) -> dict[str, np.ndarray]:
    """A seeded split of ``n`` images into train / val / test (at least one image in val and test)."""
    if n < 3:
        raise ValueError(f"need at least 3 captioned images for a train/val/test split, got {n}")
    n_val, n_test = (max(1, round(f * n)) for f in fractions)
    perm = np.random.default_rng(seed).permutation(n)
    return {"train": np.sort(perm[n_val + n_test :]), "val": np.sort(perm[:n_val]),
            "test": np.sort(perm[n_val : n_val + n_test])}  # fmt: skip


def _header(table: Path) -> list[str]:
    """Column names of a CSV/TSV header or of the first JSONL record (to find the file column)."""
    import csv
    import json

    with open(table, newline="", encoding="utf-8") as f:
        if table.suffix == ".jsonl":
            first = f.readline()
            return list(json.loads(first)) if first.strip().startswith("{") else []
        return next(csv.reader(f, delimiter="\t" if table.suffix == ".tsv" else ","), [])


def load_caption_folder(folder: str | Path, seed: int = 0, caption_column: str = "caption",
                        file_column: str | None = None) -> ImageTextSet:  # fmt: skip
    """Your captioned images: an imagefolder (``metadata.csv`` with ``file_name`` and ``caption`` columns) or a
    folder with ``captions.csv`` (``filename,caption``, Flickr-style: one row per caption, any number per image).

    Images of any size and format are read when features are extracted; the split is by image (80/10/10,
    seeded), so no caption of a test image is seen in training. Problems (a missing image, an empty caption, a
    repeated row, a malformed line) are DataErrors naming the file and line.
    """
    from mmhelpers.data.folders import METADATA_FILES, read_folder, read_table

    folder = Path(folder)
    if any((folder / m).is_file() for m in METADATA_FILES):
        rec = read_folder(folder, file_column=file_column or "file_name", label_column=None)
    else:
        table = next((folder / t for t in CAPTION_TABLES if (folder / t).is_file()), None)
        if table is None:
            raise DataError(folder, "no metadata.csv (file_name,caption) and no captions.csv (filename,caption) here")
        header = _header(table)
        column = file_column or next((c for c in FILE_COLUMNS if c in header), None)
        if column is None:
            raise DataError(
                table, f"no file column: expected one of {', '.join(FILE_COLUMNS)}, got {', '.join(header)}"
            )
        rec = read_table(table, paths=(column,), label_column=None, root=folder)
    by_image: dict[Path, list[str]] = {}
    for i, (path, caption) in enumerate(zip(rec.paths(), rec.column(caption_column), strict=True)):
        if not caption.strip():
            raise DataError(rec.source, f"{rec.where[i] if rec.where else f'row {i + 1}'}: empty {caption_column!r}")
        by_image.setdefault(path, []).append(caption.strip())
    paths = sorted(by_image)
    n_caps = sum(len(c) for c in by_image.values())
    return ImageTextSet(paths, [p.relative_to(folder).as_posix() if p.is_relative_to(folder) else str(p) for p in paths],
                        [by_image[p] for p in paths], _split_images(len(paths), seed),
                        f"your folder {folder}: {len(paths)} images, {n_caps} captions")  # fmt: skip


def image_grids(ds: ImageTextSet, encoder: ImageEncoder, batch_size: int = 32, progress: bool = True) -> torch.Tensor:
    """Frozen feature grids for both views, (I, 2, C, h, w) float16, e.g. (1000, 2, 1280, 7, 7); cached."""

    def encode(idx: Sequence[int]) -> torch.Tensor:
        x = encoder.preprocess([ds.image(i) for i in idx])  # (b, 3, S, S)
        both = torch.stack([encoder.grid(x), encoder.grid(torch.flip(x, dims=[3]))], dim=1)
        return both.half()  # (b, 2, C, h, w): float16 halves the cache, far below the features' precision

    return extract_features(encode, list(range(len(ds))), model_id=encoder.model_id,
                            preprocess=encoder.preprocessing(), data=ds.images,
                            key={"what": "image_grids", "views": list(VIEWS), "rounded": "float16"},
                            batch_size=batch_size, progress=progress, desc="image grids")  # fmt: skip


def align_data(
    ds: ImageTextSet, grids: torch.Tensor, encoder: TextEncoder, unfreeze_text_layers: int, progress: bool = True
) -> AlignData:
    """Pooled image features of both views and cached text hidden states, as an ``AlignData``."""
    hidden, mask = text_hidden_states(encoder, ds.all_captions, frozen_layer(encoder, unfreeze_text_layers),
                                      progress=progress)  # fmt: skip
    pooled = grids.float().mean(dim=(-2, -1))  # (I, V, C): global average pooling, as the classifier does
    return AlignData(pooled, hidden, mask, ds.caption_image)


def encode_prompts(
    model: torch.nn.Module, encoder: TextEncoder, texts: Sequence[str], unfreeze_text_layers: int
) -> torch.Tensor:
    """Aligned, unit-length embeddings of free texts (prompts, queries), through the same path as captions."""
    layer = frozen_layer(encoder, unfreeze_text_layers)
    hidden, mask = text_hidden_states(encoder, texts, layer, progress=False, cache=False)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = model.encode_text(hidden, mask)
    model.train(was_training)
    return z


@dataclass
class Scenario:
    """Everything the image-text notebooks share: data, the two frozen encoders, cached features."""

    ds: ImageTextSet
    image_encoder: ImageEncoder
    text_encoder: TextEncoder
    grids: torch.Tensor  # (I, 2, C, h, w) float16
    data: AlignData
    unfreeze_text_layers: int


def load_scenario(
    data: str = "embedded", seed: int = 0, unfreeze_text_layers: int = 1,
    image_encoder: str = "efficientnet_lite0", text_encoder: str = "minilm", progress: bool = True,
) -> Scenario:  # fmt: skip
    """Load the data, build both encoders once (names may be hub names online), extract or load cached features."""
    from mmhelpers.encoders import build_image_encoder, build_text_encoder

    ds = load_image_text(data, seed)
    img_enc = build_image_encoder(image_encoder).eval()
    txt_enc = build_text_encoder(text_encoder).eval()
    grids = image_grids(ds, img_enc, progress=progress)
    return Scenario(ds, img_enc, txt_enc, grids, align_data(ds, grids, txt_enc, unfreeze_text_layers, progress),
                    unfreeze_text_layers)  # fmt: skip


@dataclass
class LabelledImages:
    """RGB images with labels and class names, for zero-shot classification."""

    images: list[np.ndarray]
    labels: np.ndarray
    names: tuple[str, ...]
    source: str


def load_zero_shot_sets(data: str | Path = "embedded", n_test: int = 1000, n_train: int = 200, seed: int = 0):
    """(labelled-pool, test) sets: Fashion-MNIST (``"real"``), scikit-learn's digits (``"embedded"``), or your
    folder's images when its metadata has a ``label`` column (class names become the prompts); a folder
    without labels falls back to the embedded digits, and the sets' ``source`` says so."""
    from mmhelpers.zero_shot import DIGIT_NAMES, FASHION_NAMES, gray_to_rgb

    rng = np.random.default_rng(seed)
    if str(data) not in ("real", "embedded"):
        labelled = _labelled_folder(_folder(data), n_test, n_train, seed)
        if labelled is not None:
            return labelled
        pool, test = load_zero_shot_sets("embedded", n_test, n_train, seed)
        note = f"{data} has no label column, so zero-shot runs on the embedded digits; "
        pool.source, test.source = note + pool.source, note + test.source
        return pool, test
    if data == "real":
        from mmhelpers.data.mnist import load_fashion_mnist

        sets = []
        for split, n in (("train", n_train), ("test", n_test)):
            s = load_fashion_mnist(split)
            idx = np.sort(rng.permutation(len(s))[:n])
            sets.append(LabelledImages(gray_to_rgb(s.images[idx]), s.labels[idx], FASHION_NAMES, s.source))
        return sets[0], sets[1]
    if data == "embedded":
        from mmhelpers.data.embedded import load_digit_images

        s = load_digit_images()
        idx = rng.permutation(len(s))
        pool, test = idx[:n_train], idx[n_train : n_train + n_test]
        src = "embedded: scikit-learn 8x8 digits, upsampled (a toy stand-in for Fashion-MNIST)"
        return (LabelledImages(gray_to_rgb(s.images[pool]), s.labels[pool], DIGIT_NAMES, src),
                LabelledImages(gray_to_rgb(s.images[test]), s.labels[test], DIGIT_NAMES, src))  # fmt: skip
    raise ValueError(f"data must be 'real' or 'embedded', got {data!r}")


def _labelled_folder(
    folder: Path, n_test: int, n_train: int, seed: int
) -> tuple[LabelledImages, LabelledImages] | None:
    """Zero-shot sets from a folder whose metadata has a ``label`` column (or class subfolders), else None."""
    from mmhelpers.data.folders import METADATA_FILES, read_folder
    from mmhelpers.splits import stratified_holdout

    if not any((folder / m).is_file() for m in METADATA_FILES):
        return None
    rec = read_folder(folder, label_column=None)
    if "label" not in rec.columns:
        return None
    first: dict[Path, str] = {}  # one row per image (captioned folders repeat images)
    for path, label in zip(rec.paths(), rec.column("label"), strict=True):
        first.setdefault(path, label)
    paths, names = list(first), sorted(set(first.values()))
    labels = np.array([names.index(first[p]) for p in paths])
    fraction = min(0.5, n_test / len(paths))
    pool, test = stratified_holdout(np.arange(len(paths)), labels, fraction, seed)
    pool = pool[np.random.default_rng(seed).permutation(len(pool))[:n_train]]
    src = f"your folder {folder}: {len(paths)} labelled images, {len(names)} classes"
    sets = [LabelledImages([load_image(paths[i]) for i in idx], labels[idx], tuple(names), src) for idx in (pool, test)]
    return sets[0], sets[1]


def pooled_features(
    encoder: ImageEncoder, images: Sequence[np.ndarray], batch_size: int = 64, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features (N, C), ImageNet logits (N, 1000)) of in-memory images; cached by weights, preprocessing, pixels."""

    def encode(items: Sequence[np.ndarray]) -> torch.Tensor:
        pooled = encoder(encoder.preprocess(items))
        return torch.cat([pooled, encoder.head(pooled)], dim=1)

    out = extract_features(encode, list(images), model_id=encoder.model_id, preprocess=encoder.preprocessing(),
                           key={"what": "pooled+logits"}, batch_size=batch_size, progress=progress,
                           desc="image features")  # fmt: skip
    return out[:, : encoder.dim], out[:, encoder.dim :]
