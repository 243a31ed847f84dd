"""Tests for mmhelpers.features: batched extraction, the sharded on-disk cache (hits, misses,
corruption, resuming after an interruption), honest cache keys (weights, preprocessing, data content),
the side index of file hashes, concurrent extraction by two processes, fingerprints and the tensor file format."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmhelpers import features
from mmhelpers.errors import DataError
from mmhelpers.features import (
    cache_dir_for,
    cache_key,
    extract_features,
    file_sha256,
    fingerprint,
    load_tensor,
    model_fingerprint,
    model_id_of,
    save_tensor,
)

W = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)


class Interrupted(RuntimeError):
    """Stands in for a crash or Ctrl-C in the middle of an extraction."""


class Encoder:
    """A deterministic 'model' (items -> (b, 4)) that records every batch it is given."""

    def __init__(self, fail_on_call: int | None = None):
        self.batches: list[list[int]] = []
        self.fail_on_call = fail_on_call
        self.in_inference_mode: list[bool] = []

    def __call__(self, batch: Sequence[int]) -> torch.Tensor:
        if self.fail_on_call is not None and len(self.batches) + 1 == self.fail_on_call:
            raise Interrupted("simulated interruption")
        self.batches.append(list(batch))
        self.in_inference_mode.append(torch.is_inference_mode_enabled())
        return encode_all(batch)

    @property
    def items_seen(self) -> list[int]:
        return [i for b in self.batches for i in b]


def encode_all(items: Sequence[int]) -> torch.Tensor:
    """The reference: the same function over all items at once."""
    x = torch.tensor(list(items), dtype=torch.float32)
    feats = torch.stack([x, x.sin(), x.square() / 100.0], dim=1)  # (n, 3)
    return feats @ W  # (n, 4)


def run(enc: Encoder, items: Sequence[int], root: Path, **kw) -> torch.Tensor:
    return extract_features(enc, items, cache_root_dir=root, progress=False, **kw)


ID: dict[str, Any] = {"model_id": "toy/encoder@v1",
                      "preprocess": {"size": (224, 224), "scale": "minus_one_one", "precision": "fp32"}}  # fmt: skip


def folder_of(items: Sequence[Any], root: Path, **kw: Any) -> Path:
    """The cache folder an extraction of ``items`` with ``ID`` (updated by ``kw``) uses."""
    return cache_dir_for(cache_key(items, root=root, **{**ID, **kw}), root)


def listing(folder: Path) -> list[str]:
    """The files in a cache folder except its permanent lock file (temporary files do show)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock")


# ---------------------------------------------------------------- without a cache


