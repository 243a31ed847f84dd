"""The acoustic encoder trained here: the core's log-mel CNN learns intents from the sound of the calls alone.

    encoder = acoustic_encoder(calls)       # trained through the engine on the training voices, cached
    pooled = encoder.embed(calls.waves)     # (N, dim) per call: the input of the "audio (log-mel CNN)" head

The input is a log-mel spectrogram at the line's 8 kHz (25 ms windows, 10 ms hop, 40 bands up to 4 kHz), each
call normalised on its own (CMVN: a loud and a quiet line look alike), zero-padded to the longest call. The CNN
(``mmhelpers.encoders.AudioCNN``: three conv blocks, each halving time and frequency) gives a feature map; its
frequency average is one *frame token* per 8 spectrogram frames, and the mean and max over a call's real frames
(never its padding) give the pooled embedding. Trained with SpecAugment, with early stopping on the validation
voices. The finished run is kept under the cache folder, keyed by the training data, the settings and the
architecture, so the next notebook reloads it instead of training again.

Trained from scratch on a few hundred calls it is the baseline that shows what a pretrained speech encoder buys:
the same intents from Whisper's encoder states (``recipe.METHODS["audio"]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from mmhelpers.audio import cmvn, log_mel_spectrogram, spec_augment
from mmhelpers.encoders import AudioCNN
from mmhelpers.features import fingerprint
from mmhelpers.fusion import pool_tokens
from mmhelpers.paths import cache_root
from mmhelpers.train import History, TensorDictDataset, TrainConfig, Trainer

from .data import CallSet

VERSION = 1  # bump when the spectrogram or the model changes what a cached run means


@dataclass(frozen=True)
class AcousticConfig:
    """The log-mel front end and the CNN, and how it trains."""

    n_mels: int = 40
    channels: int = 16
    n_blocks: int = 3  # each halves time and frequency: one frame token per 2**n_blocks spectrogram frames
    dim: int = 128
    dropout: float = 0.3
    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 32
    weight_decay: float = 1e-2
    patience: int = 10  # epochs without a better validation accuracy before stopping
    seed: int = 0
    device: str = "auto"

    def smoke(self) -> AcousticConfig:
        return replace(self, epochs=6, patience=3)


def log_mels(waves: Sequence[torch.Tensor], sr: int, n_mels: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """CMVN'd log-mel spectrograms (N, n_mels, T) zero-padded to the longest call, and each call's frame count (N,).

    A call shorter than one 25 ms window is padded with silence to one window (it gives one frame)."""
    n_fft = round(0.025 * sr)
    specs = []
    for w in waves:
        w = torch.as_tensor(w, dtype=torch.float32).reshape(-1)
        if w.numel() < n_fft:
            w = torch.nn.functional.pad(w, (0, n_fft - w.numel()))
        specs.append(cmvn(log_mel_spectrogram(w, sr, n_mels=n_mels, f_max=sr / 2)))  # (n_mels, T_i)
    lengths = torch.tensor([s.shape[-1] for s in specs], dtype=torch.long)
    out = torch.zeros(len(specs), n_mels, int(lengths.max()) if specs else 0)
    for i, s in enumerate(specs):
        out[i, :, : s.shape[-1]] = s
    return out, lengths


class FrameCNN(nn.Module):
    """``AudioCNN`` over padded spectrograms: frame tokens (B, T', C), a pooled embedding over the real frames only,
    and intent logits. ``forward(batch)`` reads ``batch["spec"]`` and ``batch["length"]`` (the engine's call)."""

    def __init__(self, cfg: AcousticConfig, n_classes: int):
        super().__init__()
        self.cnn = AudioCNN(n_mels=cfg.n_mels, dim=cfg.dim, n_classes=n_classes, channels=cfg.channels,
                            dropout=cfg.dropout, n_blocks=cfg.n_blocks)  # fmt: skip
        self.stride = 2**cfg.n_blocks
        self.token_dim = self.cnn.token_dim

    def frames(self, spec: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) padded, (B,) -> frame tokens (B, T', C) and their mask (B, T') True = a real frame."""
        longest = int(lengths.max())
        spec = spec[..., : max(longest, self.stride)]  # the batch's own padding only
        if spec.shape[-1] < self.stride:
            spec = torch.nn.functional.pad(spec, (0, self.stride - spec.shape[-1]))
        h = self.cnn.feature_map(spec).mean(dim=2).transpose(1, 2)  # (B, T', C) frequency averaged
        n = (lengths.to(h.device) // self.stride).clamp(1, h.shape[1])
        mask = torch.arange(h.shape[1], device=h.device)[None] < n[:, None]
        return h, mask

    def embed(self, spec: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled embedding (B, dim) from the mean and max over real frames; also the frames and their mask."""
        h, mask = self.frames(spec, lengths)
        mean = pool_tokens(h, mask)
        top = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return self.cnn.proj(torch.cat([mean, top], dim=-1)), h, mask

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.cnn.head(self.embed(batch["spec"], batch["length"])[0])


@dataclass
class AcousticEncoder:
    """A trained ``FrameCNN``; ``embed(waves)`` gives any calls' pooled embeddings, ``logits(waves)`` its intents."""

    model: FrameCNN
    cfg: AcousticConfig
    sr: int
    history: History | None = None

    @torch.inference_mode()
    def embed(self, waves: Sequence[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
        """Pooled embeddings (N, dim): the mean and max of the CNN's frames over each call's real frames."""
        spec, lengths = log_mels(waves, self.sr, self.cfg.n_mels)
        self.model.eval()
        device = next(self.model.parameters()).device
        out = [self.model.embed(spec[i : i + batch_size].to(device), lengths[i : i + batch_size])[0].float().cpu()
               for i in range(0, len(spec), batch_size)]  # fmt: skip
        return torch.cat(out) if out else torch.empty(0, self.cfg.dim)

    @torch.inference_mode()
    def logits(self, waves: Sequence[torch.Tensor]) -> torch.Tensor:
        """Intent logits (N, K) of the CNN's own head."""
        z = self.embed(waves)
        return self.model.cnn.head(z.to(next(self.model.parameters()).device)).float().cpu()


def acoustic_encoder(calls: CallSet, cfg: AcousticConfig | None = None, progress: bool = True,
                     cache: bool = True) -> AcousticEncoder:  # fmt: skip
    """Train the log-mel CNN on ``calls``' training split to tell the intents apart by sound (SpecAugment, early
    stopping on the validation split when it has calls); with ``cache``, a finished run with the same data,
    settings and architecture is loaded instead."""
    cfg = cfg or AcousticConfig()
    spec, lengths = log_mels(calls.waves, calls.sr, cfg.n_mels)
    labels = calls.labels
    train, val = calls.index("train"), calls.index("val")
    if len(train) == 0:
        raise ValueError(f"{calls.source}: no training calls to train the acoustic encoder on")
    data = TensorDictDataset({"spec": spec[train], "length": lengths[train], "label": labels[train]},
                             transform=lambda b: {**b, "spec": spec_augment(b["spec"], 6, 20, mask_value=0.0)})  # fmt: skip
    val_data = None
    if len(val):
        val_data = TensorDictDataset({"spec": spec[val], "length": lengths[val], "label": labels[val]})
    run_dir = None
    if cache:
        key = fingerprint({"version": VERSION, "sr": calls.sr, "config": {k: v for k, v in asdict(cfg).items()
                           if k != "device"}, "train": data.tensors, "val": None if val_data is None
                           else val_data.tensors, "classes": len(calls.intents)})  # fmt: skip
        run_dir = str(cache_root() / "acoustic_cnn" / key)
    torch.manual_seed(cfg.seed)
    model = FrameCNN(cfg, len(calls.intents))
    tc = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                     seed=cfg.seed, device=cfg.device, progress=progress, log_every_epoch=False,
                     early_stopping_patience=cfg.patience if val_data is not None else None,
                     checkpoint_dir=run_dir, resume="latest" if run_dir else None)  # fmt: skip
    history = Trainer(model, tc).fit(data, val_data)
    return AcousticEncoder(model.eval().cpu(), cfg, calls.sr, history)
