"""Errors raised on bad input, each naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class MMHelpersError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(MMHelpersError):
    """A data file is missing, corrupt, or not what it claims to be."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class ChecksumError(DataError):
    """A file's hash differs from the one the registry declares."""


class FetchError(DataError):
    """A file could not be found in the cache or mirror, nor downloaded."""


class ModelUnavailableError(MMHelpersError):
    """A pretrained model cannot be loaded here; the message says what to install or set."""


class ModalityError(MMHelpersError):
    """A batch is missing a modality or its modalities disagree in size."""
