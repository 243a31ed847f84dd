"""One exploratory full run of the assistant with some of its options changed: stage 1, stage 2, the held-out scores.

    MMHELPERS_MIRROR=../shared/data python scripts/assistant_try.py coords=6.0 scene_turns=6 questions_per_scene=12 \
        stage2_captions=1 stage2_steps=300 [--captions]

Each argument is an ``AssistantConfig`` field and a Python literal; the rest is the full CPU recipe (real data, seed 0,
2 threads). Prints the answers' accuracy by question type beside the question prior and, with ``--captions``,
BLEU/CIDEr-D of the held-out captions; with ``region_phrases=True``, how many held-out objects the scene text got
right. The README's exploratory assistant runs of 2026-12-04 and 2026-12-05 were made this way.
Checkpoints go to the cache (``assistant_try/``, or ``--cache assistant`` to reuse the notebooks' stage 1 where its
settings are unchanged), keyed by the settings, so a finished run only re-scores. ``--split val`` scores the
validation photos' captions, to choose a setting without looking at the test photos.
"""

import argparse
import ast
import json
import time
from dataclasses import fields, replace

import torch

from mmhelpers.paths import cache_root
from mmhelpers.region_phrases import phrase_recall, split_phrases
from mmhelpers.scenarios.assistant.evaluate import evaluate_captions, evaluate_questions
from mmhelpers.scenarios.assistant.recipe import AssistantConfig, prepare, train_stage


def overrides(pairs: list[str]) -> dict[str, object]:
    """``["coords=6.0", "scene_turns=6"]`` -> ``{"coords": 6.0, "scene_turns": 6}``, fields checked."""
    names, out = {f.name for f in fields(AssistantConfig)}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"{pair!r}: expected FIELD=VALUE with FIELD one of AssistantConfig's fields")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a plain word, e.g. finetune=frozen
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="*", help="FIELD=VALUE of AssistantConfig")
    parser.add_argument("--captions", action="store_true", help="also score the held-out captions (beam search)")
    parser.add_argument("--split", default="test", help="the captions' photos: test, or val to choose on")
    parser.add_argument("--cache", default="assistant_try", help="checkpoints under the cache folder; 'assistant' "
                        "reuses the notebooks' stages where the settings match")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(AssistantConfig(data="real"), **overrides(args.settings))
    t0 = time.perf_counter()
    run = prepare(cfg)
    print("training examples:", run.data.tasks("train"), flush=True)
    if run.scene_text is not None:  # region_phrases=True: how well the held-out scenes were written as text
        held_out = sorted({s.image for s in run.data.samples["test"] if s.image in run.data.descriptions})
        truth = [run.data.descriptions[i] for i in held_out]
        right = phrase_recall([split_phrases(run.scene_text[i]) for i in held_out], truth)
        exact = sum(run.scene_text[i] == t for i, t in zip(held_out, truth, strict=True)) / len(held_out)
        print(f"region phrases: {right:.3f} of the held-out scenes' objects written right, {exact:.2f} of the "
              f"scenes exactly; e.g. {run.scene_text[held_out[0]]!r}", flush=True)  # fmt: skip
    for stage in (1, 2):
        hist = train_stage(run, stage, checkpoint_dir=cache_root() / args.cache)
        print(f"stage {stage}: {hist.seconds:.0f} s", flush=True)
    q = evaluate_questions(run)
    print("accuracy:", json.dumps({k: round(v, 3) for k, v in q["accuracy"].items()}))
    print("prior:   ", json.dumps({k: round(v, 3) for k, v in q["prior"].items()}))
    if args.captions:
        c = evaluate_captions(run, split=args.split)
        print(f"captions ({args.split}):", json.dumps({k: round(v, 3) for k, v in c.items() if isinstance(v, float)}))
    print(f"{time.perf_counter() - t0:.0f} s in all, {args.threads} threads, seed {cfg.seed}")


if __name__ == "__main__":
    main()
