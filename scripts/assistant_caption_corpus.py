"""Does the Flickr8k caption corpus, as text, lift the assistant's captions? A probe, not the recipe.

    MMHELPERS_MIRROR=../shared/data python scripts/assistant_caption_corpus.py --seed 0 --steps 150 [FIELD=VALUE ...]

The mini VLM pre-trains its decoder on the 39,455 Flickr8k captions of the training and unused photos, and that
takes its BLEU-4 from 0.111 to 0.137 (README, 03); the assistant's LM sees only the 4,000 captions of its 800
training photos. This script takes a trained assistant (the notebooks' stage-1 and stage-2 checkpoints, loaded from
``--cache``), trains its LoRA adapters further for ``--steps`` steps of ``--batch`` on that corpus, and scores the
captions of the 100 VALIDATION photos (3 beams) before and after, two ways:

- ``text``: every step a batch of corpus captions as text-only conversations (a caption prompt, no image);
- ``mixed``: those steps alternate with steps of the training photos' captions with their images, so the adapters
  keep reading the image;
- ``photos``: the control for ``mixed``: its photo steps alone (run it with half ``mixed``'s ``--steps``).

Each variant starts from the same stage-2 weights; the projector stays as stage 2 left it. Held-out photos (the
validation and test splits) are left out of the corpus.

FIELD=VALUE changes an ``AssistantConfig`` field. The README's probe (2026-12-05) ran on the recipe before its corpus
steps, length-grouped batches and fp32 decoding: ``corpus_steps=0 group_by_length=False decode_precision=None``
repeats it (stage 2 then trains again unless its checkpoint is in the cache).
"""

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch
from assistant_try import overrides  # FIELD=VALUE -> AssistantConfig fields (this folder is on the path)

from mmhelpers.caption_metrics import caption_scores
from mmhelpers.engine import FitConfig, fit, warmup_cosine
from mmhelpers.paths import cache_root
from mmhelpers.scenarios.assistant.chat import collate, encode_chat
from mmhelpers.scenarios.assistant.data import CAPTION_PROMPT, CAPTION_PROMPTS
from mmhelpers.scenarios.assistant.recipe import AssistantConfig, answer, prepare, train_stage


def val_scores(run) -> dict:
    rows = run.data.caption_images("val")
    caps = answer(run, rows, [CAPTION_PROMPT] * len(rows), num_beams=3)
    s = caption_scores([run.data.references[i] for i in rows], caps)
    return {"bleu4": s["bleu4"], "cider": s["cider"], "examples": caps[:3]}


def train_on_corpus(run, texts: list[str], steps: int, batch: int, lr: float, variant: str, seed: int) -> float:
    model, tok, cfg = run.model, run.tokenizer, run.cfg
    pad = tok.pad_token_id
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    train = run.data.samples["train"]
    photo_rows = [i for i, s in enumerate(train) if s.task == "caption"]
    photo_order = rng.permutation(len(photo_rows))
    spare = run.visual([train[photo_rows[0]].image])  # text-only batches carry no image tokens: this is unused

    mixed = variant == "mixed"

    def data(step: int) -> dict:
        if variant == "photos" or (mixed and step % 2):
            k = step if variant == "photos" else step // 2
            pick = [photo_rows[photo_order[(k * batch + j) % len(photo_rows)]] for j in range(batch)]
            return collate([run.encoded["train"][i] for i in pick], pad_id=pad) | run.visual(
                [train[i].image for i in pick]
            )
        k = step // 2 if mixed else step
        picks = [order[(k * batch + j) % len(order)] for j in range(batch)]
        chats = [
            encode_chat(tok, [(CAPTION_PROMPTS[j % len(CAPTION_PROMPTS)], texts[i])], 0, cfg.system, cfg.max_length)
            for j, i in enumerate(picks)
        ]
        return collate(chats, pad_id=pad) | {k: v.expand(len(picks), *v.shape[1:]) for k, v in spare.items()}

    model.projector.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, 10, steps, cfg.min_lr_factor)
    fit_cfg = FitConfig(steps=steps, grad_clip=1.0, precision=cfg.precision, device=cfg.device, desc="corpus")
    t = time.perf_counter()
    fit(model, opt, data, lambda m, b: m(**b), fit_cfg, scheduler=sched)
    model.projector.requires_grad_(True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="*", help="FIELD=VALUE of AssistantConfig")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--variants", nargs="+", default=["text", "mixed"], choices=["text", "mixed", "photos"])
    ap.add_argument("--cache", default="assistant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = prepare(replace(AssistantConfig(data="real", seed=args.seed), **overrides(args.settings)), progress=False)
    for stage in (1, 2):
        train_stage(run, stage, checkpoint_dir=cache_root() / args.cache)
    texts = run.data.corpus  # the Flickr8k captions of every photo but the validation and test ones
    trained = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora_" in n}
    out = {"seed": args.seed, "settings": args.settings, "corpus": len(texts), "steps": args.steps, "batch": args.batch, "lr": args.lr,
           "threads": args.threads, "stage2": val_scores(run)}  # fmt: skip
    print(json.dumps(out), flush=True)
    for variant in args.variants:
        with torch.no_grad():
            for n, p in run.model.named_parameters():
                if n in trained:
                    p.copy_(trained[n])
        seconds = train_on_corpus(run, texts, args.steps, args.batch, args.lr, variant, args.seed)
        out[variant] = val_scores(run) | {"seconds": seconds}
        print(json.dumps({variant: out[variant]}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
