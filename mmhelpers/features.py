"""Batched feature extraction with an on-disk cache keyed by model, preprocessing and data content.

Cache rules (``extract_features`` enforces them, so a caller cannot forget one):

- the **model** is named with its weights: ``"<name>@<weights hash or package version>"``
  (``model_id_of(module)`` hashes the state_dict; ``ImageEncoder.model_id`` and ``TextEncoder.model_id``
  do it for the package's encoders);
- the **preprocessing** is a dict of every setting that changes the output (size, crop, normalisation,
  and the ``precision`` the model ran in, so fp32 and bf16 features never mix);
- the **data** is hashed by content, computed here from the items (or ``data=``): arrays and tensors by
  bytes, files by the sha256 of their bytes (never name, size or mtime).

Content hashes of files are remembered in a side index (``<cache>/file-hashes.json``: path -> size,
mtime_ns, ctime_ns, sha256), so an unchanged file is not read again; ``verify=True`` re-hashes every file.
The cache is written in shards, each renamed into place atomically, so an interrupted extraction
resumes from the last finished shard. Every cached tensor carries a sha256 of its bytes; a corrupt or
truncated entry is detected, reported and rebuilt. One extraction per key runs at a time: a second
process wanting the same key waits on a lock file (``fcntl.flock``) and then reads the finished result.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmhelpers.atomic import atomic_open, clean_stale_temps
from mmhelpers.atomic import locked as _locked
from mmhelpers.errors import DataError
from mmhelpers.paths import cache_root

FORMAT_VERSION = 2
INDEX_NAME = "file-hashes.json"
_BLOCK = 1 << 20


# ---------------------------------------------------------------- content hashes


def fingerprint(obj: Any, *, verify: bool = False, root: Path | None = None) -> str:
    """A short sha256 of data by content: arrays and tensors by bytes, files by their bytes, containers element-wise.

    Files (``Path`` objects) are hashed through the side index under ``root`` (default the cache root):
    an unchanged file (same size, mtime and ctime) is not read again; ``verify=True`` re-reads every file.
    Other objects than JSON scalars, lists, tuples, dicts, paths, arrays and tensors raise TypeError.
    """
    paths: list[Path] = []
    _walk(obj, lambda x: paths.append(x) if isinstance(x, Path) else None)
    file_hashes = iter(_file_hashes(paths, verify, root))
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, Path):
            h.update(f"file:{next(file_hashes)};".encode())
        else:
            _feed_value(h, x, feed)

    feed(obj)
    return h.hexdigest()[:16]


def _walk(x: Any, visit: Callable[[Any], None]) -> None:
    """Call ``visit`` on every leaf of nested lists, tuples and dicts, in the order ``fingerprint`` feeds them."""
    if isinstance(x, list | tuple):
        for item in x:
            _walk(item, visit)
    elif isinstance(x, Mapping):
        for k in sorted(x, key=str):
            _walk(x[k], visit)
    else:
        visit(x)


def _feed_value(h: Any, x: Any, feed: Callable[[Any], None]) -> None:
    """Feed one value into hash ``h``; containers recurse through ``feed``."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        x = t.view(torch.int16).numpy().view("V2") if t.dtype == torch.bfloat16 else t.numpy()
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError("cannot hash an object array by content: pass a list of its items")
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    elif isinstance(x, list | tuple):
        h.update(b"[")
        for item in x:
            feed(item)
        h.update(b"]")
    elif isinstance(x, Mapping):
        h.update(b"{")
        for k in sorted(x, key=str):
            h.update(json.dumps(str(k)).encode() + b":")
            feed(x[k])
        h.update(b"}")
    elif x is None or isinstance(x, str | int | float | bool | np.generic):
        h.update(json.dumps(x.item() if isinstance(x, np.generic) else x).encode())
    else:
        raise TypeError(
            f"cannot hash a {type(x).__name__} by content; pass data= as arrays, tensors, paths or JSON values"
        )


