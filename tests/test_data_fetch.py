"""Tests for mmhelpers.data fetching, the registry and IDX reading, on tiny fake data sets.

Nothing here needs the real mirror or the network: data sets are built in the test, put in
``REGISTRY`` with ``monkeypatch.setitem`` (restored afterwards), and served from a fake mirror
folder or from an HTTP server on 127.0.0.1 that records every request it gets.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.server
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from mmhelpers.data.fetch import content_sha256, fetch, verify_file
from mmhelpers.data.idx import read_idx
from mmhelpers.data.registry import REGISTRY, Archive, DataSet, FileSpec, get_dataset
from mmhelpers.errors import ChecksumError, DataError, FetchError

# the module, not the function of the same name that mmhelpers.data re-exports
fetch_mod = importlib.import_module("mmhelpers.data.fetch")

# ---------------------------------------------------------------------------------------------------------------------
# helpers


def spec_for(path: str, data: bytes) -> FileSpec:
    """The FileSpec a manifest would declare for ``data`` stored at ``path`` (.gz: hash of the decompressed bytes)."""
    payload = gzip.decompress(data) if path.endswith(".gz") else data
    return FileSpec(path=path, sha256=hashlib.sha256(payload).hexdigest(), size=len(data))


def make_dataset(name: str, files: dict[str, bytes], **kw: object) -> DataSet:
    """A DataSet whose FileSpecs match ``files`` exactly."""
    specs = tuple(spec_for(p, b) for p, b in files.items())
    return DataSet(name=name, title=name, homepage="https://example.org", license="CC0", citation="test",
                   files=specs, **kw)  # type: ignore[arg-type]  # fmt: skip


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def all_files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` (hidden ones included), as sorted relative paths."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def read_stamp(folder: Path) -> dict[str, list]:
    """The verification stamp fetch writes into a data set folder."""
    return json.loads((folder / ".verified.json").read_text())


def data_files(folder: Path) -> list[str]:
    """Like all_files, without the verification stamp."""
    return [f for f in all_files(folder) if f != ".verified.json"]


FILES = {
    "a.txt": b"alpha\n" * 100,
    "sub/b.bin": bytes(range(256)) * 20,
    "sub/deeper/c.csv": b"x,y\n1,2\n3,4\n",
}


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch):
    """Put a DataSet into REGISTRY for this test only."""

    def _register(ds: DataSet) -> DataSet:
        monkeypatch.setitem(REGISTRY, ds.name, ds)
        return ds

    return _register


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty fake mirror folder, set as MMHELPERS_MIRROR."""
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv("MMHELPERS_MIRROR", str(root))
    return root


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every path fetch hashes (content_sha256 is what verify_file calls)."""
    calls: list[Path] = []
    real = fetch_mod.content_sha256

    def counting(path: Path, gz: bool | None = None) -> str:
        calls.append(Path(path))
        return real(path, gz)

    monkeypatch.setattr(fetch_mod, "content_sha256", counting)
    return calls


# ---------------------------------------------------------------------------------------------------------------------
# a local HTTP server


@dataclass
class Route:
    body: bytes
    status: int = 200
    declared_length: int | None = None  # Content-Length to send, default len(body)
    chunked_cut: bool = False  # send the body as one chunk that declares more bytes than it has, then hang up


@dataclass
class LocalServer:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """An HTTP server on 127.0.0.1 serving ``routes``, recording requested paths; network allowed for the test."""
    state = LocalServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            self.protocol_version = "HTTP/1.1" if route is not None and route.chunked_cut else "HTTP/1.0"
            if route is None:
                self.send_error(404, "not here")
                return
            self.send_response(route.status)
            if route.chunked_cut:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(route.body) * 2:x}\r\n".encode() + route.body)
                self.wfile.flush()
                self.close_connection = True
                return
            length = len(route.body) if route.declared_length is None else route.declared_length
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(route.body)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("MMHELPERS_OFFLINE", "0")
    monkeypatch.setattr(fetch_mod, "TIMEOUT_S", 5.0)
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def serve_dataset(server: LocalServer, name: str, files: dict[str, bytes]) -> DataSet:
    """Serve ``files`` under /<name>/ and return a DataSet whose url_rules point there."""
    for rel, data in files.items():
        server.routes[f"/{name}/{rel}"] = Route(data)
    return make_dataset(name, files, url_rules=(("", f"{server.url}/{name}/"),))


# ---------------------------------------------------------------------------------------------------------------------
# fetching from a mirror


def test_fetch_from_mirror_copies_verifies_and_stamps(register, mirror: Path, _isolated_data: Path) -> None:
    register(make_dataset("toy", FILES))
    write_tree(mirror / "toy", FILES)
    folder = fetch("toy", progress=False)
    assert folder == _isolated_data / "toy"
    assert data_files(folder) == sorted(FILES)
    for rel, data in FILES.items():
        assert (folder / rel).read_bytes() == data
    stamp = read_stamp(folder)
    assert sorted(stamp) == sorted(FILES)
    for rel in FILES:
        assert stamp[rel][:2] == [len(FILES[rel]), (folder / rel).stat().st_mtime_ns]


def test_fetch_subset_copies_only_those_files(register, mirror: Path) -> None:
    register(make_dataset("toy", FILES))
    write_tree(mirror / "toy", FILES)
    folder = fetch("toy", ["sub/b.bin"], progress=False)
    assert data_files(folder) == ["sub/b.bin"]
    with pytest.raises(KeyError, match="not a file of data set 'toy'"):
        fetch("toy", ["missing.txt"], progress=False)


def test_second_fetch_skips_hashing(register, mirror: Path, hash_calls: list[Path]) -> None:
    register(make_dataset("toy", FILES))
    write_tree(mirror / "toy", FILES)
    fetch("toy", progress=False)
    assert len(hash_calls) == len(FILES)  # each copy hashed once
    hash_calls.clear()
    fetch("toy", progress=False)
    assert hash_calls == []


def test_modified_cache_file_is_detected_and_refetched(
    register, mirror: Path, hash_calls: list[Path], _isolated_data: Path
) -> None:
    register(make_dataset("toy", FILES))
    write_tree(mirror / "toy", FILES)
    folder = fetch("toy", progress=False)
    target = folder / "sub/b.bin"
    before = target.stat()
    target.write_bytes(b"\x00" * before.st_size)  # same size, different bytes
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    hash_calls.clear()
    fetch("toy", progress=False)
    assert target.read_bytes() == FILES["sub/b.bin"]
    # only the changed file was looked at: hashed in the cache (bad), then the mirror copy (good)
    assert all("b.bin" in p.name for p in hash_calls)
    assert len(hash_calls) == 2
    hash_calls.clear()
    fetch("toy", progress=False)
    assert hash_calls == []  # and stamped again


def test_cached_file_without_stamp_is_verified_not_recopied(register, mirror: Path, _isolated_data: Path) -> None:
    register(make_dataset("toy", FILES))
    write_tree(_isolated_data / "toy", FILES)  # e.g. copied in by hand; no mirror copy exists
    fetch("toy", progress=False)
    assert sorted(read_stamp(_isolated_data / "toy")) == sorted(FILES)


def test_stamp_is_invalidated_when_the_registry_hash_changes(register, mirror: Path) -> None:
    """A file stamped under an old manifest must be re-verified against a new one, not trusted."""
    old = {"a.txt": b"old version\n"}
    new = {"a.txt": b"new version\n"}  # same size
    register(make_dataset("toy", old))
    write_tree(mirror / "toy", old)
    folder = fetch("toy", progress=False)
    register(make_dataset("toy", new))
    write_tree(mirror / "toy", new)
    fetch("toy", progress=False)
    assert (folder / "a.txt").read_bytes() == new["a.txt"]


@pytest.mark.parametrize("bad", [b"alpha\n" * 99 + b"ALPHA\n", b"short"], ids=["same-size", "wrong-size"])
def test_bad_mirror_file_raises_and_leaves_nothing(register, mirror: Path, _isolated_data: Path, bad: bytes) -> None:
    register(make_dataset("toy", {"a.txt": FILES["a.txt"]}))
    write_tree(mirror / "toy", {"a.txt": bad})
    with pytest.raises(ChecksumError) as exc:
        fetch("toy", progress=False)
    message = str(exc.value)
    target = _isolated_data / "toy" / "a.txt"
    assert str(mirror / "toy" / "a.txt") in message
    assert str(target) in message
    assert exc.value.path == target
    assert ("sha256" in message) if len(bad) == len(FILES["a.txt"]) else ("size is 5 bytes" in message)
    assert all_files(_isolated_data) == []  # no target, no .part, no stamp


def test_part_files_are_pid_tagged_and_stale_ones_removed(
    register, mirror: Path, _isolated_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed fetch's ``.part`` (dead writer pid) is removed before fetching; a live writer's is kept."""
    register(make_dataset("toy", FILES))
    write_tree(mirror / "toy", FILES)
    sub = _isolated_data / "toy" / "sub"
    sub.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = sub / f".b.bin.pid{proc.pid}.k2j4h.part"
    live = sub / f".b.bin.pid{os.getpid()}.x9y8z.part"
    stale.write_bytes(b"half a download")
    live.write_bytes(b"someone else's copy in progress")
    temps: list[str] = []
    real_copy = fetch_mod.shutil.copyfile
    monkeypatch.setattr(
        fetch_mod.shutil, "copyfile", lambda src, dst: temps.append(Path(dst).name) or real_copy(src, dst)
    )
    fetch("toy", progress=False)
    assert not stale.exists() and live.exists()
    assert len(temps) == len(FILES)
    assert all(re.fullmatch(rf"\..+\.pid{os.getpid()}\..+\.part", t) for t in temps), temps


