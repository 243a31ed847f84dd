"""Text written onto pictures: it lands inside the picture where the style says, wraps when long, and bad fonts,
positions and pictures are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from mmhelpers.errors import DataError
from mmhelpers.text_overlay import FONTS, TextStyle, font_path, mask_box, render_text, wrap_lines


def grey(h: int = 300, w: int = 400) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


@pytest.mark.parametrize("font", sorted(FONTS))
def test_every_shipped_font_draws_inside_the_picture_and_only_in_its_box(font: str):
    pic = grey()
    out = render_text(pic, "a dog runs on the beach", TextStyle(font=font, position="middle"))
    x0, y0, x1, y1 = out.box
    assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
    changed = np.any(out.image != pic, axis=-1)
    assert changed.sum() > 200  # the text is there
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() <= y1 + 1
    assert out.image.shape == pic.shape and out.image.dtype == np.uint8
    assert np.array_equal(pic, grey())  # the input is not drawn on


def test_position_top_bottom_and_middle():
    boxes = {p: render_text(grey(), "hello there", TextStyle(position=p)).box for p in ("top", "middle", "bottom")}
    assert boxes["top"][1] < boxes["middle"][1] < boxes["bottom"][1]
    assert boxes["top"][1] < 300 * 0.1 and boxes["bottom"][3] > 300 * 0.9


def test_a_long_text_shrinks_then_wraps_instead_of_leaving_the_picture():
    long = "a man in a red shirt and a woman in a blue dress are walking with their two dogs along the beach at sunset"
    one = render_text(grey(200, 250), long, TextStyle(size=0.1, lines=1))
    x0, y0, x1, y1 = one.box
    assert 0 <= x0 and x1 <= 250  # fits the width
    assert one.font_px >= 12  # wrapped into more lines rather than shrunk to nothing
    short = render_text(grey(200, 250), "a dog", TextStyle(size=0.1, lines=1))
    assert (y1 - y0) > 2 * (short.box[3] - short.box[1])  # several lines


def test_wrap_lines_breaks_at_spaces_into_balanced_lines():
    assert wrap_lines("one two three four", 2) == ["one two", "three four"]
    assert wrap_lines("single", 2) == ["single"]
    assert wrap_lines("  spaced   words ", 1) == ["spaced words"]


def test_mask_box_hides_the_text():
    pic = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = render_text(pic, "masked", TextStyle(position="middle"))
    masked = mask_box(out.image, out.box)
    x0, y0, x1, y1 = out.box
    region = masked[y0:y1, x0:x1].reshape(-1, 3)
    assert (region == region[0]).all()  # one flat colour where the text was
    assert np.array_equal(masked[: y0 - 3], out.image[: y0 - 3])  # elsewhere untouched


def test_bad_font_position_and_picture_are_refused(tmp_path):
    with pytest.raises(DataError, match="not a font"):
        font_path(str(tmp_path / "missing.ttf"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt"):
        render_text(grey(), "x", TextStyle(font=str(tmp_path / "notes.txt")))
    with pytest.raises(ValueError, match="position"):
        render_text(grey(), "x", TextStyle(position="left"))
    with pytest.raises(ValueError, match="16x16"):
        render_text(np.zeros((8, 8, 3), np.uint8), "x")
    assert font_path("DejaVu Sans").is_file()
