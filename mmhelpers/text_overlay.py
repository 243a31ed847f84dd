"""Text written onto pictures, as posts and memes carry it: fonts that ship offline, a style, and a renderer that
wraps and fits the text and returns where it went.

The fonts are the TrueType files matplotlib ships (DejaVu and STIX, so every machine with the cookbook has the
same ones); pass any other ``.ttf``/``.otf`` path, such as Debian's ``fonts-liberation`` or ``fonts-noto``, as a
font name.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmhelpers.errors import DataError

# name -> file in matplotlib's mpl-data/fonts/ttf: a sans, its bold, a serif, a monospace, a bold serif, an italic
FONTS = {
    "DejaVu Sans": "DejaVuSans.ttf",
    "DejaVu Sans Bold": "DejaVuSans-Bold.ttf",
    "DejaVu Serif": "DejaVuSerif.ttf",
    "DejaVu Sans Mono": "DejaVuSansMono.ttf",
    "STIX Bold": "STIXGeneralBol.ttf",
    "STIX Italic": "STIXGeneralItalic.ttf",
}
POSITIONS = ("top", "bottom", "middle")  # middle: over the subject
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "yellow": (255, 221, 0), "red": (220, 30, 30)}


@dataclass(frozen=True)
class TextStyle:
    """How a text is written on a picture: font, size, colours, outline, position and line count."""

    font: str = "DejaVu Sans Bold"  # a FONTS name or a path to a .ttf/.otf file
    size: float = 0.08  # text height as a fraction of the picture's shorter side (shrunk if the text is too wide)
    colour: str = "white"
    outline: str | None = "black"  # None: no outline
    position: str = "bottom"
    lines: int = 1  # 1 or 2: the text wrapped into this many lines


@dataclass(frozen=True)
class Overlay:
    """A picture with text on it, where the text went (x0, y0, x1, y1 in pixels), and the size used."""

    image: np.ndarray  # (H, W, 3) uint8
    box: tuple[int, int, int, int]
    font_px: int


def font_path(font: str) -> Path:
    """The file of a FONTS name, or ``font`` itself when it is a path to a font file."""
    if font in FONTS:
        import matplotlib

        return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONTS[font]
    path = Path(font)
    if path.suffix.lower() not in (".ttf", ".otf", ".ttc") or not path.is_file():
        raise DataError(path, f"not a font: use one of {sorted(FONTS)} or the path of a .ttf/.otf file")
    return path


@cache
def _font(font: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(font)), px)


def wrap_lines(text: str, lines: int) -> list[str]:
    """``text`` in ``lines`` lines of about equal length, broken at spaces (fewer if it has fewer words)."""
    words = text.split()
    if lines <= 1 or len(words) < 2:
        return [" ".join(words)]
    width = max(max(len(w) for w in words), -(-len(" ".join(words)) // lines))
    while len(out := textwrap.wrap(" ".join(words), width)) > lines:
        width += 1
    return out


def _fit(draw: ImageDraw.ImageDraw, lines: list[str], font: str, px: int, width: float) -> int:
    """The largest size up to ``px`` at which every line fits ``width`` pixels (at least 8)."""
    while px > 8 and max(draw.textlength(line, font=_font(font, px)) for line in lines) > width:
        px -= 1
    return px


def render_text(image: np.ndarray, text: str, style: TextStyle = TextStyle(), margin: float = 0.04,
                min_size: float = 0.045, max_lines: int = 4) -> Overlay:  # fmt: skip
    """``image`` (H, W, 3 uint8) with ``text`` written on it in ``style``, shrunk until every line fits the width;
    a text that would shrink below ``min_size`` of the shorter side is wrapped into more lines (up to ``max_lines``)."""
    if style.position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {style.position!r}")
    if image.ndim != 3 or image.shape[-1] < 3 or min(image.shape[:2]) < 16:
        raise ValueError(f"expected an (H, W, 3) picture of at least 16x16 pixels, got shape {image.shape}")
    pic = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    w, h = pic.size
    want, usable = max(8, round(style.size * min(w, h))), w * (1 - 2 * margin)
    for n in range(max(1, style.lines), max(style.lines, max_lines) + 1):
        lines = wrap_lines(text, n)
        px = _fit(draw, lines, style.font, want, usable)
        if px >= max(12, min_size * min(w, h)):
            break
    font = _font(style.font, px)
    stroke = max(1, px // 12) if style.outline else 0
    spacing = px // 4
    block = "\n".join(lines)
    x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), block, font=font, spacing=spacing, stroke_width=stroke,
                                             align="center")  # fmt: skip
    tw, th = x1 - x0, y1 - y0
    x = (w - tw) / 2 - x0
    top = {"top": margin * h, "bottom": h - margin * h - th, "middle": (h - th) / 2}[style.position]
    y = top - y0
    draw.multiline_text((x, y), block, font=font, fill=COLOURS[style.colour], spacing=spacing, align="center",
                        stroke_width=stroke, stroke_fill=COLOURS[style.outline] if style.outline else None)  # fmt: skip
    box = (int(x + x0), int(y + y0), int(np.ceil(x + x1)), int(np.ceil(y + y1)))
    return Overlay(np.asarray(pic), box, px)


def mask_box(image: np.ndarray, box: tuple[int, int, int, int], pad: int = 2) -> np.ndarray:
    """A copy of ``image`` with ``box`` (x0, y0, x1, y1) filled with the picture's mean colour: the text removed."""
    out = image.copy()
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    region = (slice(max(0, y0 - pad), min(h, y1 + pad)), slice(max(0, x0 - pad), min(w, x1 + pad)))
    out[region] = image.reshape(-1, image.shape[-1]).mean(0).astype(np.uint8)
    return out
