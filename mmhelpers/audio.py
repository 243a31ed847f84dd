"""Audio loading (soundfile), padding, log-mel / MFCC features (torchaudio, with librosa twins), noise and SpecAugment.

I/O goes through ``soundfile`` because ``torchaudio.load`` needs torchcodec and
FFmpeg (see ``shared/ENVIRONMENT.md``); torchaudio is used only for transforms.

Feature defaults follow the speech convention of a 25 ms window and a 10 ms hop:
``n_fft = round(0.025 * sr)`` and ``hop_length = round(0.010 * sr)``, i.e.
400 / 160 at 16 kHz and 200 / 80 at 8 kHz (FSDD). Mel filters use the HTK mel
scale with no area normalisation (torchaudio's defaults, ``mel_scale="htk"``,
``norm=None``); the ``librosa_*`` twins pass ``htk=True, norm=None`` and
``pad_mode="reflect"`` so both libraries compute the same numbers.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .errors import DataError

AMIN = 1e-10  # floor on power before taking dB (torchaudio and librosa default)


def _default_n_fft(sr: int) -> int:
    """25 ms window in samples."""
    return max(16, round(0.025 * sr))


def _default_hop(sr: int) -> int:
    """10 ms hop in samples."""
    return max(1, round(0.010 * sr))


def check_sample_rate(path_or_name: str | Path | None, actual: int, expected: int) -> None:
    """Raise DataError naming the file and both rates when ``actual != expected``."""
    if int(actual) != int(expected):
        raise DataError(
            path_or_name,
            f"sample rate is {actual} Hz, expected {expected} Hz; pass sr={expected} to resample",
        )


def _wav_truncation(path: Path) -> str | None:
    """Describe a RIFF/WAVE file whose data chunk declares more bytes than the file holds, else None."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(4) != b"RIFF":
            return None
        f.read(4)
        if f.read(4) != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                held = size - pos - 8
                if chunk_size in (0, 0xFFFFFFFF) or chunk_size <= held:
                    return None  # streaming writers leave 0 / 0xFFFFFFFF; libsndfile copes
                return f"truncated WAV: data chunk declares {chunk_size} bytes but the file holds {held}"
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _read(path: Path) -> tuple[np.ndarray, int]:
    """Read (T, C) float32 samples and the rate, turning every soundfile failure into DataError."""
    if not path.exists():
        raise DataError(path, "audio file not found")
    if not path.is_file():
        raise DataError(path, "not a file (expected an audio file)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise DataError(path, f"not a readable audio file (soundfile: {exc})") from exc
    problem = _wav_truncation(path)
    if problem is not None:
        raise DataError(path, f"{problem}; the audio file is incomplete")
    if data.shape[0] == 0:
        raise DataError(path, "audio file contains no samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(path, f"audio contains {bad} non-finite samples (NaN or Inf)")
    return data, int(rate)


def load_audio(
    path: str | Path,
    sr: int | None = None,
    mono: bool = True,
    expect_sr: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Read float32 audio as (T,) if ``mono`` (channel mean) else (C, T); resample to ``sr``; raise if rate != ``expect_sr``."""
    path = Path(path)
    data, rate = _read(path)
    if expect_sr is not None:
        check_sample_rate(path, rate, expect_sr)
    wave = torch.from_numpy(data.T.copy())  # (C, T)
    if mono:
        wave = wave.mean(dim=0)
    if sr is not None and int(sr) != rate:
        wave = torchaudio.functional.resample(wave, rate, int(sr))
        rate = int(sr)
    return wave, rate


def pad_or_trim(wave: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Zero-pad at the end or cut the last dimension to exactly ``n_samples``."""
    length = wave.shape[-1]
    if length >= n_samples:
        return wave[..., :n_samples]
    return torch.nn.functional.pad(wave, (0, n_samples - length))


def centre_window(wave: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Centre a clip in a window of ``n_samples``: pad both sides with zeros, or crop the middle."""
    length = wave.shape[-1]
    if length >= n_samples:
        start = (length - n_samples) // 2
        return wave[..., start : start + n_samples]
    left = (n_samples - length) // 2
    return torch.nn.functional.pad(wave, (left, n_samples - length - left))


def pad_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack waves of different lengths into a zero-padded (B, ..., T_max) batch and their lengths (B,)."""
    if len(waves) == 0:
        raise ValueError("pad_batch needs at least one wave")
    lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.long)
    t_max = int(lengths.max())
    return torch.stack([pad_or_trim(w, t_max) for w in waves]), lengths


def _as_float(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return a float32 tensor view of a wave."""
    wave = torch.as_tensor(wave)
    return wave if wave.dtype == torch.float32 else wave.to(torch.float32)


def _check_length(wave: torch.Tensor, n_fft: int) -> None:
    """Reflect padding needs more than n_fft // 2 samples."""
    if wave.shape[-1] <= n_fft // 2:
        raise ValueError(f"wave has {wave.shape[-1]} samples; need more than n_fft // 2 = {n_fft // 2}")


def _melkwargs(sr: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float | None) -> dict:
    """MelSpectrogram settings shared by log-mel and MFCC (power spectrum, HTK mel, no filter norm)."""
    return dict(
        sample_rate=sr,
        n_fft=n_fft,
        win_length=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        f_min=f_min,
        f_max=f_max,
        power=2.0,
        center=True,
        pad_mode="reflect",
        norm=None,
        mel_scale="htk",
    )


@lru_cache(maxsize=32)
def _log_mel_transform(
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    f_min: float,
    f_max: float | None,
    top_db: float | None,
    device: str,
) -> torch.nn.Module:
    """Build (once per setting) MelSpectrogram followed by AmplitudeToDB."""
    return torch.nn.Sequential(
        torchaudio.transforms.MelSpectrogram(**_melkwargs(sr, n_fft, hop_length, n_mels, f_min, f_max)),
        torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db),
    ).to(device)


@lru_cache(maxsize=32)
def _mfcc_transform(
    sr: int,
    n_mfcc: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    f_min: float,
    f_max: float | None,
    device: str,
) -> torch.nn.Module:
    """Build (once per setting) torchaudio's MFCC: dB mel (top_db 80) then orthonormal DCT-II."""
    melkwargs = _melkwargs(sr, n_fft, hop_length, n_mels, f_min, f_max)
    del melkwargs["sample_rate"]
    return torchaudio.transforms.MFCC(
        sample_rate=sr, n_mfcc=n_mfcc, dct_type=2, norm="ortho", log_mels=False, melkwargs=melkwargs
    ).to(device)


def _per_example(transform: torch.nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """Apply a (…, T) -> (…, F, frames) transform so AmplitudeToDB's top_db clamp is per example.

    torchaudio clamps at ``max - top_db`` over the whole batch for 3-D input; feeding
    (N, 1, T) makes it clamp each example on its own, as librosa does per call.
    """
    lead = wave.shape[:-1]
    out = transform(wave.reshape(-1, 1, wave.shape[-1]))
    return out.reshape(*lead, *out.shape[-2:])


def log_mel_spectrogram(
    wave: torch.Tensor,
    sr: int,
    n_fft: int | None = None,
    hop_length: int | None = None,
    n_mels: int = 64,
    f_min: float = 0.0,
    f_max: float | None = None,
    top_db: float | None = 80.0,
) -> torch.Tensor:
    """Log-mel power spectrogram in dB, (..., n_mels, 1 + T // hop); n_fft/hop default to 25 ms / 10 ms."""
    wave = _as_float(wave)
    n_fft = n_fft or _default_n_fft(sr)
    hop_length = hop_length or _default_hop(sr)
    _check_length(wave, n_fft)
    transform = _log_mel_transform(sr, n_fft, hop_length, n_mels, float(f_min), f_max, top_db, str(wave.device))
    return _per_example(transform, wave)


def mfcc(
    wave: torch.Tensor,
    sr: int,
    n_mfcc: int = 13,
    n_mels: int = 40,
    n_fft: int | None = None,
    hop_length: int | None = None,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """MFCCs (..., n_mfcc, frames): orthonormal DCT-II of the dB mel spectrogram (top_db 80, per example)."""
    wave = _as_float(wave)
    n_fft = n_fft or _default_n_fft(sr)
    hop_length = hop_length or _default_hop(sr)
    _check_length(wave, n_fft)
    transform = _mfcc_transform(sr, n_mfcc, n_fft, hop_length, n_mels, float(f_min), f_max, str(wave.device))
    return _per_example(transform, wave)


def _librosa_db_mel(
    y: np.ndarray,
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    f_min: float,
    f_max: float | None,
    top_db: float | None,
) -> np.ndarray:
    """librosa dB mel of one 1-D signal with the settings torchaudio uses (HTK, no norm, reflect pad)."""
    import librosa

    power = librosa.feature.melspectrogram(
        y=y,
        sr=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=n_mels,
        fmin=f_min,
        fmax=f_max,
        htk=True,
        norm=None,
    )
    return librosa.power_to_db(power, ref=1.0, amin=AMIN, top_db=top_db)


def _rows(wave: torch.Tensor | np.ndarray) -> np.ndarray:
    """Wave as a float32 (N, T) array."""
    y = np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave, dtype=np.float32)
    return y.reshape(-1, y.shape[-1])


def librosa_log_mel(
    wave: torch.Tensor | np.ndarray,
    sr: int,
    n_fft: int | None = None,
    hop_length: int | None = None,
    n_mels: int = 64,
    f_min: float = 0.0,
    f_max: float | None = None,
    top_db: float | None = 80.0,
) -> np.ndarray:
    """The same features as ``log_mel_spectrogram``, computed with librosa (for comparison)."""
    n_fft = n_fft or _default_n_fft(sr)
    hop_length = hop_length or _default_hop(sr)
    shape = np.shape(wave)[:-1]
    out = [_librosa_db_mel(y, sr, n_fft, hop_length, n_mels, f_min, f_max, top_db) for y in _rows(wave)]
    return np.stack(out).reshape(*shape, *out[0].shape)


def librosa_mfcc(
    wave: torch.Tensor | np.ndarray,
    sr: int,
    n_mfcc: int = 13,
    n_mels: int = 40,
    n_fft: int | None = None,
    hop_length: int | None = None,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """The same features as ``mfcc``, computed with librosa (mel built here: ``mfcc(norm=...)`` is the DCT norm)."""
    import librosa

    n_fft = n_fft or _default_n_fft(sr)
    hop_length = hop_length or _default_hop(sr)
    shape = np.shape(wave)[:-1]
    out = [
        librosa.feature.mfcc(
            S=_librosa_db_mel(y, sr, n_fft, hop_length, n_mels, f_min, f_max, 80.0),
            n_mfcc=n_mfcc,
            dct_type=2,
            norm="ortho",
            lifter=0,
        )
        for y in _rows(wave)
    ]
    return np.stack(out).reshape(*shape, *out[0].shape)


def add_noise(wave: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise scaled so each example's realised SNR (over the last dim) is exactly ``snr_db``."""
    signal_power = wave.pow(2).mean(dim=-1, keepdim=True)
    if bool((signal_power == 0).any()):
        raise ValueError("wave has zero power (silence); SNR is undefined")
    noise = torch.randn(wave.shape, generator=generator, dtype=wave.dtype, device=wave.device)
    noise_power = noise.pow(2).mean(dim=-1, keepdim=True)
    target = signal_power / (10.0 ** (snr_db / 10.0))
    return wave + noise * torch.sqrt(target / noise_power)


@lru_cache(maxsize=32)
def _masks(freq_mask: int, time_mask: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Frequency and time masking transforms with independent masks per example."""
    return (
        torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True),
        torchaudio.transforms.TimeMasking(time_mask, iid_masks=True),
    )


def spec_augment(
    spec: torch.Tensor,
    freq_mask: int = 8,
    time_mask: int = 16,
    n_masks: int = 1,
    mask_value: float | None = None,
) -> torch.Tensor:
    """SpecAugment on (..., F, frames): ``n_masks`` frequency and time masks per example, filled with the mean by default.

    Masks are drawn from torch's global RNG (seed with ``torch.manual_seed``); widths are
    uniform in [0, freq_mask) / [0, time_mask), capped at the spectrogram's size.
    """
    fill = float(spec.mean()) if mask_value is None else float(mask_value)
    freq, time = _masks(min(freq_mask, spec.shape[-2]), min(time_mask, spec.shape[-1]))
    x = spec.reshape(-1, 1, *spec.shape[-2:])  # 4-D so each example gets its own masks
    for _ in range(n_masks):
        x = time(freq(x, fill), fill)
    return x.reshape(spec.shape)


def cmvn(spec: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each example (..., F, T) to zero mean and unit variance over its frequencies and frames."""
    mean = spec.mean(dim=(-2, -1), keepdim=True)
    std = spec.std(dim=(-2, -1), keepdim=True)
    return (spec - mean) / (std + eps)