def file_sha256(path: str | Path, *, verify: bool = False, root: Path | None = None) -> str:
    """sha256 of a file's bytes, remembered in the side index so that an unchanged file is not read again."""
    return _file_hashes([Path(path)], verify, root)[0]


def _stat_sig(path: Path) -> list[int]:
    """What says a file is unchanged since it was hashed: size, mtime and ctime (ctime cannot be set back)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _file_hashes(paths: Sequence[Path], verify: bool, root: Path | None) -> list[str]:
    """Content sha256 of each file through the side index ``<root>/file-hashes.json``; ``verify`` re-reads all."""
    if not paths:
        return []
    index_path = (root or cache_root()) / INDEX_NAME
    index = _read_index(index_path)
    new: dict[str, list[int | str]] = {}
    out = []
    for p in paths:
        name, sig = str(p.resolve()), _stat_sig(p)
        known = index.get(name)
        known = known if isinstance(known, list) and len(known) == len(sig) + 1 else None  # a damaged entry
        if not verify and known is not None and known[:-1] == sig:
            out.append(str(known[-1]))
            continue
        digest = _sha256_of_file(p)
        if known is not None and known[:-1] == sig and known[-1] != digest:
            warnings.warn(f"{p} changed although its size and times did not; re-hashed (verify=True)", stacklevel=3)
        if _stat_sig(p) == sig:  # not written to while it was read
            new[name] = [*sig, digest]
        out.append(digest)
    if new:
        with _locked(index_path.with_name(INDEX_NAME + ".lock")):
            merged = {k: v for k, v in _read_index(index_path).items() if os.path.exists(k)} | new  # drop deleted files
            with atomic_open(index_path, "w") as f:
                json.dump(merged, f, separators=(",", ":"))
    return out


def _read_index(path: Path) -> dict[str, list[int | str]]:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- model identity

_MODEL_HASHES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def model_fingerprint(module: nn.Module, refresh: bool = False) -> str:
    """A short sha256 of a module's state_dict (names, dtypes, shapes, bytes; layout-independent), memoised.

    The memo is per module object and is dropped when a tensor is replaced (``.to()``, ``load_state_dict``)
    or changed in place by autograd-visible ops (optimizer steps); writes through ``.data`` are not seen:
    pass ``refresh=True`` after those.
    """
    state = module.state_dict()
    stamp = _state_stamp(state)
    memo = _MODEL_HASHES.get(module)
    if not refresh and memo is not None and stamp is not None and memo[0] == stamp:
        return memo[1]
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        _feed_value(h, t, lambda _: None)
    digest = h.hexdigest()[:16]
    if stamp is not None:
        _MODEL_HASHES[module] = (stamp, digest)
    return digest


def _state_stamp(state: Mapping[str, torch.Tensor]) -> tuple[Any, ...] | None:
    """Storage pointers and version counters of a state_dict; None for inference tensors (no counter)."""
    try:
        return tuple((k, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for k, t in state.items())
    except RuntimeError:
        return None


def model_id_of(module: nn.Module, name: str | None = None) -> str:
    """``"<name>@<model_fingerprint(module)>"``: a model's name with a hash of its weights, for cache keys."""
    return f"{name or getattr(module, 'name', None) or type(module).__name__}@{model_fingerprint(module)}"


def package_model_id(name: str, distribution: str) -> str:
    """``"<name>@<distribution>==<version>"``: a model identified by the installed package shipping its weights."""
    from importlib.metadata import version

    return f"{name}@{distribution}=={version(distribution)}"


# ---------------------------------------------------------------- tensor files


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


# ---------------------------------------------------------------- cache keys and extraction


