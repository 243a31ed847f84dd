"""Speed of the image-feature path on this machine, and what bf16 does to downstream figures.

    python scripts/benchmark.py --threads 2        # writes results/benchmark.json

1. Peak: GFLOP/s of a 2048x2048 matrix multiply in fp32 and in bf16.
2. EfficientNet-Lite0 at 224 px, batch 32 (model only, inputs already preprocessed): images/s in fp32
   with the default (contiguous) layout, channels-last, and channels-last under bf16 autocast; the median
   of timed runs after warm-up, as GFLOP/s (0.77 GFLOP per image) and as a fraction of the peak.
3. Engine overhead: seconds per training step of one model through a bare PyTorch loop and through
   ``mmhelpers.engine.fit`` (``--only-engine`` measures just this and updates the file's section).
4. Downstream: the same EfficientNet-Lite0 features of scikit-learn's digits (embedded, real handwriting)
   in fp32 and in bf16, compared by a linear probe's accuracy and nearest-neighbour retrieval recall.

The machine may be shared: the 1-minute load average is recorded next to every timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmhelpers.atomic import write_json
from mmhelpers.encoders import ImageEncoder, build_image_encoder
from mmhelpers.paths import results_dir
from mmhelpers.precision import bf16_is_fast, resolve_precision

GFLOP_PER_IMAGE = 0.77  # EfficientNet-Lite0 at 224 px (torch.utils.flop_counter counts 0.768)
VARIANTS = {  # name -> (precision, channels_last)
    "fp32": ("fp32", False),
    "channels_last": ("fp32", True),
    "channels_last_bf16": ("bf16", True),
}


def load_1min() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """Cores, threads, CPU model and capability, bf16 support, library versions."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), None)
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_is_fast": bf16_is_fast("cpu"),
            "precision_auto": resolve_precision("auto", "cpu"), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def median_time(fn: Callable[[], object], warmup: int, runs: int) -> tuple[float, list[float], float]:
    """Median wall time of ``fn`` over ``runs`` calls after ``warmup`` untimed ones, every time, and CPU s per wall s.

    The CPU/wall ratio shows contention: near the thread count when the process had its cores to itself.
    """
    for _ in range(warmup):
        fn()
    times = []
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ratio = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return statistics.median(times), [round(t, 4) for t in times], round(ratio, 2)


