"""The moderation scenario's data: generated posts from the package photos, and a user's folder of posts (with or
without a text column, split by group, bad folders refused by name)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from userdata import write_post_folder

from mmhelpers.errors import DataError
from mmhelpers.features import fingerprint
from mmhelpers.scenarios.moderation.data import clean_caption, load_post_folder, load_posts


def test_embedded_posts_split_by_photo_with_both_sets():
    pd = load_posts("embedded", progress=False)
    assert len(pd) == 144 and pd.sets == ("random", "hard") and len(pd.captions) == 16
    groups = {s: set(pd.groups[pd.split(s)].tolist()) for s in ("train", "val", "test")}
    assert {k: len(v) for k, v in groups.items()} == {"train": 8, "val": 2, "test": 6}
    assert not (groups["train"] & groups["test"])
    drawn = pd.draw(int(pd.split("test")[0]))
    assert min(drawn.image.shape[:2]) == 384 and drawn.box[2] > drawn.box[0]
    again = load_posts("embedded", progress=False)
    assert again.texts == pd.texts and fingerprint(again.content) == fingerprint(pd.content)  # deterministic


def test_clean_caption():
    assert clean_caption("A dog runs , and jumps .") == "A dog runs, and jumps"
    assert clean_caption("  two   spaces ") == "two spaces"


def test_a_folder_of_posts_with_texts_splits_by_group(tmp_path: Path):
    folder = write_post_folder(tmp_path / "posts")
    pd = load_post_folder(folder)
    assert len(pd) == 144 and pd.sets == ("all",) and pd.class_names == ("allowed", "flagged")
    assert pd.labels.sum() == 72 and pd.texts[0].startswith("a ")
    groups = {s: set(pd.groups[pd.index[s]["all"]].tolist()) for s in ("train", "val", "test")}
    assert not (groups["train"] & groups["test"]) and not (groups["val"] & groups["test"])
    assert pd.picture(0).shape == (240, 320, 3)


def test_a_folder_without_texts_is_read_with_ocr(tmp_path: Path):
    folder = write_post_folder(tmp_path / "posts", texts=False)
    rows = list(csv.DictReader(open(folder / "metadata.csv")))[:24:2]  # a few posts keep it quick
    with open(folder / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(
            rows + [dict(r, file_name=r["file_name"].replace("allowed", "flagged"), label="flagged") for r in rows]
        )
    pd = load_post_folder(folder)
    read = [t.lower() for t in pd.texts]
    assert sum(("on the" in t) for t in read) >= len(read) // 2, read  # cv2's Hershey font, read by PP-OCRv4


def write_rows(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    import cv2

    for r in rows:
        cv2.imwrite(str(folder / r["file_name"]), np.full((40, 40, 3), 100, np.uint8))
    with open(folder / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder


def test_bad_folders_are_refused_by_name(tmp_path: Path):
    one_class = write_rows(tmp_path / "a", [{"file_name": f"{i}.png", "label": "ok", "text": "x"} for i in range(6)])
    with pytest.raises(DataError, match="exactly two classes"):
        load_post_folder(one_class)
    three = write_rows(
        tmp_path / "b", [{"file_name": f"{i}.png", "label": "abc"[i % 3], "text": "x"} for i in range(6)]
    )
    with pytest.raises(DataError, match="metadata.csv.*exactly two classes.*3"):
        load_post_folder(three)
    few = write_rows(tmp_path / "c", [{"file_name": f"{i}.png", "label": "ab"[i % 2], "text": "x", "group": "g"}
                                      for i in range(6)])  # fmt: skip
    with pytest.raises(DataError, match="too few to split"):
        load_post_folder(few)
    lopsided = write_rows(tmp_path / "d", [{"file_name": f"{i}.png", "label": "flagged" if i == 0 else "allowed",
                                            "text": "x"} for i in range(30)])  # fmt: skip
    with pytest.raises(DataError, match="only 'allowed' posts"):
        load_post_folder(lopsided)
    with pytest.raises(DataError, match="folder not found"):
        load_post_folder(tmp_path / "missing")
