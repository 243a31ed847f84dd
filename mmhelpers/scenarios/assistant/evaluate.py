"""Scoring the assistant: captions (BLEU-4, CIDEr-D) against nearest neighbour, answers by question type against
the question's prior, the answer format, and what int8 dynamic quantisation does to CPU chat.

    caps = evaluate_captions(run, "test")        # {"bleu4", "cider", ..., "captions": [...], "nn": {...}}
    qa = evaluate_questions(run, "test")         # accuracy by task and question type, format rate, the prior's
    chat(run, image, "What is in the photo?")     # streamed to stdout, returned as text
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmhelpers.caption_metrics import caption_scores, nearest_neighbour_captions
from mmhelpers.image_grids import pooled_grids
from mmhelpers.regions import image_region_features
from mmhelpers.scenarios.assistant.data import CAPTION_PROMPT, Sample, answer_in_format
from mmhelpers.scenarios.assistant.recipe import AssistantRun, answer

__all__ = [
    "evaluate_captions",
    "evaluate_questions",
    "question_prior",
    "normal_answer",
    "chat",
    "quantize_int8",
    "reply_latency",
]


def evaluate_captions(run: AssistantRun, split: str = "test", nn_k: int = 1, num_beams: int | None = None
                      ) -> dict[str, object]:  # fmt: skip
    """Captions of ``split``'s caption images (beam search with ``num_beams``, default ``cfg.num_beams``) scored
    against all their references, beside the nearest training image's consensus caption (the same pooled grid
    features, cosine) as the baseline."""
    images = run.data.caption_images(split)
    if not images:
        raise ValueError(f"no caption images in {split!r}")
    refs = [run.data.references[i] for i in images]
    captions = answer(run, images, [CAPTION_PROMPT] * len(images), num_beams=num_beams or run.cfg.num_beams)
    train = run.data.caption_images("train")
    nn_caps = nearest_neighbour_captions(run.grids[train].flatten(1), [run.data.references[i] for i in train],
                                         run.grids[images].flatten(1), k=nn_k)  # fmt: skip
    return {**caption_scores(refs, captions), "captions": captions, "images": images,
            "nn": caption_scores(refs, nn_caps), "nn_captions": nn_caps}  # fmt: skip


def normal_answer(text: str) -> str:
    """An answer compared word for word: lower case, no final full stop, colour spelt "color" as in the data."""
    return text.strip().rstrip(".!").strip().lower().replace("colour", "color")


def _key(sample: Sample) -> str:
    return sample.meta.get("qtype") or sample.meta.get("type") or sample.task


def question_prior(run: AssistantRun) -> dict[str, str]:
    """The most frequent training answer to each question (text): all a model that ignores the image can learn."""
    counts: dict[str, Counter] = {}
    for s in run.data.samples["train"]:
        if s.task != "caption":
            for question, reply in s.turns:  # every turn of a multi-turn conversation is a question seen in training
                counts.setdefault(question, Counter())[normal_answer(reply)] += 1
    return {q: min(c, key=lambda a: (-c[a], a)) for q, c in counts.items()}


def evaluate_questions(run: AssistantRun, split: str = "test", max_new_tokens: int = 8) -> dict[str, object]:
    """Exact-match accuracy of the greedy answers to ``split``'s single-turn questions, by question type (and the
    non-relational / relational groups of Sort-of-CLEVR), the share in the requested format, and the same for
    the question prior (unseen questions count as wrong for it)."""
    from mmhelpers.data.sort_of_clevr import RELATIONAL

    samples = [s for s in run.data.samples[split] if s.task != "caption" and len(s.turns) == 1]
    if not samples:
        raise ValueError(f"no questions in {split!r}")
    replies = answer(run, [s.image for s in samples], [s.turns[0][0] for s in samples], max_new_tokens=max_new_tokens)
    prior = question_prior(run)
    right = [normal_answer(r) == normal_answer(s.turns[0][1]) for s, r in zip(samples, replies, strict=True)]
    prior_right = [prior.get(s.turns[0][0]) == normal_answer(s.turns[0][1]) for s in samples]

    def by_group(hits: Sequence[bool]) -> dict[str, float]:
        groups: dict[str, list[bool]] = {}
        for s, hit in zip(samples, hits, strict=True):
            groups.setdefault(_key(s), []).append(hit)
            if s.task == "scene_qa":
                groups.setdefault("relational" if _key(s) in RELATIONAL else "non_relational", []).append(hit)
            groups.setdefault(f"task:{s.task}", []).append(hit)
        return {k: float(np.mean(v)) for k, v in sorted(groups.items())} | {"overall": float(np.mean(hits))}

    fmt = [answer_in_format(s, r) for s, r in zip(samples, replies, strict=True)]
    return {"accuracy": by_group(right), "prior": by_group(prior_right), "format_rate": float(np.mean(fmt)),
            "format_by_task": {t: float(np.mean([f for s, f in zip(samples, fmt, strict=True) if s.task == t]))
                               for t in sorted({s.task for s in samples})},
            "n": len(samples), "examples": [{"question": s.turns[0][0], "answer": r, "truth": s.turns[0][1]}
                                             for s, r in list(zip(samples, replies, strict=True))[:: max(1, len(samples) // 12)]]}  # fmt: skip


def chat(run: AssistantRun, image: str | Path | np.ndarray | int, question: str, max_new_tokens: int = 48,
         stream: bool = True) -> str:  # fmt: skip
    """One question about one image (a path, an RGB array, or a row of ``run.grids``); the reply is printed as
    it is generated (transformers' ``TextStreamer``) and returned."""
    from transformers import TextStreamer

    streamer = TextStreamer(run.tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    if isinstance(image, int):
        return answer(run, [image], [question], max_new_tokens=max_new_tokens, streamer=streamer)[0]
    grids = pooled_grids([image], run.cfg.image_size, run.cfg.side, progress=False)
    regions = image_region_features([image], run.cfg.region_size, run.cfg.regions) if run.cfg.regions else None
    return answer(run, grids, [question], max_new_tokens=max_new_tokens, streamer=streamer, regions=regions,
                  scene_text=run.describe([image]))[0]


def quantize_int8(run: AssistantRun, keep: Sequence[str] = ("down_proj",)) -> AssistantRun:
    """A copy of ``run`` whose LM's linear layers are int8 with dynamic activation quantisation (PyTorch's
    ``quantize_dynamic``: weights stored in int8, activations quantised per batch; CPU only), except those named
    in ``keep``. The projector and the embeddings stay in fp32. LoRA adapters, if any, are merged in first.

    ``keep``: the MLP's ``down_proj`` by default. Its input, the product of SwiGLU's two branches, has outlier
    features (as LLM.int8(), Dettmers et al. 2022, found in larger LMs) that one scale per tensor clips: on the
    validation images all 210 layers in int8 halved CIDEr-D (0.310 -> 0.164), the 180 without ``down_proj`` kept
    most of it (0.278) at the same speed (0.38 s per reply against 1.84 s unquantised, 1 thread).
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    quick = copy.copy(run)
    model = copy.deepcopy(run.model).cpu().eval()
    if any("lora_" in n for n, _ in model.lm.named_parameters()):
        _merge_lora(model.lm)
    names = {
        n for n, m in model.lm.model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] not in keep
    }
    if not names:
        raise ValueError(f"keep={tuple(keep)} leaves no linear layer of the LM to quantise")
    model.lm.model = quantize_dynamic(model.lm.model, dict.fromkeys(names, default_dynamic_qconfig), dtype=torch.qint8)
    quick.model = model
    quick.cfg = replace(run.cfg, precision="fp32", decode_precision="fp32", device="cpu")
    return quick


def _merge_lora(module: nn.Module) -> None:
    """Fold peft's LoRA layers into plain ``nn.Linear`` layers (W + scale * B @ A), in place."""
    from peft.tuners.lora import LoraLayer

    for name, child in list(module.named_children()):
        if isinstance(child, LoraLayer):
            child.merge()
            setattr(module, name, child.get_base_layer())
        else:
            _merge_lora(child)


def reply_latency(run: AssistantRun, image_rows: Sequence[int], question: str, max_new_tokens: int = 24,
                  repeats: int = 3) -> dict[str, float]:  # fmt: skip
    """Seconds per reply (batch of one, greedy): the median over ``repeats`` passes of the images, and tokens/s."""
    times, tokens = [], []
    for _ in range(repeats):
        for i in image_rows:
            start = time.perf_counter()
            text = answer(run, [i], [question], max_new_tokens=max_new_tokens, batch_size=1)[0]
            times.append(time.perf_counter() - start)
            tokens.append(len(run.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)
    return {"seconds_per_reply": float(np.median(times)), "tokens_per_second": float(np.sum(tokens) / np.sum(times))}
