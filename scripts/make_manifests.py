"""Write mmhelpers/data/manifests/<name>.tsv from a local copy of the real data sets.

Run once per data set version, from a trusted copy (for us: ../shared/data):

    python scripts/make_manifests.py ../shared/data

Each line is ``sha256<TAB>size<TAB>relative/path``. For gzip files (MNIST, Fashion-MNIST)
the hash is of the decompressed bytes, because mirrors re-compress the .gz wrappers
(see the MNIST SOURCE.md); the size is still the .gz file's.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

# Which files of each mirror folder belong to the data set (documentation files do not).
PATTERNS = {
    "fsdd": ["recordings/*.wav"],
    "mnist": ["*.gz"],
    "fashion_mnist": ["*.gz"],
    "flickr8k_subset1000": ["images/*.jpg", "captions.txt", "captions_all_flickr8k.txt"],
    "asterisk_prompts": ["wav/**/*.wav", "core-sounds-en.txt"],
}


def content_sha256(path: Path) -> str:
    """sha256 of the file's bytes, or of the decompressed bytes for .gz files."""
    opener = gzip.open if path.suffix == ".gz" else open
    h = hashlib.sha256()
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(mirror: Path) -> None:
    out_dir = Path(__file__).resolve().parents[1] / "mmhelpers" / "data" / "manifests"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, patterns in PATTERNS.items():
        files = sorted({p for pat in patterns for p in (mirror / name).glob(pat) if p.is_file()})
        lines = [f"{content_sha256(p)}\t{p.stat().st_size}\t{p.relative_to(mirror / name).as_posix()}" for p in files]
        (out_dir / f"{name}.tsv").write_text("\n".join(lines) + "\n")
        print(f"{name}: {len(lines)} files")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