def matmul_peak(dtype: torch.dtype, n: int, warmup: int, runs: int, repeat: int = 10) -> dict[str, Any]:
    """GFLOP/s of ``repeat`` (n, n) @ (n, n) products in ``dtype`` (median of ``runs``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)

    def work() -> None:
        for _ in range(repeat):
            torch.mm(a, b)

    load = load_1min()
    t, times, ratio = median_time(work, warmup, runs)
    return {"gflops": round(2 * n**3 * repeat / t / 1e9, 1), "best_gflops": round(2 * n**3 * repeat / min(times) / 1e9, 1),
            "n": n, "repeat": repeat, "times_s": times, "cpu_s_per_wall_s": ratio, "load_avg_1min": load}  # fmt: skip


def encoder_throughput(batch: int, size: int, warmup: int, runs: int, peaks: dict[str, float]) -> dict[str, Any]:
    """Images/s, GFLOP/s and fraction of the matmul peak of EfficientNet-Lite0 for each variant."""
    x = torch.randn(batch, 3, size, size)
    flop_per_image = GFLOP_PER_IMAGE * (size / 224) ** 2
    out: dict[str, Any] = {}
    for name, (precision, channels_last) in VARIANTS.items():
        enc = build_image_encoder(precision=precision, channels_last=channels_last)

        def forward(enc: ImageEncoder = enc) -> None:
            with torch.inference_mode():
                enc(x)

        load = load_1min()
        t, times, ratio = median_time(forward, warmup, runs)
        peak = peaks["bf16" if precision == "bf16" else "fp32"]
        gflops = batch * flop_per_image / t
        out[name] = {"images_per_s": round(batch / t, 1), "best_images_per_s": round(batch / min(times), 1),
                     "gflops": round(gflops, 1), "peak_gflops": peak, "fraction_of_peak": round(gflops / peak, 3),
                     "precision": precision, "channels_last": channels_last, "batch_times_s": times,
                     "cpu_s_per_wall_s": ratio, "load_avg_1min": load}  # fmt: skip
    return out


def engine_overhead(steps: int = 60, repeats: int = 3, batch: int = 64) -> dict[str, Any]:
    """Seconds per training step of the same model, batches and optimizer: a bare PyTorch loop vs ``engine.fit``.

    The model is the digits scenario's ImageCNN on 28 px images (a step of a few milliseconds, so any fixed
    per-step cost of the engine shows); both loops clip gradients, step an AdamW and a schedule and read the
    loss every step. Repeats alternate between the two, and the median per-step time of each is compared.
    """
    from mmhelpers.encoders import ImageCNN
    from mmhelpers.engine import FitConfig, fit, warmup_cosine

    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(batch * 8, 1, 28, 28, generator=g), torch.randint(0, 10, (batch * 8,), generator=g)

    def data(step: int) -> dict[str, torch.Tensor]:
        i = (step % 8) * batch
        return {"image": images[i : i + batch], "label": labels[i : i + batch]}

    def loss_fn(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(b["image"]), b["label"])

    def setup() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        torch.manual_seed(0)
        model = ImageCNN(in_channels=1, n_classes=10)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return model, opt, warmup_cosine(opt, 5, steps)

    def bare() -> float:
        model, opt, sched = setup()
        model.train()
        t0 = time.perf_counter()
        for step in range(steps):
            loss = loss_fn(model, data(step))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            loss.item()
        return (time.perf_counter() - t0) / steps

    def engine() -> float:
        model, opt, sched = setup()
        cfg = FitConfig(steps=steps, precision="fp32", device="cpu", progress=False)
        t0 = time.perf_counter()
        fit(model, opt, data, loss_fn, cfg, scheduler=sched)
        return (time.perf_counter() - t0) / steps

    bare(), engine()  # warm-up (allocator, kernels, the Accelerator's first set-up)
    times: dict[str, list[float]] = {"bare": [], "engine": []}
    for _ in range(repeats):
        times["bare"].append(bare())
        times["engine"].append(engine())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": "ImageCNN (digits), 28 px, batch 64, AdamW + clipping + schedule, fp32, CPU",
        "steps": steps, "repeats": repeats, "seconds_per_step": med,
        "all_seconds_per_step": {k: [round(x, 5) for x in v] for k, v in times.items()},
        "overhead": med["engine"] / med["bare"] - 1.0, "target": "<= 0.05", "load_avg_1min": load_1min(),
    }  # fmt: skip


def downstream_delta(n_images: int, size: int, batch: int, seed: int = 0) -> dict[str, Any]:
    """Linear-probe accuracy and nearest-neighbour recall on digits with fp32 vs bf16 features (points = %)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mmhelpers.data.embedded import load_digit_images
    from mmhelpers.zero_shot import gray_to_rgb

    digits = load_digit_images()
    pick = np.sort(np.random.default_rng(seed).permutation(len(digits.labels))[:n_images])
    images, labels = gray_to_rgb(digits.images[pick]), digits.labels[pick]
    feats, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        enc = build_image_encoder(precision=precision)
        enc.input_size = size
        start = time.perf_counter()
        with torch.inference_mode():
            feats[precision] = torch.cat(
                [enc(enc.preprocess(images[i : i + batch])) for i in range(0, len(images), batch)]
            )
        seconds[precision] = round(time.perf_counter() - start, 1)  # preprocessing included
    train, test = train_test_split(np.arange(len(labels)), test_size=0.5, random_state=seed, stratify=labels)
    out: dict[str, Any] = {"data": f"scikit-learn digits (embedded), {len(labels)} images at {size} px",
                           "probe": "logistic regression on standardised features, stratified 50/50 split",
                           "extract_s_with_preprocessing": seconds, "load_avg_1min": load_1min()}  # fmt: skip
    for precision, f in feats.items():
        x = f.numpy()
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x[train], labels[train])
        out[precision] = {"probe_accuracy": round(100 * probe.score(x[test], labels[test]), 2),
                          **_nn_recall(f, labels)}  # fmt: skip
    a, b = torch.nn.functional.normalize(feats["fp32"], dim=1), torch.nn.functional.normalize(feats["bf16"], dim=1)
    cos = (a * b).sum(1)
    out["feature_cosine"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}
    out["delta_points"] = {k: round(out["bf16"][k] - out["fp32"][k], 2) for k in out["fp32"]}
    out["within_1_point"] = all(abs(v) <= 1.0 for v in out["delta_points"].values())
    return out


