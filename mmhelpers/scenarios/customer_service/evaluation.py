"""Scoring the voice assistant: recognition on real human speech, and the time a live call takes.

wer, n, examples = real_speech_wer(recogniser)              # Asterisk prompts and LibriVox, Whisper and pocketsphinx
steps = time_call(wave, sr, recogniser, route, encoder, feats)   # milliseconds of each step of one request
study = phrasing_study(cfg, per_intent=40, data_seeds=range(5))    # the text model over other splits, two protocols
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mmhelpers.asr import PocketSphinx, Recogniser, Transcript, transcribe, word_error_rate
from mmhelpers.encoders import TextEncoder

from .recipe import METHODS, WRITTEN, CallFeatures, ServiceConfig, featurise, head_run
from .requests import INTENTS, make_requests, refill, split_phrasings, split_requests

WHISPER_TINY_EN_PUBLISHED = {"librispeech_test_clean": 0.084, "librispeech_test_other": 0.149}
PUBLISHED_SOURCE = "https://huggingface.co/openai/whisper-tiny.en (model card, WER on LibriSpeech)"


def real_speech_wer(recogniser: Recogniser, n_asterisk: int | None = None, seed: int = 0,
                    baseline: Recogniser | None = None) -> tuple[dict, dict, dict]:  # fmt: skip
    """Word error rates of ``recogniser`` and of pocketsphinx on the Asterisk telephone prompts (the mirror's; a
    random ``n_asterisk`` of them when given) and on Debian's five LibriVox utterances. A set that is not on this
    machine is skipped with a printed reason. Returns (wer {model: {set: w}}, recordings per set, three examples
    per set as (reference, recognised, baseline))."""
    from mmhelpers.data.asterisk import load_asterisk_prompts
    from mmhelpers.data.librivox import load_librivox
    from mmhelpers.errors import DataError, FetchError

    sets = {}
    try:
        prompts = load_asterisk_prompts(progress=False)
        keep = np.random.default_rng(seed).permutation(len(prompts))[: n_asterisk or len(prompts)]
        keep = sorted(int(k) for k in keep)
        sets["asterisk"] = ([prompts.waves[k] for k in keep], [prompts.transcripts[k] for k in keep], prompts.sr)
    except (DataError, FetchError) as e:
        print(f"Asterisk prompts skipped: {e}")
    try:
        lv = load_librivox()
        sets["librivox"] = (lv.waves, lv.transcripts, lv.sr)
    except DataError as e:
        print(f"LibriVox skipped: {e}")
    baseline = baseline or PocketSphinx()
    wer: dict[str, dict[str, float]] = {"whisper_tiny_en": {}, "pocketsphinx": {}}
    examples = {}
    for name, (waves, refs, sr) in sets.items():
        heard = transcribe(waves, sr, recogniser, progress=False)
        classic = transcribe(waves, sr, baseline, progress=False)
        wer["whisper_tiny_en"][name] = word_error_rate(refs, [h.text for h in heard])
        wer["pocketsphinx"][name] = word_error_rate(refs, [h.text for h in classic])
        examples[name] = list(zip(refs[:3], [h.text for h in heard[:3]], [h.text for h in classic[:3]], strict=True))
    return wer, {name: len(v[1]) for name, v in sets.items()}, examples


def time_call(wave: torch.Tensor | np.ndarray, sr: int, recogniser: Recogniser,
              route: Callable[[CallFeatures], torch.Tensor], encoder: TextEncoder,
              ref: CallFeatures) -> tuple[dict[str, float], Transcript, torch.Tensor]:  # fmt: skip
    """One live request, nothing cached: milliseconds of recognition, of the features (MiniLM on the transcript,
    the acoustic statistics) and of the intent head; and the transcript and the head's logits (1, K)."""
    t0 = time.perf_counter()
    transcript = recogniser(wave, sr)
    t1 = time.perf_counter()
    feats = featurise([transcript], ref, encoder)
    t2 = time.perf_counter()
    with torch.inference_mode():
        logits = route(feats)
    t3 = time.perf_counter()
    ms = {"recognition": 1e3 * (t1 - t0), "features": 1e3 * (t2 - t1), "intent": 1e3 * (t3 - t2)}
    return {**ms, "total": sum(ms.values())}, transcript, logits


def latency_summary(times: list[dict[str, float]]) -> dict[str, Any]:
    """Median and 90th percentile of each step over many calls, in milliseconds."""
    steps = times[0].keys() if times else ()
    return {s: {"median": float(np.median([t[s] for t in times])), "p90": float(np.percentile([t[s] for t in times], 90))}
            for s in steps}  # fmt: skip


PROTOCOLS = ("random requests", "held-out phrasings")


def phrasing_study(cfg: ServiceConfig, per_intent: int = 40, data_seeds: Sequence[int] = range(5),
                   encoder: TextEncoder | None = None, written: int = WRITTEN,
                   progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """How much the split of the requests decides the text model's accuracy: the "true transcript" head of
    ``METHODS`` (MiniLM sentence embedding, trained as in ``run_methods``, with ``written`` requests written anew
    from each training request's phrasing) on the generated requests of several data seeds, under two protocols:

    - "random requests": the scenario's split (``split_requests``): a test request is a new sentence, usually of a
      phrasing that training has (as in Fluent Speech Commands);
    - "held-out phrasings": ``split_phrasings``: no test phrasing is in training, nor written from (Arora et al.'s
      "unseen utterance" split).

    Text only (no audio: the true transcript does not depend on the voice): about 25 s a split on 2 cores with the
    written requests, and a finished head is loaded from the cache (``ServiceConfig.cache``). Returns, per
    protocol, the accuracy of every data seed and their mean and standard deviation."""
    from mmhelpers.classify import fusion_classifier, predict, text_features, train_classifier
    from mmhelpers.encoders import build_text_encoder

    encoder = encoder or build_text_encoder()  # loaded once for every split
    method, (name,) = METHODS["true transcript"]
    out: dict[str, Any] = {"data_seeds": [int(d) for d in data_seeds], "per_intent": per_intent, "written": written}
    accs: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
    for ds in data_seeds:
        requests = make_requests(per_intent, int(ds))
        for protocol, split in zip(PROTOCOLS, (split_requests, split_phrasings), strict=True):
            by_split = split(requests, int(ds))
            held = [r.text for s in ("val", "test") for r in by_split[s]]
            train = [*by_split["train"], *refill(by_split["train"], written, int(ds), exclude=held)]
            x = text_features([r.text for r in train], encoder, progress=progress)
            y = torch.tensor([r.label for r in train])
            x_test = text_features([r.text for r in by_split["test"]], encoder, progress=progress)
            y_test = torch.tensor([r.label for r in by_split["test"]])
            torch.manual_seed(cfg.seed)
            model = fusion_classifier(method, {name: x}, len(INTENTS), d_model=cfg.d_model,
                                      hidden_dim=cfg.hidden_dim, dropout=cfg.dropout)  # fmt: skip
            train_classifier(model, {name: x}, y, cfg.train_config(run=head_run(model, {name: x}, y)))
            pred = predict(model, {name: x_test}).argmax(1)
            accs[protocol].append(float((pred == y_test).float().mean()))
    for protocol, a in accs.items():
        out[protocol] = {
            "accuracy": a,
            "mean": float(np.mean(a)),
            "std": float(np.std(a, ddof=1)) if len(a) > 1 else 0.0,
        }
    return out
