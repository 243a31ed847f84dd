"""Reading the text in pictures with RapidOCR (PP-OCRv4 detection and recognition as ONNX, offline in PyPI
``rapidocr-onnxruntime``), batched over many pictures and cached by content; and the character error rate.

``read_text`` loads the reader once and returns, for each picture, the lines it found in reading order (top to
bottom, then left to right) with their boxes and confidences, and the whole text as one string. Results are
cached under ``<cache>/ocr/`` keyed by the pictures' bytes, the package version and the reader's settings, in
shards written atomically, so an interrupted run resumes and a changed setting never returns a stale reading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmhelpers.errors import ModelUnavailableError
from mmhelpers.features import fingerprint, package_model_id
from mmhelpers.shards import cached_map

OCR_PACKAGE = "rapidocr-onnxruntime"
# Detection on the picture scaled so its shorter side is 480 px (the package's default, 736, upscales small
# pictures: 1.7x slower here at the same accuracy on 384-pixel posts); no text-direction classifier (upright text);
# words that small text ran together are split again (``resegment``).
DEFAULT_SETTINGS = {"det_limit_side_len": 480, "use_cls": False, "text_score": 0.5, "resegment": True}
RUN_TOGETHER = 12  # a token of this many letters or more, with no space, is taken for words run together


@dataclass(frozen=True)
class OcrLine:
    """One line of text the reader found: the text, its confidence and its box (4 corner points, x y)."""

    text: str
    confidence: float
    box: list[list[float]]


@dataclass(frozen=True)
class OcrResult:
    """What was read in one picture: its lines in reading order and their text joined by spaces."""

    lines: list[OcrLine] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(line.text for line in self.lines)

    @property
    def confidence(self) -> float:
        """The lowest line confidence (0 when nothing was read): how sure the weakest part of the reading is."""
        return min((line.confidence for line in self.lines), default=0.0)


class TextReader:
    """A RapidOCR reader, loaded once; call it on a list of RGB uint8 pictures (H, W, 3)."""

    def __init__(self, **settings: Any):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:  # pragma: no cover - the package is a dependency
            raise ModelUnavailableError(f"OCR needs PyPI {OCR_PACKAGE} (pip install {OCR_PACKAGE}): {e}") from e
        self.settings = {**DEFAULT_SETTINGS, **settings}
        init = {k: v for k, v in self.settings.items() if k not in ("use_cls", "resegment")}
        self._ocr = RapidOCR(**init)
        self.model_id = package_model_id("PP-OCRv4", OCR_PACKAGE)

    def __call__(self, pictures: Sequence[np.ndarray]) -> list[OcrResult]:
        return [self.read(p) for p in pictures]

    def read(self, picture: np.ndarray) -> OcrResult:
        """The lines of text in one RGB picture, in reading order."""
        if picture.ndim != 3 or picture.shape[-1] != 3 or picture.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 picture (H, W, 3), got {picture.dtype} {picture.shape}")
        found, _ = self._ocr(np.ascontiguousarray(picture[..., ::-1]), use_cls=self.settings["use_cls"])  # BGR
        fix = resegment if self.settings["resegment"] else str.strip
        lines = [OcrLine(fix(str(text)), float(conf), [[float(x), float(y)] for x, y in box])
                 for box, text, conf in (found or []) if str(text).strip()]  # fmt: skip
        return OcrResult(reading_order(lines))


def resegment(text: str) -> str:
    """``text`` with runs of words the recogniser wrote without spaces split again ("ablackdog" -> "a black dog").

    PP-OCRv4's recogniser is trained mostly on Chinese and drops the spaces of small English text; a letters-only
    token of ``RUN_TOGETHER`` or more characters is split by word frequencies (``wordninja``, English Wikipedia
    unigrams). Tokens with digits or punctuation and ordinary words are left as they are."""
    import wordninja

    out = []
    for token in text.split():
        if len(token) >= RUN_TOGETHER and token.isalpha() and token.isascii():
            parts = wordninja.split(token)
            out.append(" ".join(p.upper() if token.isupper() else p for p in parts))
        else:
            out.append(token)
    return " ".join(out)


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Lines sorted top to bottom; boxes whose vertical centres lie within half a line height are one row, read
    left to right."""
    if not lines:
        return []

    def top_bottom(line: OcrLine) -> tuple[float, float]:
        ys = [y for _, y in line.box]
        return min(ys), max(ys)

    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: sum(top_bottom(ln)) / 2):
        y0, y1 = top_bottom(line)
        centre, height = (y0 + y1) / 2, y1 - y0
        if rows:
            r0, r1 = top_bottom(rows[-1][0])
            if abs(centre - (r0 + r1) / 2) < 0.5 * max(height, r1 - r0):
                rows[-1].append(line)
                continue
        rows.append([line])
    return [ln for row in rows for ln in sorted(row, key=lambda ln: min(x for x, _ in ln.box))]


def _result_from_json(d: Mapping[str, Any]) -> OcrResult:
    return OcrResult([OcrLine(ln["text"], ln["confidence"], ln["box"]) for ln in d["lines"]])


def read_text(
    pictures: Sequence[Any],
    reader: TextReader | None = None,
    *,
    load: Callable[[Any], np.ndarray] | None = None,
    data: Any = None,
    shard_size: int = 64,
    cache: bool = True,
    progress: bool = True,
) -> list[OcrResult]:
    """Read every picture (RGB arrays, or items ``load`` turns into arrays), cached by content and settings.

    ``data`` stands for the pictures in the cache key when they are not arrays (default: the pictures themselves):
    pass what fully determines them, e.g. the source files and the rendering settings, so that a cached reading
    is found without rendering. One reader is loaded for all pictures (``reader`` or a default one).
    """
    reader = reader or TextReader()
    load = load or (lambda x: x)
    key = None
    if cache:
        key = {"model": reader.model_id, "settings": reader.settings,
               "data": fingerprint(list(pictures) if data is None else data)}  # fmt: skip
    return cached_map(pictures, lambda chunk: [reader.read(load(p)) for p in chunk], key=key, kind="ocr",
                      prefix="PP-OCRv4", to_json=asdict, from_json=_result_from_json, shard_size=shard_size,
                      desc="OCR", unit="picture", progress=progress)  # fmt: skip


def normalise_text(text: str) -> str:
    """Lower case, runs of whitespace as one space, no surrounding space or final full stop: how texts are compared."""
    return " ".join(text.lower().split()).rstrip(" .")


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str], normalise: bool = True) -> float:
    """Character error rate (edits / reference characters, over all pairs together), via ``jiwer``; texts are
    compared after ``normalise_text`` unless ``normalise=False``. An empty reading of a text costs all its characters."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalise_text(r) if normalise else r for r in references]
    hyps = [normalise_text(h) if normalise else h for h in hypotheses]
    if not any(refs):
        raise ValueError("the references are all empty: a character error rate needs text to compare against")
    keep = [i for i, r in enumerate(refs) if r]  # jiwer refuses empty references; they have no characters to miss
    return float(jiwer.cer([refs[i] for i in keep], [hyps[i] for i in keep]))
