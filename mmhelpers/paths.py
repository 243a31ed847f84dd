"""Where things live: found from the package location, never from the working directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import DataError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# In a checkout (the normal, editable install) data lives in the repository; a non-editable install
# into site-packages has no repository around it, so it falls back to the user's cache folder.
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()


def _folder(variable: str, default: Callable[[], Path]) -> Path:
    """``$variable`` or ``default()``, unless that exists as a file: then a DataError saying what to change."""
    value = os.environ.get(variable)
    path = Path(value).expanduser() if value else default()
    if path.exists() and not path.is_dir():
        if value:
            problem = f"{variable} names a file, not a folder: point {variable} to a folder (created when missing)"
        else:
            problem = f"the default folder for {variable} is a file: move the file away, or set {variable} to a folder"
        raise DataError(path, problem)
    return path


def data_root() -> Path:
    """Cache root for data sets: ``$MMHELPERS_DATA``, else the repository's ``data/`` (or ~/.cache/mmhelpers)."""
    return _folder(
        "MMHELPERS_DATA", lambda: REPO_ROOT / "data" if IN_CHECKOUT else Path.home() / ".cache" / "mmhelpers"
    )


def mirror_root() -> Path | None:
    """Local mirror tried before the network: ``$MMHELPERS_MIRROR`` (CI sets ``../shared/data``). A relative
    path is taken from the repository root in a checkout (a notebook's kernel runs in the notebook's folder),
    else from the working directory."""
    value = os.environ.get("MMHELPERS_MIRROR")
    if not value:
        return None
    path = Path(value).expanduser()
    return REPO_ROOT / path if IN_CHECKOUT and not path.is_absolute() else path


def cache_root() -> Path:
    """Cache root for features and checkpoints: ``$MMHELPERS_CACHE`` or ``data/cache``."""
    return _folder("MMHELPERS_CACHE", lambda: data_root() / "cache")


def results_dir() -> Path:
    """Committed results of full scenario runs."""
    return REPO_ROOT / "results"


def build_dir() -> Path:
    """Executed notebooks and per-run metrics (not committed): ``$MMHELPERS_BUILD`` or ``build/``."""
    return Path(os.environ.get("MMHELPERS_BUILD") or REPO_ROOT / "build").expanduser()