@pytest.mark.parametrize("n,batch_size", [(10, 3), (12, 4), (1, 8), (7, 7)])
def test_no_key_equals_one_big_batch(tmp_path: Path, n: int, batch_size: int) -> None:
    enc = Encoder()
    items = list(range(n))
    out = run(enc, items, tmp_path, batch_size=batch_size)
    torch.testing.assert_close(out, encode_all(items))
    assert enc.items_seen == items  # each item once, in order
    assert all(len(b) <= batch_size for b in enc.batches)
    assert len(enc.batches) == -(-n // batch_size)  # last batch holds the remainder
    assert not (tmp_path / "features").exists()  # no key, no cache


def test_shards_and_batches_not_aligned(tmp_path: Path) -> None:
    """shard_size not a multiple of batch_size, n a multiple of neither."""
    enc = Encoder()
    items = list(range(23))
    out = run(enc, items, tmp_path, **ID, batch_size=4, shard_size=10)
    torch.testing.assert_close(out, encode_all(items))
    assert sorted(enc.items_seen) == items and len(enc.items_seen) == 23


def test_runs_under_inference_mode(tmp_path: Path) -> None:
    enc = Encoder()
    out = run(enc, list(range(5)), tmp_path, batch_size=2)
    assert enc.in_inference_mode == [True, True, True]
    assert not torch.is_inference_mode_enabled()
    assert out.device.type == "cpu" and out.dtype == torch.float32


def test_empty_items(tmp_path: Path) -> None:
    enc = Encoder()
    assert run(enc, [], tmp_path).numel() == 0
    assert enc.batches == []


# ---------------------------------------------------------------- with a cache


def test_second_call_is_a_cache_hit(tmp_path: Path) -> None:
    items = list(range(20))
    first_enc, second_enc = Encoder(), Encoder()
    first = run(first_enc, items, tmp_path, **ID, batch_size=4, shard_size=8)
    assert first_enc.items_seen == items
    folder = folder_of(items, tmp_path)
    assert listing(folder) == ["all.pt"]  # shards merged and removed, no temporary files
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a hit is silent (no 'stale cache' warning: tuples in the key survive)
        second = run(second_enc, items, tmp_path, **ID, batch_size=4, shard_size=8)
    assert second_enc.batches == []
    assert torch.equal(first, second)
    torch.testing.assert_close(second, encode_all(items))


def test_key_with_paths_is_a_cache_hit(tmp_path: Path) -> None:
    """Settings may hold a Path (and other non-JSON values): they are stored as strings, so the cache still hits."""
    key = {"source": tmp_path / "images", "size": (32, 32)}
    run(Encoder(), list(range(6)), tmp_path, **ID, key=key)
    enc = Encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(enc, list(range(6)), tmp_path, **ID, key=key)
    assert enc.batches == []


def test_other_key_recomputes(tmp_path: Path) -> None:
    items = list(range(9))
    run(Encoder(), items, tmp_path, **ID)
    other = {"size": (256, 256), "scale": "imagenet", "precision": "fp32"}
    enc = Encoder()
    out = run(enc, items, tmp_path, model_id=ID["model_id"], preprocess=other)
    assert enc.items_seen == items
    torch.testing.assert_close(out, encode_all(items))
    assert folder_of(items, tmp_path, preprocess=other) != folder_of(items, tmp_path)
    # other items under the same key: the item count is part of the key
    enc = Encoder()
    run(enc, list(range(10)), tmp_path, **ID)
    assert enc.items_seen == list(range(10))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip"])
def test_corrupt_cache_warns_and_rebuilds(tmp_path: Path, damage: str) -> None:
    items = list(range(11))
    good = run(Encoder(), items, tmp_path, **ID, batch_size=4)
    path = folder_of(items, tmp_path) / "all.pt"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a torch file\x00\x01" * 20)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a valid file whose tensor no longer matches its checksum
        payload = torch.load(path, weights_only=True)
        payload["tensor"][3, 1] += 1.0
        torch.save(payload, path)
    enc = Encoder()
    with pytest.warns(UserWarning, match="corrupt or stale"):
        rebuilt = run(enc, items, tmp_path, **ID, batch_size=4)
    assert enc.items_seen == items
    torch.testing.assert_close(rebuilt, encode_all(items))
    torch.testing.assert_close(rebuilt, good)
    # and the rebuilt entry is good again
    again = Encoder()
    assert torch.equal(run(again, items, tmp_path, **ID, batch_size=4), rebuilt) and again.batches == []


def test_interrupted_extraction_resumes(tmp_path: Path) -> None:
    """Shards of 4 items, batches of 2: the 3rd shard fails at its first batch (call 5); the rerun
    computes only shards 3 and 4."""
    items = list(range(18))  # shards [0:4] [4:8] [8:12] [12:16] [16:18]
    enc = Encoder(fail_on_call=5)
    with pytest.raises(Interrupted):
        run(enc, items, tmp_path, **ID, batch_size=2, shard_size=4)
    assert enc.items_seen == list(range(8))
    folder = folder_of(items, tmp_path)
    assert listing(folder) == ["shard-00000.pt", "shard-00001.pt"]  # no temp files

    resumed = Encoder()
    out = run(resumed, items, tmp_path, **ID, batch_size=2, shard_size=4)
    assert resumed.items_seen == list(range(8, 18))
    torch.testing.assert_close(out, encode_all(items))
    assert listing(folder) == ["all.pt"]


def test_corrupt_shard_is_recomputed_on_resume(tmp_path: Path) -> None:
    items = list(range(12))
    with pytest.raises(Interrupted):
        run(Encoder(fail_on_call=3), items, tmp_path, **ID, batch_size=4, shard_size=4)
    folder = folder_of(items, tmp_path)
    (folder / "shard-00001.pt").write_bytes(b"not a checkpoint at all")
    enc = Encoder()
    with pytest.warns(UserWarning, match="shard-00001"):
        out = run(enc, items, tmp_path, **ID, batch_size=4, shard_size=4)
    assert enc.items_seen == list(range(4, 12))
    torch.testing.assert_close(out, encode_all(items))


def test_cache_root_defaults_to_mmhelpers_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMHELPERS_CACHE", str(tmp_path / "cache"))
    extract_features(Encoder(), [1, 2, 3], model_id="org/name@v1", preprocess={"precision": "fp32"}, progress=False)
    (folder,) = (tmp_path / "cache" / "features").iterdir()
    assert folder.name.startswith("org_name-") and (folder / "all.pt").is_file()


def test_cache_entry_that_is_a_folder_raises_data_error(tmp_path: Path) -> None:
    items = list(range(8))
    run(Encoder(), items, tmp_path / "whole", **ID)  # leaves all.pt
    with pytest.raises(Interrupted):  # leaves shard-00000.pt
        run(Encoder(fail_on_call=2), items, tmp_path / "shards", **ID, batch_size=4, shard_size=4)
    for root, name in ((tmp_path / "whole", "all.pt"), (tmp_path / "shards", "shard-00000.pt")):
        (entry,) = root.rglob(name)
        entry.unlink()
        entry.mkdir()
        with pytest.raises(DataError, match="feature-cache entry is a folder, not a file: delete it") as info:
            run(Encoder(), items, root, **ID, batch_size=4, shard_size=4)
        assert info.value.path == entry and entry.is_dir()  # named, and left alone


def test_default_cache_under_a_data_root_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "data.txt"
    a_file.write_text("oops\n")
    monkeypatch.delenv("MMHELPERS_CACHE")
    monkeypatch.setenv("MMHELPERS_DATA", str(a_file))
    with pytest.raises(DataError, match="MMHELPERS_DATA names a file, not a folder"):
        extract_features(Encoder(), [1, 2, 3], **ID, progress=False)
    monkeypatch.setenv("MMHELPERS_CACHE", str(a_file))
    with pytest.raises(DataError, match="MMHELPERS_CACHE names a file, not a folder"):
        extract_features(Encoder(), [1, 2, 3], **ID, progress=False)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_arrays_and_tensors() -> None:
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert fingerprint(a) == fingerprint(a.copy()) == fingerprint(np.asfortranarray(a))
    assert len(fingerprint(a)) == 16
    b = a.copy()
    b[2, 3] += 1e-3
    assert fingerprint(b) != fingerprint(a)
    assert fingerprint(a.reshape(6, 4)) != fingerprint(a)  # same bytes, other shape
    assert fingerprint(a.astype(np.float64)) != fingerprint(a)
    t = torch.from_numpy(a)
    assert fingerprint(t) == fingerprint(t.clone())
    t2 = t.clone()
    t2[0, 0] = -1
    assert fingerprint(t2) != fingerprint(t)
    assert fingerprint([a, "x", 3]) == fingerprint([a.copy(), "x", 3]) != fingerprint([b, "x", 3])
    assert fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})


