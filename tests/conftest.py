"""Shared test fixtures: every test runs against an isolated, offline data cache.

- ``_isolated_data`` (autouse): ``MMHELPERS_DATA`` and ``MMHELPERS_CACHE`` point into the test's
  ``tmp_path``, ``MMHELPERS_OFFLINE=1``, and ``MMHELPERS_MIRROR`` is removed, so no test reads or
  writes the repository's ``data/`` folder, sees the real mirror by accident, or touches the network.
- ``real_mirror``: opt-in to the real data mirror (``$MMHELPERS_MIRROR`` as it was when the test
  session started, else ``<repo>/../shared/data``); skips with a reason when there is none. All tests
  using it share one data and feature cache per session, so the mirror is copied and hashed, and
  features extracted, once rather than per test.
  Mark such tests ``@pytest.mark.mirror``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Read before any fixture edits the environment.
_ENV_MIRROR = os.environ.get("MMHELPERS_MIRROR")
_DEFAULT_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"  # the repository sits beside shared/


def _mirror_path() -> Path | None:
    """The real mirror folder, or None when this machine has none."""
    candidate = Path(_ENV_MIRROR).expanduser() if _ENV_MIRROR else _DEFAULT_MIRROR
    return candidate if candidate.is_dir() else None


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give each test its own empty data cache, no mirror, and no network; return the data root."""
    data = tmp_path / "data"
    monkeypatch.setenv("MMHELPERS_DATA", str(data))
    monkeypatch.setenv("MMHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MMHELPERS_OFFLINE", "1")
    monkeypatch.delenv("MMHELPERS_MIRROR", raising=False)
    return data


@pytest.fixture(scope="session")
def _shared_mirror_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for every real-mirror test of the session."""
    return tmp_path_factory.mktemp("mirror_cache")


@pytest.fixture
def real_mirror(_isolated_data: Path, _shared_mirror_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Use the real data mirror (still offline) with the session's shared data and feature cache; return the mirror."""
    mirror = _mirror_path()
    if mirror is None:
        where = f"MMHELPERS_MIRROR={_ENV_MIRROR}" if _ENV_MIRROR else f"{_DEFAULT_MIRROR} (MMHELPERS_MIRROR unset)"
        pytest.skip(f"real data mirror not found at {where}")
    monkeypatch.setenv("MMHELPERS_MIRROR", str(mirror))
    monkeypatch.setenv("MMHELPERS_DATA", str(_shared_mirror_cache))
    monkeypatch.setenv("MMHELPERS_CACHE", str(_shared_mirror_cache / "cache"))  # features extracted once per session
    return mirror


@pytest.fixture(scope="module")
def one_thread():
    """One PyTorch thread for a module of tiny CPU workloads (several times faster on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "_cache")


@pytest.fixture
def module_cache(_isolated_data: Path, _module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One feature and checkpoint cache for a test module, as in a real session: a scenario's later notebook finds
    what an earlier one trained (use with ``pytestmark = pytest.mark.usefixtures("module_cache")``)."""
    monkeypatch.setenv("MMHELPERS_CACHE", str(_module_cache))
    return _module_cache


@pytest.fixture(scope="session")
def _session_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lm_cache")


@pytest.fixture
def shared_lm(_isolated_data: Path, _session_lm: Path) -> Path:
    """The test's ``<cache>/lm`` is one folder for the whole session: SmolLM2's GGUF is converted to safetensors
    once (15-70 s), not by every test that loads the real weights. Returns that folder. With ``module_cache``
    requested first, the module's cache gets the link (once)."""
    cache = Path(os.environ["MMHELPERS_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "lm").is_symlink():
        (cache / "lm").symlink_to(_session_lm, target_is_directory=True)
    return _session_lm
