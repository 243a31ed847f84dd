"""Intent from a call: what was said, how it sounded, and the two fused.

The recipe, each step a notebook cell:

    transcripts = recognise(calls)                 # Whisper tiny.en, cached: text, word confidences, encoder states
    feats = call_features(calls, transcripts)      # MiniLM of the true and the recognised transcript, acoustic states
    results = run_methods(calls, feats, cfg)       # every model of METHODS, trained through the engine, by SNR

Models (``METHODS``): the **true transcript** (the upper bound: a perfect recogniser), the **recognised
transcript**, **audio** alone (Whisper's encoder states pooled over the call: how it sounded, with no decoding),
and fusions of the recognised transcript with the audio: **early** (concatenated, with the recogniser's
confidence), **late** (the two unimodal heads' log-probabilities, learned weights fit on out-of-fold logits),
**late + confidence** (the same with weights that follow the recogniser's cues call by call: its confidence,
mean log-probability, no-speech probability and word count through a small MLP; ``late_gate="confidence"``, a
linear map of the confidence alone), **gated**
(a Gated Multimodal Unit whose gates also see the confidence) and **cross-attention** (the transcript's MiniLM word
tokens attend to Whisper's encoder frames, 200 ms each, and the frames to the words; padding masked). With an
acoustic encoder trained here (``acoustic.acoustic_encoder``: a log-mel CNN from scratch) there is also **audio
(log-mel CNN)**. Heads train on the training voices' calls, at every noise level (``training.with_augmented``
adds augmented copies). A finished head is kept in the cache folder, keyed by its architecture, its training
tensors and its settings (``ServiceConfig.cache``): notebooks 04 and 05 load the heads notebook 03 trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmhelpers.asr import SpeechRecogniser, Transcript, frames_tensor, states_matrix, transcribe, word_error_rate
from mmhelpers.classify import fusion_classifier, predict, text_features, train_classifier
from mmhelpers.encoders import TextEncoder, build_text_encoder
from mmhelpers.features import fingerprint
from mmhelpers.fusion import real_tokens
from mmhelpers.metrics import accuracy, macro_f1
from mmhelpers.paths import cache_root
from mmhelpers.train import TensorDictDataset, TrainConfig, Trainer

from .acoustic import AcousticEncoder
from .data import CallSet, written_requests

TEXT_ONLY = ("true transcript", "recognised transcript")
# name -> (fusion method, inputs); "late" fuses the two unimodal heads' logits
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "true transcript": ("concat", ("true_text",)),
    "recognised transcript": ("concat", ("asr_text",)),
    "audio": ("concat", ("acoustic",)),
    "early": ("concat", ("asr_text", "acoustic", "confidence")),
    "late": ("late_learned", ("asr_text", "acoustic")),
    "late + confidence": ("late_confidence", ("asr_text", "acoustic")),
    "gated": ("gated", ("asr_text", "acoustic", "confidence")),
    # the recognised transcript's word tokens attending to Whisper's 200 ms frames, and the frames to the words
    "cross-attention": ("cross_attention", ("words", "frames")),
    # with the acoustic encoder trained here (acoustic.py): the log-mel CNN's pooled embedding
    "audio (log-mel CNN)": ("concat", ("cnn",)),
}
UNIMODAL = ("recognised transcript", "audio")
FUSIONS = ("early", "late", "late + confidence", "gated", "cross-attention")
TOKEN_FUSIONS = ("cross_attention", "transformer")  # zero-padded token inputs: built with mask_zero_tokens


LATE_GATES = ("confidence", "cues")


@dataclass(frozen=True)
class ServiceConfig:
    """Heads over frozen features, trained through the engine."""

    seed: int = 0
    device: str = "auto"
    epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-2
    hidden_dim: int = 256
    d_model: int = 128
    dropout: float = 0.1
    folds: int = 5  # out-of-fold logits for the late fusion's weights
    # "late + confidence"'s gate: "cues" (a small MLP of four recogniser cues, ``recogniser_cues``: the committed
    # results) or "confidence" (a linear map of the confidence alone: below the audio model at 0 dB; README)
    late_gate: str = "cues"
    cache: bool = True  # keep finished heads under the cache folder: the next notebook loads them, not trains again

    def __post_init__(self) -> None:
        if self.late_gate not in LATE_GATES:
            raise ValueError(f"late_gate must be one of {LATE_GATES}, got {self.late_gate!r}")

    def smoke(self) -> ServiceConfig:
        return replace(self, epochs=25, folds=3)

    def train_config(self, progress: bool = False, run: Mapping[str, Any] | None = None) -> TrainConfig:
        """The engine's settings; with ``run`` (what identifies the head: its model and training tensors) and
        ``cache``, the run's checkpoint lives in a folder keyed by it and these settings, and a finished run there
        is loaded instead of trained again (the engine checks the checkpoint is this run's)."""
        run_dir = None
        if run is not None and self.cache:
            settings = {k: v for k, v in asdict(self).items() if k not in ("device", "cache")}
            run_dir = str(cache_root() / "intent_heads" / fingerprint({"version": HEADS_VERSION, **run,
                                                                        "settings": settings}))  # fmt: skip
        # a head trains in seconds: one checkpoint, at the end (``checkpoint_every=0``)
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, weight_decay=self.weight_decay,
                           seed=self.seed, device=self.device, progress=progress, log_every_epoch=False,
                           checkpoint_dir=run_dir, resume="latest" if run_dir else None, checkpoint_every=0)  # fmt: skip


