"""The moderation scenario's data: generated posts (package photos or Flickr8k) or your folder of posts.

``load_posts(DATA)`` gives a ``PostData``: how to draw each post's picture, its text and label, and the post
indices of every split and evaluation set. Generated sets have two test sets, one per kind of flagged post
(``random`` and ``hard`` negatives, sharing the allowed posts); your folder has one, ``all``.

Your folder: posts as image files with a ``metadata.csv`` (or ``.jsonl``/``.parquet``) holding ``file_name``,
``label`` (two classes, e.g. ``allowed``/``flagged``; the one named ``flagged``, ``1`` or ``true``, or else the
second in sorted order, is the positive class) and optionally ``text`` (what is written on the post: left out, it
is read with OCR when the folder is loaded, cached) and ``group`` (posts sharing a photo or a source stay in one
split).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmhelpers.data.folders import read_folder
from mmhelpers.errors import DataError
from mmhelpers.image import load_image
from mmhelpers.scenarios.moderation.posts import (
    DIFFICULTIES,
    LABELS,
    Post,
    PostSet,
    make_posts,
    render_post,
    split_photos,
)
from mmhelpers.text_overlay import Overlay

POST_SIZE = 384  # pixels on a generated post's shorter side
POSITIVE_NAMES = ("flagged", "1", "true", "yes", "harmful", "remove")


@dataclass
class PostData:
    """Posts ready for feature extraction and training."""

    source: str
    texts: list[str]  # the text written on each post ("" where unknown: read it with OCR)
    labels: np.ndarray  # (N,) 1 = flagged, 0 = allowed
    groups: np.ndarray  # (N,) the photo (or group) of each post: splits never share one
    index: dict[str, dict[str, np.ndarray]]  # split -> evaluation set ("random"/"hard", or "all") -> post indices
    content: Any  # what fully determines the pictures (for cache keys without drawing them)
    draw: Callable[[int], Overlay]  # post index -> its picture (and where the text is, for generated posts)
    posts: list[Post] = field(default_factory=list)  # generated posts; empty for a folder
    post_set: PostSet | None = None
    class_names: tuple[str, str] = LABELS
    photo_names: list[str] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)  # generated posts: every caption of each photo
    photo: Callable[[int], np.ndarray] | None = None  # generated posts: photo index -> the photo (RGB)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sets(self) -> tuple[str, ...]:
        """The evaluation sets: ("random", "hard") for generated posts, ("all",) for a folder."""
        return tuple(self.index["test"])

    def picture(self, i: int) -> np.ndarray:
        """Post ``i`` as an RGB uint8 array."""
        return self.draw(int(i)).image

    def split(self, split: str) -> np.ndarray:
        """Every post of ``split`` (all evaluation sets together, each post once)."""
        return np.unique(np.concatenate(list(self.index[split].values())))


def is_own_data(data: str | Path) -> bool:
    return str(data) not in ("embedded", "real")


def _photos(data: str) -> tuple[list[str], Callable[[int], np.ndarray], list[list[str]], list[Any], str]:
    """(names, photo loader, captions per photo, content for cache keys, source) of the embedded or real photos."""
    if data == "embedded":
        from mmhelpers.data.embedded import load_sample_photos

        keys, images, captions = load_sample_photos()
        return keys, lambda i: images[i], captions, images, "embedded: 16 photos from scikit-image and scikit-learn"
    from mmhelpers.data.flickr8k import load_flickr8k

    fl = load_flickr8k()
    return ([p.name for p in fl.image_paths], lambda i: load_image(fl.image_paths[i]), fl.captions,
            list(fl.image_paths), fl.source)  # fmt: skip


def caption_similarity(captions: list[list[str]], progress: bool = True) -> np.ndarray:
    """Photos x photos cosine similarity of their captions' mean MiniLM embedding: picks the hard negatives."""
    import torch

    from mmhelpers.classify import text_features

    flat = [c for caps in captions for c in caps]
    emb = text_features(flat, progress=progress)
    owner = torch.tensor([i for i, caps in enumerate(captions) for _ in caps])
    mean = torch.zeros(len(captions), emb.shape[1]).index_add_(0, owner, emb)
    mean = torch.nn.functional.normalize(mean, dim=-1)
    return (mean @ mean.T).numpy()


def clean_caption(text: str) -> str:
    """A caption as a post's text: single spaces, no space before punctuation, no final " ."."""
    text = " ".join(str(text).split())
    for mark in (" ,", " .", " !", " ?", " '"):
        text = text.replace(mark, mark[1:])
    return text.rstrip(". ")