def test_fingerprint_containers_and_unknown_objects() -> None:
    assert fingerprint({"a": [1, (2, "x")], "b": None}) == fingerprint({"b": None, "a": [1, (2, "x")]})
    assert fingerprint({"a": 1}) != fingerprint({"a": "1"}) != fingerprint({"b": 1})
    assert fingerprint([np.int64(3), np.float32(0.5)]) == fingerprint([3, 0.5])
    bf = torch.linspace(0, 1, 6, dtype=torch.bfloat16)
    assert fingerprint(bf) == fingerprint(bf.clone()) != fingerprint(bf.half())
    with pytest.raises(TypeError, match="by content"):
        fingerprint([object()])  # its str() would hold an address, or worse, say nothing of its content
    with pytest.raises(TypeError, match="object array"):
        fingerprint(np.array([1, "a"], dtype=object))


def test_fingerprint_files_by_content(tmp_path: Path) -> None:
    """Two different files with the same name, size and mtime in two folders differ; the same bytes
    under another name are the same data."""
    f, g = tmp_path / "a" / "img.jpg", tmp_path / "b" / "img.jpg"
    for p, content in ((f, b"12345678"), (g, b"abcdefgh")):
        p.parent.mkdir()
        p.write_bytes(content)
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert fingerprint(f) != fingerprint(g)
    assert file_sha256(f) == hashlib.sha256(b"12345678").hexdigest()
    assert fingerprint(Path(str(f))) == fingerprint(f)
    copy = tmp_path / "other-name.jpg"
    copy.write_bytes(f.read_bytes())
    assert fingerprint(copy) == fingerprint(f)
    assert fingerprint([f, g]) != fingerprint([g, f])
    assert fingerprint({"x": f}) != fingerprint({"x": g})  # paths inside dicts are read too


