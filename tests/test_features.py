"""Tests for mmhelpers.features: batched extraction, the sharded on-disk cache (hits, misses,
corruption, resuming after an interruption), fingerprints and the tensor file format."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from mmhelpers import features
from mmhelpers.errors import DataError
from mmhelpers.features import cache_dir_for, extract_features, fingerprint, load_tensor, save_tensor

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


KEY = {"model": "toy/encoder", "data": "items-v1", "preprocessing": {"size": (224, 224), "scale": "minus_one_one"}}


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
    out = run(enc, items, tmp_path, key=KEY, batch_size=4, shard_size=10)
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
    first = run(first_enc, items, tmp_path, key=KEY, batch_size=4, shard_size=8)
    assert first_enc.items_seen == items
    folder = cache_dir_for({**KEY, "n": 20}, tmp_path)
    assert (folder / "all.pt").is_file() and not list(folder.glob("shard-*.pt"))  # shards merged and removed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a hit is silent (no 'stale cache' warning: tuples in the key survive)
        second = run(second_enc, items, tmp_path, key=KEY, batch_size=4, shard_size=8)
    assert second_enc.batches == []
    assert torch.equal(first, second)
    torch.testing.assert_close(second, encode_all(items))


def test_key_with_paths_is_a_cache_hit(tmp_path: Path) -> None:
    """Keys may hold a Path (and other non-JSON values): they are stored as strings, so the cache still hits."""
    key = {"model": "toy", "source": tmp_path / "images", "size": (32, 32)}
    run(Encoder(), list(range(6)), tmp_path, key=key)
    enc = Encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(enc, list(range(6)), tmp_path, key=key)
    assert enc.batches == []


def test_other_key_recomputes(tmp_path: Path) -> None:
    items = list(range(9))
    run(Encoder(), items, tmp_path, key=KEY)
    other = {**KEY, "preprocessing": {"size": (256, 256), "scale": "imagenet"}}
    enc = Encoder()
    out = run(enc, items, tmp_path, key=other)
    assert enc.items_seen == items
    torch.testing.assert_close(out, encode_all(items))
    assert cache_dir_for({**other, "n": 9}, tmp_path) != cache_dir_for({**KEY, "n": 9}, tmp_path)
    # other items under the same key: the item count is part of the key
    enc = Encoder()
    run(enc, list(range(10)), tmp_path, key=KEY)
    assert enc.items_seen == list(range(10))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip"])
def test_corrupt_cache_warns_and_rebuilds(tmp_path: Path, damage: str) -> None:
    items = list(range(11))
    good = run(Encoder(), items, tmp_path, key=KEY, batch_size=4)
    path = cache_dir_for({**KEY, "n": 11}, tmp_path) / "all.pt"
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
        rebuilt = run(enc, items, tmp_path, key=KEY, batch_size=4)
    assert enc.items_seen == items
    torch.testing.assert_close(rebuilt, encode_all(items))
    torch.testing.assert_close(rebuilt, good)
    # and the rebuilt entry is good again
    again = Encoder()
    assert torch.equal(run(again, items, tmp_path, key=KEY, batch_size=4), rebuilt) and again.batches == []


def test_interrupted_extraction_resumes(tmp_path: Path) -> None:
    """Shards of 4 items, batches of 2: the 3rd shard fails at its first batch (call 5); the rerun
    computes only shards 3 and 4."""
    items = list(range(18))  # shards [0:4] [4:8] [8:12] [12:16] [16:18]
    enc = Encoder(fail_on_call=5)
    with pytest.raises(Interrupted):
        run(enc, items, tmp_path, key=KEY, batch_size=2, shard_size=4)
    assert enc.items_seen == list(range(8))
    folder = cache_dir_for({**KEY, "n": 18}, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["shard-00000.pt", "shard-00001.pt"]  # no temp files

    resumed = Encoder()
    out = run(resumed, items, tmp_path, key=KEY, batch_size=2, shard_size=4)
    assert resumed.items_seen == list(range(8, 18))
    torch.testing.assert_close(out, encode_all(items))
    assert sorted(p.name for p in folder.iterdir()) == ["all.pt"]


def test_corrupt_shard_is_recomputed_on_resume(tmp_path: Path) -> None:
    items = list(range(12))
    with pytest.raises(Interrupted):
        run(Encoder(fail_on_call=3), items, tmp_path, key=KEY, batch_size=4, shard_size=4)
    folder = cache_dir_for({**KEY, "n": 12}, tmp_path)
    (folder / "shard-00001.pt").write_bytes(b"not a checkpoint at all")
    enc = Encoder()
    with pytest.warns(UserWarning, match="shard-00001"):
        out = run(enc, items, tmp_path, key=KEY, batch_size=4, shard_size=4)
    assert enc.items_seen == list(range(4, 12))
    torch.testing.assert_close(out, encode_all(items))


def test_cache_root_defaults_to_mmhelpers_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMHELPERS_CACHE", str(tmp_path / "cache"))
    extract_features(Encoder(), [1, 2, 3], key={"model": "org/name"}, progress=False)
    (folder,) = (tmp_path / "cache" / "features").iterdir()
    assert folder.name.startswith("org_name-") and (folder / "all.pt").is_file()


def test_cache_entry_that_is_a_folder_raises_data_error(tmp_path: Path) -> None:
    items = list(range(8))
    run(Encoder(), items, tmp_path / "whole", key=KEY)  # leaves all.pt
    with pytest.raises(Interrupted):  # leaves shard-00000.pt
        run(Encoder(fail_on_call=2), items, tmp_path / "shards", key=KEY, batch_size=4, shard_size=4)
    for root, name in ((tmp_path / "whole", "all.pt"), (tmp_path / "shards", "shard-00000.pt")):
        (entry,) = root.rglob(name)
        entry.unlink()
        entry.mkdir()
        with pytest.raises(DataError, match="feature-cache entry is a folder, not a file: delete it") as info:
            run(Encoder(), items, root, key=KEY, batch_size=4, shard_size=4)
        assert info.value.path == entry and entry.is_dir()  # named, and left alone


def test_default_cache_under_a_data_root_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "data.txt"
    a_file.write_text("oops\n")
    monkeypatch.delenv("MMHELPERS_CACHE")
    monkeypatch.setenv("MMHELPERS_DATA", str(a_file))
    with pytest.raises(DataError, match="MMHELPERS_DATA names a file, not a folder"):
        extract_features(Encoder(), [1, 2, 3], key={"model": "m"}, progress=False)
    monkeypatch.setenv("MMHELPERS_CACHE", str(a_file))
    with pytest.raises(DataError, match="MMHELPERS_CACHE names a file, not a folder"):
        extract_features(Encoder(), [1, 2, 3], key={"model": "m"}, progress=False)


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


def test_fingerprint_paths_by_name_size_mtime(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"12345678")
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    h = fingerprint(f)
    assert fingerprint(Path(str(f))) == h

    g = tmp_path / "sub" / "a.wav"  # same name, size and mtime elsewhere: same hash (contents not read)
    g.parent.mkdir()
    g.write_bytes(b"abcdefgh")
    os.utime(g, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert fingerprint(g) == h

    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_001_000_000_000))  # touched
    assert fingerprint(f) != h
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert fingerprint(f) == h
    f.write_bytes(b"123456789")  # size changes
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert fingerprint(f) != h
    renamed = tmp_path / "b.wav"
    g.rename(renamed)
    assert fingerprint(renamed) != h
    assert fingerprint([f, renamed]) != fingerprint([renamed, f])


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
