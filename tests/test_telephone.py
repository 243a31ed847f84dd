"""The telephone line: 8 kHz, energy outside 300-3400 Hz removed, mu-law coarse but faithful, noise at the SNR
asked for, babble made of other talkers, and clear errors for silence, empty and stereo input."""

from __future__ import annotations

import math

import pytest
import torch

from mmhelpers.telephone import (
    Channel,
    babble_noise,
    band_limit,
    mix_at_snr,
    mulaw,
    pink_noise,
    telephone_channel,
    white_noise,
)


def tone(freq: float, sr: int = 16000, seconds: float = 1.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return amp * torch.sin(2 * math.pi * freq * t)


def power(x: torch.Tensor) -> float:
    return float(x.pow(2).mean())


def test_band_limit_keeps_speech_band_and_cuts_outside():
    sr = 16000
    inside = band_limit(tone(1000), sr, 300, 3400)
    assert 0.7 < power(inside[2000:]) / power(tone(1000)[2000:]) < 1.3
    for f in (60, 6000):  # mains hum and the top of wideband speech
        assert power(band_limit(tone(f), sr, 300, 3400)[2000:]) < 0.02 * power(tone(f))


def test_channel_output_rate_and_length():
    out = telephone_channel(tone(800, sr=22050, seconds=2.0), 22050)
    assert out.ndim == 1 and abs(out.numel() - 16000) <= 1  # 2 s at 8 kHz


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_mix_at_snr_is_exact(snr: float):
    speech, noise = tone(500), white_noise(16000, torch.Generator().manual_seed(0))
    mixed = mix_at_snr(speech, noise, snr)
    realised = 10 * math.log10(power(speech) / power(mixed - speech))
    assert realised == pytest.approx(snr, abs=1e-3)


def test_noisier_line_is_further_from_the_clean_line():
    clean = telephone_channel(tone(700), 16000)
    errs = []
    for snr in (20.0, 10.0, 0.0):
        noisy = telephone_channel(
            tone(700), 16000, Channel(noise="pink", snr_db=snr), generator=torch.Generator().manual_seed(1)
        )
        errs.append(power(noisy - clean))
    assert errs[0] < errs[1] < errs[2]


def test_mulaw_is_coarse_but_faithful():
    x = tone(440, amp=0.3)
    y = mulaw(x)
    assert not torch.equal(x, y)  # quantised
    assert power(y - x) < 1e-3 * power(x) * 10  # SNR of the codec above 30 dB on a loud tone
    assert len(torch.unique(y)) <= 256


def test_pink_noise_has_more_low_than_high_frequency_power():
    x = pink_noise(32000, torch.Generator().manual_seed(0))
    spec = torch.fft.rfft(x).abs().pow(2)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(spec[100:1000].mean()) > 5 * float(spec[10000:15000].mean())


def test_babble_is_made_of_the_talkers_and_normalised():
    g = torch.Generator().manual_seed(0)
    talkers = [tone(300), tone(900, seconds=0.3)]
    b = babble_noise(talkers, 20000, g)
    assert b.numel() == 20000 and float(b.std()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="at least one recording"):
        babble_noise([], 100)


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(torch.zeros(100), torch.randn(100), 10.0)
    with pytest.raises(ValueError, match="empty"):
        telephone_channel(torch.zeros(0), 16000)
    with pytest.raises(ValueError, match="mono"):
        telephone_channel(torch.zeros(2, 100), 16000)
    with pytest.raises(ValueError, match="snr_db"):
        telephone_channel(tone(500), 16000, Channel(noise="white"))
    with pytest.raises(ValueError, match="needs a recording"):
        telephone_channel(tone(500), 16000, Channel(noise="babble", snr_db=5.0))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_length_and_pitch_together(factor: float):
    from mmhelpers.augment import speed_perturb

    sr = 8000
    t = torch.arange(sr) / sr
    tone = torch.sin(2 * torch.pi * 500 * t)
    out = speed_perturb(tone, sr, factor)
    assert abs(out.numel() - sr / factor) <= 2  # faster = shorter
    peak = torch.fft.rfft(out).abs().argmax().item() * sr / out.numel()
    assert peak == pytest.approx(500 * factor, rel=0.02)  # and higher
    with pytest.raises(ValueError, match="positive"):
        speed_perturb(tone, sr, 0)
