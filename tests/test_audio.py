"""Tests for mmhelpers.audio: soundfile loading and its errors, resampling, features vs librosa, noise, SpecAugment."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmhelpers import audio
from mmhelpers.errors import DataError

FSDD = Path("/work/shared/data/fsdd/recordings")


def sine(freq: float, sr: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    """A float32 sine wave."""
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def voice_like(sr: int = 8000, seconds: float = 0.5) -> np.ndarray:
    """A deterministic broadband test signal: harmonics of a gliding pitch, an envelope, and a little noise."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 80 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 20)) * np.hanning(t.size)
    return (0.3 * y + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def sine_wav(tmp_path: Path) -> Path:
    """A 1 s, 440 Hz sine at 8 kHz, PCM16 mono."""
    path = tmp_path / "sine440.wav"
    sf.write(path, sine(440, 8000), 8000, subtype="PCM_16")
    return path


def test_load_sine_wav(sine_wav: Path) -> None:
    wave, sr = audio.load_audio(sine_wav)
    assert sr == 8000 and wave.dtype == torch.float32 and wave.shape == (8000,)
    np.testing.assert_allclose(wave.numpy(), sine(440, 8000), atol=1 / 32768 + 1e-6)


def test_load_stereo_mono_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left, right = sine(440, 8000, 0.1), sine(880, 8000, 0.1)
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    both, _ = audio.load_audio(path, mono=False)
    mono, _ = audio.load_audio(path)
    assert both.shape == (2, 800) and mono.shape == (800,)
    torch.testing.assert_close(mono, both.mean(dim=0))


def test_resample_8k_to_16k_keeps_frequency(sine_wav: Path) -> None:
    wave, sr = audio.load_audio(sine_wav, sr=16000)
    assert sr == 16000 and wave.shape == (16000,)
    spectrum = torch.fft.rfft(wave).abs()
    assert int(spectrum.argmax()) * sr / wave.numel() == pytest.approx(440, abs=1)


def test_expect_sr_raises_naming_both_rates(sine_wav: Path) -> None:
    with pytest.raises(DataError) as info:
        audio.load_audio(sine_wav, expect_sr=16000)
    message = str(info.value)
    assert str(sine_wav) in message and "8000 Hz" in message and "16000 Hz" in message and "sr=16000" in message
    assert audio.load_audio(sine_wav, expect_sr=8000)[1] == 8000


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n")
    with pytest.raises(DataError) as info:
        audio.load_audio(path)
    assert str(path) in str(info.value) and "audio" in str(info.value)


@pytest.mark.parametrize(
    "keep, expected", [(20, "not a readable audio"), (44, "truncated WAV"), (8000, "truncated WAV")]
)
def test_truncated_wav(sine_wav: Path, tmp_path: Path, keep: int, expected: str) -> None:
    cut = tmp_path / f"cut{keep}.wav"
    cut.write_bytes(sine_wav.read_bytes()[:keep])  # inside the header / header only / half the data
    with pytest.raises(DataError, match=expected) as info:
        audio.load_audio(cut)
    assert str(cut) in str(info.value)


def test_empty_missing_and_nan_wav(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 8000)
    with pytest.raises(DataError, match="no samples"):
        audio.load_audio(empty)
    with pytest.raises(DataError, match="not found"):
        audio.load_audio(tmp_path / "missing.wav")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(DataError, match="non-finite"):
        audio.load_audio(nan)


def test_check_sample_rate() -> None:
    audio.check_sample_rate("x.wav", 8000, 8000)
    with pytest.raises(DataError, match=r"x\.wav: sample rate is 44100 Hz, expected 8000 Hz; pass sr=8000"):
        audio.check_sample_rate("x.wav", 44100, 8000)


def test_pad_or_trim_and_pad_batch() -> None:
    wave = torch.arange(1.0, 6.0)
    assert audio.pad_or_trim(wave, 3).tolist() == [1, 2, 3]
    assert audio.pad_or_trim(wave, 7).tolist() == [1, 2, 3, 4, 5, 0, 0]
    assert audio.pad_or_trim(torch.ones(2, 4), 6).shape == (2, 6)
    batch, lengths = audio.pad_batch([torch.ones(3), torch.ones(5)])
    assert batch.shape == (2, 5) and lengths.tolist() == [3, 5]
    assert batch[0].tolist() == [1, 1, 1, 0, 0]


def test_log_mel_shape_and_1khz_peak_bin() -> None:
    sr, n_mels = 16000, 64
    spec = audio.log_mel_spectrogram(torch.from_numpy(sine(1000, sr)), sr, n_mels=n_mels)
    assert spec.shape == (n_mels, 1 + sr // 160)  # defaults: n_fft 400, hop 160 at 16 kHz
    hz_to_mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731  (HTK scale)
    mels = np.linspace(0, hz_to_mel(sr / 2), n_mels + 2)[1:-1]
    centers = 700 * (10 ** (mels / 2595) - 1)
    expected = int(np.abs(centers - 1000).argmin())
    assert int(spec[:, 10:-10].mean(dim=1).argmax()) == expected


def test_features_are_per_example_in_a_batch() -> None:
    loud = torch.from_numpy(voice_like())
    batch = torch.stack([loud, 1e-3 * loud])
    mel = audio.log_mel_spectrogram(batch, 8000)
    torch.testing.assert_close(mel[1], audio.log_mel_spectrogram(1e-3 * loud, 8000))
    torch.testing.assert_close(audio.mfcc(batch, 8000)[0], audio.mfcc(loud, 8000))


def test_transforms_are_cached() -> None:
    wave = torch.from_numpy(voice_like())
    audio.log_mel_spectrogram(wave, 8000, n_mels=32)
    hits = audio._log_mel_transform.cache_info().hits
    audio.log_mel_spectrogram(wave, 8000, n_mels=32)
    assert audio._log_mel_transform.cache_info().hits == hits + 1


def test_log_mel_and_mfcc_match_librosa() -> None:
    pytest.importorskip("librosa")
    wave = voice_like()  # 8 kHz: n_fft 200, hop 80
    ours = audio.log_mel_spectrogram(torch.from_numpy(wave), 8000, n_mels=40).numpy()
    theirs = audio.librosa_log_mel(wave, 8000, n_mels=40)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 5e-3  # measured ~7e-4 dB (float32 rounding)
    ours_mfcc = audio.mfcc(torch.from_numpy(wave), 8000).numpy()
    theirs_mfcc = audio.librosa_mfcc(wave, 8000)
    assert ours_mfcc.shape == theirs_mfcc.shape == (13, 1 + wave.size // 80)
    assert np.abs(ours_mfcc - theirs_mfcc).max() < 2e-3  # measured ~2e-4, coefficients span +-100s


def test_add_noise_hits_snr() -> None:
    wave = torch.from_numpy(np.stack([sine(440, 8000), 0.01 * sine(300, 8000)]))
    for snr in (20.0, 0.0, -5.0):
        noisy = audio.add_noise(wave, snr, generator=torch.Generator().manual_seed(0))
        noise = noisy - wave
        achieved = 10 * torch.log10(wave.pow(2).mean(-1) / noise.pow(2).mean(-1))
        assert torch.allclose(achieved, torch.tensor(snr), atol=0.5)
        assert (achieved - snr).abs().max() < 0.01  # scaled by the realised noise power
    again = audio.add_noise(wave, 0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, audio.add_noise(wave, 0.0, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="zero power"):
        audio.add_noise(torch.zeros(10), 10.0)


def test_spec_augment_masks() -> None:
    torch.manual_seed(0)
    spec = torch.randn(4, 40, 100) + 5.0
    out = audio.spec_augment(spec, freq_mask=10, time_mask=20, n_masks=2, mask_value=-1.0)
    assert out.shape == spec.shape
    masked = out == -1.0
    assert masked.any() and torch.equal(out[~masked], spec[~masked])
    assert not all(torch.equal(masked[0], masked[i]) for i in range(1, 4))  # independent masks per example
    mean_filled = audio.spec_augment(spec[0], freq_mask=40, time_mask=100)
    assert mean_filled.shape == (40, 100)


def test_real_fsdd_file() -> None:
    files = sorted(FSDD.glob("*.wav"))[:1] if FSDD.is_dir() else []
    if not files:
        pytest.skip("FSDD recordings not available")
    wave, sr = audio.load_audio(files[0], expect_sr=8000)
    assert sr == 8000 and wave.ndim == 1 and wave.abs().max() <= 1.0
    assert audio.mfcc(wave, sr).shape[-2] == 13