def _nn_recall(feats: torch.Tensor, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Retrieval with every image as a query (itself excluded): % of queries with a same-class image in the top k."""
    z = torch.nn.functional.normalize(feats, dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-2.0)
    top = sim.topk(max(ks), dim=1).indices.numpy()
    hit = labels[top] == labels[:, None]
    return {f"recall@{k}": round(100 * float(hit[:, :k].any(1).mean()), 2) for k in ks}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--probe-images", type=int, default=1000, help="digits for the fp32-vs-bf16 check (0: skip)")
    p.add_argument("--out", type=Path, default=results_dir() / "benchmark.json")
    p.add_argument("--engine-steps", type=int, default=60, help="training steps per engine-overhead timing")
    p.add_argument("--engine-repeats", type=int, default=3)
    p.add_argument("--only-engine", action="store_true", help="measure the engine overhead only (updates --out)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only_engine:
        import json

        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["engine_overhead"] = {**engine_overhead(args.engine_steps, args.engine_repeats), "threads": args.threads,
                                     "command": "python scripts/benchmark.py --only-engine --threads "
                                     f"{args.threads}"}  # fmt: skip
        write_json(args.out, result)
        print(result["engine_overhead"])
        return result
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = load_1min()
    peaks = {name: matmul_peak(dtype, args.matmul_n, args.warmup, args.runs)
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}  # fmt: skip
    speed = encoder_throughput(
        args.batch, args.size, args.warmup, args.runs, {k: v["gflops"] for k, v in peaks.items()}
    )
    result = {
        "what": f"EfficientNet-Lite0 feature extraction speed ({args.size} px, batch {args.batch}, model only) and "
        "the effect of bf16 on downstream figures",  # fmt: skip
        "command": "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": started,
        "threads": args.threads,
        "machine": machine_info(),
        "load_avg_1min": {"start": load_start},
        "matmul_peak": peaks,
        "efficientnet_lite0": {
            "gflop_per_image_at_224": GFLOP_PER_IMAGE,
            "size": args.size,
            "batch": args.batch,
            "warmup": args.warmup,
            "timed_runs": args.runs,
            "statistic": "median",
            "variants": speed,
        },  # fmt: skip
        "engine_overhead": engine_overhead(args.engine_steps, args.engine_repeats),
        "bf16_vs_fp32_downstream": downstream_delta(args.probe_images, args.size, args.batch)
        if args.probe_images
        else None,
    }
    result["load_avg_1min"]["end"] = load_1min()
    write_json(args.out, result)
    print(f"wrote {args.out}")
    for name, v in speed.items():
        print(f"{name:20s} {v['images_per_s']:7.1f} images/s (best {v['best_images_per_s']:.1f})  "
              f"{v['gflops']:6.1f} GFLOP/s  {100 * v['fraction_of_peak']:5.1f}% of peak  "
              f"(load {v['load_avg_1min']}, CPU/wall {v['cpu_s_per_wall_s']})")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
