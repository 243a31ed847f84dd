"""Tests for mmhelpers.image: OpenCV loading and its errors, resizing and cropping, tensors and normalisation."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmhelpers import image
from mmhelpers.errors import DataError

FLICKR = Path("/work/shared/data/flickr8k_subset1000/images")


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB array with OpenCV (which wants BGR)."""
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_png_round_trip_is_exact(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    loaded = image.load_image(write_rgb(tmp_path / "noise.png", rgb))
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, rgb)


def test_rgb_order_and_grey(tmp_path: Path) -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    path = write_rgb(tmp_path / "red.png", red)
    loaded = image.load_image(path)
    assert (loaded[..., 0] == 255).all() and (loaded[..., 1:] == 0).all()
    grey = image.load_image(path, mode="L")
    assert grey.shape == (8, 8) and grey[0, 0] == 76  # 0.299 * 255
    assert image.load_image(path, size=(4, 6)).shape == (4, 6, 3)


def test_resize_shapes_and_constant_image() -> None:
    const = np.full((50, 80, 3), 123, np.uint8)
    for size, shape in [(32, (32, 32, 3)), ((20, 100), (20, 100, 3)), (200, (200, 200, 3))]:
        out = image.resize(const, size)
        assert out.shape == shape and (out == 123).all()
    assert image.center_crop(const, (10, 20)).shape == (10, 20, 3)
    with pytest.raises(ValueError, match="larger"):
        image.center_crop(const, 60)


def test_resize_shorter_then_center_crop_keeps_aspect() -> None:
    # 150 high x 200 wide, vertical stripes: left quarter black, middle half grey, right quarter white.
    img = np.full((150, 200, 3), 128, np.uint8)
    img[:, :50], img[:, 150:] = 0, 255
    out = image.resize_shorter_then_center_crop(img, 128)
    assert out.shape == (128, 128, 3)
    # Scale 128/150 makes the width 171; the crop drops ~21 px a side, so the edges of the
    # 43-px black and white stripes survive at the borders and the middle is grey (no squashing).
    assert (out[:, :15] == 0).all() and (out[:, -15:] == 255).all()
    assert (out[:, 25:103] == 128).all()
    portrait = image.resize_shorter_then_center_crop(np.zeros((300, 100), np.uint8), (64, 32))
    assert portrait.shape == (64, 32)


def test_to_tensor_normalize_denormalize() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    x = image.to_tensor(rgb)
    assert x.shape == (3, 6, 7) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert x[0, 2, 3] == pytest.approx(rgb[2, 3, 0] / 255)
    assert image.to_tensor(rgb[..., 0]).shape == (1, 6, 7)
    z = image.normalize(x)
    assert z[1, 0, 0] == pytest.approx((x[1, 0, 0] - image.IMAGENET_MEAN[1]) / image.IMAGENET_STD[1])
    torch.testing.assert_close(image.denormalize(z), x)
    batch = torch.stack([x, x])
    torch.testing.assert_close(image.denormalize(image.normalize(batch)), batch)


def test_to_minus_one_one_range() -> None:
    y = image.to_minus_one_one(torch.tensor([0.0, 0.5, 1.0]))
    assert y.tolist() == [-1.0, 0.0, 1.0]


def test_image_batch(tmp_path: Path) -> None:
    paths = [write_rgb(tmp_path / f"{i}.png", np.full((40 + 10 * i, 60, 3), 50 * i, np.uint8)) for i in range(3)]
    batch = image.image_batch(paths, 32)
    assert batch.shape == (3, 3, 32, 32)
    assert batch[2].mean().item() == pytest.approx(100 / 255)
    normed = image.image_batch(paths, (16, 24), transform=image.normalize)
    assert normed.shape == (3, 3, 16, 24)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("definitely not a JPEG\n")
    with pytest.raises(DataError) as info:
        image.load_image(path)
    assert str(path) in str(info.value) and "image" in str(info.value)


