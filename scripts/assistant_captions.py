"""Caption checks on a trained assistant: decoding settings, and what the region-phrase text does to captions.

    MMHELPERS_MIRROR=../shared/data python scripts/assistant_captions.py --seed 0 --decoding
    MMHELPERS_MIRROR=../shared/data python scripts/assistant_captions.py --seed 1 --text [FIELD=VALUE ...]
    MMHELPERS_MIRROR=../shared/data python scripts/assistant_captions.py --seed 0 --precision
    MMHELPERS_MIRROR=../shared/data python scripts/assistant_captions.py --seed 0 --repetition

The model is the full CPU recipe (real data) with any ``AssistantConfig`` field changed by FIELD=VALUE (a Python
literal), its two stages loaded from the notebooks' checkpoints (``--cache assistant``, the default; trained there
if absent).

``--decoding``: on the VALIDATION photos (so a choice made here is not made on the test photos), beam search with
2 to 5 beams and length penalties from -0.5 to 1.5 (the recipe's ``length_penalty=0.0`` was chosen so): BLEU-4 and
CIDEr-D of the top caption and of the n-best's consensus caption (the one most like the others), and the captions'
length against their closest reference's, as BLEU's brevity penalty counts it. ``length_penalty=...`` as a
FIELD=VALUE does not change this grid.

``--repetition``: on the VALIDATION photos, the recipe's beam search (beams and length penalty of the config) as it
is, and with transformers' ``no_repeat_ngram_size`` 3 or 2 or ``repetition_penalty=1.2``: BLEU-4 and CIDEr-D of the
top caption, and how many captions each setting changed.

``--text``: on the TEST photos, the captions with and without each photo's region-phrase text, and how many palette
colour words each holds in the photos that have text, against their references' (per reference caption).

``--precision``: the captions of the validation and test photos as the notebooks decode them (``answer``, 3 beams),
under the run's training precision (bf16 autocast on a CPU with AMX) and under fp32 (``decode_precision``, the
notebooks' default since 2026-12-06), the same trained weights. (``--decoding``
runs ``generate`` without autocast, so in fp32.)

The README's assistant section quotes them.
"""

import argparse
import json
import re
import time
from dataclasses import replace

import numpy as np
import torch
from assistant_try import overrides  # FIELD=VALUE -> AssistantConfig fields (this folder is on the path)

from mmhelpers.caption_metrics import caption_scores, consensus_scores
from mmhelpers.caption_tokenizer import caption_words
from mmhelpers.paths import cache_root
from mmhelpers.scenarios.assistant.chat import collate, encode_prompt
from mmhelpers.scenarios.assistant.data import CAPTION_PROMPT
from mmhelpers.scenarios.assistant.recipe import AssistantConfig, answer, prepare, scene_prompt, stop_ids, train_stage

PALETTE = re.compile(r"\b(red|green|blue|orange|gray|grey|yellow)\b", re.I)  # Sort-of-CLEVR's six colours


@torch.no_grad()
def n_best(run, rows: list[int], beams: int, length_penalty: float, batch_size: int = 20, **generate) -> list[list[str]]:
    """The ``beams`` best captions of each image, best first (transformers' beam search on the prompt's embeddings;
    ``generate``: more of its keyword arguments, e.g. ``no_repeat_ngram_size``)."""
    model, tok, stop = run.model, run.tokenizer, stop_ids(run.tokenizer)
    model.eval()
    out = []
    for a in range(0, len(rows), batch_size):
        chunk = rows[a : a + batch_size]
        texts = run.scene_text or [""] * len(run.grids)
        prompts = [encode_prompt(tok, scene_prompt(CAPTION_PROMPT, texts[i]), model.n_image_tokens, run.cfg.system)
                   for i in chunk]  # fmt: skip
        batch = collate(prompts, pad_id=tok.pad_token_id, left_pad=True) | run.visual(chunk)
        embeds = model.embed(batch["input_ids"], batch["grids"], batch["image_positions"], batch.get("regions"))
        ids = model.lm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], num_beams=beams,
                                num_return_sequences=beams, length_penalty=length_penalty, do_sample=False,
                                early_stopping=True, max_new_tokens=run.cfg.max_new_tokens, eos_token_id=sorted(stop),
                                pad_token_id=tok.pad_token_id, **generate).tolist()  # fmt: skip
        for j in range(len(chunk)):
            caps = []
            for row in ids[j * beams : (j + 1) * beams]:
                cut = next((k for k, t in enumerate(row) if t in stop), len(row))
                caps.append(tok.decode(row[:cut], skip_special_tokens=True).strip())
            out.append(caps)
    return out


