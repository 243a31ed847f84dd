"""Tests for mmhelpers.utils (seeding, device choice, threads, timer) and mmhelpers.atomic (atomic writes, JSON)."""

from __future__ import annotations

import json
import os
import random
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmhelpers.atomic import atomic_open, write_json
from mmhelpers.errors import DataError
from mmhelpers.utils import Timer, get_device, set_seed, set_threads


def draw() -> tuple[torch.Tensor, np.ndarray, list[float]]:
    return torch.randn(5), np.random.rand(5), [random.random() for _ in range(5)]


def test_set_seed_repeats_all_three_generators() -> None:
    set_seed(123)
    t1, n1, r1 = draw()
    set_seed(123)
    t2, n2, r2 = draw()
    assert torch.equal(t1, t2) and np.array_equal(n1, n2) and r1 == r2
    set_seed(124)
    t3, n3, r3 = draw()
    assert not torch.equal(t1, t3) and not np.array_equal(n1, n3) and r1 != r3
    set_seed(2**40 + 5)  # seeds beyond NumPy's 32-bit range are accepted
    t4, n4, _ = draw()
    set_seed(2**40 + 5)
    assert torch.equal(draw()[0], t4)


def test_set_seed_deterministic_flag() -> None:
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    try:
        set_seed(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic = before[1]


def test_get_device() -> None:
    assert not torch.cuda.is_available()  # this test machine has no GPU
    auto = get_device("auto")
    assert auto.type in ("cpu", "mps")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        assert auto == torch.device("cpu")
    assert get_device() == auto
    assert get_device("cpu") == torch.device("cpu")
    assert get_device("cuda:1") == torch.device("cuda", 1)  # passed through, not checked
    dev = torch.device("cpu")
    assert get_device(dev) is dev


def test_get_device_auto_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device("auto") == torch.device("cuda")


def test_set_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(0) == 1  # clamped to at least one
        monkeypatch.setenv("MMHELPERS_THREADS", "2")
        assert set_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_timer_measures_a_sleep() -> None:
    with Timer() as t:
        time.sleep(0.05)
    assert 0.05 <= t.seconds < 1.0
    with Timer() as t2:
        pass
    assert 0.0 <= t2.seconds < t.seconds


def test_timer_records_on_exception() -> None:
    t = Timer()
    with pytest.raises(ZeroDivisionError), t:
        time.sleep(0.01)
        1 / 0  # noqa: B018
    assert t.seconds >= 0.01


# ---------------------------------------------------------------- atomic writes


def test_atomic_open_replaces_on_success(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.bin"  # parent folder is created
    with atomic_open(path) as f:
        f.write(b"new")
        assert not path.exists()  # nothing visible until the block ends
    assert path.read_bytes() == b"new"
    with atomic_open(path, "w") as f:
        f.write("text")
    assert path.read_text() == "text"
    assert os.listdir(path.parent) == ["out.bin"]


def test_atomic_open_exception_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"old": true}')
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(path, "w") as f:
            f.write('{"new": tru')
            f.flush()
            raise RuntimeError("boom")
    assert path.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["results.json"]  # no temp file left behind
    # the same for a file that did not exist
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "fresh.bin") as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["results.json"]


