"""Tests for mmhelpers.scenarios.image_text.data's cached features: keyed by the encoder's weights, its preprocessing and
the images' or texts' contents (not file names), on a few embedded photos."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mmhelpers.encoders import build_image_encoder, build_text_encoder
from mmhelpers.scenarios.image_text.data import (
    ImageTextSet,
    image_grids,
    load_image_text,
    pooled_features,
    text_hidden_states,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos() -> ImageTextSet:
    ds = load_image_text("embedded")
    keep = slice(0, 3)
    return ImageTextSet(ds.images[keep], ds.names[keep], ds.captions[keep], {"train": np.arange(3)}, ds.source)


@pytest.fixture(scope="module")
def lite():
    return build_image_encoder()


def no_grid(*args: object) -> torch.Tensor:
    raise AssertionError("the encoder ran although the features were cached")


def test_image_grids_are_keyed_by_weights_and_pixels(
    photos: ImageTextSet, lite, monkeypatch: pytest.MonkeyPatch
) -> None:
    grids = image_grids(photos, lite, progress=False)
    assert grids.shape == (3, 2, 1280, 7, 7) and grids.dtype == torch.float32
    with monkeypatch.context() as m:
        m.setattr(lite, "grid", no_grid)
        torch.testing.assert_close(image_grids(photos, lite, progress=False), grids)  # a cache hit
    # same names, other pixels: recomputed (the old key hashed only the names)
    swapped = replace(photos, images=photos.images[::-1])
    torch.testing.assert_close(image_grids(swapped, lite, progress=False), grids.flip(0))
    # same name, other weights: recomputed
    torch.manual_seed(0)
    random = build_image_encoder(pretrained=False)
    assert random.name == lite.name and random.model_id != lite.model_id
    assert not torch.allclose(image_grids(photos, random, progress=False), grids)
    # same weights, other precision: recomputed (and close)
    fp32 = build_image_encoder(precision="fp32")
    with torch.inference_mode():
        direct = fp32.grid(fp32.preprocess([photos.image(0)]))
    out = image_grids(photos, fp32, progress=False)
    torch.testing.assert_close(out[0, 0], direct[0].half().float())


def test_pooled_features_and_text_states_are_cached(
    photos: ImageTextSet, lite, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [photos.image(i) for i in range(3)]
    pooled, logits = pooled_features(lite, images, progress=False)
    assert pooled.shape == (3, 1280) and logits.shape == (3, 1000)
    with monkeypatch.context() as m:
        m.setattr(lite, "grid", no_grid)
        assert torch.equal(pooled_features(lite, images, progress=False)[0], pooled)
    text = build_text_encoder()
    hidden, mask = text_hidden_states(text, photos.all_captions, layer=6, progress=False)
    assert hidden.shape[:2] == mask.shape and hidden.shape[0] == len(photos.all_captions)
    again, _ = text_hidden_states(text, photos.all_captions, layer=6, progress=False)
    assert torch.equal(again, hidden)
    other, _ = text_hidden_states(text, photos.all_captions[::-1], layer=6, progress=False)
    torch.testing.assert_close(other[-1, : int(mask[0].sum())], hidden[0, : int(mask[0].sum())], atol=1e-2, rtol=0)


# ---------------------------------------------------------------- your own captioned images


def test_own_caption_folder_in_both_layouts(tmp_path) -> None:
    from userdata import write_caption_folder

    from mmhelpers.scenarios.image_text.data import load_zero_shot_sets

    a = load_image_text(str(write_caption_folder(tmp_path / "a", "metadata")))
    b = load_image_text(str(write_caption_folder(tmp_path / "b", "captions")))
    assert len(a) == len(b) == 72 and a.captions == b.captions  # same photos and captions, two layouts
    assert [n.removeprefix("images/") for n in b.names] == a.names
    assert {len(c) for c in a.captions} == {1, 2, 3, 4, 5}
    assert len(a.all_captions) == sum(len(c) for c in a.captions)
    parts = [set(a.split[k].tolist()) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == 72 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert a.image(0).ndim == 3  # RGB, whatever the file was
    pool, test = load_zero_shot_sets(str(tmp_path / "a"), n_test=20, n_train=30)
    assert pool.names == ("circle", "cross", "square", "triangle") and len(pool.images) == 30
    _, fallback = load_zero_shot_sets(str(tmp_path / "b"), n_test=20, n_train=30)  # no label column
    assert "no label column" in fallback.source and fallback.names[0] == "zero"


def test_own_caption_folder_errors_name_file_and_line(tmp_path) -> None:
    import csv

    from mmhelpers.errors import DataError

    folder = tmp_path / "p"
    folder.mkdir()
    with pytest.raises(DataError, match="no metadata.csv"):
        load_image_text(str(folder))
    (folder / "a.png").write_bytes(b"not read yet")
    rows = [["filename", "caption"], ["a.png", "a thing"], ["missing.png", "another thing"]]
    with open(folder / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataError, match=r"captions.csv.*line 3.*missing.png"):
        load_image_text(str(folder))
    rows[2] = ["a.png", "  "]
    with open(folder / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataError, match=r"captions.csv.*line 3.*empty 'caption'"):
        load_image_text(str(folder))
    with open(folder / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["picture", "caption"], ["a.png", "x"]])
    with pytest.raises(DataError, match="no file column"):
        load_image_text(str(folder))
    with pytest.raises(ValueError, match="not a folder"):
        load_image_text(str(tmp_path / "nothing"))
