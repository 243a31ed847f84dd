"""Embedded default data: package-shipped or generated, so every notebook runs with no mirror or network.

- ``load_digit_images``: scikit-learn's 1,797 handwritten digits (8x8), upsampled to MNIST's 28x28.
- ``load_synthetic_spoken_digits``: generated speech-like clips, one formant trajectory per digit and one
  voice (pitch, vocal-tract scale) per synthetic speaker; deterministic for a seed. A toy stand-in for FSDD.
- ``load_sample_photos``: 16 photos shipped with scikit-image and scikit-learn, with 3 captions each that
  this project wrote (``embedded/photos.csv``). A toy stand-in for Flickr8k.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from mmhelpers.data.fsdd import SpokenDigits
from mmhelpers.data.mnist import DIGIT_CLASSES, ImageSet
from mmhelpers.text import read_captions_csv

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"

# (F1, F2) formant targets in Hz at the start, middle and end of each synthetic digit "word".
_DIGIT_FORMANTS = {
    0: [(300, 2300), (500, 1500), (450, 900)],  # "zero": i -> er -> o
    1: [(350, 800), (700, 1200), (500, 1500)],  # "one": w -> ah -> n
    2: [(400, 1800), (350, 900), (300, 850)],  # "two": t -> oo
    3: [(400, 1600), (450, 1300), (300, 2300)],  # "three": th -> r -> ee
    4: [(350, 1000), (500, 900), (450, 1300)],  # "four": f -> or
    5: [(400, 1800), (750, 1300), (350, 2200)],  # "five": f -> ai -> v
    6: [(400, 2000), (400, 2000), (650, 1700)],  # "six": s -> i -> ks
    7: [(400, 1900), (550, 1800), (500, 1300)],  # "seven": s -> e -> vn
    8: [(550, 1800), (400, 2200), (350, 2100)],  # "eight": ei -> t
    9: [(350, 1500), (750, 1250), (350, 1400)],  # "nine": n -> ai -> n
}


def load_digit_images(size: int = 28) -> ImageSet:
    """scikit-learn's 1,797 digits (0-16 grey levels), rescaled to uint8 ``size`` x ``size`` like MNIST."""
    from sklearn.datasets import load_digits

    d = load_digits()
    small = (d.images / 16.0 * 255.0).astype(np.float32)
    big = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in small])
    return ImageSet(np.clip(big, 0, 255).astype(np.uint8), d.target.astype(np.int64), DIGIT_CLASSES,
                    "embedded: scikit-learn load_digits (8x8 upsampled to 28x28)")  # fmt: skip


def synth_digit(digit: int, speaker: int, rng: np.random.Generator, sr: int = 8000) -> np.ndarray:
    """One synthetic clip: harmonics of a gliding pitch shaped by the digit's formant trajectory."""
    f0 = 95.0 + 22.0 * speaker + rng.normal(0, 4)  # speaker pitch
    scale = 1.0 + 0.04 * (speaker - 2.5) + rng.normal(0, 0.015)  # vocal-tract length
    dur = rng.uniform(0.35, 0.6)
    t = np.arange(int(dur * sr)) / sr
    u = t / dur
    key = np.array(_DIGIT_FORMANTS[digit], dtype=np.float64) * scale
    f1 = np.interp(u, [0, 0.5, 1], key[:, 0])
    f2 = np.interp(u, [0, 0.5, 1], key[:, 1])
    pitch = f0 * (1.1 - 0.2 * u)  # falling intonation
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    wave = np.zeros_like(t)
    for k in range(1, int(3400 / f0)):
        fk = k * pitch
        amp = np.exp(-(((fk - f1) / 120) ** 2)) + 0.6 * np.exp(-(((fk - f2) / 180) ** 2)) + 0.02
        wave += amp * np.sin(k * phase) * (fk < sr / 2 - 200)
    envelope = np.sin(np.pi * u) ** 0.6
    wave = wave * envelope + rng.normal(0, 0.02, size=t.shape)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def load_synthetic_spoken_digits(n_per_digit_speaker: int = 10, n_speakers: int = 4, seed: int = 0) -> SpokenDigits:
    """Generated clips for digits 0-9 x ``n_speakers`` voices x ``n_per_digit_speaker`` repetitions (8 kHz)."""
    rng = np.random.default_rng(seed)
    waves, digits, speakers, indices = [], [], [], []
    for s in range(n_speakers):
        for d in range(10):
            for i in range(n_per_digit_speaker):
                waves.append(torch.from_numpy(synth_digit(d, s, rng)))
                digits.append(d)
                speakers.append(f"synth{s}")
                indices.append(i)
    return SpokenDigits(waves, 8000, np.array(digits), np.array(speakers), np.array(indices),
                        "embedded: synthetic formant digits (generated, not real speech)")  # fmt: skip


def _photo(key: str) -> np.ndarray:
    """An RGB uint8 photo from scikit-image (``skimage:name``) or scikit-learn (``sklearn:file``)."""
    lib, name = key.split(":", 1)
    if lib == "skimage":
        import skimage.data

        img = getattr(skimage.data, name)()
    else:
        from sklearn.datasets import load_sample_image

        img = load_sample_image(name)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def load_sample_photos() -> tuple[list[str], list[np.ndarray], list[list[str]]]:
    """(keys, RGB images, captions per image) of the embedded toy image-caption set."""
    rows = read_captions_csv(EMBEDDED_DIR / "photos.csv")
    keys = list(dict.fromkeys(k for k, _ in rows))
    captions = [[c for k2, c in rows if k2 == k] for k in keys]
    return keys, [_photo(k) for k in keys], captions
