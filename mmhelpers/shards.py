"""A cached map over many items in JSON shards: the pattern of the OCR reader and the speech recogniser.

``cached_map(items, fn, key=..., kind=...)`` runs ``fn`` on each item once and keeps the results under
``<cache>/<kind>/<digest>/shard-00000.json``, ``shard_size`` items a shard, each written atomically. The digest
covers ``key`` (what fully determines the results: the items' content, the model and its settings), so a changed
setting never returns a stale result, and an interrupted run resumes from the last whole shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mmhelpers.atomic import clean_stale_temps, write_json
from mmhelpers.paths import cache_root

T = TypeVar("T")


def shard_folder(kind: str, key: Mapping[str, Any], prefix: str = "") -> Path:
    """The cache folder of one cached map: ``<cache>/<kind>/<prefix>-<16 hex digits of the key>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = cache_root() / kind / (f"{prefix}-{digest}" if prefix else digest)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)
    return folder


def cached_map(
    items: Sequence[Any],
    fn: Callable[[Sequence[Any]], list[T]],
    *,
    key: Mapping[str, Any] | None,
    kind: str,
    to_json: Callable[[T], Any],
    from_json: Callable[[Any], T],
    prefix: str = "",
    shard_size: int = 64,
    desc: str = "",
    unit: str = "item",
    progress: bool = True,
) -> list[T]:
    """``fn`` over ``items`` a shard at a time (``fn`` takes a list, returns one result per item), cached by ``key``.

    ``key=None`` computes everything and caches nothing."""
    from tqdm.auto import tqdm

    folder = shard_folder(kind, {**key, "n": len(items), "shard_size": shard_size}, prefix) if key is not None else None
    results: list[T] = []
    with tqdm(total=len(items), desc=desc or kind, unit=unit, disable=not progress) as bar:
        for s, start in enumerate(range(0, len(items), shard_size)):
            stop = min(len(items), start + shard_size)
            path = folder / f"shard-{s:05d}.json" if folder is not None else None
            shard = _load_shard(path, start, stop, from_json) if path is not None else None
            if shard is None:
                shard = fn(items[start:stop])
                if len(shard) != stop - start:
                    raise RuntimeError(f"{kind}: got {len(shard)} results for {stop - start} items")
                if path is not None:
                    write_json(path, {"start": start, "stop": stop, "results": [to_json(r) for r in shard]})
            results += shard
            bar.update(stop - start)
    return results


def _load_shard(path: Path, start: int, stop: int, from_json: Callable[[Any], T]) -> list[T] | None:
    """A cached shard, or None when it is missing, unreadable or for other positions (then it is computed again)."""
    try:
        blob = json.loads(path.read_text())
        if blob["start"] != start or blob["stop"] != stop or len(blob["results"]) != stop - start:
            return None
        return [from_json(r) for r in blob["results"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
