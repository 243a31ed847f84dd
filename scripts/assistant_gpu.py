"""The assistant's larger configuration (``AssistantConfig.gpu()``) on one GPU: both stages, then the scores.

    MMHELPERS_MIRROR=../shared/data python scripts/assistant_gpu.py --out results/assistant_gpu.json

``AssistantConfig(data="real").gpu()``: all 49 visual tokens, 300 + 2,000 steps of 64 (stages 1, 2), LoRA on all seven
projections, 36,000 scene questions and 3,000 digits, bf16. It writes, atomically, the held-out caption loss after
each stage, BLEU-4 / CIDEr-D on the mini VLM's 100 held-out photos, the answers by question type against the
question prior, the stage times and the device, and the command. ``--steps``/``--scale`` shrink it (a dry run
on a CPU: ``--lm tiny --device cpu --steps 4 --scale 0.02``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import asdict, replace

import torch

from mmhelpers.atomic import write_json
from mmhelpers.scenarios.assistant.evaluate import evaluate_captions, evaluate_questions
from mmhelpers.scenarios.assistant.recipe import AssistantConfig, prepare, reply_loss, train_stage
from mmhelpers.utils import set_seed

COMMAND = "MMHELPERS_MIRROR=../shared/data python scripts/assistant_gpu.py --out results/assistant_gpu.json"


def command(cfg: AssistantConfig, seed: int) -> str:
    """The command that trains this configuration again (stage 2's steps as run, after any ``--minutes`` cut)."""
    steps = f" --stage1-steps {cfg.stage1_steps} --steps {cfg.stage2_steps}"
    default = AssistantConfig().gpu()
    same = (cfg.stage1_steps, cfg.stage2_steps) == (default.stage1_steps, default.stage2_steps)
    return COMMAND + ("" if same else steps) + (f" --seed {seed}" if seed else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="build/assistant_gpu.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--lm", default=None, help="another causal LM (a folder or hub name), or 'tiny' for a dry run")
    p.add_argument("--steps", type=int, default=None, help="steps of both stages (default: the config's 300 and 2,000)")
    p.add_argument("--scale", type=float, default=1.0, help="shrink the scene and digit counts (a dry run)")
    p.add_argument("--stage1-steps", type=int, default=None, help="stage 1 alone (default: --steps or the config's)")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="a time limit: stage 2's steps are cut to what stage 1's speed leaves time for (recorded)",
    )
    args = p.parse_args(argv)

    cfg = replace(AssistantConfig(data="real", seed=args.seed).gpu(), device=args.device)
    if args.device == "cpu":
        cfg = replace(cfg, precision="auto")
    if args.lm:
        cfg = replace(cfg, lm=args.lm)
    if args.steps:
        cfg = replace(cfg, stage1_steps=args.steps, stage2_steps=args.steps)  # warm-up: at most half (train_stage)
    if args.stage1_steps:
        cfg = replace(cfg, stage1_steps=args.stage1_steps)
    if args.scale != 1.0:
        n = lambda t: tuple(max(4, int(v * args.scale)) if i == 0 else v for i, v in enumerate(t))  # noqa: E731
        cfg = replace(cfg, scenes=n(cfg.scenes), digits=n(cfg.digits))
    set_seed(cfg.seed)
    t0 = time.perf_counter()
    out: dict = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "command": command(cfg, args.seed),
                 "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
                 "torch": torch.__version__}  # fmt: skip
    run = prepare(cfg, progress=False)
    run.model.to(args.device)
    out["prepare_seconds"] = time.perf_counter() - t0
    print(f"prepared in {out['prepare_seconds']:.0f} s: {run.data.source}", flush=True)
    out["caption_loss"] = {"untrained": reply_loss(run, "test")}
    out["stage_seconds"] = {}
    for stage in (1, 2):
        if stage == 2 and args.minutes:  # stage 2 at ~1.3x stage 1's cost a step (LoRA); 2 min kept for the scores
            per_step = 1.3 * out["stage_seconds"]["1"] / cfg.stage1_steps
            left = args.minutes * 60 - (time.perf_counter() - t0) - 120
            affordable = max(100, int(left / per_step) // 100 * 100)
            if affordable < cfg.stage2_steps:
                print(
                    f"stage 2 cut from {cfg.stage2_steps} to {affordable} steps to fit {args.minutes} min", flush=True
                )
                out["stage2_steps_cut_from"] = cfg.stage2_steps
                run.cfg = cfg = replace(cfg, stage2_steps=affordable)
                out["config"]["stage2_steps"] = str(affordable)
                out["command"] = command(cfg, args.seed)
        hist = train_stage(run, stage, checkpoint_dir=None, progress=False)
        out["stage_seconds"][str(stage)] = hist.seconds
        out["caption_loss"][f"stage{stage}"] = reply_loss(run, "test")
        print(f"stage {stage}: {hist.seconds:.0f} s, held-out caption loss {out['caption_loss']}", flush=True)
        write_json(args.out, out)  # what a run cut short still leaves
    t1 = time.perf_counter()
    caps = evaluate_captions(run, "test")
    out["caption"] = {k: caps[k] for k in ("bleu4", "cider")} | {"nn_bleu4": caps["nn"]["bleu4"],
                                                                  "nn_cider": caps["nn"]["cider"],
                                                                  "examples": caps["captions"][:6]}  # fmt: skip
    print(f"captions: BLEU-4 {caps['bleu4']:.3f} CIDEr-D {caps['cider']:.3f}", flush=True)
    write_json(args.out, out)
    qa = evaluate_questions(run, "test")
    out["questions"] = {k: qa[k] for k in ("accuracy", "prior", "format_rate", "n", "examples")}
    out["eval_seconds"] = time.perf_counter() - t1
    out["total_seconds"] = time.perf_counter() - t0
    for k in ("non_relational", "relational", "task:digits"):
        if k in qa["accuracy"]:
            print(f"{k}: {qa['accuracy'][k]:.3f} (prior {qa['prior'][k]:.3f})", flush=True)
    write_json(args.out, out)
    print(f"-> {args.out} ({out['total_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