def test_missing_everywhere_offline_says_how_to_get_it(register, _isolated_data: Path) -> None:
    register(make_dataset("toy", FILES, url_rules=(("", "https://example.invalid/toy/"),)))
    with pytest.raises(FetchError) as exc:
        fetch("toy", progress=False)
    message = str(exc.value)
    assert "MMHELPERS_OFFLINE" in message and "MMHELPERS_MIRROR" in message
    assert all_files(_isolated_data) == []


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """``read_only(folder)`` makes a folder tree read-only: chmod a-w, and (root ignores modes) temporary files
    refused inside it as the OS would (every write here goes through tempfile.mkstemp, then a rename)."""
    frozen: list[Path] = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and any(Path(dir).resolve().is_relative_to(f) for f in frozen):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kw)

    def freeze(folder: Path) -> Path:
        frozen.append(folder.resolve())
        for d in [folder, *folder.rglob("*")]:
            if d.is_dir():
                d.chmod(0o555)
        return folder

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield freeze
    for folder in frozen:
        for d in [folder, *folder.rglob("*")]:
            if d.is_dir():
                d.chmod(0o755)


def test_read_only_cache_without_stamp_still_loads(
    register, read_only, hash_calls: list[Path], _isolated_data: Path
) -> None:
    register(make_dataset("toy", FILES))
    folder = _isolated_data / "toy"
    write_tree(folder, FILES)  # complete and correct, but never stamped
    read_only(folder)
    for _ in range(2):
        hash_calls.clear()
        with pytest.warns(
            UserWarning, match=r"could not write the verification stamp .*PermissionError.*hash them again"
        ):
            assert fetch("toy", progress=False) == folder
        assert len(hash_calls) == len(FILES)  # verified by hash each time, since nothing records it
    assert not (folder / ".verified.json").exists()


