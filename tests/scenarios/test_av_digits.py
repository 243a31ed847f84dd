"""The audio-visual digits data, protocols, augmentations and recipe pieces (embedded data: no mirror needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmhelpers import audio as au
from mmhelpers.augment import random_affine, time_shift
from mmhelpers.errors import DataError
from mmhelpers.scenarios.av_digits.data import (
    degrade_audio,
    degrade_images,
    load_av_digits,
    pair_images,
    protocol_folds,
)
from mmhelpers.scenarios.av_digits.recipe import AVConfig, feature_kind, summarise
from mmhelpers.splits import stratified_holdout


@pytest.fixture(scope="module")
def av():
    return load_av_digits("embedded", seed=0)


def test_embedded_av_digits_shapes_and_normalisation(av):
    assert len(av) == 1000 and av.audio.shape == (1000, 40, 81) and av.waves.shape == (1000, 6400)
    assert av.images.shape == (1797, 1, 28, 28) and 0 <= av.images.min() and av.images.max() <= 1
    # CMVN: every clip has zero mean and unit variance
    assert av.audio.mean(dim=(1, 2)).abs().max() < 1e-4
    assert torch.allclose(av.audio.std(dim=(1, 2)), torch.ones(len(av)), atol=1e-3)
    assert set(av.image_pools["train"]).isdisjoint(av.image_pools["test"])
    assert len(av.image_pools["train"]) + len(av.image_pools["test"]) == len(av.images)
    assert "synthetic" in av.source


def test_pairing_matches_digits_and_stays_in_its_pool(av):
    g = torch.Generator().manual_seed(0)
    idx = pair_images(av.labels, av.image_labels, av.image_pools["test"], g)
    assert torch.equal(av.image_labels[idx], av.labels)
    assert np.isin(idx.numpy(), av.image_pools["test"]).all()
    again = pair_images(av.labels, av.image_labels, av.image_pools["test"], torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)  # seeded
    with pytest.raises(ValueError, match="no image of class"):
        pair_images(torch.tensor([3]), av.image_labels, np.flatnonzero(av.image_labels.numpy() != 3), g)


def test_protocols_are_disjoint_and_cover_the_clips(av):
    (official,) = protocol_folds(av, "official")
    assert set(official.train).isdisjoint(official.test) and len(official.train) + len(official.test) == len(av)
    assert av.test_mask[official.test].all() and not av.test_mask[official.train].any()
    folds = protocol_folds(av, "speaker")
    assert [f.name for f in folds] == av.speaker_names
    for f in folds:
        assert set(av.speakers[f.test]) == {f.name} and f.name not in set(av.speakers[f.train])
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_folds(av, "nope")


def test_split_for_fusion_is_stratified_and_disjoint(av):
    (official,) = protocol_folds(av, "official")
    enc, fus = stratified_holdout(official.train, av.labels, 0.2, seed=0)
    assert set(enc).isdisjoint(fus) and sorted([*enc, *fus]) == sorted(official.train)
    counts = np.bincount(av.labels[fus].numpy(), minlength=10)
    assert counts.min() == counts.max() == 16  # 80 training clips per digit, 20% each


def test_centre_window_pads_symmetrically_and_crops_the_middle():
    x = torch.arange(1, 5, dtype=torch.float32)
    assert au.centre_window(x, 8).tolist() == [0, 0, 1, 2, 3, 4, 0, 0]
    assert au.centre_window(torch.arange(10.0), 4).tolist() == [3, 4, 5, 6]


def test_degradations_hurt_but_keep_shapes(av):
    imgs = av.images[:50]
    hard = degrade_images(imgs, av.images[av.image_pools["train"]], n_components=5, noise_std=0.0)
    assert hard.shape == imgs.shape
    # 5 components cannot reproduce the digits exactly, but keep most of their structure
    err = (hard - imgs).pow(2).mean().item()
    assert 0.005 < err < imgs.pow(2).mean().item()
    noisy = degrade_audio(av.waves[:4], snr_db=0.0)
    noise = noisy - av.waves[:4]
    ratio = 10 * torch.log10(av.waves[:4].pow(2).mean(1) / noise.pow(2).mean(1))
    assert torch.allclose(ratio, torch.zeros(4), atol=0.01)


def test_batched_augmentations():
    spec = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)
    shifted = time_shift(spec, 2, torch.Generator().manual_seed(0))
    for b in range(2):  # each example is a roll of itself along time
        assert any(torch.equal(shifted[b], torch.roll(spec[b], s, dims=-1)) for s in range(-2, 3))
    img = torch.zeros(3, 1, 28, 28)
    img[:, :, 8:20, 12:16] = 1.0
    warped = random_affine(img, generator=torch.Generator().manual_seed(0))
    assert warped.shape == img.shape and not torch.equal(warped[0], warped[1])
    assert abs(warped.sum().item() - img.sum().item()) / img.sum().item() < 0.3  # a warp, not an erasure


def test_feature_kinds_and_summary():
    assert feature_kind("transformer") == "tokens" and feature_kind("late_mean") == "logits"
    assert feature_kind("gated") == "pooled"
    assert AVConfig().smoke().audio_epochs < AVConfig().audio_epochs

    class R:
        def __init__(self, name, acc):
            self.name, self.accuracy = name, acc

    s = summarise([R("a", {"audio": 0.8, "image": 0.9, "concat": 0.95, "gated": 0.97}),
                   R("b", {"audio": 0.6, "image": 0.9, "concat": 0.93, "gated": 0.91})])  # fmt: skip
    assert s["best_method"] == "concat" and abs(s["best_fusion"] - 0.94) < 1e-9
    assert s["worst_speaker_audio"] == 0.6 and set(s["per_speaker"]) == {"a", "b"}


# ---------------------------------------------------------------- your own folder (written as a user would)


@pytest.mark.parametrize(("n_classes", "sr", "metadata"), [(8, 16000, True), (12, 44100, False)])
def test_own_folder_any_classes_and_sample_rate_learns(tmp_path, n_classes: int, sr: int, metadata: bool) -> None:
    from userdata import class_names, write_av_folder

    from mmhelpers.scenarios.av_digits.recipe import run_protocol

    folder = write_av_folder(tmp_path / "mine", n_classes, sr, metadata=metadata, images_per_class=30)
    av = load_av_digits(str(folder))
    assert av.classes == sorted(class_names(n_classes)) and av.n_classes == n_classes
    assert av.sr == 16000 and av.waves.shape[1] == 16000  # resampled, centred in 1 s
    assert av.audio.shape[1:] == (40, 101)  # 10 ms hop at 16 kHz, whatever the files' rate
    assert av.images.shape[1:] == (1, 28, 28) and 0 <= av.images.min() and av.images.max() <= 1
    assert sorted(set(av.speakers)) == (["voice0", "voice1", "voice2"] if metadata else ["all"])
    assert av.test_mask.sum() == n_classes * round(0.2 * len(av) / n_classes)  # no split column: 20% of each class
    cfg = AVConfig(audio_epochs=8, image_epochs=12, fusion_epochs=20, methods=("concat", "late_mean"), device="cpu")
    (result,) = run_protocol(av, "official", cfg, progress=False)
    chance = 1 / n_classes
    assert result.logits["audio"].shape[1] == n_classes
    assert result.accuracy["audio"] > 0.6 and result.accuracy["image"] > 0.6, result.accuracy  # chance 1/8 or 1/12
    assert max(result.accuracy[m] for m in cfg.methods) > 0.8 > 5 * chance


def test_own_folder_errors_name_the_problem(tmp_path) -> None:
    import shutil

    from userdata import write_av_folder

    folder = write_av_folder(tmp_path / "mine", 8, 16000, clips_per_class_speaker=1, images_per_class=2)
    shutil.rmtree(folder / "images" / "cls3")
    with pytest.raises(DataError, match=r"same classes.*only in audio/: \['cls3'\]"):
        load_av_digits(folder)
    with pytest.raises(ValueError, match="not a folder"):
        load_av_digits(tmp_path / "nothing")
