"""A scenario's results file over several training seeds: each run adds its seed, the top level is the mean.

    record = {"caption": {"bleu4": 0.12, ...}, "config": {...}, "command": "..."}   # one seed's numbers
    merged = merge_seed("results/assistant.json", record, seed=1)
    merged["caption"]["bleu4"]           # the mean over the seeds in the file
    merged["spread"]["caption"]["bleu4"]  # their standard deviation (ddof=1; 0.0 with one seed)
    merged["per_seed"]["1"]              # this seed's record, as given

Run the scenario once per seed (``make notebooks ARGS="... -p SEED 1"``, or ``--seeds 0 1 2`` to run them side by
side) and the file gathers them; seeds that finish at once take turns (a lock file in the cache, :func:`results_lock`). A record
whose settings differ from the file's (``config`` without its seed) starts the file afresh: numbers from
another configuration are never averaged in. Numbers are averaged leaf by leaf where every seed has them
(booleans and strings are not numbers: the lowest seed's value stands); the write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from mmhelpers.atomic import locked, write_json
from mmhelpers.paths import cache_root

__all__ = ["merge_seed", "mean_and_spread", "results_lock"]

SEED_FIELDS = ("seed",)  # config fields that may differ between the seeds of one file
_META = ("per_seed", "spread", "seeds")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _same_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = lambda c: {k: v for k, v in (c or {}).items() if k not in SEED_FIELDS}  # noqa: E731
    return strip(a.get("config")) == strip(b.get("config"))


def _combine(values: list[Any]) -> tuple[Any, Any]:
    """(mean, spread) of one leaf over the seeds; dicts recurse; non-numbers keep the first seed's value."""
    if all(isinstance(v, dict) for v in values):
        keys = [k for k in values[0] if all(k in v for v in values)]
        pairs = {k: _combine([v[k] for v in values]) for k in keys}
        mean = {k: m for k, (m, _) in pairs.items()}
        spread = {k: s for k, (_, s) in pairs.items() if s is not None}
        return mean, (spread or None)
    if all(_number(v) for v in values):
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return mean, math.sqrt(var)
    return values[0], None


def mean_and_spread(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The records of several seeds as one: every number their mean, ``spread`` the standard deviations,
    ``per_seed`` the records, ``seeds`` their seeds in order."""
    if not per_seed:
        raise ValueError("no seeds to combine")
    seeds = sorted(per_seed, key=int)
    mean, spread = _combine([per_seed[s] for s in seeds])
    return {
        **mean,
        "spread": spread or {},
        "seeds": [int(s) for s in seeds],
        "per_seed": {s: per_seed[s] for s in seeds},
    }


def results_lock(path: str | Path) -> Path:
    """The lock file that serialises updates of the results file at ``path`` (in the cache, not beside the file)."""
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return cache_root() / "locks" / f"{Path(path).name}-{key}.lock"


def merge_seed(path: str | Path, record: dict[str, Any], seed: int) -> dict[str, Any]:
    """Add (or replace) ``seed``'s ``record`` in the results file at ``path`` and rewrite its mean and spread.

    The file's other seeds are kept only when their ``config`` (seed aside) equals the record's; a file from
    before seeds were gathered (no ``per_seed``) is replaced. Returns what was written.
    """
    path = Path(path)
    if any(k in record for k in _META):
        raise ValueError(f"a seed's record cannot hold {_META}: those keys belong to the merged file")
    record = json.loads(json.dumps(record))  # as the file will hold it (tuples as lists), so configs compare equal
    with locked(results_lock(path)):
        per_seed: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON ({e}); move it away to start the file afresh") from e
            per_seed = {s: r for s, r in old.get("per_seed", {}).items() if _same_settings(r, record)}
        per_seed[str(int(seed))] = record
        merged = mean_and_spread(per_seed)
        write_json(path, merged)
    return merged