def test_atomic_open_file_permissions(tmp_path: Path) -> None:
    """A new file gets the mode a plain open() gives (not mkstemp's 0600); a replaced file keeps its mode."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_open(tmp_path / "atomic.txt", "w") as f:
        f.write("x")
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    os.chmod(plain, 0o640)
    with atomic_open(plain, "w") as f:
        f.write("y")
    assert stat.S_IMODE(plain.stat().st_mode) == 0o640 and plain.read_text() == "y"


def test_write_json_numpy_and_torch(tmp_path: Path) -> None:
    obj = {
        "f32": np.float32(0.5),
        "f64": np.float64(0.25),
        "i64": np.int64(7),
        "b": np.bool_(True),
        "arr": np.arange(6, dtype=np.int32).reshape(2, 3),
        "farr": np.array([0.5, 1.5]),
        "t": torch.tensor([[1.0, 2.0]]),
        "t0": torch.tensor(3),
        "path": tmp_path / "x.png",
        "nested": [np.int16(-2), {"deep": torch.tensor(0.5)}],
        "plain": "text",
    }
    path = write_json(tmp_path / "m" / "metrics.json", obj)
    assert path == tmp_path / "m" / "metrics.json"
    text = path.read_text()
    assert text.endswith("\n") and text.startswith("{\n  ")  # indented
    assert json.loads(text) == {
        "f32": 0.5,
        "f64": 0.25,
        "i64": 7,
        "b": True,
        "arr": [[0, 1, 2], [3, 4, 5]],
        "farr": [0.5, 1.5],
        "t": [[1.0, 2.0]],
        "t0": 3,
        "path": str(tmp_path / "x.png"),
        "nested": [-2, {"deep": 0.5}],
        "plain": "text",
    }
    assert list(json.loads(text)) == list(obj)  # key order kept
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_data_root_comes_from_the_package_location_not_the_cwd(tmp_path, monkeypatch):
    from mmhelpers import paths

    monkeypatch.delenv("MMHELPERS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.IN_CHECKOUT
    assert paths.data_root() == paths.REPO_ROOT / "data"
    monkeypatch.setenv("MMHELPERS_DATA", str(tmp_path / "elsewhere"))
    assert paths.data_root() == tmp_path / "elsewhere"


def test_data_and_cache_roots_that_are_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmhelpers import paths

    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.delenv("MMHELPERS_CACHE", raising=False)
    monkeypatch.setenv("MMHELPERS_DATA", str(a_file))
    for root in (paths.data_root, paths.cache_root):  # the cache defaults to <data>/cache
        with pytest.raises(
            DataError,
            match=r"MMHELPERS_DATA names a file, not a folder: point MMHELPERS_DATA to a folder \(created when missing\)",
        ) as info:
            root()
        assert info.value.path == a_file
    monkeypatch.setenv("MMHELPERS_DATA", str(tmp_path / "missing"))  # missing is fine: created when needed
    assert paths.data_root() == tmp_path / "missing"
    monkeypatch.setenv("MMHELPERS_CACHE", str(a_file))
    with pytest.raises(DataError, match="point MMHELPERS_CACHE to a folder"):
        paths.cache_root()


def test_default_data_folder_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmhelpers import paths

    data = tmp_path / "data"
    data.write_text("x")
    monkeypatch.delenv("MMHELPERS_DATA", raising=False)
    monkeypatch.delenv("MMHELPERS_CACHE", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(paths, "IN_CHECKOUT", True)
    with pytest.raises(DataError, match="the default folder for MMHELPERS_DATA is a file: move the file away"):
        paths.cache_root()


def test_relative_folders_are_taken_from_where_the_command_was_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`MMHELPERS_MIRROR=../shared/data make notebooks` at the repository root: the runner makes the path absolute
    before any kernel starts in a notebook's folder, and mirror_root() reads a relative path from the repository
    root, so a notebook finds the mirror either way."""
    from mmhelpers.paths import REPO_ROOT, mirror_root
    from mmhelpers.run_notebooks import absolute_path_variables

    env = {"MMHELPERS_MIRROR": "../shared/data", "MMHELPERS_CACHE": "/abs/cache", "OTHER": "x"}
    changed = absolute_path_variables(env, cwd=tmp_path / "repo")
    assert changed == {"MMHELPERS_MIRROR": str((tmp_path / "shared" / "data").resolve())}
    assert env["MMHELPERS_MIRROR"] == changed["MMHELPERS_MIRROR"] and env["MMHELPERS_CACHE"] == "/abs/cache"
    monkeypatch.setenv("MMHELPERS_MIRROR", "../shared/data")
    monkeypatch.chdir(tmp_path)
    assert mirror_root() == REPO_ROOT / "../shared/data"
    monkeypatch.setenv("MMHELPERS_MIRROR", str(tmp_path))
    assert mirror_root() == tmp_path
    monkeypatch.delenv("MMHELPERS_MIRROR")
    assert mirror_root() is None
