"""Train one recipe (the digits image encoder of the audio-visual scenario) on 1 or N processes and write its result.

    python scripts/ddp_check.py --out DIR                                      # one process
    torchrun --standalone --nproc_per_node 2 scripts/ddp_check.py --out DIR    # two processes (gloo on CPUs)

The global batch is the same in both (each of N processes takes 1/N of it, DDP averages the gradients), so the
two runs should reach the same accuracy. Only the main process writes: the checkpoint and ``result.json``.
tests/test_engine.py runs both and compares them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from mmhelpers.atomic import write_json
from mmhelpers.engine import accelerator
from mmhelpers.metrics import accuracy
from mmhelpers.scenarios.av_digits.data import load_av_digits
from mmhelpers.scenarios.av_digits.recipe import AVConfig, encode, train_image_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    acc = accelerator(args.device)
    av = load_av_digits("embedded", seed=0)
    train, test = av.image_pools["train"], av.image_pools["test"]
    cfg = AVConfig(image_epochs=args.epochs, device=args.device, precision="fp32")
    model, hist = train_image_encoder(av.images[train], av.image_labels[train], cfg, args.out / "run", progress=False)
    test_acc = accuracy(encode(model, av.images[test])["logits"], av.image_labels[test])
    if acc.is_main_process:
        write_json(args.out / "result.json", {
            "processes": acc.num_processes, "distributed_type": str(acc.distributed_type), "device": str(acc.device),
            "test_acc": test_acc, "train_loss": hist.train_loss, "train_acc": hist.train_acc,
            "n_train": len(train), "n_test": len(test), "epochs": args.epochs,
        })  # fmt: skip
    print(json.dumps({"rank": acc.process_index, "test_acc": test_acc}))


if __name__ == "__main__":
    main()