def test_read_only_cache_missing_a_file_says_to_make_it_writable(
    register, read_only, mirror: Path, _isolated_data: Path
) -> None:
    register(make_dataset("toy", FILES))
    write_tree(mirror / "toy", FILES)
    folder = _isolated_data / "toy"
    write_tree(folder, {"a.txt": FILES["a.txt"]})
    read_only(folder)
    with pytest.warns(UserWarning, match="verification stamp"), pytest.raises(DataError) as exc:
        fetch("toy", progress=False)
    assert exc.value.path == folder
    assert "could not store files in the data cache (PermissionError" in str(exc.value)
    assert "writable" in str(exc.value) and "MMHELPERS_DATA" in str(exc.value)


def test_data_root_or_dataset_folder_that_is_a_file(
    register, mirror: Path, _isolated_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register(make_dataset("toy", FILES))
    write_tree(mirror / "toy", FILES)
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("oops\n")
    monkeypatch.setenv("MMHELPERS_DATA", str(a_file))
    with pytest.raises(DataError, match="MMHELPERS_DATA names a file, not a folder") as exc:
        fetch("toy", progress=False)
    assert exc.value.path == a_file
    monkeypatch.setenv("MMHELPERS_DATA", str(_isolated_data))
    _isolated_data.mkdir()
    (_isolated_data / "toy").write_text("oops\n")
    with pytest.raises(DataError, match="expected the folder of data set 'toy', found a file") as exc:
        fetch("toy", progress=False)
    assert exc.value.path == _isolated_data / "toy"


# ---------------------------------------------------------------------------------------------------------------------
# downloading from a (local) server


def test_download_from_local_server(register, server: LocalServer, _isolated_data: Path) -> None:
    register(serve_dataset(server, "toy", FILES))
    folder = fetch("toy", progress=False)
    assert sorted(server.requests) == sorted(f"/toy/{p}" for p in FILES)
    for rel, data in FILES.items():
        assert (folder / rel).read_bytes() == data
    assert sorted(read_stamp(folder)) == sorted(FILES)
    server.requests.clear()
    fetch("toy", progress=False)
    assert server.requests == []  # the cache answers now


def test_mirror_is_preferred_over_download(register, server: LocalServer, mirror: Path) -> None:
    register(serve_dataset(server, "toy", FILES))
    write_tree(mirror / "toy", {"a.txt": FILES["a.txt"]})
    fetch("toy", progress=False)
    assert sorted(server.requests) == ["/toy/sub/b.bin", "/toy/sub/deeper/c.csv"]


@pytest.mark.parametrize(
    "route",
    [
        Route(FILES["a.txt"][:100]),  # honest Content-Length, too few bytes
        Route(FILES["a.txt"][:-1] + b"!"),  # right size, wrong bytes
        Route(FILES["a.txt"][:100], declared_length=len(FILES["a.txt"])),  # connection cut mid-body
    ],
    ids=["short", "wrong-body", "cut"],
)
def test_bad_download_raises_checksum_error_and_leaves_nothing(
    register, server: LocalServer, _isolated_data: Path, route: Route
) -> None:
    register(serve_dataset(server, "toy", {"a.txt": FILES["a.txt"]}))
    server.routes["/toy/a.txt"] = route
    with pytest.raises(ChecksumError) as exc:
        fetch("toy", progress=False)
    message = str(exc.value)
    assert str(_isolated_data / "toy" / "a.txt") in message
    assert f"{server.url}/toy/a.txt" in message
    assert all_files(_isolated_data) == []


def test_cut_chunked_download_raises_fetch_error(register, server: LocalServer, _isolated_data: Path) -> None:
    """A chunked transfer cut short (http.client raises IncompleteRead) is a FetchError, not a raw exception."""
    register(serve_dataset(server, "toy", {"a.txt": FILES["a.txt"]}))
    server.routes["/toy/a.txt"] = Route(FILES["a.txt"][:100], chunked_cut=True)
    with pytest.raises(FetchError) as exc:
        fetch("toy", progress=False)
    message = str(exc.value)
    assert str(_isolated_data / "toy" / "a.txt") in message
    assert f"{server.url}/toy/a.txt" in message
    assert all_files(_isolated_data) == []


def test_http_404_raises_fetch_error_mentioning_the_mirror(register, server: LocalServer, _isolated_data: Path) -> None:
    register(serve_dataset(server, "toy", FILES))
    del server.routes["/toy/a.txt"]
    with pytest.raises(FetchError) as exc:
        fetch("toy", ["a.txt"], progress=False)
    message = str(exc.value)
    assert "404" in message
    assert f"{server.url}/toy/a.txt" in message
    assert "MMHELPERS_MIRROR" in message
    assert all_files(_isolated_data) == []


def test_offline_makes_no_request(register, server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    register(serve_dataset(server, "toy", FILES))
    monkeypatch.setenv("MMHELPERS_OFFLINE", "1")
    with pytest.raises(FetchError, match="(?i)offline"):
        fetch("toy", progress=False)
    assert server.requests == []


def test_interrupted_download_resumes_with_missing_files_only(
    register, server: LocalServer, _isolated_data: Path, hash_calls: list[Path]
) -> None:
    register(serve_dataset(server, "toy", FILES))
    good = server.routes["/toy/sub/deeper/c.csv"]
    server.routes["/toy/sub/deeper/c.csv"] = Route(b"server error", status=500)
    with pytest.raises(FetchError, match="500"):
        fetch("toy", progress=False)
    folder = _isolated_data / "toy"
    assert data_files(folder) == ["a.txt", "sub/b.bin"]  # the two good files stay, nothing half-written
    ds = get_dataset("toy")
    for rel in ("a.txt", "sub/b.bin"):
        verify_file(folder / rel, ds.spec(rel))
    server.routes["/toy/sub/deeper/c.csv"] = good
    server.requests.clear()
    hash_calls.clear()
    fetch("toy", progress=False)
    assert server.requests == ["/toy/sub/deeper/c.csv"]
    assert [p.name for p in hash_calls if p.name in ("a.txt", "b.bin")] == []  # already stamped as verified
    assert (folder / "sub/deeper/c.csv").read_bytes() == FILES["sub/deeper/c.csv"]


# ---------------------------------------------------------------------------------------------------------------------
# archives


def make_tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE_FILES = {"core.txt": b"one: 1\ntwo: 2\n", "wav/one.wav": b"RIFF-one" * 10, "wav/digits/two.wav": b"RIFF2" * 30}
ARCHIVE_MEMBERS = {
    "./pkg/core.txt": ARCHIVE_FILES["core.txt"],
    "./pkg/one.wav": ARCHIVE_FILES["wav/one.wav"],
    "./pkg/digits/two.wav": ARCHIVE_FILES["wav/digits/two.wav"],
    "./pkg/README": b"not in the manifest\n",
}
PLACES = (("pkg/core.txt", "core.txt"), ("pkg/", "wav/"))


def archive_dataset(server: LocalServer, members: dict[str, bytes]) -> DataSet:
    server.routes["/dl/sounds.tar.gz"] = Route(make_tar_gz(members))
    return make_dataset("arch", ARCHIVE_FILES, archive=Archive(url=f"{server.url}/dl/sounds.tar.gz", places=PLACES))


def test_archive_local_path_mapping() -> None:
    archive = Archive(url="https://example.org/x.tar.gz", places=PLACES)
    assert archive.local_path("./pkg/core.txt") == "core.txt"
    assert archive.local_path("pkg/digits/7.wav") == "wav/digits/7.wav"
    assert archive.local_path("./pkg/.hidden") == "wav/.hidden"
    assert archive.local_path("other/file") is None
    assert Archive(url="u").local_path("./a/b") == "a/b"
    assert Archive(url="u").local_path("/a/b") == "a/b"
    assert Archive(url="u").local_path("./.config") == ".config"  # a dotfile keeps its dot
    assert Archive(url="u").local_path(".config") == ".config"


def test_archive_download_extracts_and_verifies(register, server: LocalServer, _isolated_data: Path) -> None:
    register(archive_dataset(server, ARCHIVE_MEMBERS))
    folder = fetch("arch", progress=False)
    assert server.requests == ["/dl/sounds.tar.gz"]
    assert data_files(folder) == sorted(ARCHIVE_FILES)  # README not extracted, no temp dir left
    for rel, data in ARCHIVE_FILES.items():
        assert (folder / rel).read_bytes() == data
    server.requests.clear()
    fetch("arch", progress=False)
    assert server.requests == []


def test_archive_subset_extracts_only_wanted(register, server: LocalServer) -> None:
    register(archive_dataset(server, ARCHIVE_MEMBERS))
    folder = fetch("arch", ["core.txt"], progress=False)
    assert data_files(folder) == ["core.txt"]


def test_archive_member_with_wrong_bytes_raises(register, server: LocalServer, _isolated_data: Path) -> None:
    members = dict(ARCHIVE_MEMBERS)
    members["./pkg/one.wav"] = b"RIFF-ONE" * 10
    register(archive_dataset(server, members))
    with pytest.raises(ChecksumError) as exc:
        fetch("arch", progress=False)
    message = str(exc.value)
    assert str(_isolated_data / "arch" / "wav" / "one.wav") in message
    assert "sounds.tar.gz!./pkg/one.wav" in message
    assert "wav/one.wav" not in data_files(_isolated_data / "arch")
    assert not any(f.endswith(".part") for f in all_files(_isolated_data))


def test_archive_missing_member_raises_fetch_error(register, server: LocalServer) -> None:
    members = {k: v for k, v in ARCHIVE_MEMBERS.items() if k != "./pkg/digits/two.wav"}
    register(archive_dataset(server, members))
    with pytest.raises(FetchError, match="1 file\\(s\\) not found in .*sounds.tar.gz"):
        fetch("arch", progress=False)


def test_archive_that_is_not_an_archive_raises_data_error(register, server: LocalServer, _isolated_data: Path) -> None:
    register(archive_dataset(server, ARCHIVE_MEMBERS))
    server.routes["/dl/sounds.tar.gz"] = Route(b"<html>moved</html>")
    with pytest.raises(DataError, match="not a readable tar or zip archive"):
        fetch("arch", progress=False)
    assert data_files(_isolated_data / "arch") == []


# ---------------------------------------------------------------------------------------------------------------------
# gzip content hashing

PAYLOAD = b"".join(i.to_bytes(4, "big") for i in range(5000))


def test_gz_hash_is_of_decompressed_bytes(tmp_path: Path, register, mirror: Path) -> None:
    original = gzip.compress(PAYLOAD, mtime=0)
    recompressed = gzip.compress(PAYLOAD, mtime=1_600_000_000)
    assert original != recompressed and len(original) == len(recompressed)
    p = tmp_path / "x.gz"
    p.write_bytes(recompressed)
    assert content_sha256(p) == hashlib.sha256(PAYLOAD).hexdigest()
    assert content_sha256(p, gz=False) == hashlib.sha256(recompressed).hexdigest()
    # a manifest made from one wrapper accepts the other
    register(make_dataset("gz", {"x.gz": original}))
    write_tree(mirror / "gz", {"x.gz": recompressed})
    folder = fetch("gz", progress=False)
    assert gzip.decompress((folder / "x.gz").read_bytes()) == PAYLOAD


def test_truncated_gz_is_reported_corrupt_or_truncated(tmp_path: Path, register, mirror: Path) -> None:
    good = gzip.compress(PAYLOAD)
    cut = good[: len(good) // 2]
    p = tmp_path / "x.gz"
    p.write_bytes(cut)
    with pytest.raises(DataError, match="corrupt or truncated") as exc:
        content_sha256(p)
    assert exc.value.path == p
    # a spec that matches the truncated size still fails, on decompression
    spec = FileSpec("x.gz", hashlib.sha256(PAYLOAD).hexdigest(), len(cut))
    with pytest.raises(ChecksumError, match="corrupt or truncated"):
        verify_file(p, spec)
    # through fetch: size differs, still a ChecksumError that says truncated
    register(make_dataset("gz", {"x.gz": good}))
    write_tree(mirror / "gz", {"x.gz": cut})
    with pytest.raises(ChecksumError, match="truncated"):
        fetch("gz", progress=False)


def test_gz_with_flipped_byte_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(PAYLOAD))
    data[len(data) // 2] ^= 0xFF
    p = tmp_path / "x.gz"
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or truncated"):
        content_sha256(p)


# ---------------------------------------------------------------------------------------------------------------------
# read_idx


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.tobytes()


def test_read_idx_round_trip(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    p = tmp_path / "imgs-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(images)))
    out = read_idx(p, expect_ndim=3)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)
    # uncompressed, big-endian int32
    values = np.array([-5, 0, 1, 2**30], dtype=">i4")
    q = tmp_path / "vals-idx1-ubyte"
    q.write_bytes(idx_bytes(values, 0x0C))
    got = read_idx(q, expect_ndim=1)
    assert got.dtype == np.dtype("int32") and got.dtype.isnative
    np.testing.assert_array_equal(got, [-5, 0, 1, 2**30])


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (b"\x08\x03\x00\x00" + b"\x00" * 12, "magic"),  # magic bytes out of order
        (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", "magic"),  # unknown type code
        (b"", "magic.*empty"),
        (b"\x00\x00\x08\x03\x00\x00", "header truncated"),
        (idx_bytes(np.zeros((2, 3, 4), np.uint8))[:-1], "payload is 23 bytes.*needs 24"),
        (idx_bytes(np.zeros((2, 3, 4), np.uint8)) + b"\x00", "payload is 25 bytes.*needs 24"),
    ],
    ids=["wrong-magic", "unknown-type", "empty", "short-header", "short-payload", "long-payload"],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, raw: bytes, pattern: str) -> None:
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(raw)
    with pytest.raises(DataError, match=pattern) as exc:
        read_idx(p)
    assert exc.value.path == p
    assert str(p) in str(exc.value)


def test_read_idx_wrong_ndim(tmp_path: Path) -> None:
    p = tmp_path / "labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8))))
    with pytest.raises(DataError, match="1 dimensions, expected 3"):
        read_idx(p, expect_ndim=3)


def test_read_idx_empty_and_broken_gz(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gz"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="magic"):
        read_idx(empty)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:40])
    with pytest.raises(DataError, match="corrupt or truncated") as exc:
        read_idx(cut)
    assert exc.value.path == cut
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------------------------------------------------------------
# the registry


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(KeyError) as exc:
        get_dataset("nope")
    message = str(exc.value)
    assert "nope" in message
    for name in ("fsdd", "mnist", "fashion_mnist", "flickr8k_subset1000", "asterisk_prompts"):
        assert name in message
    with pytest.raises(KeyError):
        fetch("nope")


EXPECTED_COUNTS = {"fsdd": 3000, "mnist": 3, "fashion_mnist": 4, "flickr8k_subset1000": 1002, "asterisk_prompts": 569}


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_registered_dataset_is_complete(name: str) -> None:
    ds = get_dataset(name)
    assert ds.name == name
    assert len(ds.files) == EXPECTED_COUNTS[name]
    assert ds.license.strip() and ds.title.strip() and ds.citation.strip()
    assert re.match(r"https?://\S+$", ds.homepage)
    paths = [f.path for f in ds.files]
    assert len(set(paths)) == len(paths)
    for f in ds.files:
        assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
        assert f.size > 0, f
        assert not f.path.startswith("/") and ".." not in Path(f.path).parts and "\\" not in f.path, f
    if ds.archive is None:
        for f in ds.files:
            url = ds.url_for(f.path)
            assert url is not None and url.startswith("https://"), (f.path, url)
    else:
        assert ds.archive.url.startswith("https://")
        assert ds.url_for(ds.files[0].path) is None
        assert all(ds.archive.local_path(p) is not None for p in ("core-sounds-en.txt", "digits/7.wav"))


def test_registry_covers_exactly_the_expected_datasets() -> None:
    assert sorted(REGISTRY) == sorted(EXPECTED_COUNTS)


def test_url_rules_first_match_wins() -> None:
    ds = get_dataset("flickr8k_subset1000")
    assert ds.url_for("captions_all_flickr8k.txt").endswith("/data/ignore_captions.txt")
    assert ds.url_for("captions.txt").endswith("/data/captions.txt")
    assert ds.url_for("images/1000268201_693b08cb0e.jpg").endswith("/data/images/1000268201_693b08cb0e.jpg")