HEADS_VERSION = 1  # bump when a head's training changes in a way its inputs and settings do not show


def head_run(model: nn.Module, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> dict[str, Any]:
    """What identifies a head's training run for the cache: its architecture and its training tensors."""
    return {"model": repr(model), "inputs": dict(inputs), "labels": labels}


@dataclass
class CallFeatures:
    """Per-call inputs of the models, each (N, D); ``true_text`` is None for calls without transcripts."""

    asr_text: torch.Tensor
    acoustic: torch.Tensor
    confidence: torch.Tensor  # (N, 1) the recogniser's word-probability geometric mean, 0 for nothing heard
    true_text: torch.Tensor | None
    transcripts: list[Transcript]
    state_mean: torch.Tensor | None = None  # the training calls' acoustic statistics, for new calls (``featurise``)
    state_std: torch.Tensor | None = None
    words: torch.Tensor | None = None  # (N, T, 384) MiniLM token states of the recognised transcript, zero-padded
    frames: torch.Tensor | None = None  # (N, T', 384) Whisper's 200 ms frames, standardised, zero-padded
    frame_mean: torch.Tensor | None = None  # the training calls' frame statistics
    frame_std: torch.Tensor | None = None
    cnn: torch.Tensor | None = None  # (N, dim) the log-mel CNN's pooled embedding, when an acoustic encoder is given
    written: torch.Tensor | None = None  # (M, 384) MiniLM of more written training requests (``written_requests``)
    written_labels: torch.Tensor | None = None  # (M,) their intents
    cues: torch.Tensor | None = None  # (N, 4) the recogniser's cues (``recogniser_cues``), standardised
    cue_mean: torch.Tensor | None = None  # the training calls' cue statistics
    cue_std: torch.Tensor | None = None

    def has(self, names: Sequence[str]) -> bool:
        """Whether every input of ``names`` is there."""
        return all(getattr(self, n) is not None for n in names)

    def inputs(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        out = {}
        for n in names:
            x = getattr(self, n)
            if x is None:
                why = "your folder has no transcript column" if n == "true_text" else "make them with call_features"
                raise ValueError(f"these calls have no {n.replace('_', ' ')} ({why})")
            out[n] = x
        return out


FRAMES = 10  # Whisper encoder frames (20 ms) averaged into one audio token: 200 ms, for the cross-attention


def call_recogniser(**kw: Any) -> SpeechRecogniser:
    """Whisper tiny.en as this scenario runs it: transcripts, word confidences, pooled states and 200 ms frames."""
    return SpeechRecogniser(frames=FRAMES, **kw)


def recognise(calls: CallSet, recogniser: SpeechRecogniser | None = None, progress: bool = True) -> list[Transcript]:
    """Whisper's transcript of every call (cached by the audio, the model and its settings)."""
    return transcribe(calls.waves, calls.sr, recogniser or call_recogniser(), progress=progress)


def recogniser_cues(transcripts: Sequence[Transcript]) -> torch.Tensor:
    """How far to trust each transcript, (N, 4): the word confidence, the decoder's mean token log-probability,
    its no-speech probability and log(1 + words). In noise Whisper invents fluent words with fair confidence;
    together the four tell those calls apart better than the confidence alone."""
    rows = [[t.confidence, t.avg_logprob, t.no_speech_prob, math.log1p(len(t.words))] for t in transcripts]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 4)


WRITTEN = 10  # requests written anew from each training request's phrasing, text only, for the text heads


def call_features(calls: CallSet, transcripts: Sequence[Transcript], progress: bool = True,
                  acoustic: AcousticEncoder | None = None, written: int = WRITTEN) -> CallFeatures:  # fmt: skip
    """MiniLM sentence embeddings of the recognised (and, when known, true) transcripts; Whisper's encoder states
    standardised with the training calls' mean and spread; the recogniser's confidence. When the transcripts have
    encoder frames (``call_recogniser``), also the frames, standardised with the training calls' statistics, and
    the recognised transcripts' MiniLM word tokens (not cached: seconds). With an ``acoustic`` encoder
    (``acoustic.acoustic_encoder``), its pooled embedding of every call. ``written`` more requests are written from
    each training request's phrasing (generated calls only, ``data.written_requests``): text the heads that learn
    the language from true transcripts train on too."""
    if len(transcripts) != len(calls):
        raise ValueError(f"{len(transcripts)} transcripts for {len(calls)} calls")
    asr = text_features([t.text for t in transcripts], progress=progress)
    has_text = all(c.text for c in calls.calls)
    true = text_features(calls.texts, progress=progress) if has_text else None
    states = states_matrix(transcripts)
    train = torch.as_tensor(calls.index("train"))
    mean, std = states[train].mean(0), states[train].std(0) + 1e-5
    conf = torch.tensor([[t.confidence] for t in transcripts], dtype=torch.float32)
    feats = CallFeatures(asr, (states - mean) / std, conf, true, list(transcripts), mean, std)
    cues = recogniser_cues(transcripts)
    feats.cue_mean, feats.cue_std = cues[train].mean(0), cues[train].std(0) + 1e-5
    feats.cues = (cues - feats.cue_mean) / feats.cue_std
    if any(t.frames for t in transcripts):
        frames = frames_tensor(transcripts)
        real = real_tokens(frames)
        feats.frame_mean = frames[train][real[train]].mean(0)
        feats.frame_std = frames[train][real[train]].std(0) + 1e-5
        feats.frames = (frames - feats.frame_mean) / feats.frame_std * real.unsqueeze(-1)  # padding stays exactly 0
        feats.words = build_text_encoder().encode_tokens([t.text for t in transcripts], progress=progress)
    if acoustic is not None:
        feats.cnn = acoustic.embed(calls.waves)
    extra = written_requests(calls, written)
    if extra:
        feats.written = text_features([t for t, _ in extra], progress=progress)
        feats.written_labels = torch.tensor([calls.intents.index(i) for _, i in extra], dtype=torch.long)
    return feats


def featurise(transcripts: Sequence[Transcript], ref: CallFeatures, encoder: TextEncoder | None = None,
              acoustic: AcousticEncoder | None = None, waves: Sequence[torch.Tensor] | None = None) -> CallFeatures:  # fmt: skip
    """Features of new calls as ``ref``'s were made (its acoustic statistics), with no cache: what a live call gets.
    Frames and word tokens come when ``ref`` has them; the CNN's embedding with the ``acoustic`` encoder and the
    calls' ``waves``."""
    encoder = encoder or build_text_encoder()
    if ref.state_mean is None or ref.state_std is None:
        raise ValueError("ref has no acoustic statistics: make it with call_features")
    asr = encoder.encode([t.text for t in transcripts], batch_size=max(len(transcripts), 1))
    states = (states_matrix(transcripts) - ref.state_mean) / ref.state_std
    conf = torch.tensor([[t.confidence] for t in transcripts], dtype=torch.float32)
    feats = CallFeatures(asr, states, conf, None, list(transcripts), ref.state_mean, ref.state_std)
    if ref.cue_mean is not None and ref.cue_std is not None:
        feats.cues = (recogniser_cues(transcripts) - ref.cue_mean) / ref.cue_std
        feats.cue_mean, feats.cue_std = ref.cue_mean, ref.cue_std
    if ref.frame_mean is not None and any(t.frames for t in transcripts):
        frames = frames_tensor(transcripts)
        feats.frames = (frames - ref.frame_mean) / ref.frame_std * real_tokens(frames).unsqueeze(-1)
        feats.frame_mean, feats.frame_std = ref.frame_mean, ref.frame_std
        feats.words = encoder.encode_tokens([t.text for t in transcripts])
    if acoustic is not None:
        if waves is None or len(waves) != len(transcripts):
            raise ValueError("the acoustic encoder needs the calls' waves, one per transcript")
        feats.cnn = acoustic.embed(waves)
    return feats


def train_method(name: str, feats: CallFeatures, labels: torch.Tensor, train: np.ndarray, cfg: ServiceConfig,
                 n_classes: int, progress: bool = False, groups: Sequence[str] | None = None,
                 memo: dict | None = None) -> Any:  # fmt: skip
    """One model of METHODS trained on the ``train`` calls; ``late`` trains the two unimodal heads, and fits its
    weights on their out-of-fold logits, the folds split by ``groups`` (the calls' voices) when given. ``memo``
    (a dict kept across calls on the same calls and settings) lets the two late fusions share those heads."""
    method, names = METHODS[name]
    idx = torch.as_tensor(train)
    if method.startswith("late"):
        key = ("stacked", names)
        if memo is None or key not in memo:
            unimodal = dict(zip(names, ("recognised transcript", "audio"), strict=True))
            parts = {n: train_method(u, feats, labels, train, cfg, n_classes) for n, u in unimodal.items()}
            # the fusion weights are fit on out-of-fold logits (stacking): a head's logits on its own training calls
            # are overconfident (the audio head's nearly perfect), and weights fit on them trust it far too much
            oof = {n: torch.zeros(len(train), n_classes) for n in names}
            for fit, held in _folds(groups, train, cfg.folds, cfg.seed):
                for n, u in unimodal.items():
                    oof[n][held] = predict(train_method(u, feats, labels, train[fit], cfg, n_classes),
                                           {n: feats.inputs([n])[n][train[held]]})  # fmt: skip
            if memo is not None:
                memo[key] = (parts, oof)
        parts, oof = memo[key] if memo is not None else (parts, oof)
        torch.manual_seed(cfg.seed)
        if method == "late_confidence":
            model = ConfidenceLate(names, cfg.late_gate)
            data = TensorDictDataset({**oof, **model.gate_inputs(feats, idx), "label": labels[idx]})
            Trainer(model, cfg.train_config(progress, head_run(model, data.tensors, labels[idx]))).fit(data)
            return _Late(parts, model.eval())
        model = fusion_classifier(method, oof, n_classes)
        train_classifier(model, oof, labels[idx], cfg.train_config(progress, head_run(model, oof, labels[idx])))
        return _Late(parts, model)
    inputs = feats.inputs(names)
    torch.manual_seed(cfg.seed)  # the same initial weights whatever ran before
    extra = {"mask_zero_tokens": True} if method in TOKEN_FUSIONS else {}
    model = fusion_classifier(method, inputs, n_classes, d_model=cfg.d_model, hidden_dim=cfg.hidden_dim,
                              dropout=cfg.dropout, **extra)  # fmt: skip
    train_inputs, train_labels = {n: x[idx] for n, x in inputs.items()}, labels[idx]
    if name == "recognised transcript" and feats.true_text is not None:
        # learn the language from what was said, then read what was heard: on the full generated set this beat
        # training on the recognised transcripts (38% against 32%: espeak's calls were mostly misheard in training)
        train_inputs = {"asr_text": feats.true_text[idx]}
    if name in TEXT_ONLY and feats.written is not None and feats.true_text is not None:
        # and from the requests written anew from the training phrasings (text only)
        (n,) = names
        train_inputs = {n: torch.cat([train_inputs[n], feats.written])}
        train_labels = torch.cat([train_labels, feats.written_labels])
    train_classifier(model, train_inputs, train_labels,
                     cfg.train_config(progress, head_run(model, train_inputs, train_labels)))  # fmt: skip
    return model


def _folds(groups: Sequence[str] | None, train: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (fit, held-out) splits of positions into ``train``: whole groups held out when there are enough."""
    from sklearn.model_selection import GroupKFold, KFold

    k = max(2, min(k, len(train)))  # a tiny folder still gets two folds
    if groups is not None and len(set(groups)) >= k:
        return list(GroupKFold(k).split(train, groups=list(groups)))
    return list(KFold(k, shuffle=True, random_state=seed).split(train))


def voice_groups(calls: CallSet, idx: np.ndarray) -> list[str]:
    """The speaker of each call at ``idx``, an augmented copy counted as its original's voice."""
    return [calls.calls[i].voice.removesuffix("+aug") for i in idx]


class ConfidenceLate(nn.Module):
    """Late fusion whose weights depend on the call: per modality, softplus(g(the recogniser's cues, each head's
    top probability)), then log_softmax(sum_m w_m log_softmax(logits_m)). A sure recogniser can tip the call to
    the transcript, a doubtful one to the sound; the weights' sum also sets how sharp the fused probabilities are.

    ``gate="confidence"``: g is a linear map and the cue is the word confidence alone; ``gate="cues"``: g is a
    small MLP of the four ``recogniser_cues`` (standardised). In noise Whisper invents fluent words with fair
    confidence, and at 0 dB the linear gate stays below the audio model (README)."""

    def __init__(self, modalities: Sequence[str], gate: str = "confidence", hidden: int = 16):
        super().__init__()
        if gate not in LATE_GATES:
            raise ValueError(f"gate must be one of {LATE_GATES}, got {gate!r}")
        self.modalities, self.key = list(modalities), gate
        m = len(self.modalities)
        if gate == "confidence":
            self.gate: nn.Module = nn.Linear(m + 1, m)
            last = self.gate
        else:
            self.gate = nn.Sequential(nn.Linear(4 + m, hidden), nn.GELU(), nn.Linear(hidden, m))
            last = self.gate[-1]
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, math.log(math.e - 1))  # softplus = 1: the plain product of experts

    def gate_inputs(self, feats: CallFeatures, idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The gate's per-call input from the calls' features (rows ``idx``, or all)."""
        x = feats.inputs([self.key])[self.key]
        return {self.key: x if idx is None else x[idx]}

    def weights(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logp = [batch[m].float().log_softmax(-1) for m in self.modalities]
        top = [lp.max(-1, keepdim=True).values.exp() for lp in logp]
        return F.softplus(self.gate(torch.cat([batch[self.key].float(), *top], -1)))  # (B, M)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights(batch)
        fused = sum(w[:, k : k + 1] * batch[m].float().log_softmax(-1) for k, m in enumerate(self.modalities))
        return fused.log_softmax(-1)


class _Late:
    """Late fusion: unimodal heads, then a learned weighting of their log-probabilities."""

    def __init__(self, parts: Mapping[str, Any], fusion: Any):
        self.parts, self.fusion = dict(parts), fusion

    def logits(self, feats: CallFeatures) -> torch.Tensor:
        parts = {n: predict(m, feats.inputs([n])) for n, m in self.parts.items()}
        if isinstance(self.fusion, ConfidenceLate):
            with torch.inference_mode():
                return self.fusion({**parts, **self.fusion.gate_inputs(feats)})
        return predict(self.fusion, parts)


def method_logits(name: str, model: Any, feats: CallFeatures) -> torch.Tensor:
    """Logits (N, K) of a trained model of METHODS on every call."""
    if isinstance(model, _Late):
        return model.logits(feats)
    return predict(model, feats.inputs(METHODS[name][1]))


def snr_name(snr: float | None) -> str:
    return "quiet" if snr is None else f"{snr:g}"


def scores(calls: CallSet, logits: torch.Tensor, split: str = "test") -> dict[str, Any]:
    """Accuracy and macro-F1 on a split, and accuracy at each SNR of it."""
    idx = calls.index(split)
    labels = calls.labels
    out: dict[str, Any] = {"accuracy": accuracy(logits[idx], labels[idx]),
                           "macro_f1": macro_f1(logits[idx].argmax(1), labels[idx], len(calls.intents))}  # fmt: skip
    snrs = sorted({c.snr_db for c in calls.calls if c.split == split}, key=lambda s: (s is None, s or 0.0))
    out["by_snr"] = {snr_name(s): accuracy(logits[calls.index(split, s)], labels[calls.index(split, s)])
                     for s in snrs}  # fmt: skip
    return out


def run_methods(calls: CallSet, feats: CallFeatures, cfg: ServiceConfig, methods: Sequence[str] | None = None,
                progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train every model of ``methods`` (default: all METHODS the data allows) and score it on the test calls;
    returns their ``results``, ``logits`` on every call and the trained ``models``."""
    from tqdm.auto import tqdm

    names = [m for m in (methods or METHODS) if feats.has(METHODS[m][1])]
    labels, train = calls.labels, calls.index("train")
    results, logits, models, memo = {}, {}, {}, {}
    groups = voice_groups(calls, train)
    for name in tqdm(names, desc="models", disable=not progress):
        models[name] = train_method(name, feats, labels, train, cfg, len(calls.intents), groups=groups, memo=memo)
        logits[name] = method_logits(name, models[name], feats)
        results[name] = scores(calls, logits[name])
    return {"results": results, "logits": logits, "models": models}


def wer_by_snr(calls: CallSet, transcripts: Sequence[Transcript], split: str = "test") -> dict[str, float]:
    """Word error rate of the recogniser on a split's calls, at each SNR."""
    out = {}
    for snr in sorted({c.snr_db for c in calls.calls if c.split == split}, key=lambda s: (s is None, s or 0.0)):
        idx = calls.index(split, snr)
        out[snr_name(snr)] = word_error_rate([calls.texts[i] for i in idx], [transcripts[i].text for i in idx])
    return out
