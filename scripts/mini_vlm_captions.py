"""The mini VLM's captioning recipe for several training seeds on ONE split of the photos, scored on its test photos.

    MMHELPERS_MIRROR=../shared/data python scripts/mini_vlm_captions.py --seeds 0 1 2 --data-seed 0 \
        --out results/mini_vlm_same_photos.json

The committed mini VLM runs (``results/mini_vlm.json``) draw the split with the training seed, so each seed held out
other photos; only seed 0 held out the 100 photos the assistant (04) is scored on (its ``data_seed=0``). This runs
the full captioning recipe (``run_captioning``, as notebook 03.05 runs it on the real data: text-only pre-training,
every fusion fine-tuned, the one with the best validation CIDEr-D chosen) with the split fixed by ``--data-seed``, so
the mini VLM's mean and spread over training seeds compare with the assistant's on the same photos. Checkpoints go
to the notebooks' cache (``captioning/``, keyed by the settings; ``data_seed`` equal to the seed keeps the notebooks'
key, so seed 0 loads their run where it is cached; a finished run loads, an unfinished one continues). fp32, as the
committed runs; ``--threads`` per seed. ``seconds`` per seed is this command's time for it: training, or loading a
cached run, and scoring.
"""

import argparse
import json
import time

import numpy as np
import torch

from mmhelpers.atomic import write_json
from mmhelpers.paths import cache_root
from mmhelpers.scenarios.mini_vlm.captioning import CaptionConfig, run_captioning

KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "nn_bleu4", "nn_cider")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--data-seed", type=int, default=0, help="the split of the photos (0: the assistant's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the numbers here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_seed = {}
    for seed in args.seeds:
        t = time.perf_counter()
        result = run_captioning(CaptionConfig(data="real", seed=seed, data_seed=args.data_seed),
                                progress=False, checkpoint_dir=cache_root() / "captioning", resume="latest")  # fmt: skip
        m = result.metrics
        per_seed[str(seed)] = {k: m[k] for k in KEYS} | {"chosen_fusion": m["chosen_fusion"],
                                                         "seconds": time.perf_counter() - t}  # fmt: skip
        print(json.dumps({"seed": seed, **per_seed[str(seed)]}), flush=True)
    out = {
        "data_seed": args.data_seed,
        "seeds": args.seeds,
        "mean": {k: float(np.mean([r[k] for r in per_seed.values()])) for k in KEYS},
        "spread": {k: float(np.std([r[k] for r in per_seed.values()], ddof=1)) if len(per_seed) > 1 else 0.0
                   for k in KEYS},  # fmt: skip
        "per_seed": per_seed,
        "threads": args.threads,
        "command": "MMHELPERS_MIRROR=../shared/data python scripts/mini_vlm_captions.py --seeds "
                   f"{' '.join(map(str, args.seeds))} --data-seed {args.data_seed} --threads {args.threads}"
                   + (f" --out {args.out}" if args.out else ""),
    }
    print(json.dumps({"mean": out["mean"], "spread": out["spread"]}), flush=True)
    if args.out:
        write_json(args.out, out)


if __name__ == "__main__":
    main()
