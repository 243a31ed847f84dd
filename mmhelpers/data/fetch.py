"""Fetching data sets into the cache: verified cache, then the mirror, then the network.

Every file is checked against the sha256 its manifest declares. Copies and downloads
stream into a temporary file beside the target and are renamed into place only after
the hash matched, so an interrupted fetch leaves nothing half-written and a second
call resumes with the files still missing. Temporary files are named by the writer's pid
(``.<name>.pid<PID>.<random>.part``); those of writers that died are removed before fetching.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from mmhelpers.atomic import clean_stale_temps, temp_prefix, write_json
from mmhelpers.data.registry import DataSet, FileSpec, get_dataset
from mmhelpers.errors import ChecksumError, DataError, FetchError
from mmhelpers.paths import data_root, mirror_root

TIMEOUT_S = float(os.environ.get("MMHELPERS_TIMEOUT", "30"))
_STAMP = ".verified.json"
_BLOCK = 1 << 20


def offline() -> bool:
    """True when ``MMHELPERS_OFFLINE=1``: never touch the network, fail fast instead."""
    return os.environ.get("MMHELPERS_OFFLINE", "") not in ("", "0", "false", "False")


def content_sha256(path: Path, gz: bool | None = None) -> str:
    """sha256 of a file, of its decompressed bytes for gzip files (a broken gzip raises DataError)."""
    h = hashlib.sha256()
    gz = path.suffix == ".gz" if gz is None else gz
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                h.update(block)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"corrupt or truncated file ({type(e).__name__}: {e})") from e
    return h.hexdigest()


def verify_file(path: Path, spec: FileSpec, origin: str | None = None, name: Path | None = None) -> None:
    """Raise ChecksumError unless ``path`` matches ``spec``; the error names ``name`` (default ``path``) and the origin."""
    where = f" (from {origin})" if origin else ""
    shown = name or path
    size = path.stat().st_size
    if size != spec.size:
        raise ChecksumError(shown, f"size is {size} bytes, expected {spec.size}{where}: truncated or wrong file")
    try:
        digest = content_sha256(path, gz=spec.path.endswith(".gz"))
    except DataError as e:
        raise ChecksumError(shown, f"{e.problem}{where}") from e
    if digest != spec.sha256:
        raise ChecksumError(shown, f"sha256 {digest[:16]}... differs from the registry's {spec.sha256[:16]}...{where}")


def dataset_dir(name: str, root: Path | None = None) -> Path:
    """The folder where data set ``name`` lives in the cache."""
    return (root or data_root()) / name


def fetch(
    name: str,
    files: Iterable[str] | None = None,
    *,
    root: Path | None = None,
    mirror: Path | None = None,
    progress: bool = True,
) -> Path:
    """Make the files of data set ``name`` (all, or ``files``) present and verified; return its folder.

    Order: the cache (``$MMHELPERS_DATA``, default the repository's ``data/``), the mirror
    (``$MMHELPERS_MIRROR``, laid out as ``<mirror>/<name>/<path>``), then the upstream URLs.
    """
    ds = get_dataset(name)
    folder = dataset_dir(name, root)
    if folder.exists() and not folder.is_dir():
        raise DataError(folder, f"expected the folder of data set {name!r}, found a file: move or delete it")
    mirror = mirror if mirror is not None else mirror_root()
    wanted = list(ds.files) if files is None else [ds.spec(p) for p in files]
    stamp = _read_stamp(folder)
    missing = [s for s in wanted if not _is_verified(folder / s.path, s, stamp)]
    if not missing:
        return folder
    before = dict(stamp)
    for parent in sorted({(folder / s.path).parent for s in missing}):
        clean_stale_temps(parent)  # .part files of fetches that were killed
    still_missing: list[FileSpec] = []
    bar = tqdm(missing, desc=f"{name}: verify/copy", unit="file", disable=not progress or len(missing) < 20)
    try:
        for spec in bar:
            target = folder / spec.path
            stamp.pop(spec.path, None)
            if target.exists():
                try:
                    verify_file(target, spec, "cache")
                    stamp[spec.path] = _stamp_entry(target, spec)
                    continue
                except DataError:
                    target.unlink()  # corrupt cache entry: fetch it again
            source = mirror / name / spec.path if mirror else None
            if source is not None and source.is_file():
                _copy_verified(source, target, spec)
                stamp[spec.path] = _stamp_entry(target, spec)
            else:
                still_missing.append(spec)
        if still_missing:
            try:
                _download(ds, still_missing, folder, mirror, progress)
            finally:
                # Downloads rename a file into place only after its hash matched, so whatever is there
                # now is verified: stamp it even if a later file failed, and a second call resumes.
                for spec in still_missing:
                    if (folder / spec.path).is_file():
                        stamp[spec.path] = _stamp_entry(folder / spec.path, spec)
    except OSError as e:  # fetch's own errors are DataErrors: this is the file system refusing a write
        raise DataError(
            folder,
            f"could not store files in the data cache ({type(e).__name__}: {e}); it must be a writable folder: "
            "fix its permissions, or set MMHELPERS_DATA to a writable folder",
        ) from e
    finally:
        if stamp != before:
            _write_stamp(folder, stamp)
    return folder


def _write_stamp(folder: Path, stamp: dict[str, list[int | str]]) -> None:
    """Record the verified files; in a read-only cache warn instead (they are then hashed again on every fetch)."""
    try:
        write_json(folder / _STAMP, stamp)
    except OSError as e:
        warnings.warn(
            f"{folder}: could not write the verification stamp {_STAMP} ({type(e).__name__}: {e}); the files "
            "verified, but each fetch will hash them again until the folder is writable",
            stacklevel=3,
        )


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _stamp_entry(path: Path, spec: FileSpec) -> list[int | str]:
    """What the stamp records for a verified file: its size and mtime, and the hash it was verified against."""
    return [*_stat_key(path), spec.sha256]


def _read_stamp(folder: Path) -> dict[str, list[int | str]]:
    try:
        stamp = json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _is_verified(path: Path, spec: FileSpec, stamp: dict[str, list[int | str]]) -> bool:
    """A file verified earlier against the same hash and unchanged since (same size and mtime) is not hashed again."""
    try:
        return stamp.get(spec.path) == _stamp_entry(path, spec)
    except FileNotFoundError:
        return False


def _copy_verified(source: Path, target: Path, spec: FileSpec) -> None:
    """Copy a mirror file through a temporary file; rename into place only if its hash matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target), suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        verify_file(Path(tmp), spec, f"mirror file {source}", name=target)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download_file(url: str, target: Path, spec: FileSpec | None = None, progress: bool = True) -> Path:
    """Stream ``url`` to a temporary file with a timeout and progress bar, verify, then rename into place."""
    if offline():
        raise FetchError(target, f"MMHELPERS_OFFLINE is set, not downloading {url}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "mmhelpers"})
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress, leave=False
                ) as bar:
                    for block in iter(lambda: resp.read(_BLOCK), b""):
                        out.write(block)
                        bar.update(len(block))
        if spec is not None:
            verify_file(Path(tmp), spec, url, name=target)
        os.replace(tmp, target)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as e:
        if isinstance(e, urllib.error.HTTPError):
            e.close()  # an HTTPError holds the open response; don't leak its socket
        raise FetchError(target, f"download of {url} failed ({type(e).__name__}: {e})") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _download(ds: DataSet, specs: list[FileSpec], folder: Path, mirror: Path | None, progress: bool) -> None:
    """Download files that neither the cache nor the mirror had; errors say how to use a mirror."""
    hint = (
        f"Not in the cache ({folder}) nor the mirror ({mirror or 'MMHELPERS_MIRROR is not set'}). "
        f"Set MMHELPERS_MIRROR to a folder holding {ds.name}/<files> (CI uses ../shared/data), "
        "or run the notebook on its embedded default data"
    )
    try:
        if ds.archive is not None:
            _download_archive(ds, specs, folder, progress)
            return
        for spec in tqdm(specs, desc=f"{ds.name}: download", unit="file", disable=not progress or len(specs) < 2):
            url = ds.url_for(spec.path)
            if url is None:
                raise FetchError(folder / spec.path, f"no download URL declared for data set {ds.name!r}")
            download_file(url, folder / spec.path, spec, progress=progress and len(specs) < 20)
    except ChecksumError:
        raise
    except FetchError as e:
        raise FetchError(e.path, f"{e.problem}. {hint}") from e


