"""A telephone line in a few lines of torchaudio: background noise, 8 kHz, 300-3400 Hz, G.711 mu-law.

``telephone_channel`` does to a clean recording what a call does to a caller's voice, in the order it happens:
noise in the caller's room at a chosen signal-to-noise ratio, then the phone network's narrow band (resampled to
8 kHz and band-limited to about 300-3400 Hz) and its 8-bit mu-law codec (G.711). The noise makers here give the
usual kinds: white (hiss), pink (1/f, like wind or traffic) and babble (other people talking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchaudio.functional as AF

TELEPHONE_SR = 8000
NOISES = ("white", "pink", "babble")


@dataclass(frozen=True)
class Channel:
    """What the line does: output rate, pass band, codec ("mulaw" = G.711, or None) and the noise before it."""

    sr: int = TELEPHONE_SR
    low_hz: float = 300.0
    high_hz: float = 3400.0
    codec: str | None = "mulaw"
    noise: str | None = None  # one of NOISES, or None for a quiet room
    snr_db: float | None = None  # needed when noise is set


def white_noise(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of unit-variance Gaussian noise."""
    return torch.randn(n, generator=generator)


def pink_noise(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of pink (1/f power) noise, unit variance: white noise shaped in the frequency domain."""
    spectrum = torch.fft.rfft(torch.randn(n, generator=generator))
    f = torch.arange(spectrum.numel(), dtype=torch.float32)
    spectrum = spectrum / torch.sqrt(f.clamp(min=1.0))  # power ~ 1/f
    spectrum[0] = 0
    x = torch.fft.irfft(spectrum, n=n)
    return x / x.std().clamp(min=1e-12)


def babble_noise(talkers: Sequence[torch.Tensor], n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of several people talking at once: each clip of ``talkers`` looped from a random start, summed."""
    if not talkers:
        raise ValueError("babble noise needs at least one recording of other talkers")
    out = torch.zeros(n)
    for clip in talkers:
        if clip.numel() == 0:
            continue
        start = int(torch.randint(0, clip.numel(), (1,), generator=generator))
        reps = -(-(n + start) // clip.numel())
        out += clip.float().repeat(reps)[start : start + n] / clip.float().std().clamp(min=1e-12)
    return out / out.std().clamp(min=1e-12)


def mix_at_snr(speech: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``speech`` plus ``noise`` scaled so the speech-to-noise power ratio is exactly ``snr_db`` (torchaudio)."""
    if speech.shape != noise.shape:
        raise ValueError(f"speech {tuple(speech.shape)} and noise {tuple(noise.shape)} differ in shape")
    if float(speech.pow(2).mean()) == 0.0:
        raise ValueError("the speech is silent (zero power): a signal-to-noise ratio is undefined")
    return AF.add_noise(speech[None], noise[None], torch.tensor([float(snr_db)]))[0]


def band_limit(wave: torch.Tensor, sr: int, low_hz: float, high_hz: float) -> torch.Tensor:
    """Keep ``low_hz``-``high_hz``: two cascaded biquad high-passes and low-passes (-24 dB/octave outside the band)."""
    for _ in range(2):
        wave = AF.highpass_biquad(wave, sr, low_hz)
        wave = AF.lowpass_biquad(wave, sr, high_hz)
    return wave


def mulaw(wave: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Through an 8-bit mu-law codec and back (G.711's companding): quiet parts keep detail, loud parts get coarse."""
    peak = wave.abs().max().clamp(min=1e-12)
    scale = max(float(peak), 1.0)  # only ever scale down: the codec's range is [-1, 1]
    coded = AF.mu_law_encoding(wave / scale, channels)
    return AF.mu_law_decoding(coded, channels) * scale


def telephone_channel(
    wave: torch.Tensor,
    sr: int,
    channel: Channel = Channel(),
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A mono clip at ``sr`` as it arrives over the line described by ``channel``: a 1-D tensor at ``channel.sr``.

    Noise of kind ``channel.noise`` is made here (``noise`` may pass a recording to use instead, e.g. babble);
    it is mixed at ``channel.snr_db`` before the line's band limit and codec, as in a noisy room."""
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D clip, got shape {tuple(wave.shape)}")
    if wave.numel() == 0:
        raise ValueError("the clip is empty")
    wave = wave.float()
    if channel.noise is not None or noise is not None:
        if channel.snr_db is None:
            raise ValueError("a noisy channel needs snr_db")
        if noise is None:
            if channel.noise == "white":
                noise = white_noise(wave.numel(), generator)
            elif channel.noise == "pink":
                noise = pink_noise(wave.numel(), generator)
            else:
                raise ValueError(f"noise {channel.noise!r} needs a recording (pass noise=...); made here: white, pink")
        wave = mix_at_snr(wave, noise[: wave.numel()].float(), channel.snr_db)
    if sr != channel.sr:
        wave = AF.resample(wave, sr, channel.sr)
    wave = band_limit(wave, channel.sr, channel.low_hz, min(channel.high_hz, 0.45 * channel.sr))
    if channel.codec == "mulaw":
        wave = mulaw(wave)
    elif channel.codec is not None:
        raise ValueError(f"unknown codec {channel.codec!r}: use 'mulaw' or None")
    return wave