def load_posts(data: str | Path = "embedded", seed: int = 0, captions_per_photo: int | None = None,
               size: int = POST_SIZE, n_photos: int | None = None, progress: bool = True) -> PostData:  # fmt: skip
    """The posts of ``data``: "embedded" (package photos), "real" (Flickr8k from the mirror) or your folder;
    ``n_photos`` keeps the first photos only (a quick run on the real photos)."""
    if is_own_data(data):
        return load_post_folder(data, seed=seed)
    data = str(data)
    names, photo, captions, content, source = _photos(data)
    if n_photos is not None:
        names, captions, content = names[:n_photos], captions[:n_photos], content[:n_photos]
        source = f"{source}, first {len(names)} photos"
    captions = [[clean_caption(c) for c in caps] for caps in captions]
    k = captions_per_photo or (3 if data == "embedded" else 2)
    similarity = caption_similarity(captions, progress=progress)
    splits = split_photos(len(captions), seed, (0.5, 0.125, 0.375) if data == "embedded" else (0.7, 0.1, 0.2))
    post_set = make_posts(captions, similarity, captions_per_photo=k, seed=seed, splits=splits)
    posts = post_set.all_posts()
    position = {id(p): i for i, p in enumerate(posts)}
    index = {split: {neg: np.array([position[id(p)] for p in post_set.posts(split, neg)]) for neg in DIFFICULTIES}
             for split in post_set.splits}  # fmt: skip

    @lru_cache(maxsize=4)
    def canvas_photo(i: int) -> np.ndarray:
        return photo(i)

    def draw(i: int) -> Overlay:
        return render_post(canvas_photo(posts[i].photo), posts[i], size)

    content_key = {"photos": content, "posts": [[p.photo, p.text, repr(p.style)] for p in posts], "size": size,
                   "renderer": "mmhelpers.text_overlay v1"}  # fmt: skip
    return PostData(f"{source}; {len(posts)} generated posts ({k} captions per photo, seed {seed})",
                    [p.text for p in posts], np.array([p.label for p in posts]), np.array([p.photo for p in posts]),
                    index, content_key, draw, posts, post_set, LABELS, names, captions, canvas_photo)  # fmt: skip


def load_post_folder(folder: str | Path, seed: int = 0, fractions: tuple[float, float] = (0.1, 0.2)) -> PostData:
    """Your posts: a folder of pictures with metadata (file_name, label, optional text and group), split by group."""
    records = read_folder(folder, label_column="label", kind="image")
    paths = records.paths("file_name")
    raw = records.column("label")
    names = sorted(set(raw))
    if len(names) != 2:
        raise DataError(records.source, f"the label column needs exactly two classes (allowed and flagged), got "
                                        f"{len(names)}: {', '.join(names[:10])}")  # fmt: skip
    positive = next((n for n in names if n.lower() in POSITIVE_NAMES), names[1])
    negative = next(n for n in names if n != positive)
    labels = np.array([int(v == positive) for v in raw])
    if "text" in records.columns:
        texts = records.column("text")
    else:  # no text given: read it off the pictures (one reader for all, cached by content)
        from mmhelpers.ocr import read_text

        texts = [r.text for r in read_text(paths, load=load_image, data=list(paths), progress=len(paths) >= 64)]
    groups = records.groups("group") if "group" in records.columns else np.arange(len(paths))
    rng = np.random.default_rng(seed)
    unique = rng.permutation(np.unique(groups))
    n_val, n_test = (max(1, round(f * len(unique))) for f in fractions)
    if len(unique) < 3 or n_val + n_test >= len(unique):
        raise DataError(records.source, f"{len(unique)} posts (or groups) are too few to split into train, "
                                        "validation and test")  # fmt: skip
    split_groups = {"val": unique[:n_val], "test": unique[n_val : n_val + n_test], "train": unique[n_val + n_test :]}
    index = {s: {"all": np.flatnonzero(np.isin(groups, g))} for s, g in split_groups.items()}
    for s, sets in index.items():
        if len(set(labels[sets["all"]])) < 2:
            only = (negative, positive)[labels[sets["all"]][0]]
            raise DataError(records.source, f"the {s} split has only {only!r} posts: "
                                            "add posts of both classes (or more groups)")  # fmt: skip

    def draw(i: int) -> Overlay:
        img = load_image(paths[i])
        return Overlay(img, (0, 0, img.shape[1], img.shape[0]), 0)

    return PostData(f"your folder {records.root} ({len(paths)} posts; positive class {positive!r})", texts, labels,
                    groups, {s: index[s] for s in ("train", "val", "test")}, list(paths), draw,
                    class_names=(negative, positive), photo_names=[p.name for p in paths])  # fmt: skip
