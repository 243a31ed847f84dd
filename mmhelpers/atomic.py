"""Atomic file writes: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ModuleNotFoundError:  # Windows: no advisory locks; concurrent writers are then not serialised
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success it replaces ``path`` in one rename.

    An exception (or a killed process) leaves the old file untouched and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the file a plain open()'s mode (POSIX)
                os.fchmod(f.fileno(), _target_mode(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temp_prefix(path: str | Path) -> str:
    """Name prefix of the temporary files written for ``path``: ``.<name>.pid<PID>.`` (who wrote it)."""
    return f".{Path(path).name}.pid{os.getpid()}."


_TEMP = re.compile(r"^\..+\.pid(\d+)\..*\.(tmp|part)$")


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files in ``folder`` left by writers that died (their process is gone); return them.

    Temporary files of live processes (a concurrent writer) are left alone, so this is safe to call
    at the start of any run that writes into ``folder``.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if m and not _alive(int(m.group(1))) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _target_mode(path: Path) -> int:
    """The permission bits ``path`` should get: those of the file it replaces, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically and return the path."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_jsonable)
        f.write("\n")
    return Path(path)


def _jsonable(x: Any) -> Any:
    """Turn NumPy and torch scalars and arrays into plain JSON values."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


@contextlib.contextmanager
def locked(path: str | Path, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on the lock file ``path`` (created if missing, never deleted) for the block:
    what a read-modify-write of a file shared by concurrent processes needs (the lock cannot be on the file itself,
    which an atomic write replaces).

    ``waiting`` is printed (stderr) when another process holds the lock and this one has to wait.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    print(waiting, file=sys.stderr)
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
