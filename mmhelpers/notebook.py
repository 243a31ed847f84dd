"""Small helpers every notebook calls: set-up, a stated data source, and the metrics JSON."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from mmhelpers.atomic import write_json
from mmhelpers.paths import REPO_ROOT, build_dir
from mmhelpers.utils import get_device, set_seed, set_threads


def setup(seed: int = 0, device: str = "auto", threads: int | None = None) -> torch.device:
    """Seed everything, choose the device and thread count, print them; call in each notebook's first cell."""
    set_seed(seed)
    n = set_threads(threads)
    dev = get_device(device)
    print(f"seed={seed} device={dev} torch={torch.__version__} threads={n} python={platform.python_version()}")
    return dev


def metrics_path(name: str, given: str | None = None) -> Path:
    """Where a notebook writes its key figures: the ``METRICS_JSON`` parameter, or build/metrics/<name>.json."""
    if given:
        path = Path(given)
        return path if path.is_absolute() else REPO_ROOT / path
    return build_dir() / "metrics" / f"{name}.json"


def save_metrics(path: str | Path, metrics: dict[str, Any], **context: Any) -> None:
    """Write a notebook's key figures (plus context such as data source and parameters) as JSON, and say where.

    Returns nothing, so a notebook's last cell prints the path once instead of echoing it as its value.
    """
    record = {**metrics, "_context": {**context, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}}
    out = write_json(path, record)
    print(f"metrics -> {out}")
