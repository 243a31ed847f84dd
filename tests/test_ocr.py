"""OCR with the packaged RapidOCR: it reads a rendered text, finds nothing in a blank picture, fails honestly on an
unreadable one, reads lines in order, caches by content and settings, and the character error rate is right."""

from __future__ import annotations

import numpy as np
import pytest

from mmhelpers.ocr import (
    OcrLine,
    OcrResult,
    TextReader,
    character_error_rate,
    normalise_text,
    read_text,
    reading_order,
    resegment,
)
from mmhelpers.text_overlay import TextStyle, render_text


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def photo_like(h: int = 384, w: int = 512, seed: int = 0) -> np.ndarray:
    """Smooth colour blobs, like a blurred photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_reads_a_rendered_text(reader: TextReader):
    text = "two dogs play in the snow"
    pic = render_text(photo_like(), text, TextStyle(size=0.09, position="bottom")).image
    (result,) = reader([pic])
    assert character_error_rate([text], [result.text]) < 0.05, result.text
    assert result.confidence > 0.8 and len(result.lines) >= 1


def test_a_blank_picture_reads_as_nothing(reader: TextReader):
    result = reader.read(np.full((200, 300, 3), 200, np.uint8))
    assert result.text == "" and result.lines == [] and result.confidence == 0.0


def test_an_unreadable_text_gives_a_high_error_not_a_crash(reader: TextReader):
    text = "a tiny faint caption nobody can read"
    base = photo_like(seed=1)
    pic = render_text(base, text, TextStyle(size=0.02, colour="white", outline=None), min_size=0.0).image
    faint = (0.9 * base + 0.1 * pic).astype(np.uint8)  # 10% contrast, 8-pixel letters
    result = reader.read(faint)
    assert character_error_rate([text], [result.text]) > 0.5


def test_two_lines_are_read_top_to_bottom(reader: TextReader):
    pic = render_text(
        photo_like(seed=2), "first words here then the second part", TextStyle(size=0.08, lines=2, position="middle")
    ).image
    text = normalise_text(reader.read(pic).text)
    assert text.index("first") < text.index("second"), text


def test_reading_order_groups_rows_left_to_right():
    def line(t: str, x: float, y: float) -> OcrLine:
        return OcrLine(t, 0.9, [[x, y], [x + 40, y], [x + 40, y + 20], [x, y + 20]])

    lines = [line("d", 60, 52), line("a", 0, 0), line("c", 0, 50), line("b", 60, 3)]
    assert [ln.text for ln in reading_order(lines)] == ["a", "b", "c", "d"]


class CountingReader(TextReader):
    def __init__(self, **settings):
        super().__init__(**settings)
        self.calls = 0

    def read(self, picture: np.ndarray) -> OcrResult:
        self.calls += 1
        return OcrResult([OcrLine(f"mean {int(picture.mean())}", 0.9, [[0, 0], [1, 0], [1, 1], [0, 1]])])


def test_cache_by_content_and_settings(tmp_path):
    pics = [np.full((20, 20, 3), v, np.uint8) for v in (10, 20, 30)]
    r = CountingReader()
    first = read_text(pics, r, shard_size=2, progress=False)
    assert r.calls == 3 and [x.text for x in first] == ["mean 10", "mean 20", "mean 30"]
    again = read_text(pics, r, shard_size=2, progress=False)
    assert r.calls == 3 and again == first  # cached
    pics[1] = np.full((20, 20, 3), 21, np.uint8)
    assert read_text(pics, r, shard_size=2, progress=False)[1].text == "mean 21" and r.calls == 6  # new content
    other = CountingReader(det_limit_side_len=736)
    read_text(pics, other, shard_size=2, progress=False)
    assert other.calls == 3  # other settings: another key
    for shard in (tmp_path / "cache" / "ocr").rglob("shard-00000.json"):
        shard.write_text("{ truncated")  # a half-written shard (or a disk error): read again, not trusted
    before = r.calls
    assert read_text(pics, r, shard_size=2, progress=False)[0].text == "mean 10" and r.calls == before + 2
    assert not list((tmp_path / "cache" / "ocr").rglob("*.tmp"))


def test_character_error_rate():
    assert character_error_rate(["abcd"], ["abcd"]) == 0.0
    assert character_error_rate(["abcd"], ["abxd"]) == 0.25
    assert character_error_rate(["A dog ."], ["a  dog"]) == 0.0  # compared after normalising
    assert character_error_rate(["abcd", "ef"], ["", "ef"]) == pytest.approx(4 / 6)  # pooled over all pairs
    with pytest.raises(ValueError, match="2 references but 1"):
        character_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="all empty"):
        character_error_rate([""], ["x"])


def test_words_run_together_are_split_again():
    assert resegment("ablackdogrunsonthegrass") == "a black dog runs on the grass"
    assert resegment("a dog runs") == "a dog runs"  # ordinary words: untouched
    assert resegment("serial XJ2049-7781QZ") == "serial XJ2049-7781QZ"  # codes are not words
    assert resegment("ATWOCHILDRENPLAY") == "A TWO CHILDREN PLAY"
