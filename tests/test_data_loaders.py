"""Tests for the data set loaders: the real mirror (marked ``mirror``), the embedded defaults, and bad input.

Real-mirror tests check the numbers the mirror's SOURCE.md files state. They share one data cache
(see ``real_mirror`` in conftest.py) and run offline, so the mirror is copied and hashed once.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmhelpers.audio import log_mel_spectrogram
from mmhelpers.data import (
    FASHION_CLASSES,
    load_asterisk_prompts,
    load_digit_images,
    load_fashion_mnist,
    load_flickr8k,
    load_flickr8k_all_captions,
    load_fsdd,
    load_mnist,
    load_sample_photos,
    load_synthetic_spoken_digits,
)
from mmhelpers.data.registry import REGISTRY, DataSet, FileSpec
from mmhelpers.errors import DataError

# ---------------------------------------------------------------------------------------------------------------------
# real mirror


@pytest.mark.mirror
def test_fsdd_real(real_mirror: Path) -> None:
    ds = load_fsdd(progress=False)
    assert len(ds) == 3000 and ds.sr == 8000
    assert len(ds.digits) == len(ds.speakers) == len(ds.indices) == len(ds.paths) == 3000
    speakers, per_speaker = np.unique(ds.speakers, return_counts=True)
    assert list(speakers) == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    assert set(per_speaker) == {500}
    assert np.bincount(ds.digits, minlength=10).tolist() == [300] * 10
    assert ds.indices.min() == 0 and ds.indices.max() == 49
    test = ds.official_test_mask()
    assert test.sum() == 300
    assert np.bincount(ds.digits[test], minlength=10).tolist() == [30] * 10
    assert set(ds.indices[test]) == {0, 1, 2, 3, 4}
    durations = np.array([w.shape[0] / ds.sr for w in ds.waves])
    assert all(w.ndim == 1 and w.dtype == torch.float32 for w in ds.waves)
    assert all(bool(torch.isfinite(w).all()) and float(w.abs().max()) > 0 for w in ds.waves)
    assert 0.1 <= durations.min() and durations.max() <= 2.5, (durations.min(), durations.max())
    assert 0.35 < durations.mean() < 0.55  # SOURCE.md: mean 0.44 s
    # labels come from the file names
    i = int(np.flatnonzero((ds.digits == 7) & (ds.speakers == "jackson") & (ds.indices == 32))[0])
    assert ds.paths[i].name == "7_jackson_32.wav"
    sub = ds.subset(~test)
    assert len(sub) == 2700 and sub.indices.min() == 5


@pytest.mark.mirror
def test_mnist_real(real_mirror: Path) -> None:
    ds = load_mnist()
    assert ds.images.shape == (10000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10000,)
    assert np.bincount(ds.labels, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert ds.classes == tuple("0123456789")
    with pytest.raises(ValueError, match="test"):
        load_mnist("train")


@pytest.mark.mirror
def test_fashion_mnist_real(real_mirror: Path) -> None:
    for split, n in (("train", 60000), ("test", 10000)):
        ds = load_fashion_mnist(split)
        assert ds.images.shape == (n, 28, 28) and ds.images.dtype == np.uint8
        assert np.bincount(ds.labels, minlength=10).tolist() == [n // 10] * 10
        assert ds.classes == FASHION_CLASSES and len(ds.classes) == 10
    with pytest.raises(ValueError, match="train"):
        load_fashion_mnist("val")


@pytest.mark.mirror
def test_flickr8k_real(real_mirror: Path) -> None:
    ds = load_flickr8k(progress=False)
    assert len(ds) == 1000
    assert ds.image_paths[0].name == "1000268201_693b08cb0e.jpg"
    assert ds.image_paths[-1].name == "2098418613_85a0c9afea.jpg"
    assert all(p.is_file() for p in ds.image_paths)
    assert all(len(c) == 5 and all(s.strip() for s in c) for c in ds.captions)
    parts = ds.split((800, 100, 100), seed=0)
    assert [len(p) for p in parts] == [800, 100, 100]
    assert len(np.unique(np.concatenate(parts))) == 1000  # disjoint, covering every image
    again = ds.split((800, 100, 100), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = ds.split((800, 100, 100), seed=1)
    assert not np.array_equal(parts[2], other[2])
    with pytest.raises(ValueError, match="need 1001 images"):
        ds.split((1000, 1))

    all_caps = load_flickr8k_all_captions()
    assert len(all_caps) == 8091
    assert sum(len(c) for c in all_caps.values()) == 40455
    for path, caps in zip(ds.image_paths[:50], ds.captions[:50], strict=True):
        assert all_caps[path.name] == caps  # SOURCE.md: identical to the full caption file
    test_names = {ds.image_paths[i].name for i in parts[2]}
    rest = load_flickr8k_all_captions(exclude_images=test_names)
    assert len(rest) == 8091 - 100
    assert not test_names & set(rest)
    assert sum(len(c) for c in rest.values()) == 40455 - 500


@pytest.mark.mirror
def test_asterisk_prompts_real(real_mirror: Path) -> None:
    transcript_file = (real_mirror / "asterisk_prompts" / "core-sounds-en.txt").read_text()
    assert "digits/7: seven" in transcript_file  # what SOURCE.md promises; checked against the file itself
    ds = load_asterisk_prompts(progress=False)
    assert 300 <= len(ds) <= 568
    assert len(ds.names) == len(ds.waves) == len(ds.transcripts)
    by_name = dict(zip(ds.names, ds.transcripts, strict=True))
    assert by_name["digits/7"] == "seven"
    # SOURCE.md quotes agent-pass as "...your agent number..."; the file itself (line 10) says "password".
    assert by_name["agent-pass"] == "Please enter your password followed by the pound key."
    assert by_name["agent-user"] == "Agent login.  Please enter your agent number followed by the pound key."
    assert all(t.strip() for t in ds.transcripts)
    assert not any(t.startswith("[") for t in ds.transcripts)
    assert ds.sr == 8000
    assert all(w.ndim == 1 and w.dtype == torch.float32 and w.numel() > 0 for w in ds.waves)
    cats = set(ds.categories)
    assert {"digits", "letters", "phonetic", "ivr"} <= cats
    assert sum(c == "digits" for c in ds.categories) > 50

    everything = load_asterisk_prompts(include_non_speech=True, progress=False)
    extra = set(everything.names) - set(ds.names)
    assert extra, "the mirror has bracketed non-speech prompts (e.g. beep)"
    assert "beep" in extra
    assert all(t.startswith("[") for n, t in zip(everything.names, everything.transcripts, strict=True) if n in extra)


# ---------------------------------------------------------------------------------------------------------------------
# embedded defaults


def test_digit_images() -> None:
    ds = load_digit_images()
    assert ds.images.shape == (1797, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (1797,)
    assert sorted(set(ds.labels.tolist())) == list(range(10))
    assert np.bincount(ds.labels).min() >= 170
    ink = ds.images.reshape(len(ds), -1).astype(np.float32)
    assert ink.max(axis=1).min() > 100  # every image has strokes
    assert (ink > 0).mean(axis=1).min() > 0.05
    # digits look different from one another: class-mean images differ
    means = np.stack([ink[ds.labels == d].mean(0) for d in range(10)])
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dists[~np.eye(10, dtype=bool)].min() > 100
    assert load_digit_images(size=16).images.shape == (1797, 16, 16)


def test_synthetic_spoken_digits_are_deterministic_and_sized() -> None:
    a = load_synthetic_spoken_digits(n_per_digit_speaker=2, n_speakers=3, seed=5)
    b = load_synthetic_spoken_digits(n_per_digit_speaker=2, n_speakers=3, seed=5)
    c = load_synthetic_spoken_digits(n_per_digit_speaker=2, n_speakers=3, seed=6)
    assert len(a) == 10 * 3 * 2 and a.sr == 8000
    assert all(torch.equal(x, y) for x, y in zip(a.waves, b.waves, strict=True))
    assert np.array_equal(a.digits, b.digits) and np.array_equal(a.speakers, b.speakers)
    assert not any(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a.waves, c.waves, strict=True))
    assert np.bincount(a.digits).tolist() == [6] * 10
    assert sorted(set(a.speakers)) == ["synth0", "synth1", "synth2"]
    assert set(a.indices) == {0, 1}
    for w in a.waves:
        assert w.ndim == 1 and w.dtype == torch.float32 and bool(torch.isfinite(w).all())
        assert 0.35 * 8000 <= w.shape[0] <= 0.6 * 8000
        assert float(w.abs().max()) == pytest.approx(0.5, abs=1e-6)


def test_synthetic_spoken_digits_are_distinguishable() -> None:
    """Mean log-mel + nearest centroid tells the synthetic digits apart, even for an unseen speaker.

    Measured with seeds 0-2 (6 clips per digit and speaker, 4 speakers): held-out repetitions 0.95-0.99,
    held-out speaker 0.78-0.92 (chance 0.10). Seed 0 gives 0.99 and 0.85; the thresholds leave margin.
    """
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ds = load_synthetic_spoken_digits(n_per_digit_speaker=6, n_speakers=4, seed=0)
    features = np.stack([log_mel_spectrogram(w, ds.sr, n_mels=40).mean(-1).numpy() for w in ds.waves])
    assert np.isfinite(features).all()
    for held_out, threshold in ((ds.indices >= 4, 0.9), (ds.speakers == "synth3", 0.7)):
        clf = make_pipeline(StandardScaler(), NearestCentroid()).fit(features[~held_out], ds.digits[~held_out])
        accuracy = float((clf.predict(features[held_out]) == ds.digits[held_out]).mean())
        assert accuracy > threshold, accuracy


def test_sample_photos() -> None:
    keys, images, captions = load_sample_photos()
    assert len(keys) == len(images) == len(captions) == 16
    assert len(set(keys)) == 16
    for key, img, caps in zip(keys, images, captions, strict=True):
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, key
        assert min(img.shape[:2]) >= 64, key
        assert img.std() > 5, key  # not blank
        assert len(caps) == 3 and all(c.strip() for c in caps), key
        assert len(set(caps)) == 3, key


# ---------------------------------------------------------------------------------------------------------------------
# loaders on small fake data sets (bad input included)


def _wav_bytes(tmp: Path, sr: int, seconds: float = 0.2, freq: float = 440.0) -> bytes:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(tmp, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return tmp.read_bytes()


def _fake_dataset(name: str, files: dict[str, bytes], mirror: Path) -> DataSet:
    """A DataSet named ``name`` matching ``files``, with the files written into ``mirror``."""
    specs = []
    for rel, data in files.items():
        (mirror / name / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / name / rel).write_bytes(data)
        payload = gzip.decompress(data) if rel.endswith(".gz") else data  # .gz specs hash the decompressed bytes
        specs.append(FileSpec(rel, hashlib.sha256(payload).hexdigest(), len(data)))
    return DataSet(name=name, title=name, homepage="https://example.org", license="CC0", citation="test",
                   files=tuple(specs))  # fmt: skip


@pytest.fixture
def fake_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "fake_mirror"
    root.mkdir()
    monkeypatch.setenv("MMHELPERS_MIRROR", str(root))
    return root


def test_fsdd_loader_on_fake_data(tmp_path: Path, fake_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "recordings/3_theo_4.wav": _wav_bytes(tmp_path / "a.wav", 8000, 0.25),
        "recordings/9_lucas_12.wav": _wav_bytes(tmp_path / "b.wav", 8000, 0.4),
    }
    monkeypatch.setitem(REGISTRY, "fsdd", _fake_dataset("fsdd", files, fake_mirror))
    ds = load_fsdd(progress=False)
    assert ds.digits.tolist() == [3, 9] and ds.speakers.tolist() == ["theo", "lucas"]
    assert ds.indices.tolist() == [4, 12] and ds.official_test_mask().tolist() == [True, False]
    assert [w.shape[0] for w in ds.waves] == [2000, 3200]


def test_fsdd_wrong_sample_rate_names_file_and_rates(
    tmp_path: Path, fake_mirror: Path, monkeypatch: pytest.MonkeyPatch, _isolated_data: Path
) -> None:
    files = {
        "recordings/0_george_0.wav": _wav_bytes(tmp_path / "ok.wav", 8000),
        "recordings/1_george_0.wav": _wav_bytes(tmp_path / "bad.wav", 16000),
    }
    monkeypatch.setitem(REGISTRY, "fsdd", _fake_dataset("fsdd", files, fake_mirror))
    with pytest.raises(DataError) as exc:
        load_fsdd(progress=False)
    message = str(exc.value)
    assert exc.value.path == _isolated_data / "fsdd" / "recordings" / "1_george_0.wav"
    assert "1_george_0.wav" in message and "16000" in message and "8000" in message


def test_asterisk_loader_joins_wavs_and_transcripts(
    tmp_path: Path, fake_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transcripts = (
        "; a comment line\n"
        "digits/7: seven\n"
        "beep: [this is a simple beep tone]\n"
        "hello: Hello: world.\n"
        "no-wav: this line has no recording\n"
        "empty:\n"
    )
    wav = _wav_bytes(tmp_path / "p.wav", 8000, 0.1)
    files = {"core-sounds-en.txt": transcripts.encode()} | {
        f"wav/{n}.wav": wav for n in ("digits/7", "beep", "hello", "no-transcript", "empty")
    }
    monkeypatch.setitem(REGISTRY, "asterisk_prompts", _fake_dataset("asterisk_prompts", files, fake_mirror))
    ds = load_asterisk_prompts(progress=False)
    assert dict(zip(ds.names, ds.transcripts, strict=True)) == {"digits/7": "seven", "hello": "Hello: world."}
    assert ds.categories == ["digits", "ivr"]
    everything = load_asterisk_prompts(include_non_speech=True, progress=False)
    assert everything.names == ["beep", "digits/7", "hello"]


def test_asterisk_transcripts_not_utf8(tmp_path: Path, fake_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"core-sounds-en.txt": b"caf\xe9: coffee\n", "wav/x.wav": _wav_bytes(tmp_path / "x.wav", 8000, 0.1)}
    monkeypatch.setitem(REGISTRY, "asterisk_prompts", _fake_dataset("asterisk_prompts", files, fake_mirror))
    with pytest.raises(DataError, match="not valid UTF-8 at byte 3") as exc:
        load_asterisk_prompts(progress=False)
    assert exc.value.path.name == "core-sounds-en.txt"


def test_flickr8k_caption_without_image_is_an_error(fake_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "captions.txt": b"image,caption\na.jpg,a dog runs .\nb.jpg,a cat sits .\n",
        "images/a.jpg": b"\xff\xd8fake jpeg",
    }
    monkeypatch.setitem(REGISTRY, "flickr8k_subset1000", _fake_dataset("flickr8k_subset1000", files, fake_mirror))
    with pytest.raises(DataError, match="b.jpg, which has no image file") as exc:
        load_flickr8k(progress=False)
    assert exc.value.path.name == "captions.txt"


def test_mnist_images_and_labels_must_agree(fake_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def idx(arr: np.ndarray) -> bytes:
        return gzip.compress(bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
                             + arr.tobytes(), mtime=0)  # fmt: skip

    files = {
        "t10k-images-idx3-ubyte.gz": idx(np.zeros((5, 28, 28), np.uint8)),
        "t10k-labels-idx1-ubyte.gz": idx(np.arange(4, dtype=np.uint8)),
    }
    monkeypatch.setitem(REGISTRY, "mnist", _fake_dataset("mnist", files, fake_mirror))
    with pytest.raises(DataError, match="5 images but 4 labels"):
        load_mnist()
