"""What the figures are drawn with, in numpy and PIL (a figure drawn with matplotlib holds the GIL for a tenth of a
second or more; these take milliseconds): fonts for every script a caption may hold, colour tables sampled once
from matplotlib's colour maps (the same colours), text that wraps, colour bars and keys, outlines of regions, and
line charts with axes."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

BLACK, WHITE, GRID_GREY = (0, 0, 0), (255, 255, 255), (225, 225, 225)


# --- fonts ----------------------------------------------------------------------------------------------------------

def _cjk_font() -> tuple[str, str] | None:
    """(family, file) of Noto Sans CJK's regular face as matplotlib knows it (added from the system when it was
    installed after matplotlib cached its font list), or None. The Dockerfile installs fonts-noto-cjk."""
    def known():
        return sorted((font.name, font.fname) for font in font_manager.fontManager.ttflist
                      if font.name.startswith("Noto Sans CJK") and "NotoSansCJK-Regular" in font.fname)

    if not known():
        for path in font_manager.findSystemFonts():
            if "NotoSansCJK-Regular" in path:
                font_manager.fontManager.addfont(path)
    return next(iter(known()), None)


CJK_FONT = _cjk_font()
CJK_FONTS = [CJK_FONT[0]] if CJK_FONT else []  # matplotlib's fallback after DejaVu Sans
_DEJAVU = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=64)
def _font(size: int, cjk: bool = False, bold: bool = False) -> ImageFont.FreeTypeFont:
    if cjk:  # Noto Sans CJK's regular face (its bold is another file, not always installed)
        return ImageFont.truetype(CJK_FONT[1], size, index=0)
    return ImageFont.truetype(str(_DEJAVU / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def font_for(text: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, or Noto Sans CJK where the text holds CJK characters and the font is installed."""
    return _font(size, cjk=bool(CJK_FONTS) and any(0x2E80 <= ord(char) <= 0xFFEF for char in text), bold=bold)


def text_width(text: str, size: int, bold: bool = False) -> float:
    return font_for(text, size, bold).getlength(text)


def wrapped(text: str, size: int, width: float, bold: bool = False) -> list[str]:
    """`text` in lines of at most `width` pixels at `size` (words kept whole where they fit; a longer word, or
    a text without spaces such as Chinese, is broken between characters). Each line is measured in the font it
    is drawn in (`font_for` the line: a line of Latin letters cut from a Chinese text is drawn in DejaVu Sans)."""
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if text_width(trial, size, bold) <= width:
            line = trial
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:  # the word alone, broken where it is too long
            if line and text_width(line + char, size, bold) > width:
                lines.append(line)
                line = ""
            line += char
    return [*lines, line] if line or not lines else lines


def text(draw: ImageDraw.ImageDraw, xy, words: str, size: int, anchor: str = "la", fill=BLACK,
         width: float | None = None, bold: bool = False) -> int:
    """`words` at `xy` (PIL's anchor), wrapped to `width` pixels when given; returns the height it took."""
    lines = [words] if width is None else wrapped(words, size, width, bold)
    x, y = xy
    step = round(size * 1.25)
    for index, line in enumerate(lines):
        draw.text((x, y + index * step), line, font=font_for(line, size, bold), fill=fill, anchor=anchor)
    return step * len(lines)


def fitted(words: str, size: int, width: float) -> str:
    """`words` cut with an ellipsis to fit `width` pixels (whole characters), or as they are when they fit."""
    if text_width(words, size) <= width:
        return words
    while words and text_width(words + "…", size) > width:
        words = words[:-1]
    return words + "…"


