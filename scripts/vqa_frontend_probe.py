"""Train the Sort-of-CLEVR VQA model with a chosen visual front end and score it clean and under corruptions.

    python scripts/vqa_frontend_probe.py --frontend cells --curriculum 3000 --augment 0.5 --threads 1
    python scripts/vqa_frontend_probe.py --frontend slots                      # the committed recipe

One full-length run (the recipe's 7,500 steps of 4 scenes unless ``--steps``) of ``train_vqa``, then ``robustness_table`` on the 1,000 test
scenes (JPEG, colour shift, pixel noise, anti-aliased rendering). Prints the table and writes it with the test
accuracies and validation curve to ``build/vqa_probe/<frontend>_s<seed>_c<curriculum>_a<augment>.json``; the
checkpoint goes beside it, so a second call only re-scores. About 10 minutes at one thread. The README quotes
these runs (issue #17's palette-free front end); they are exploratory, not in ``results/``.
"""

import argparse
import json

import torch

from mmhelpers.atomic import write_json
from mmhelpers.paths import build_dir
from mmhelpers.scenarios.mini_vlm.vqa import FRONTENDS, VQAConfig, robustness_table, train_vqa, vqa_set

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--frontend", choices=FRONTENDS, default="cells")
ap.add_argument("--curriculum", type=int, default=3000, help="steps of left/right and top/bottom questions first")
ap.add_argument("--augment", type=float, default=0.0, help="probability of each training corruption")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--steps", type=int, default=VQAConfig().steps)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other VQAConfig fields (JSON values)")
args = ap.parse_args()
overrides = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}

torch.set_num_threads(args.threads)
cfg = VQAConfig(seed=args.seed, frontend=args.frontend, curriculum_steps=args.curriculum, augment=args.augment,
                steps=args.steps, **overrides)  # fmt: skip
name = (
    f"{args.frontend}_s{args.seed}_c{args.curriculum}_a{args.augment:g}"
    + (f"_steps{args.steps}" if args.steps != VQAConfig().steps else "")
    + "".join(f"_{k}{v}" for k, v in overrides.items())
)
out = build_dir() / "vqa_probe"
res = train_vqa(cfg, progress=True, checkpoint_dir=out / name, resume="latest")
table = robustness_table(res.model, vqa_set(cfg.n_scenes_test, cfg.test_seed, cfg.size), seed=args.seed)
record = {"args": vars(args), "threads": torch.get_num_threads(), "test": res.test, "robustness": table,
          "val_steps": res.history.eval_steps, "val": res.history.val, "train_seconds": res.history.seconds}  # fmt: skip
write_json(out / f"{name}.json", record)
print("test:", {k: round(v, 3) for k, v in res.test.items()})
for corruption, by in table.items():
    for strength, acc in by.items():
        nonrel, rel = acc["non_relational"], acc["relational"]
        print(f"{corruption:13} {strength:>3}  non-relational {nonrel:.3f}  relational {rel:.3f}")