def _download_archive(ds: DataSet, specs: list[FileSpec], folder: Path, progress: bool) -> None:
    """Download the data set's archive, extract the wanted members, verify each, move into place."""
    assert ds.archive is not None
    wanted = {s.path: s for s in specs}
    with tempfile.TemporaryDirectory(dir=_ensure(folder)) as tmpdir:
        archive_path = Path(tmpdir) / Path(ds.archive.url).name
        download_file(ds.archive.url, archive_path, None, progress)
        for member_name, read in _members(archive_path):
            local = ds.archive.local_path(member_name)
            if local not in wanted:
                continue
            spec = wanted.pop(local)
            tmp = Path(tmpdir) / "member.part"
            tmp.write_bytes(read())
            verify_file(tmp, spec, f"{ds.archive.url}!{member_name}", name=folder / local)
            (folder / local).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, folder / local)
    if wanted:
        first = next(iter(wanted))
        raise FetchError(folder / first, f"{len(wanted)} file(s) not found in {ds.archive.url}")


def _members(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield (member name, zero-argument reader) for the regular files of a tar or zip archive."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda i=info: zf.read(i))
        return
    try:
        with tarfile.open(path) as tf:
            for m in tf:
                if m.isfile():
                    yield m.name, (lambda m=m: tf.extractfile(m).read())  # type: ignore[union-attr]
    except tarfile.TarError as e:
        raise DataError(path, f"not a readable tar or zip archive ({e})") from e


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
