"""Where things live: found from the package location, never from the working directory."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# In a checkout (the normal, editable install) data lives in the repository; a non-editable install
# into site-packages has no repository around it, so it falls back to the user's cache folder.
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()


def data_root() -> Path:
    """Cache root for data sets: ``$MMHELPERS_DATA``, else the repository's ``data/`` (or ~/.cache/mmhelpers)."""
    default = REPO_ROOT / "data" if IN_CHECKOUT else Path.home() / ".cache" / "mmhelpers"
    return Path(os.environ.get("MMHELPERS_DATA") or default).expanduser()


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