def rotated_text(canvas: Image.Image, xy, words: str, size: int, length: int) -> None:
    """`words` centred along `length` pixels, read bottom to top, its left edge at `xy` (x, top); in as many lines
    as it takes to fit (a colour bar beside a grid of two rows is shorter than its label), never cut."""
    lines = wrapped(words, size, max(length - 4, size))
    step = round(size * 1.25)
    strip = Image.new("RGB", (length, step * len(lines) + 6), WHITE)
    draw = ImageDraw.Draw(strip)
    for number, line in enumerate(lines):
        text(draw, (length // 2, 3 + step * number + step // 2), line, size, anchor="mm")
    canvas.paste(strip.rotate(90, expand=True), (round(xy[0]), round(xy[1])))


def draw_title(canvas: Image.Image, words: str, size: int = 14, top: int = 8) -> None:
    """A centred title at the top, wrapped within the canvas."""
    text(ImageDraw.Draw(canvas), (canvas.width // 2, top), words, size, anchor="ma", width=canvas.width - 20)


def title_height(words: str, width: float, size: int = 14) -> int:
    return round(size * 1.25) * len(wrapped(words, size, width)) if words else 0


# --- colours ----------------------------------------------------------------------------------------------------

def colour_table(name: str) -> np.ndarray:
    """`[256, 3]` uint8: a matplotlib colour map sampled once (the same colours as matplotlib draws)."""
    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


DIVERGING = colour_table("RdBu_r")  # signed contributions: white 0, red +, blue -
SEQUENTIAL = colour_table("inferno")  # relevance 0..1
CONSISTENCY = colour_table("YlGn")  # consistency 0..5


def rgb(hex_colour: str) -> tuple[int, int, int]:
    """'#rrggbb' as an (r, g, b) tuple."""
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def diverging_colours(values: np.ndarray, bound: float | None = None) -> np.ndarray:
    """`[..., 3]` uint8: `values` on the diverging scale symmetric about zero (white: 0; red: +; blue: -), from
    -`bound` to +`bound` (default: the largest magnitude of `values`)."""
    values = np.asarray(values, dtype=np.float64)
    bound = bound or float(np.abs(values).max()) or 1e-12
    return DIVERGING[np.clip(np.round((values / bound + 1) / 2 * 255), 0, 255).astype(np.int64)]


def table_colours(table: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """`[..., 3]` uint8: `fractions` (0..1) through a colour table."""
    return table[np.clip(np.round(np.asarray(fractions, dtype=np.float64) * 255), 0, 255).astype(np.int64)]


def colour_bar(canvas: Image.Image, left: int, top: int, height: int, table: np.ndarray,
               ticks: list[tuple[float, str]], label: str, size: int = 11) -> None:
    """A vertical bar of `table` (its last colour at the top), `ticks` (fraction from the bottom, text) and a
    label read bottom to top on its right."""
    bar = table[::-1][np.linspace(0, 255, height).round().astype(int)]  # [height, 3]
    canvas.paste(Image.fromarray(np.repeat(bar[:, None], 14, axis=1)), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left, top, left + 13, top + height - 1), outline=BLACK)
    for fraction, words in ticks:
        y = top + round((1 - fraction) * (height - 1))
        draw.line((left + 14, y, left + 18, y), fill=BLACK)
        text(draw, (left + 21, y), words, size, anchor="lm")
    widest = max((text_width(words, size) for _, words in ticks), default=0)
    rotated_text(canvas, (left + 27 + widest, top), label, size, height)


HORIZONTAL_BAR_HEIGHT = 34  # what `horizontal_bar` takes, with the space under it


def horizontal_bar(canvas: Image.Image, left: int, top: int, width: int, table: np.ndarray, bound: float,
                   label: str, size: int = 12) -> None:
    """A horizontal key of a diverging `table` from -`bound` (left) to +`bound`, its ends and 0 marked, and `label`
    on its right (`HORIZONTAL_BAR_HEIGHT` high)."""
    bar = table[np.linspace(0, 255, width).round().astype(int)]  # [width, 3]
    canvas.paste(Image.fromarray(np.repeat(bar[None], 12, axis=0)), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left, top, left + width - 1, top + 11), outline=BLACK)
    for fraction, words in ((0.0, signed_number(-bound)), (0.5, "0"), (1.0, signed_number(bound))):
        x = left + round(fraction * (width - 1))
        draw.line((x, top + 12, x, top + 15), fill=BLACK)
        text(draw, (x, top + 16), words, size - 2, anchor="ma")
    text(draw, (left + width + 12, top + 6), label, size, anchor="lm")


def signed_number(value: float) -> str:
    """A value as figures label it (3 significant digits, with its sign); summaries that state a figure's numbers
    use it too, so that the two read the same."""
    return f"{value:+.3g}"


def signed_ticks(bound: float) -> list[tuple[float, str]]:
    """The ticks of a diverging bar from -bound to +bound."""
    return [(1.0, signed_number(bound)), (0.5, "0"), (0.0, signed_number(-bound))]


def key(draw: ImageDraw.ImageDraw, xy, entries: list[tuple[tuple[int, int, int], str]], size: int = 11,
        width: float | None = None, outline_only: bool = False) -> int:
    """A key of coloured swatches, one under the other, each with its text (wrapped to `width` when given);
    returns the height it took."""
    x, y = xy
    for colour, words in entries:
        box = (x, y + 2, x + 16, y + size + 2)
        if outline_only:
            draw.rectangle(box, outline=colour, width=3)
        else:
            draw.rectangle(box, fill=colour, outline=(90, 90, 90))
        y += max(text(draw, (x + 24, y), words, size, width=width), size + 6) + 3
    return y - xy[1]


def mix(canvas: Image.Image, mask: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    """Lay `colour` over the canvas where `mask` (`[H, W]` bool, the canvas's size) holds, at `alpha`."""
    pixels = np.asarray(canvas, dtype=np.float64).copy()
    pixels[mask] = (1 - alpha) * pixels[mask] + alpha * np.asarray(colour, dtype=np.float64)
    canvas.paste(Image.fromarray(pixels.round().astype(np.uint8)))


# --- regions ---------------------------------------------------------------------------------------------------------

def _shrunk(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` eroded by `steps` pixels (4-neighbours); outside the array counts as outside the mask."""
    for _ in range(steps):
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        inner[0] = inner[-1] = False
        inner[:, 0] = inner[:, -1] = False
        mask = inner
    return mask


def inner_band(mask: np.ndarray, width: int, skip: int = 0) -> np.ndarray:
    """The pixels of `mask` that lie `skip` to `skip + width` pixels in from its edge (the array's edge counts as
    an edge): an outline drawn there never leaves the region, nor the picture."""
    outer = _shrunk(mask, skip) if skip else mask
    return outer & ~_shrunk(outer, width)


def inside_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of `mask` farthest in from its edge (ties: nearest its centre), a place for a label."""
    depth, inner = 0, mask
    while True:
        deeper = _shrunk(inner, 1)
        if not deeper.any():
            break
        inner, depth = deeper, depth + 1
    rows, columns = np.nonzero(inner)
    middle = np.argmin((rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2)
    return int(columns[middle]), int(rows[middle])


# --- charts with axes ------------------------------------------------------------------------------------------------

@dataclass
class Series:
    """One line of a chart: its points, colour, and how it is drawn."""

    label: str
    ys: list[float]
    colour: tuple[int, int, int]
    dashed: bool = False
    marker: str = "o"  # "o" or "s"
    fill: bool = False  # shade the area under it


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `high`."""
    raw = max(high, 1e-12) / count
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(step * i, 10) for i in range(int(np.ceil(high / step - 1e-9)) + 1)]


def line_chart(series: list[Series], x_labels: list[str], x_title: str, y_title: str, y_top: float,
               chart_title: str = "", size: tuple[int, int] = (460, 330), xs: list[float] | None = None
               ) -> Image.Image:
    """A line chart on axes from 0 to `y_top` (ticks and a light grid), `x_labels` under the points (at `xs`,
    else 0, 1, 2, ...), each series with markers; the title at the top left (the top right is where a page puts
    its image buttons)."""
    canvas = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(canvas)
    xs = list(range(len(x_labels))) if xs is None else list(xs)
    left, top, right, bottom = 66, 46, size[0] - 14, size[1] - 50  # the top right stays clear: no tick there
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    spread = (x_high - x_low) * 0.04

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_low + spread) / (x_high - x_low + 2 * spread) * (right - left),
                bottom - min(max(y / y_top, 0.0), 1.0) * (bottom - top))

    for value in nice_ticks(y_top):
        if value <= y_top + 1e-9:
            _, y = at(x_low, value)
            draw.line((left, y, right, y), fill=GRID_GREY)
            text(draw, (left - 6, y), f"{value:g}", 10, anchor="rm")
    step = max(1, len(xs) // 12)  # at most ~12 labels under the axis
    for x, label in list(zip(xs, x_labels))[::step]:
        px, _ = at(x, 0)
        draw.line((px, top, px, bottom), fill=GRID_GREY)
        text(draw, (px, bottom + 5), label, 10, anchor="ma")
    draw.rectangle((left, top, right, bottom), outline=BLACK)
    for line in series:
        points = [at(x, y) for x, y in zip(xs, line.ys)]
        if line.fill and len(points) > 1:
            shade = Image.new("L", size, 0)
            ImageDraw.Draw(shade).polygon([(points[0][0], bottom), *points, (points[-1][0], bottom)], fill=255)
            mix(canvas, np.asarray(shade) > 0, line.colour, 0.15)
            draw = ImageDraw.Draw(canvas)
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if line.dashed:
                _dashed(draw, (x0, y0), (x1, y1), line.colour)
            else:
                draw.line((x0, y0, x1, y1), fill=line.colour, width=2)
        for x, y in points:
            corners = (x - 4, y - 4, x + 4, y + 4)
            (draw.rectangle if line.marker == "s" else draw.ellipse)(corners, fill=line.colour)
    text(draw, ((left + right) // 2, size[1] - 22), x_title, 11, anchor="ma")
    rotated_text(canvas, (4, top), y_title, 11, bottom - top)
    text(draw, (left, 12), chart_title, 12, width=right - left - 110)
    return canvas


def _dashed(draw: ImageDraw.ImageDraw, start, end, colour, dash: float = 7.0) -> None:
    (x0, y0), (x1, y1) = start, end
    length = float(np.hypot(x1 - x0, y1 - y0))
    for a in np.arange(0, length, 2 * dash):
        b = min(a + dash, length)
        draw.line((x0 + (x1 - x0) * a / length, y0 + (y1 - y0) * a / length,
                   x0 + (x1 - x0) * b / length, y0 + (y1 - y0) * b / length), fill=colour, width=2)


def dashed_rectangle(draw: ImageDraw.ImageDraw, corners, colour=BLACK) -> None:
    x0, y0, x1, y1 = corners
    for start, end in (((x0, y0), (x1, y0)), ((x0, y1), (x1, y1)), ((x0, y0), (x0, y1)), ((x1, y0), (x1, y1))):
        if start != end:
            _dashed(draw, start, end, colour, dash=6.0)


def side_by_side(pictures: list[Image.Image], gap: int = 10) -> Image.Image:
    """Pictures in a row, tops aligned, on white."""
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) - 1),
                               max(p.height for p in pictures)), WHITE)
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    return canvas