def cache_key(
    items: Sequence[Any],
    *,
    model_id: str,
    preprocess: Mapping[str, Any],
    data: Any = None,
    key: Mapping[str, Any] | None = None,
    verify: bool = False,
    root: Path | None = None,
) -> dict[str, Any]:
    """The full cache key of an extraction: model id, preprocessing, content hash of ``data`` (default ``items``)."""
    if not isinstance(model_id, str) or not all(model_id.partition("@")[::2]):
        raise ValueError(f"model_id must be '<name>@<weights hash or package version>' "
                         f"(see model_id_of, package_model_id), got {model_id!r}")  # fmt: skip
    if not isinstance(preprocess, Mapping) or "precision" not in preprocess:
        raise ValueError(f"preprocess must be a dict of the preprocessing settings, including the 'precision' "
                         f"the model ran in ('fp32', 'bf16'...), got {preprocess!r}")  # fmt: skip
    return {"model": model_id, "preprocess": dict(preprocess), "n": len(items), "settings": dict(key or {}),
            "data": fingerprint(_as_data(items) if data is None else data, verify=verify, root=root)}  # fmt: skip


def _as_data(items: Sequence[Any]) -> Any:
    """Items as ``fingerprint`` hashes them: an array or tensor whole, anything else as a list."""
    return items if isinstance(items, torch.Tensor | np.ndarray) else list(items)


def cache_dir_for(key: Mapping[str, Any], root: Path | None = None) -> Path:
    """The cache folder of one extraction: ``<cache>/features/<model name>-<hash of the key>``."""
    blob = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    model = str(key.get("model", "features")).partition("@")[0].replace("/", "_")
    return (root or cache_root()) / "features" / f"{model}-{digest}"


def extract_features(
    encode_batch: Callable[[Sequence[Any]], torch.Tensor],
    items: Sequence[Any],
    *,
    model_id: str | None = None,
    preprocess: Mapping[str, Any] | None = None,
    data: Any = None,
    key: Mapping[str, Any] | None = None,
    verify: bool = False,
    batch_size: int = 32,
    shard_size: int = 512,
    cache_root_dir: Path | None = None,
    progress: bool = True,
    desc: str = "extract features",
) -> torch.Tensor:
    """Run ``encode_batch`` over ``items`` in batches under ``inference_mode``; concatenate on CPU as float32.

    ``encode_batch`` receives a slice of ``items`` and returns a (b, ...) tensor: it closes over a model
    loaded once outside (never load a model per item). With ``model_id`` (``"<name>@<weights hash>"``,
    e.g. ``encoder.model_id``) and ``preprocess`` (a dict of the preprocessing settings with the
    ``precision``) the result is cached on disk, shard by shard, under a key that adds the content hash
    of ``data`` (default ``items``; pass the images or texts when ``items`` are indices) and ``key``
    (other settings: layer, views...). A second call with the same key loads it instead of recomputing;
    ``verify=True`` re-hashes every input file instead of trusting the side index.
    """
    if model_id is None:
        if preprocess is not None or key is not None or data is not None:
            raise TypeError("a cached extraction needs model_id= (name@weights hash) as well as preprocess=")
        return _extract(encode_batch, items, batch_size, shard_size, None, None, progress, desc)
    if preprocess is None:
        raise TypeError("a cached extraction needs preprocess= (a dict with the precision) as well as model_id=")
    root = cache_root_dir or cache_root()
    meta = cache_key(items, model_id=model_id, preprocess=preprocess, data=data, key=key, verify=verify, root=root)
    folder = cache_dir_for(meta, root)
    with _locked(folder / ".lock", f"{desc}: waiting for another process extracting the same key ({folder.name})"):
        clean_stale_temps(folder)  # temporary files of killed writers
        return _extract(encode_batch, items, batch_size, shard_size, folder, meta, progress, desc)


def _extract(
    encode_batch: Callable[[Sequence[Any]], torch.Tensor],
    items: Sequence[Any],
    batch_size: int,
    shard_size: int,
    folder: Path | None,
    meta: dict[str, Any] | None,
    progress: bool,
    desc: str,
) -> torch.Tensor:
    """The extraction itself; with a ``folder`` (held under its lock) shards are cached and merged."""
    from tqdm.auto import tqdm

    n = len(items)
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
            p.unlink(missing_ok=True)
    return result
