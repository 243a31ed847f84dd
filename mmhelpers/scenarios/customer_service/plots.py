"""Figures of the voice scenario: spectrograms of calls, accuracy by noise level."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from matplotlib.axes import Axes


def show_spectrogram(ax: Axes, wave: torch.Tensor | np.ndarray, sr: int, title: str = "", top_hz: float = 8000,
                     vmin: float = -80.0) -> None:  # fmt: skip
    """A linear-frequency spectrogram (dB, 25 ms windows) of a mono clip up to ``top_hz`` (0 to Nyquist if less)."""
    w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    n_fft = int(0.025 * sr)
    spec = torch.stft(w, n_fft, hop_length=n_fft // 2, window=torch.hann_window(n_fft), return_complex=True)
    db = 20 * torch.log10(spec.abs().clamp(min=1e-5))
    db = (db - db.max()).numpy()
    top = min(top_hz, sr / 2)
    ax.imshow(db, origin="lower", aspect="auto", vmin=vmin, vmax=0, cmap="magma",
              extent=(0, len(w) / sr, 0, sr / 2))  # fmt: skip
    ax.set_ylim(0, top)
    ax.set_xlabel("seconds")
    ax.set_ylabel("Hz")
    ax.set_title(title, fontsize=10)


def plot_by_snr(ax: Axes, by_snr: Mapping[str, Mapping[str, float]], title: str = "") -> None:
    """Accuracy against SNR, one line per model: ``by_snr[model][snr]`` with snr keys like "0", "5", "quiet"."""
    for model, accs in by_snr.items():
        keys = list(accs)
        ax.plot(range(len(keys)), [accs[k] for k in keys], marker="o", label=model)
        ax.set_xticks(range(len(keys)), [k if k == "quiet" else f"{k} dB" for k in keys])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("signal-to-noise ratio of the call")
    ax.set_ylabel("intent accuracy (unseen voices)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
