"""Run every scenario's smoke path through the engine on a device (a GPU when one is lent) and write what happened.

    python scripts/gpu_check.py                      # DEVICE=cuda, bf16 where the GPU has it
    python scripts/gpu_check.py --device cpu         # the same on the CPU (slower; for comparison)

For each recipe it records where the trained parameters ended up, the figures its smoke test asserts on, and the
wall time, in ``build/gpu_check.json``. It fails (exit 1) if a recipe trained anywhere but the requested device.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mmhelpers.atomic import write_json
from mmhelpers.paths import build_dir


def _where(model: torch.nn.Module) -> str:
    return ",".join(sorted({p.device.type for p in model.parameters()}))


def check_av(device: str, precision: str) -> dict[str, Any]:
    from mmhelpers.scenarios.av_digits.data import load_av_digits
    from mmhelpers.scenarios.av_digits.recipe import AVConfig, run_protocol

    av = load_av_digits("embedded", seed=0)
    cfg = replace(AVConfig(device=device, precision=precision).smoke(), methods=("concat", "gated", "transformer"))
    r = run_protocol(av, "official", cfg, progress=False)[0]
    return {"accuracy": r.accuracy, "devices": {k: _where(m) for k, m in r.models.items() if any(m.parameters())}}


def check_alignment(device: str, precision: str) -> dict[str, Any]:
    from mmhelpers.contrastive import AlignConfig, build_dual_encoder, evaluate_retrieval, train_alignment
    from mmhelpers.scenarios.image_text.data import load_scenario

    sc = load_scenario("embedded", seed=0, unfreeze_text_layers=1)
    cfg = replace(AlignConfig().smoke(), batch_size=len(sc.ds.split["train"]), eval_every=10)
    model = build_dual_encoder(sc.data, cfg, sc.text_encoder)
    train, val, test = (torch.as_tensor(sc.ds.split[k]) for k in ("train", "val", "test"))
    train_alignment(model, sc.data, train, val, progress=False, device=device, precision=precision)
    return {"test": evaluate_retrieval(model, sc.data, test), "devices": _where(model)}


def check_captioning(device: str, precision: str) -> dict[str, Any]:
    from mmhelpers.scenarios.mini_vlm.captioning import CaptionConfig, run_captioning

    with tempfile.TemporaryDirectory() as d:
        cfg = replace(CaptionConfig(device=device, precision=precision).smoke())
        res = run_captioning(cfg, progress=False, checkpoint_dir=d)
    m = res.metrics
    return {"cider": m["cider"], "mf_cider": m["mf_cider"], "devices": _where(res.models[m["chosen_fusion"]])}


def check_vqa(device: str, precision: str) -> dict[str, Any]:
    from mmhelpers.scenarios.mini_vlm.vqa import VQAConfig, train_vqa

    res = train_vqa(VQAConfig.smoke(device=device, precision=precision), progress=False)
    return {"test": res.test, "devices": _where(res.model)}


CHECKS = {"av_digits": check_av, "image_text": check_alignment, "captioning": check_captioning, "vqa": check_vqa}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--only", nargs="*", default=list(CHECKS))
    ap.add_argument("--out", type=Path, default=build_dir() / "gpu_check.json")
    args = ap.parse_args()
    os.environ.setdefault("MMHELPERS_CACHE", tempfile.mkdtemp(prefix="gpu_check_cache_"))
    report: dict[str, Any] = {
        "device": args.device, "precision": args.precision, "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "recipes": {},
    }  # fmt: skip
    ok = True
    for name in args.only:
        t0 = time.perf_counter()
        out = CHECKS[name](args.device, args.precision)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        devices = out["devices"].values() if isinstance(out["devices"], dict) else [out["devices"]]
        out["on_device"] = all(d == torch.device(args.device).type for d in devices)
        ok &= out["on_device"]
        report["recipes"][name] = out
        print(name, out["seconds"], "s", "on device" if out["on_device"] else f"NOT ON {args.device}: {devices}")
    write_json(args.out, report)
    print(f"-> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