def test_files_in_two_folders_get_two_cache_entries(tmp_path: Path) -> None:
    f, g = tmp_path / "a" / "img.bin", tmp_path / "b" / "img.bin"
    for p, content in ((f, b"\x01\x02\x03"), (g, b"\x07\x08\x09")):
        p.parent.mkdir()
        p.write_bytes(content)
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert folder_of([f], tmp_path) != folder_of([g], tmp_path)
    root = tmp_path / "cache"
    out_f = run(read_bytes, [f], root, **ID)
    out_g = run(read_bytes, [g], root, **ID)  # the old keys (name, size, mtime) returned f's features here
    assert out_f.tolist() == [[1, 2, 3]] and out_g.tolist() == [[7, 8, 9]]


def read_bytes(paths: Sequence[Path]) -> torch.Tensor:
    """An 'encoder' of files: their bytes as floats."""
    return torch.tensor([list(p.read_bytes()) for p in paths], dtype=torch.float32)


def test_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real = features._sha256_of_file
    monkeypatch.setattr(features, "_sha256_of_file", lambda p: reads.append(p) or real(p))
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    h = file_sha256(f)
    assert reads == [f] and json.loads((tmp_path / "cache" / features.INDEX_NAME).read_text())
    assert file_sha256(f) == h and reads == [f]  # from the side index
    assert file_sha256(f, verify=True) == h and len(reads) == 2  # verify re-reads
    os.utime(f, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))  # touched: read again
    assert file_sha256(f) == h and len(reads) == 3


def test_modified_file_with_restored_mtime_is_caught_with_verify(tmp_path: Path) -> None:
    f = tmp_path / "photo.jpg"
    f.write_bytes(b"original")
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    first = run(read_bytes, [f], tmp_path, **ID)
    folder = folder_of([f], tmp_path)
    f.write_bytes(b"modified")  # same size
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # mtime put back
    assert folder_of([f], tmp_path, verify=True) != folder
    enc_calls: list[int] = []

    def counting(paths: Sequence[Path]) -> torch.Tensor:
        enc_calls.append(len(paths))
        return read_bytes(paths)

    out = run(counting, [f], tmp_path, **ID, verify=True)
    assert enc_calls == [1] and out.tolist() == [list(b"modified")] != first.tolist()

    # On Linux the ctime (which cannot be set back) already shows the change. Where a change leaves
    # size, mtime and ctime alike (the side index then holds the old hash), only verify=True sees it:
    index_path = tmp_path / features.INDEX_NAME
    index = json.loads(index_path.read_text())
    index[str(f.resolve())][-1] = hashlib.sha256(b"original").hexdigest()
    index_path.write_text(json.dumps(index))
    assert file_sha256(f, root=tmp_path) == hashlib.sha256(b"original").hexdigest()  # trusted: stale
    with pytest.warns(UserWarning, match="changed although"):
        assert file_sha256(f, root=tmp_path, verify=True) == hashlib.sha256(b"modified").hexdigest()
    assert file_sha256(f, root=tmp_path) == hashlib.sha256(b"modified").hexdigest()  # index repaired


