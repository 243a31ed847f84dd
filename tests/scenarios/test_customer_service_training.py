"""The voice scenario's training and evaluation helpers: augmented calls, MiniLM's top layer fine-tuned, the zero-shot
router, features and timing of a live call. Synthetic waves and a stand-in recogniser: no synthesiser needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmhelpers.asr import Recogniser, Transcript, Word
from mmhelpers.encoders import build_text_encoder
from mmhelpers.lm import tiny_llama
from mmhelpers.scenarios.customer_service.data import Call, CallSet
from mmhelpers.scenarios.customer_service.evaluation import latency_summary, time_call
from mmhelpers.scenarios.customer_service.recipe import (
    CallFeatures,
    ConfidenceLate,
    call_features,
    featurise,
    recogniser_cues,
)
from mmhelpers.scenarios.customer_service.requests import INTENTS
from mmhelpers.scenarios.customer_service.training import (
    augmented_calls,
    finetune_text_top,
    text_top_logits,
    zero_shot_intents,
)
from mmhelpers.text import load_tokenizer
from mmhelpers.train import TensorDictDataset, TrainConfig, Trainer


def _calls(n: int = 12, sr: int = 8000) -> CallSet:
    gen = torch.Generator().manual_seed(0)
    splits = ["train"] * (n - 4) + ["val"] * 2 + ["test"] * 2
    calls = [Call(f"request {i}", INTENTS[i % 3], s, f"voice{i % 2}") for i, s in enumerate(splits)]
    waves = [0.3 * torch.sin(2 * torch.pi * (200 + 50 * i) * torch.arange(sr) / sr) + 0.01 * torch.randn(sr, generator=gen)
             for i in range(n)]  # fmt: skip
    return CallSet(calls, waves, sr, INTENTS, "test calls", {"train": ["voice0", "voice1"]})


def test_augmented_calls_copy_the_training_calls_only_and_keep_their_labels():
    calls = _calls()
    copies = augmented_calls(calls, copies=2, seed=1)
    train = calls.index("train")
    assert len(copies) == 2 * len(train) and len(copies.index("train")) == len(copies)
    assert all(c.voice.endswith("+aug") and c.noise in ("white", "pink") for c in copies.calls)
    assert [c.intent for c in copies.calls] == [calls.calls[i].intent for i in train] * 2  # labels kept
    for k, i in enumerate(train):
        new, old = copies.waves[k], calls.waves[i]
        assert new.abs().max() <= 1 and torch.isfinite(new).all()
        assert abs(new.numel() - old.numel()) <= 0.12 * old.numel()  # speed 0.9-1.1
    again = augmented_calls(calls, copies=2, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(again.waves, copies.waves, strict=True))  # deterministic in the seed
    assert not torch.equal(augmented_calls(calls, seed=2).waves[-1], augmented_calls(calls, seed=1).waves[-1])
    few = augmented_calls(calls, limit=3)
    assert len(few) == 3 and "augmented" in few.source
    both = calls.extended(copies)
    assert both.calls == calls.calls + copies.calls and len(both.index("train")) == 3 * len(train)
    assert set(both.voices["train"]) == {"voice0", "voice1", "voice0+aug", "voice1+aug"}
    with pytest.raises(ValueError, match="cannot join"):
        calls.extended(_calls(sr=16000))


def test_top_layer_fine_tuning_learns_the_requests():
    texts = [
        "I want to pay my bill",
        "pay the bill please",
        "settle my bill",
        "my bill needs paying",
        "reset my password",
        "I forgot my password",
        "new password please",
        "password reset",
    ] * 2
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1] * 2)
    encoder = build_text_encoder()
    cfg = TrainConfig(epochs=15, lr=1e-3, batch_size=8, seed=0, progress=False, log_every_epoch=False)
    model = finetune_text_top(texts, labels, 2, cfg, encoder=encoder)
    assert not model.training and model.layer == encoder.model.config.num_hidden_layers - 1
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # one layer of six, and the head
    logits = text_top_logits(model, ["can I pay my bill", "I lost my password"], encoder)
    assert logits.shape == (2, 2) and logits.argmax(1).tolist() == [0, 1]


def test_zero_shot_scores_every_intent_and_calibration_moves_them():
    tokenizer = load_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}[assistant] {% endif %}")  # fmt: skip
    model = tiny_llama(vocab_size=len(tokenizer), seed=0).eval()
    intents = ("pay_bill", "reset_password", "activate_roaming")
    raw = zero_shot_intents(["pay my bill", ""], intents, model, tokenizer, calibrate=False, progress=False)
    cal = zero_shot_intents(["pay my bill", ""], intents, model, tokenizer, calibrate=True, progress=False)
    assert raw.shape == cal.shape == (2, 3)
    shift = raw - cal  # one offset per intent, the same for every request
    assert torch.allclose(shift[0], shift[1]) and shift[0].std() > 0


class _Fixed(Recogniser):
    model_id, settings = "fixed", {}

    def _decode(self, wave16: np.ndarray) -> Transcript:
        return Transcript("pay my bill", [Word("pay", 0, 0.2, 0.9), Word("bill", 0.2, 0.4, 0.4)],
                          states=[float(wave16.std()), 1.0])  # fmt: skip


def test_featurise_uses_the_training_statistics_and_time_call_times_each_step():
    calls = _calls()
    heard = [_Fixed()(w, calls.sr) for w in calls.waves]
    feats = call_features(calls, heard, progress=False)
    assert isinstance(feats, CallFeatures) and feats.state_mean is not None
    train = calls.index("train")
    assert torch.allclose(feats.acoustic[train].mean(0), torch.zeros(2), atol=1e-3)
    new = featurise(heard[:3], feats)
    assert torch.allclose(new.acoustic, feats.acoustic[:3], atol=1e-5)  # the same calls, the same features
    assert torch.allclose(new.asr_text, feats.asr_text[:3], atol=1e-5) and new.true_text is None
    assert new.confidence[0, 0] == pytest.approx(0.6)  # the geometric mean of 0.9 and 0.4
    assert new.cues is not None and torch.allclose(new.cues, feats.cues[:3], atol=1e-5)  # the training statistics
    raw = recogniser_cues([heard[0], Transcript("", skipped="silent")])
    assert raw[0].tolist() == pytest.approx([0.6, 0.0, 0.0, np.log(3.0)]) and raw[1].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="statistics"):
        featurise(heard[:1], CallFeatures(feats.asr_text, feats.acoustic, feats.confidence, None, heard))
    ms, transcript, logits = time_call(calls.waves[0], calls.sr, _Fixed(), lambda f: f.acoustic @ torch.ones(2, 3),
                                       build_text_encoder(), feats)  # fmt: skip
    assert transcript.text == "pay my bill" and logits.shape == (1, 3)
    assert set(ms) == {"recognition", "features", "intent", "total"}
    assert ms["total"] == pytest.approx(ms["recognition"] + ms["features"] + ms["intent"])
    summary = latency_summary([ms, {k: 2 * v for k, v in ms.items()}])
    assert summary["total"]["median"] == pytest.approx(1.5 * ms["total"])


def test_phrasing_study_retrains_the_text_model_on_other_splits():
    """The true-transcript head on two data seeds' requests, requests split at random and whole phrasings held out,
    with the written requests: learned under both protocols (well above chance 1/15) and deterministic."""
    from mmhelpers.scenarios.customer_service.evaluation import PROTOCOLS, phrasing_study
    from mmhelpers.scenarios.customer_service.recipe import ServiceConfig

    cfg = ServiceConfig(seed=0).smoke()
    study = phrasing_study(cfg, per_intent=10, data_seeds=[0, 1])
    assert study["data_seeds"] == [0, 1] and study["per_intent"] == 10 and study["written"] == 10
    for protocol in PROTOCOLS:
        acc = study[protocol]["accuracy"]
        assert len(acc) == 2 and study[protocol]["mean"] == pytest.approx(np.mean(acc))
        assert study[protocol]["mean"] > 5 / 15
    assert phrasing_study(cfg, per_intent=10, data_seeds=[0])["held-out phrasings"]["accuracy"] == [
        study["held-out phrasings"]["accuracy"][0]
    ]


def test_the_text_heads_also_learn_from_the_written_requests():
    """The heads that learn the language from true transcripts train on the written requests too: an intent no
    training call has, taught only by written text, is then predicted; without them it never is."""
    from dataclasses import replace

    from mmhelpers.classify import predict
    from mmhelpers.scenarios.customer_service.recipe import ServiceConfig, train_method

    gen = torch.Generator().manual_seed(0)
    centres = 3 * torch.eye(3, 8)
    labels = torch.tensor([0, 1] * 10)
    x = centres[labels] + 0.3 * torch.randn(20, 8, generator=gen)
    written_labels = torch.full((10,), 2)
    written = centres[written_labels] + 0.3 * torch.randn(10, 8, generator=gen)
    feats = CallFeatures(
        x, torch.zeros(20, 4), torch.ones(20, 1), x, [], written=written, written_labels=written_labels
    )
    cfg = ServiceConfig(seed=0, epochs=30, batch_size=8)
    train = np.arange(20)
    for name, key in (("true transcript", "true_text"), ("recognised transcript", "asr_text")):
        taught = train_method(name, feats, labels, train, cfg, n_classes=3)
        assert predict(taught, {key: centres}).argmax(1).tolist() == [0, 1, 2]
        untaught = train_method(name, replace(feats, written=None, written_labels=None), labels, train, cfg, 3)
        assert 2 not in predict(untaught, {key: centres}).argmax(1).tolist()


def test_a_finished_head_is_loaded_from_the_cache_not_trained_again(monkeypatch):
    """``ServiceConfig.cache`` (the default): a head's finished run is kept in the cache folder, keyed by its
    architecture, its training tensors and its settings. The same head again is loaded (no optimiser step, the
    same logits), other labels or settings train a new run, and ``cache=False`` writes nothing."""
    from dataclasses import replace

    from mmhelpers.classify import predict
    from mmhelpers.paths import cache_root
    from mmhelpers.scenarios.customer_service.recipe import ServiceConfig, method_logits, train_method

    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2] * 8)
    x = 3 * torch.eye(3, 8)[labels] + 0.3 * torch.randn(24, 8, generator=gen)
    feats = CallFeatures(x, torch.randn(24, 4, generator=gen), torch.ones(24, 1), x, [])
    feats.cues = torch.randn(24, 4, generator=gen)  # the recogniser's cues, for the late fusion's gate
    cfg, train = ServiceConfig(seed=0, epochs=4, batch_size=8), np.arange(24)
    runs = lambda: sorted(p.name for p in (cache_root() / "intent_heads").glob("*"))  # noqa: E731
    first = train_method("true transcript", feats, labels, train, cfg, n_classes=3)
    assert len(runs()) == 1
    late = train_method("late + confidence", feats, labels, train, replace(cfg, folds=2), n_classes=3)
    n_runs = len(runs())  # and the late fusion's: its two heads, two per fold, and its weights
    assert n_runs == 1 + 2 + 2 * 2 + 1

    def no_training(*args, **kwargs):
        raise AssertionError("a cached head was trained again")

    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", no_training)
        again = train_method("true transcript", feats, labels, train, cfg, n_classes=3)
        late_again = train_method("late + confidence", feats, labels, train, replace(cfg, folds=2), n_classes=3)
    assert torch.equal(predict(first, {"true_text": x}), predict(again, {"true_text": x}))
    assert torch.equal(
        method_logits("late + confidence", late, feats), method_logits("late + confidence", late_again, feats)
    )
    train_method("true transcript", feats, labels.roll(1), train, cfg, n_classes=3)  # other labels: a new run
    train_method("true transcript", feats, labels, train, replace(cfg, lr=1e-3), n_classes=3)  # other settings
    assert len(runs()) == n_runs + 2
    train_method("true transcript", feats, labels, train, replace(cfg, cache=False, lr=2e-3), n_classes=3)
    assert len(runs()) == n_runs + 2


def test_the_late_fusion_cue_gate_learns_when_to_trust_the_transcript():
    """``late_gate="cues"``. Two heads' logits: the transcript's right when its cue says the recogniser was sure and random when not,
    the sound's right about half the time. Trained through the engine, the gate leans on the transcript on sure
    calls and on the sound on doubtful ones, and the fusion beats both heads; an untrained gate does not."""
    gen = torch.Generator().manual_seed(0)
    n, k = 600, 5
    labels = torch.randint(0, k, (n,), generator=gen)
    sure = torch.rand(n, generator=gen) < 0.5
    onehot = torch.nn.functional.one_hot(labels, k).float()
    text = torch.where(
        sure[:, None], 4 * onehot, 4 * torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=gen), k).float()
    )
    audio_right = torch.rand(n, generator=gen) < 0.5
    audio = torch.where(
        audio_right[:, None],
        2 * onehot,
        2 * torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=gen), k).float(),
    )
    cues = torch.stack([sure.float() * 2 - 1, torch.randn(n, generator=gen), torch.zeros(n), torch.zeros(n)], 1)
    batch = {"asr_text": text, "acoustic": audio, "cues": cues}
    torch.manual_seed(0)
    gate = ConfidenceLate(("asr_text", "acoustic"), "cues")
    untrained = (gate(batch).argmax(1) == labels).float().mean()
    Trainer(gate, TrainConfig(epochs=30, lr=1e-2, batch_size=64, seed=0, progress=False)).fit(
        TensorDictDataset({**batch, "label": labels})
    )
    gate.eval()
    with torch.no_grad():
        w = gate.weights(batch)
        fused = (gate(batch).argmax(1) == labels).float().mean()
    share = w[:, 0] / w.sum(1)  # the transcript's share of the weight
    assert share[sure].mean() > share[~sure].mean() + 0.2
    heads = max((text.argmax(1) == labels).float().mean(), (audio.argmax(1) == labels).float().mean())
    assert fused > heads + 0.05 and fused > untrained + 0.05


def test_the_late_fusion_gate_is_chosen_by_name():
    """The default gate is the committed recipe's MLP of the recogniser's cues; an unknown gate is an error."""
    from mmhelpers.scenarios.customer_service.recipe import ServiceConfig

    assert ServiceConfig().late_gate == "cues"
    assert isinstance(ConfidenceLate(("asr_text", "acoustic")).gate, torch.nn.Linear)
    with pytest.raises(ValueError, match="late_gate"):
        ServiceConfig(late_gate="mlp")
    with pytest.raises(ValueError, match="gate"):
        ConfidenceLate(("asr_text", "acoustic"), "mlp")
