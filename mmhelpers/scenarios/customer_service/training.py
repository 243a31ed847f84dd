"""Training choices for the intent models: calls augmented on the line, MiniLM's top layer fine-tuned, and a
zero-shot language model that was never trained on the intents at all.

    copies = augmented_calls(calls, copies=1)          # each training call again: faster or slower, noisier, another line
    more, heard = with_augmented(calls, transcripts)   # originals then copies, and every transcript (copies recognised)
    top = finetune_text_top(texts, labels, n_classes)  # MiniLM's last layer and a linear head, through the engine
    logits = zero_shot_intents(texts, calls.intents, model, tokenizer)   # SmolLM2 picks from the intent list
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from mmhelpers.asr import Transcript
from mmhelpers.augment import speed_perturb
from mmhelpers.contrastive import TextTower, frozen_layer, text_hidden_states
from mmhelpers.encoders import TextEncoder, build_text_encoder
from mmhelpers.lm import choice_log_likelihoods
from mmhelpers.telephone import Channel, mix_at_snr, pink_noise, telephone_channel, white_noise
from mmhelpers.train import TensorDictDataset, TrainConfig, Trainer

from .data import CallSet
from .recipe import recognise

SPEEDS = (0.9, 0.95, 1.05, 1.1)  # Kaldi's speed perturbation uses 0.9 and 1.1
AUG_SNRS = (0.0, 5.0, 10.0)  # noise added on top of the call's own
BAND = ((200.0, 450.0), (3000.0, 3500.0))  # ranges of the line's low and high band edges


def augment_call(wave: torch.Tensor, sr: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """One received call changed the way calls differ: speed (and pitch) by a factor of ``SPEEDS``, white or pink
    noise at an SNR of ``AUG_SNRS``, and a line with other band edges and the mu-law codec again."""
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=generator))]  # noqa: E731
    factor, snr, kind = pick(SPEEDS), pick(AUG_SNRS), pick(("white", "pink"))
    (lo_min, lo_max), (hi_min, hi_max) = BAND
    u = torch.rand(2, generator=generator)
    low, high = lo_min + float(u[0]) * (lo_max - lo_min), hi_min + float(u[1]) * (hi_max - hi_min)
    out = speed_perturb(wave, sr, factor)
    noise = (white_noise if kind == "white" else pink_noise)(out.numel(), generator)
    if float(out.pow(2).mean()) > 0:
        out = mix_at_snr(out, noise, snr)
    out = telephone_channel(out, sr, Channel(sr=sr, low_hz=low, high_hz=min(high, sr / 2 - 100)))
    return out.clamp(-1, 1), {"speed": factor, "snr_db": snr, "noise": kind, "band": (round(low), round(high))}


def augmented_calls(calls: CallSet, copies: int = 1, seed: int = 0, split: str = "train",
                    limit: int | None = None) -> CallSet:  # fmt: skip
    """``copies`` augmented copies of each of ``split``'s calls (in split ``split``, voice ``<voice>+aug``), as a
    CallSet of their own: recognise them apart (the originals' transcripts stay cached), then
    ``calls.extended(copies)``. ``limit`` copies only that many calls, drawn at random (a quick run)."""
    gen = torch.Generator().manual_seed(seed)
    idx = calls.index(split)
    if limit is not None and limit < len(idx):
        idx = np.sort(idx[torch.randperm(len(idx), generator=gen)[:limit].numpy()])
    new_calls, new_waves = [], []
    for _ in range(copies):
        for i in idx:
            wave, how = augment_call(calls.waves[i], calls.sr, gen)
            c = calls.calls[i]
            new_calls.append(replace(c, voice=f"{c.voice}+aug", noise=how["noise"], snr_db=how["snr_db"]))
            new_waves.append(wave)
    voices = {split: sorted({c.voice for c in new_calls})}
    return replace(calls, calls=new_calls, waves=new_waves, voices=voices,
                   source=f"{copies} augmented cop{'y' if copies == 1 else 'ies'} of {len(idx)} {split} calls")  # fmt: skip


def with_augmented(calls: CallSet, transcripts: Sequence[Transcript], copies: int = 1, seed: int = 0,
                   limit: int | None = None, progress: bool = True) -> tuple[CallSet, list[Transcript]]:  # fmt: skip
    """The calls followed by ``copies`` augmented copies of the training calls, and the transcripts of all of them
    (the copies recognised on their own, cached; the originals' transcripts as given). Test positions are unchanged."""
    extra = augmented_calls(calls, copies=copies, seed=seed, limit=limit)
    return calls.extended(extra), [*transcripts, *recognise(extra, progress=progress)]


# ---------------------------------------------------------------- MiniLM's top layer, fine-tuned


class TextTopClassifier(nn.Module):
    """The top ``layers`` of a BERT-style encoder (trainable copies), mean pooling and a linear head."""

    def __init__(self, encoder: TextEncoder, n_classes: int, layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.layer = frozen_layer(encoder, layers)  # hidden states below this are computed once and cached
        top = list(encoder.model.encoder.layer)[self.layer :]
        self.tower = TextTower(top, encoder.dim, n_classes, dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.tower(batch["hidden"], batch["mask"])  # (B, n_classes)


def text_top_inputs(texts: Sequence[str], model: TextTopClassifier, encoder: TextEncoder,
                    progress: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """The frozen part's output for ``texts``: hidden states below the trainable layers and the mask (cached)."""
    hidden, mask = text_hidden_states(encoder, list(texts), model.layer, progress=progress)
    return {"hidden": hidden, "mask": mask}


def finetune_text_top(texts: Sequence[str], labels: torch.Tensor, n_classes: int, config: TrainConfig,
                      layers: int = 1, encoder: TextEncoder | None = None) -> TextTopClassifier:  # fmt: skip
    """MiniLM with its top ``layers`` fine-tuned on (text, intent) pairs through the engine; left in eval mode."""
    encoder = encoder or build_text_encoder()
    if config.seed is not None:
        torch.manual_seed(config.seed)
    model = TextTopClassifier(encoder, n_classes, layers)
    data = TensorDictDataset({**text_top_inputs(texts, model, encoder), "label": torch.as_tensor(labels).long()})
    Trainer(model, config).fit(data)
    return model.eval()


@torch.inference_mode()
def text_top_logits(model: TextTopClassifier, texts: Sequence[str], encoder: TextEncoder,
                    batch_size: int = 256) -> torch.Tensor:  # fmt: skip
    """Logits (N, n_classes) of the fine-tuned text model on ``texts``."""
    inputs = text_top_inputs(texts, model, encoder)
    device = next(model.parameters()).device
    return torch.cat([model({k: v[i : i + batch_size].to(device) for k, v in inputs.items()}).float().cpu()
                      for i in range(0, len(texts), batch_size)]) if len(texts) else torch.empty(0)  # fmt: skip


# ---------------------------------------------------------------- zero-shot: a chat LM reads the intent list

ROUTER = ("You route phone calls at the help desk of a phone and internet company. The intents are: {}. "
          "Answer with the one intent that fits the caller's request.")  # fmt: skip
TEMPLATE = 'Caller: "{}"'
CONTENT_FREE = ("", "N/A", "hello")  # Zhao et al. 2021's content-free inputs, for contextual calibration


def intent_words(intent: str) -> str:
    return intent.replace("_", " ")


def _router(intents: Sequence[str]) -> tuple[str, list[str]]:
    names = [intent_words(i) for i in intents]
    return ROUTER.format(", ".join(names)), names


def zero_shot_intents(texts: Sequence[str], intents: Sequence[str], model, tokenizer, calibrate: bool = True,
                      progress: bool = True) -> torch.Tensor:  # fmt: skip
    """Scores (N, K) of each intent for each transcript by a chat LM given only the list of intents: the mean
    log-probability of the intent's words as its answer. ``calibrate`` subtracts ``content_free_offset``."""
    system, names = _router(intents)
    scores = choice_log_likelihoods(model, tokenizer, system, texts, names, template=TEMPLATE, progress=progress)
    return scores - content_free_offset(intents, model, tokenizer) if calibrate else scores


def content_free_offset(intents: Sequence[str], model, tokenizer) -> torch.Tensor:
    """Each intent's mean score (K,) on content-free requests: contextual calibration (Zhao et al., ICML 2021). A
    small model prefers the intents whose names it finds likely whatever was said; subtracting this removes that."""
    system, names = _router(intents)
    return choice_log_likelihoods(model, tokenizer, system, CONTENT_FREE, names, template=TEMPLATE).mean(0)
