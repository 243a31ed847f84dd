"""The data registry: every real data set declared once, with origin, license and per-file hashes."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set: path inside the data set folder, sha256 and size in bytes.

    For ``.gz`` files the sha256 is of the decompressed bytes (mirrors re-compress them).
    """

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Archive:
    """An upstream archive (tar or zip) that holds the files.

    ``places`` maps archive member prefixes to local path prefixes, first match wins.
    """

    url: str
    places: tuple[tuple[str, str], ...] = (("", ""),)

    def local_path(self, member: str) -> str | None:
        """Where an archive member goes inside the data set folder."""
        while member.startswith(("./", "/")):  # not lstrip("./"): that would also eat a dotfile's leading dot
            member = member[1:] if member.startswith("/") else member[2:]
        for prefix, local in self.places:
            if member.startswith(prefix):
                return local + member[len(prefix) :]
        return None


@dataclass(frozen=True)
class DataSet:
    """A data set: where it comes from, under which license, and which files it has."""

    name: str
    title: str
    homepage: str
    license: str
    citation: str
    # Per-file download URLs: (local path prefix, URL prefix) rules, first match wins.
    url_rules: tuple[tuple[str, str], ...] = ()
    archive: Archive | None = None
    notes: str = ""
    files: tuple[FileSpec, ...] = field(default=(), repr=False)

    @property
    def size(self) -> int:
        """Total bytes of the data set's files."""
        return sum(f.size for f in self.files)

    def url_for(self, path: str) -> str | None:
        """Upstream URL of one file, or None when the data set comes as an archive."""
        for prefix, url_prefix in self.url_rules:
            if path.startswith(prefix):
                return url_prefix + path[len(prefix) :]
        return None

    def spec(self, path: str) -> FileSpec:
        """The FileSpec of ``path``; KeyError names the data set if it is not one of its files."""
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(f"{path!r} is not a file of data set {self.name!r}")


@cache
def read_manifest(name: str) -> tuple[FileSpec, ...]:
    """Read ``manifests/<name>.tsv`` (sha256, size, path per line), written by scripts/make_manifests.py."""
    lines = (MANIFEST_DIR / f"{name}.tsv").read_text().splitlines()
    specs = []
    for line in lines:
        if line.strip():
            sha, size, path = line.split("\t")
            specs.append(FileSpec(path=path, sha256=sha, size=int(size)))
    return tuple(specs)


def _declare(**kw: object) -> DataSet:
    name = str(kw["name"])
    return DataSet(files=read_manifest(name), **kw)  # type: ignore[arg-type]


_GH = "https://raw.githubusercontent.com"

REGISTRY: dict[str, DataSet] = {
    ds.name: ds
    for ds in [
        _declare(
            name="fsdd",
            title="Free Spoken Digit Dataset (3,000 recordings, 6 speakers, 8 kHz)",
            homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
            license="CC BY-SA 4.0",
            citation="Zohar Jackson et al., Free Spoken Digit Dataset (FSDD), 2016.",
            url_rules=(("", f"{_GH}/Jakobovski/free-spoken-digit-dataset/26eb9aaf76e81b692f806f9140c2d2777410d7a1/"),),
            notes="Official split: recording index 0-4 test, 5-49 train.",
        ),
        _declare(
            name="mnist",
            title="MNIST test set (10,000 images) and training labels",
            homepage="http://yann.lecun.com/exdb/mnist/",
            license="CC BY-SA 3.0",
            citation="LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to document recognition. 1998.",
            url_rules=(("", "https://ossci-datasets.s3.amazonaws.com/mnist/"),),
            notes="Hashes are of the decompressed IDX bytes; the .gz wrappers differ between mirrors.",
        ),
        _declare(
            name="fashion_mnist",
            title="Fashion-MNIST (60,000 + 10,000 images)",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            license="MIT",
            citation="Xiao, Rasul, Vollgraf. Fashion-MNIST. arXiv:1708.07747, 2017.",
            url_rules=(("", f"{_GH}/zalandoresearch/fashion-mnist/master/data/fashion/"),),
        ),
        _declare(
            name="flickr8k_subset1000",
            title="Flickr8k, first 1,000 images with 5 captions each, plus all 40,455 captions",
            homepage="https://github.com/quantumnaan/sic_translator",
            license="research and teaching use only (Flickr8k terms; photos belong to their owners)",
            citation="Hodosh, Young, Hockenmaier. Framing Image Description as a Ranking Task. JAIR 47, 2013.",
            url_rules=(
                ("images/", f"{_GH}/quantumnaan/sic_translator/d27da85cff2dbf143fcaf365aece667d66c4298f/data/images/"),
                (
                    "captions.txt",
                    f"{_GH}/quantumnaan/sic_translator/d27da85cff2dbf143fcaf365aece667d66c4298f/data/captions.txt",
                ),
                (
                    "captions_all_flickr8k.txt",
                    f"{_GH}/quantumnaan/sic_translator/d27da85cff2dbf143fcaf365aece667d66c4298f/data/ignore_captions.txt",
                ),
            ),
            notes="Do not redistribute. The subset has no official split: use a seeded split by image.",
        ),
        _declare(
            name="asterisk_prompts",
            title="Asterisk core sound prompts, English (568 recordings, one speaker, 8 kHz) with transcripts",
            homepage="https://www.asterisk.org/",
            license="CC BY-SA 3.0 (recorded by Allison Smith)",
            citation="Asterisk core sounds (en) 1.6.1, recorded by Allison Smith.",
            archive=Archive(
                url="https://downloads.asterisk.org/pub/telephony/sounds/releases/asterisk-core-sounds-en-wav-1.6.1.tar.gz",
                places=(("core-sounds-en.txt", "core-sounds-en.txt"), ("", "wav/")),
            ),
            notes="Files in the archive sit at its top level; they are placed under wav/ here.",
        ),
    ]
}


def get_dataset(name: str) -> DataSet:
    """Look a data set up by name; the KeyError lists the names that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