# ---------------------------------------------------------------- cache keys: model and preprocessing


def test_cache_key_needs_model_weights_preprocessing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="model_id"):
        run(Encoder(), [1, 2], tmp_path, key={"model": "toy"})  # the old style: no weights, no preprocessing
    with pytest.raises(TypeError, match="preprocess"):
        run(Encoder(), [1, 2], tmp_path, model_id="toy@v1")
    with pytest.raises(ValueError, match="model_id must be"):
        run(Encoder(), [1, 2], tmp_path, model_id="toy", preprocess={"precision": "fp32"})
    with pytest.raises(ValueError, match="precision"):
        run(Encoder(), [1, 2], tmp_path, model_id="toy@v1", preprocess={"size": 224})


def linear(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


def test_other_weights_under_the_same_name_get_another_key(tmp_path: Path) -> None:
    a, b = linear(0), linear(1)
    assert model_id_of(a, "toy") != model_id_of(b, "toy")
    assert model_id_of(a, "toy").startswith("toy@") and model_id_of(a, "toy") == model_id_of(linear(0), "toy")
    x = [torch.ones(3), torch.arange(3.0)]
    outs = []
    for m in (a, b):
        outs.append(run(lambda batch, m=m: m(torch.stack(list(batch))), x, tmp_path, model_id=model_id_of(m, "toy"),
                        preprocess={"precision": "fp32"}))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(outs[1], b(torch.stack(x)))  # b's own outputs, not a's from the cache
    assert len(list((tmp_path / "features").iterdir())) == 2


def test_model_fingerprint_is_memoised_and_follows_changes() -> None:
    m = linear(0)
    h = model_fingerprint(m)
    assert model_fingerprint(m) == h and features._MODEL_HASHES[m][1] == h
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.ones(1, 3)).sum().backward()
    opt.step()  # in place: the version counters move
    stepped = model_fingerprint(m)
    assert stepped != h
    m.load_state_dict(linear(0).state_dict())
    assert model_fingerprint(m) == h
    m.weight.data[0, 0] += 1.0  # invisible to the memo (no version bump): refresh=True says so
    assert model_fingerprint(m) == h != model_fingerprint(m, refresh=True)
    cl = torch.nn.Conv2d(3, 4, 3)
    h_conv = model_fingerprint(cl)
    assert model_fingerprint(cl.to(memory_format=torch.channels_last)) == h_conv  # layout is not identity
    assert model_fingerprint(cl.to(torch.bfloat16)) != h_conv


def test_other_precision_gets_another_key(tmp_path: Path) -> None:
    items = list(range(5))
    bf16 = {**ID["preprocess"], "precision": "bf16"}
    assert folder_of(items, tmp_path, preprocess=bf16) != folder_of(items, tmp_path)
    run(Encoder(), items, tmp_path, **ID)
    enc = Encoder()
    run(enc, items, tmp_path, model_id=ID["model_id"], preprocess=bf16)
    assert enc.items_seen == items  # recomputed: fp32 and bf16 features never mix


# ---------------------------------------------------------------- temporary files and concurrent writers


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_writers_are_removed(tmp_path: Path) -> None:
    items = list(range(6))
    folder = folder_of(items, tmp_path)
    folder.mkdir(parents=True)
    stale = folder / f".shard-00000.pt.pid{dead_pid()}.abc123.tmp"
    ours = folder / f".all.pt.pid{os.getpid()}.xyz789.tmp"  # a live writer's (ours): kept
    stale.write_bytes(b"half a shard")
    ours.write_bytes(b"in progress")
    out = run(Encoder(), items, tmp_path, **ID, batch_size=2, shard_size=2)
    torch.testing.assert_close(out, encode_all(items))
    assert not stale.exists() and ours.exists()
    assert listing(folder) == sorted(["all.pt", ours.name])