def length_ratio(references: list[list[str]], captions: list[str]) -> float:
    """Words in the captions over words in each one's closest-length reference (BLEU's brevity penalty's ratio)."""
    hyp = ref = 0
    for refs, cap in zip(references, captions, strict=True):
        n = len(caption_words(cap))
        hyp += n
        ref += min((len(caption_words(r)) for r in refs), key=lambda m: (abs(m - n), m))
    return hyp / ref


def decoding(run) -> list[dict]:
    rows = run.data.caption_images("val")
    refs = [run.data.references[i] for i in rows]
    out = []
    for beams, lp in ((3, 1.0), (5, 1.0), (5, 1.5), (3, 0.5), (3, 0.0), (3, -0.5), (2, 1.0), (2, 0.0), (4, 0.0), (5, 0.0)):
        t = time.perf_counter()
        cands = n_best(run, rows, beams, lp)
        top = [c[0] for c in cands]
        consensus = [c[int(np.argmax(consensus_scores(c)))] for c in cands]
        row = {"beams": beams, "length_penalty": lp}
        for name, caps in (("top", top), ("consensus", consensus)):
            s = caption_scores(refs, caps)
            row[name] = {"bleu4": s["bleu4"], "cider": s["cider"], "length_ratio": length_ratio(refs, caps)}
        row["seconds"] = time.perf_counter() - t
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def repetition(run) -> list[dict]:
    rows = run.data.caption_images("val")
    refs = [run.data.references[i] for i in rows]
    out, base = [], None
    for settings in ({}, {"no_repeat_ngram_size": 3}, {"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.2}):
        caps = [c[0] for c in n_best(run, rows, run.cfg.num_beams, run.cfg.length_penalty, **settings)]
        base = base or caps
        s = caption_scores(refs, caps)
        changed = sum(a != b for a, b in zip(base, caps, strict=True))
        row = {**settings, "bleu4": s["bleu4"], "cider": s["cider"], "changed": changed}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def text_effect(run) -> dict:
    rows = run.data.caption_images("test")
    refs = [run.data.references[i] for i in rows]
    texts = [run.scene_text[i] for i in rows] if run.scene_text else [""] * len(rows)
    has = [bool(t) for t in texts]
    out = {"photos": len(rows), "photos_with_text": sum(has),
           "reference_colour_words": sum(len(PALETTE.findall(" ".join(r))) / len(r)
                                         for r, h in zip(refs, has, strict=True) if h)}  # fmt: skip
    for name, given in (("with_text", None), ("without_text", [""] * len(rows))):
        caps = answer(run, rows, [CAPTION_PROMPT] * len(rows), num_beams=run.cfg.num_beams, scene_text=given)
        s = caption_scores(refs, caps)
        out[name] = {"bleu4": s["bleu4"], "cider": s["cider"],
                     "colour_words": sum(len(PALETTE.findall(c)) for c, h in zip(caps, has, strict=True) if h)}  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


def precision_effect(run) -> dict:
    out = {}
    for name in ("run", "fp32"):
        cfg = replace(run.cfg, decode_precision=None if name == "run" else "fp32")
        one = replace(run, cfg=cfg)  # the same model and data, another precision at decoding
        for split in ("val", "test"):
            rows = run.data.caption_images(split)
            t = time.perf_counter()
            caps = answer(one, rows, [CAPTION_PROMPT] * len(rows), num_beams=run.cfg.num_beams)
            s = caption_scores([run.data.references[i] for i in rows], caps)
            out[f"{name}/{split}"] = {"bleu4": s["bleu4"], "cider": s["cider"], "seconds": time.perf_counter() - t}
    out["run_precision"] = run.cfg.precision
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="*", help="FIELD=VALUE of AssistantConfig")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="assistant", help="checkpoints under the cache folder (the notebooks')")
    parser.add_argument("--decoding", action="store_true", help="decoding settings on the validation photos")
    parser.add_argument("--repetition", action="store_true", help="repetition constraints on the validation photos")
    parser.add_argument("--text", action="store_true", help="test captions with and without the region phrases")
    parser.add_argument("--precision", action="store_true", help="captions decoded in the run's precision and fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the numbers here as JSON")
    args = parser.parse_args()
    if not (args.decoding or args.repetition or args.text or args.precision):
        parser.error("ask for --decoding, --repetition, --text, --precision or several")
    torch.set_num_threads(args.threads)
    cfg = replace(AssistantConfig(data="real", seed=args.seed), **overrides(args.settings))
    run = prepare(cfg, progress=False)
    for stage in (1, 2):
        train_stage(run, stage, checkpoint_dir=cache_root() / args.cache)
    result = {"seed": args.seed, "settings": args.settings, "threads": args.threads}
    if args.decoding:
        result["decoding"] = decoding(run)
    if args.repetition:
        result["repetition"] = repetition(run)
    if args.text:
        result["text"] = text_effect(run)
    if args.precision:
        result["precision"] = precision_effect(run)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
