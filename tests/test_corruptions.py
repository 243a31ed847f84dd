"""Tests for mmhelpers.corruptions: JPEG, colour shift and pixel noise on uint8 image batches."""

from __future__ import annotations

import pytest
import torch

from mmhelpers.corruptions import CORRUPTIONS, colour_shift, corrupt, gaussian_noise, jpeg


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four 48x48 pictures with flat regions, sharp edges and a gradient: what JPEG has to approximate."""
    x = torch.full((4, 3, 48, 48), 255, dtype=torch.uint8)
    x[:, 0, 8:24, 8:24] = 200
    x[:, 1, 20:40, 16:44] = 30
    x[:, 2] = torch.linspace(0, 255, 48).to(torch.uint8).expand(48, 48)
    x[1] = x[1].flip(-1)
    return x


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_keeps_shape_and_dtype_and_leaves_its_input_alone(images, name) -> None:
    before = images.clone()
    out = corrupt(images, name, {"jpeg": 75, "colour_shift": 25, "noise": 8}[name], seed=1)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(images, before)
    assert not torch.equal(out, images)  # each of them changes the pixels at these strengths


def test_jpeg_error_grows_as_quality_falls(images) -> None:
    err = {q: (jpeg(images, q).float() - images.float()).abs().mean().item() for q in (95, 75, 30, 5)}
    assert err[95] < err[75] < err[30] < err[5], err
    assert err[95] < 3.0  # quality 95 is close to the original


def test_colour_shift_is_one_offset_per_image_and_channel_within_bounds(images) -> None:
    grey = torch.full((6, 3, 8, 8), 128, dtype=torch.uint8)  # nothing clips at 128 +- 25
    out = colour_shift(grey, 25, seed=3)
    d = out.to(torch.int16) - grey.to(torch.int16)
    assert torch.equal(d, d[:, :, :1, :1].expand_as(d))  # constant over the picture
    assert d.abs().max() <= 25 and d.abs().max() > 0
    assert len({tuple(v.tolist()) for v in d[:, :, 0, 0]}) > 1  # each image its own cast
    assert torch.equal(out, colour_shift(grey, 25, seed=3)) and not torch.equal(out, colour_shift(grey, 25, seed=4))
    assert torch.equal(colour_shift(images, 0, seed=3), images)
    white = colour_shift(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8), 25, seed=0)
    assert white.max() == 255  # clipped, not wrapped round to dark values


def test_noise_has_the_requested_spread_and_is_seeded() -> None:
    grey = torch.full((2, 3, 64, 64), 128, dtype=torch.uint8)
    d = gaussian_noise(grey, 8, seed=0).float() - 128
    assert abs(d.std().item() - 8) < 0.3 and abs(d.mean().item()) < 0.3
    assert torch.equal(gaussian_noise(grey, 8, seed=0), gaussian_noise(grey, 8, seed=0))


def test_bad_input_is_refused_clearly(images) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        jpeg(images.float(), 75)
    with pytest.raises(ValueError, match="uint8 RGB"):
        gaussian_noise(images[:, :1], 8)
    with pytest.raises(ValueError, match="quality"):
        jpeg(images, 0)
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        corrupt(images, "blur", 1)
