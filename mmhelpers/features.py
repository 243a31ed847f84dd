"""Batched feature extraction with an on-disk cache keyed by model, data and preprocessing.

The cache is written in shards, each renamed into place atomically, so an interrupted
extraction resumes from the last finished shard. Every cached tensor carries a sha256 of
its bytes; a corrupt or truncated entry is detected, reported and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmhelpers.atomic import atomic_open
from mmhelpers.errors import DataError
from mmhelpers.paths import cache_root

FORMAT_VERSION = 1


def fingerprint(obj: Any) -> str:
    """A short sha256 of data: arrays and tensors by bytes, paths by name+size+mtime, lists element-wise."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous().numpy()
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, Path):
            st = x.stat()
            h.update(f"{x.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        elif isinstance(x, list | tuple):
            h.update(b"[")
            for item in x:
                feed(item)
            h.update(b"]")
        else:
            h.update(json.dumps(x, sort_keys=True, default=str).encode())

    feed(obj)
    return h.hexdigest()[:16]


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def save_tensor(path: Path, tensor: torch.Tensor, meta: dict[str, Any]) -> None:
    """Save a tensor with its metadata and checksum, atomically.

    The metadata is stored as plain JSON values (tuples become lists, paths strings), as
    ``load_tensor`` compares it, and so that ``torch.load(weights_only=True)`` can read it back.
    """
    meta = json.loads(json.dumps(meta, default=str))
    payload = {"version": FORMAT_VERSION, "meta": meta, "sha256": _tensor_sha(tensor), "tensor": tensor.cpu()}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_tensor(path: Path, meta: dict[str, Any] | None = None) -> torch.Tensor | None:
    """Load a tensor saved by ``save_tensor``; None (with a warning) if missing, corrupt or for other metadata."""
    if not path.exists():
        return None
    if path.is_dir():
        raise DataError(path, "feature-cache entry is a folder, not a file: delete it and it is rebuilt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        tensor = payload["tensor"]
        if payload.get("version") != FORMAT_VERSION or _tensor_sha(tensor) != payload["sha256"]:
            raise ValueError("checksum or format mismatch")
        if meta is not None and payload["meta"] != json.loads(json.dumps(meta, default=str)):
            raise ValueError("metadata differs from the requested key")
    except Exception as e:  # a truncated file can fail in many ways inside torch.load
        warnings.warn(f"{path}: corrupt or stale cache entry ({type(e).__name__}: {e}); rebuilding it", stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    return tensor


def cache_dir_for(key: dict[str, Any], root: Path | None = None) -> Path:
    """The cache folder of one extraction: ``<cache>/features/<model>-<hash of the key>``."""
    blob = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    model = str(key.get("model", "features")).replace("/", "_")
    return (root or cache_root()) / "features" / f"{model}-{digest}"


def extract_features(
    encode_batch: Callable[[Sequence[Any]], torch.Tensor],
    items: Sequence[Any],
    *,
    key: dict[str, Any] | None = None,
    batch_size: int = 32,
    shard_size: int = 512,
    cache_root_dir: Path | None = None,
    progress: bool = True,
    desc: str = "extract features",
) -> torch.Tensor:
    """Run ``encode_batch`` over ``items`` in batches under ``inference_mode``; concatenate on CPU.

    ``encode_batch`` receives a slice of ``items`` and returns a (b, ...) tensor: it closes
    over a model loaded once outside (never load a model per item). With a ``key`` (say
    ``{"model": ..., "data": fingerprint(...), "preprocessing": ...}``) the result is cached on
    disk, shard by shard; a second call with the same key loads it instead of recomputing.
    """
    from tqdm.auto import tqdm

    n = len(items)
    folder = cache_dir_for({**key, "n": n}, cache_root_dir) if key is not None else None
    meta = {**key, "n": n} if key is not None else None
    if folder is not None and (whole := load_tensor(folder / "all.pt", meta)) is not None:
        return whole
    shard_size = max(batch_size, shard_size - shard_size % batch_size)
    shards = []
    with tqdm(total=n, desc=desc, unit="item", disable=not progress) as bar:
        for s, start in enumerate(range(0, n, shard_size)):
            stop = min(n, start + shard_size)
            shard_path = folder / f"shard-{s:05d}.pt" if folder is not None else None
            shard_meta = {**(meta or {}), "start": start, "stop": stop}
            shard = load_tensor(shard_path, shard_meta) if shard_path is not None else None
            if shard is None:
                with torch.inference_mode():
                    parts = [encode_batch(items[i : min(stop, i + batch_size)]).detach().float().cpu()
                             for i in range(start, stop, batch_size)]  # fmt: skip
                shard = torch.cat(parts)
                if shard_path is not None:
                    save_tensor(shard_path, shard, shard_meta)
            shards.append(shard)
            bar.update(stop - start)
    result = torch.cat(shards) if shards else torch.empty(0)
    if folder is not None:
        save_tensor(folder / "all.pt", result, meta)  # type: ignore[arg-type]
        for p in folder.glob("shard-*.pt"):
            p.unlink()
    return result