def test_truncated_jpeg(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", rgb)
    assert ok
    good, cut = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    good.write_bytes(encoded.tobytes())
    cut.write_bytes(encoded.tobytes()[:100])
    assert image.load_image(good).shape == (64, 64, 3)
    with pytest.raises(DataError, match="not a decodable image") as info:
        image.load_image(cut)
    assert str(cut) in str(info.value) and "100 bytes" in str(info.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        image.load_image(empty)
    with pytest.raises(DataError, match="not found"):
        image.load_image(tmp_path / "missing.jpg")


def test_real_flickr_image() -> None:
    files = sorted(FLICKR.glob("*.jpg"))[:1] if FLICKR.is_dir() else []
    if not files:
        pytest.skip("Flickr8k subset not available")
    img = image.load_image(files[0])
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert image.image_batch(files, 224).shape == (1, 3, 224, 224)


def test_torchvision_transforms() -> None:
    pytest.importorskip("torchvision")
    rgb = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    train = image.torchvision_train_transform(64)(rgb)
    evaluated = image.torchvision_eval_transform(64)(rgb)
    assert train.shape == evaluated.shape == (3, 64, 64) and evaluated.dtype == torch.float32


# ---------------------------------------------------------------- pixel cap (decompression bombs)


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A 70-byte PNG whose valid IHDR claims width x height RGB pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if OpenCV is asked to decode (and so allocate) anything."""

    def refuse(*args: object) -> None:
        raise AssertionError("cv2.imdecode was called: the pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)


def test_huge_png_header_is_refused_before_decoding(tmp_path: Path, no_decoding: None) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(16000, 16000))
    assert path.stat().st_size < 100
    with pytest.raises(DataError, match=r"16000x16000 .* = 256,000,000 pixels, more than the limit of 89,478,485"):
        image.load_image(path)
    with pytest.raises(DataError) as info:
        image.load_image(path, mode="L", size=8)
    assert info.value.path == path and "MMHELPERS_MAX_IMAGE_PIXELS" in str(info.value)


def test_huge_jpeg_frame_header_is_refused(tmp_path: Path, no_decoding: None) -> None:
    ok, encoded = cv2.imencode(".jpg", np.zeros((24, 40, 3), np.uint8))
    assert ok
    raw = bytearray(encoded.tobytes())
    sof = raw.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    assert struct.unpack(">HH", raw[sof + 5 : sof + 9]) == (24, 40)
    raw[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 20000)
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"20000x30000 .* = 600,000,000 pixels") as info:
        image.load_image(path)
    assert info.value.path == path


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["pillow-warns", "pillow-refuses"])
def test_huge_bmp_header_is_refused_through_pillow(tmp_path: Path, no_decoding: None, side: int) -> None:
    pytest.importorskip("PIL")
    ok, encoded = cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))
    assert ok
    raw = bytearray(encoded.tobytes())
    raw[18:26] = struct.pack("<ii", side, side)  # BITMAPINFOHEADER width and height
    path = tmp_path / "bomb.bmp"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="more than the limit of 89,478,485.*MMHELPERS_MAX_IMAGE_PIXELS") as info:
        image.load_image(path)
    assert info.value.path == path


def test_pixel_cap_argument_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_rgb(tmp_path / "small.png", np.zeros((37, 53, 3), np.uint8))  # 1,961 pixels
    jpg = tmp_path / "small.jpg"
    jpg.write_bytes(cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))[1].tobytes())
    for p in (path, jpg):
        with pytest.raises(DataError, match="53x37 .* = 1,961 pixels, more than the limit of 1,000"):
            image.load_image(p, max_pixels=1000)
        assert image.load_image(p, max_pixels=1961).shape == (37, 53, 3)
    monkeypatch.setenv("MMHELPERS_MAX_IMAGE_PIXELS", "1_000")
    with pytest.raises(DataError, match="limit of 1,000"):
        image.load_image(path)
    assert image.load_image(path, max_pixels=0).shape == (37, 53, 3)  # 0: no limit
    monkeypatch.setenv("MMHELPERS_MAX_IMAGE_PIXELS", "0")
    assert image.load_image(path).shape == (37, 53, 3)
    monkeypatch.setenv("MMHELPERS_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="MMHELPERS_MAX_IMAGE_PIXELS must be a whole number of pixels .* got 'lots'"):
        image.load_image(path)
    with pytest.raises(ValueError, match="max_pixels must be an int >= 0 .* got -1"):
        image.load_image(path, max_pixels=-1)


def test_opencv_decode_error_becomes_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_rgb(tmp_path / "ok.png", np.zeros((4, 4, 3), np.uint8))

    def broken(*args: object) -> None:
        raise cv2.error("OpenCV(5.0.0) imgcodecs: insufficient memory")

    monkeypatch.setattr(cv2, "imdecode", broken)
    with pytest.raises(DataError, match="OpenCV could not decode this image .*insufficient memory") as info:
        image.load_image(path)
    assert info.value.path == path
