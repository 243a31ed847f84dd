"""Where things live: found from the package location, never from the working directory."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def data_root() -> Path:
    """Cache root for data sets: ``$MMHELPERS_DATA`` or the repository's ``data/``."""
    return Path(os.environ.get("MMHELPERS_DATA") or REPO_ROOT / "data").expanduser()


def mirror_root() -> Path | None:
    """Local mirror tried before the network: ``$MMHELPERS_MIRROR`` (CI sets ``../shared/data``)."""
    value = os.environ.get("MMHELPERS_MIRROR")
    return Path(value).expanduser() if value else None


def cache_root() -> Path:
    """Cache root for features and checkpoints: ``$MMHELPERS_CACHE`` or ``data/cache``."""
    return Path(os.environ.get("MMHELPERS_CACHE") or data_root() / "cache").expanduser()


def results_dir() -> Path:
    """Committed results of full scenario runs."""
    return REPO_ROOT / "results"


def build_dir() -> Path:
    """Executed notebooks and per-run metrics (not committed): ``$MMHELPERS_BUILD`` or ``build/``."""
    return Path(os.environ.get("MMHELPERS_BUILD") or REPO_ROOT / "build").expanduser()