N_CONCURRENT = 40


def _extract_in_rounds(roots: list[str], files: list[str], barrier: Any, results: Any) -> None:
    """Child process: per round, wait for the other process, then extract the same key into ``root``."""
    torch.set_num_threads(1)
    for root in roots:
        calls: list[int] = []

        def slow(batch: Sequence[int], calls: list[int] = calls) -> torch.Tensor:
            calls.append(len(batch))
            time.sleep(0.01)
            return encode_all(batch)

        barrier.wait(timeout=120)
        out = extract_features(slow, list(range(N_CONCURRENT)), **ID, data=[Path(f) for f in files], batch_size=4,
                               shard_size=8, cache_root_dir=Path(root), progress=False)  # fmt: skip
        results.put((root, sum(calls), out.numpy()))


def test_two_processes_extracting_the_same_key_at_once(tmp_path: Path) -> None:
    """Two real processes (spawn) start the same extraction at the same moment, round after round: none
    crashes, both get the right tensor, one computes it while the other waits and loads it, nothing is left over."""
    files = []
    for i in range(3):
        files.append(tmp_path / f"in{i}.bin")
        files[-1].write_bytes(bytes([i]) * 100)
    roots = [str(tmp_path / f"round{r}") for r in range(4)]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_extract_in_rounds, args=(roots, [str(f) for f in files], barrier, results))
             for _ in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    got: list[Any] = []
    deadline = time.monotonic() + 300
    while len(got) < 2 * len(roots) and time.monotonic() < deadline:
        try:
            got.append(results.get(timeout=1))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):  # a child crashed: fail now, not at the deadline
                break
    for p in procs:
        p.join(timeout=60 if len(got) == 2 * len(roots) else 1)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    expected = encode_all(list(range(N_CONCURRENT))).numpy()
    for root in roots:
        mine = [(calls, out) for r, calls, out in got if r == root]
        assert len(mine) == 2
        assert all(np.array_equal(out, expected) for _, out in mine)
        assert sorted(calls for calls, _ in mine) == [0, N_CONCURRENT]  # computed once, loaded once
        (folder,) = (Path(root) / "features").iterdir()
        assert listing(folder) == ["all.pt"]
        leftovers = [p.name for p in Path(root).rglob("*") if p.suffix in (".tmp", ".part") or "shard" in p.name]
        assert leftovers == []


# ---------------------------------------------------------------- tensor files


def test_save_load_round_trip(tmp_path: Path) -> None:
    t = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    meta = {"model": "m", "n": 5, "size": (224, 224), "where": tmp_path}
    path = tmp_path / "deep" / "x.pt"
    save_tensor(path, t, meta)
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]
    loaded = load_tensor(path, meta)
    assert loaded is not None and torch.equal(loaded, t)
    assert torch.equal(load_tensor(path), t)  # no metadata check asked for
    for dtype in (torch.int64, torch.float16, torch.bool):
        save_tensor(path, t.to(dtype), meta)
        out = load_tensor(path, meta)
        assert out is not None and out.dtype == dtype and torch.equal(out, t.to(dtype))


def test_load_missing_and_metadata_mismatch(tmp_path: Path) -> None:
    assert load_tensor(tmp_path / "missing.pt") is None
    path = tmp_path / "x.pt"
    save_tensor(path, torch.ones(3), {"model": "a", "n": 3})
    with pytest.warns(UserWarning, match="metadata"):
        assert load_tensor(path, {"model": "b", "n": 3}) is None
    assert not path.exists()  # the stale entry is removed so that it is rebuilt


def test_load_rejects_another_format_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.pt"
    save_tensor(path, torch.ones(3), {})
    monkeypatch.setattr(features, "FORMAT_VERSION", features.FORMAT_VERSION + 1)
    with pytest.warns(UserWarning, match="format"):
        assert load_tensor(path, {}) is None
