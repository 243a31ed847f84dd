"""The voice scenario's acoustic encoder (a log-mel CNN trained from scratch) and its token inputs: the log-mel front
end pads and survives a blip, the pooled embedding ignores however much padding a batch adds, the CNN learns a
toy problem through the engine and its finished run is reloaded rather than retrained; Whisper's frames and the
word tokens reach the cross-attention model standardised and zero-padded. Synthetic waves, no synthesiser."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from mmhelpers.asr import Transcript, Word
from mmhelpers.fusion import real_tokens
from mmhelpers.scenarios.customer_service.acoustic import AcousticConfig, FrameCNN, acoustic_encoder, log_mels
from mmhelpers.scenarios.customer_service.data import Call, CallSet
from mmhelpers.scenarios.customer_service.recipe import METHODS, ServiceConfig, call_features, featurise, run_methods
from mmhelpers.scenarios.customer_service.requests import INTENTS

pytestmark = pytest.mark.usefixtures("one_thread")
SR = 8000


def _sound(kind: int, seconds: float, gen: torch.Generator) -> torch.Tensor:
    """Class 0: a low tone, 1: a high tone, 2: noise bursts; random length, level and phase."""
    t = torch.arange(int(seconds * SR)) / SR
    level = 0.1 + 0.3 * torch.rand(1, generator=gen)
    if kind == 2:
        return level * torch.randn(len(t), generator=gen) * (torch.sin(2 * torch.pi * 3 * t) > 0)
    f = (300.0 if kind == 0 else 1500.0) * (1 + 0.1 * torch.rand(1, generator=gen))
    return level * torch.sin(2 * torch.pi * f * t + 6 * torch.rand(1, generator=gen)) + 0.01 * torch.randn(
        len(t), generator=gen
    )


def _toy_calls(per_class: int = 14) -> CallSet:
    gen = torch.Generator().manual_seed(0)
    calls, waves = [], []
    for k in range(3):
        for j in range(per_class):
            split = "test" if j < 3 else "val" if j < 5 else "train"
            calls.append(Call(f"request {k}", INTENTS[k], split, f"voice{j % 4}"))
            waves.append(_sound(k, 0.6 + 0.8 * float(torch.rand(1, generator=gen)), gen))
    return CallSet(calls, waves, SR, INTENTS[:3], "toy calls", {})


def test_log_mels_pad_with_zeros_and_take_a_blip():
    waves = [torch.randn(SR), torch.randn(SR // 2), torch.randn(50)]  # the last is shorter than one 25 ms window
    spec, lengths = log_mels(waves, SR, n_mels=40)
    assert spec.shape == (3, 40, int(lengths.max())) and lengths[0] > lengths[1] > lengths[2] >= 1
    assert not spec[1, :, lengths[1] :].any() and torch.isfinite(spec).all()
    assert spec[0].mean().abs() < 1e-4 and (spec[0].std() - 1).abs() < 1e-2  # each call normalised on its own


def test_pooled_embedding_ignores_how_much_padding_the_batch_adds():
    torch.manual_seed(0)
    model = FrameCNN(AcousticConfig(channels=8), n_classes=3).eval()
    spec = torch.randn(1, 40, 57)
    short = torch.nn.functional.pad(spec, (0, 40))  # padded as in a batch whose longest call is 97 frames
    long = torch.nn.functional.pad(spec, (0, 300))  # ... or 357 frames
    with torch.no_grad():
        a = model.embed(torch.cat([short, torch.randn(1, 40, 97)]), torch.tensor([57, 97]))[0][:1]
        b = model.embed(torch.cat([long, torch.randn(1, 40, 357)]), torch.tensor([57, 357]))[0][:1]
        frames, mask = model.frames(long, torch.tensor([57]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert mask.sum() == 57 // 8 and mask.shape[1] == frames.shape[1]


def test_the_cnn_learns_through_the_engine_and_its_finished_run_is_reloaded():
    calls = _toy_calls()
    cfg = AcousticConfig(channels=8, dim=32, epochs=12, patience=12, batch_size=8)
    enc = acoustic_encoder(calls, cfg, progress=False)
    test = calls.index("test")
    logits = enc.logits([calls.waves[i] for i in test])
    assert (logits.argmax(1) == calls.labels[test]).float().mean() >= 0.8  # chance 1/3
    assert enc.history.epochs >= 1 and enc.embed(calls.waves[:2]).shape == (2, 32)
    again = acoustic_encoder(calls, cfg, progress=False)  # the same data and settings: loaded, not trained
    torch.testing.assert_close(again.logits([calls.waves[i] for i in test]), logits)
    assert again.history.train_loss == enc.history.train_loss
    other = acoustic_encoder(calls, AcousticConfig(channels=8, dim=32, epochs=1, batch_size=8), progress=False)
    assert other.history.epochs == 1  # other settings: another run, not the cached one
    with pytest.raises(ValueError, match="no training calls"):
        acoustic_encoder(CallSet(calls.calls[:3], calls.waves[:3], SR, INTENTS[:3], "only test calls"), cfg)


def _framed(text: str, n_frames: int, value: float) -> Transcript:
    """A transcript with encoder frames (as SpeechRecogniser(frames=k) writes them), 4-wide."""
    f = np.full((n_frames, 4), value, dtype="<f2") + np.arange(4, dtype="<f2")
    words = [Word(w, 0.2 * i, 0.2 * i + 0.1, 0.9) for i, w in enumerate(text.split())]
    return Transcript(text, words, states=[value] * 4, frames=base64.b64encode(f.tobytes()).decode())


def test_frames_and_word_tokens_reach_the_cross_attention_standardised_and_padded():
    calls = _toy_calls(per_class=8)
    heard = [_framed(["pay my bill", "reset it", "noise"][c.label], 3 + i % 5, float(c.label))
             for i, c in enumerate(calls.calls)]  # fmt: skip
    feats = call_features(calls, heard, progress=False)
    train = calls.index("train")
    n_real = real_tokens(feats.frames).sum(1)
    assert feats.frames.shape == (len(calls), 7, 4) and n_real.tolist() == [3 + i % 5 for i in range(len(calls))]
    real = feats.frames[train][real_tokens(feats.frames[train])]
    assert torch.allclose(real.mean(0), torch.zeros(4), atol=1e-4)  # standardised with the training frames
    assert feats.words.shape[0] == len(calls) and feats.words.shape[2] == 384 and feats.cnn is None
    live = featurise(heard[:2], feats)
    torch.testing.assert_close(live.frames, feats.frames[:2, : live.frames.shape[1]])  # a live call: the same tokens
    cfg = ServiceConfig(epochs=15, folds=2)
    out = run_methods(calls, feats, cfg, methods=("cross-attention", "audio (log-mel CNN)"), progress=False)
    assert set(out["results"]) == {"cross-attention"}  # no acoustic encoder given: no CNN model
    assert out["results"]["cross-attention"]["accuracy"] == 1.0  # the words say it, the frames too
    fusion = out["models"]["cross-attention"].fusion
    assert fusion.mask_zero_tokens and METHODS["cross-attention"][0] == "cross_attention"
