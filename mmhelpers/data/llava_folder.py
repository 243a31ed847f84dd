"""Your own data as a folder of LLaVA-style JSONL files, split by image (the mini VLM and the assistant read it).

The folder holds one file per task, in LLaVA's format (read by :func:`~mmhelpers.data.folders.read_llava`),
with image paths relative to the folder::

    my_data/
        images/0001.png ...
        captions.jsonl   # captioning: {"image": "images/0001.png", "conversations": [
                         #   {"from": "human", "value": "<image>\\nDescribe the image."},
                         #   {"from": "gpt", "value": "a red circle on the left"}]}  (the prompt is not used)
        vqa.jsonl        # question answering: any number of question/answer turns per record, and
                         # optionally a "type" field to score answers by question type

As in LLaVA's own data (a captioning file for stage 1, an instruction file for stage 2), an image may appear
in several records and in both files; ``.json`` (a list of records) works as well as ``.jsonl``. Every split is
by image, so no test image is ever seen in training.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mmhelpers.errors import DataError

__all__ = ["LLAVA_FILES", "is_own_data", "llava_file", "split_by_image"]

LLAVA_FILES = {"captions": ("captions.jsonl", "captions.json"), "vqa": ("vqa.jsonl", "vqa.json")}


def is_own_data(data: str | Path) -> bool:
    """True unless ``data`` names one of the scenario's own data sets ("embedded", "real")."""
    return str(data) not in ("embedded", "real")


def llava_file(data: str | Path, task: str) -> Path:
    """The LLaVA file of ``task`` ("captions" or "vqa") in the folder ``data``, or ``data`` itself if it is a file.

    DataError naming the folder if it holds neither ``<task>.jsonl`` nor ``<task>.json`` (or both).
    """
    if task not in LLAVA_FILES:
        raise ValueError(f"task must be one of {sorted(LLAVA_FILES)}, got {task!r}")
    path = Path(os.path.abspath(data))
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(path, "DATA is neither 'embedded', 'real', a folder nor a LLaVA JSON/JSONL file")
    found = [path / name for name in LLAVA_FILES[task] if (path / name).is_file()]
    if len(found) != 1:
        what = "holds both " + " and ".join(LLAVA_FILES[task]) if found else "has no " + " or ".join(LLAVA_FILES[task])
        raise DataError(path, f"{what}: the {task} file of a LLaVA data folder (see mmhelpers.data.llava_folder)")
    return found[0]


def split_by_image(
    images: list[Path], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, np.ndarray]:
    """A seeded split of the distinct images into "train"/"val"/"test" by ``fractions``: sorted indices per split.

    Validation and test get at least one image each; DataError if there are fewer than three images.
    """
    n = len(images)
    if n < 3:
        raise DataError(None, f"{n} distinct images; a train/val/test split by image needs at least 3")
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three numbers >= 0 that sum to 1, got {fractions}")
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DataError(None, f"{n} distinct images leave none for training after {n_val} val and {n_test} test")
    perm = np.random.default_rng(seed).permutation(n)
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train : n_train + n_val]),
            "test": np.sort(perm[n_train + n_val :])}  # fmt: skip
