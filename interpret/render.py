"""Pictures of results: PIL images the app shows and the CLI saves as PNG. Everything the page shows is drawn with
numpy and PIL (`drawing`: milliseconds, no GIL held for long); matplotlib draws only the command line's summary
plots (`faithfulness_plot`, and figures the CLI makes with `figure_to_image`).

The top right corner of a figure is kept clear where it can be: the page puts its image buttons there."""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from .drawing import (BLACK, CONSISTENCY, CJK_FONTS, DIVERGING, SEQUENTIAL, WHITE, Series, colour_bar,  # noqa: E402
                      dashed_rectangle, diverging_colours, fitted, HORIZONTAL_BAR_HEIGHT, horizontal_bar, inner_band, inside_point, key,
                      line_chart, mix, rgb, rotated_text, side_by_side, signed_number, signed_ticks, table_colours, text, text_width,
                      draw_title, title_height, wrapped)

plt.rcParams["font.family"] = ["DejaVu Sans", *CJK_FONTS]  # matplotlib falls back glyph by glyph along the list


def figure_to_image(figure) -> Image.Image:
    """Render a matplotlib figure to an RGB PIL image and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def diverging_norm(values: np.ndarray) -> TwoSlopeNorm:
    """A matplotlib colour scale symmetric about zero, so that white always means 'no contribution'."""
    bound = float(np.abs(values).max()) or 1e-12
    return TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)


def _bound(values: np.ndarray) -> float:
    return float(np.abs(values).max()) or 1e-12


def _layer_head_axes(canvas: Image.Image, left: int, top: int, cell: tuple[int, int], layers: list,
                     columns: list[str]) -> None:
    """Head numbers under a grid, layer numbers on its left (at most ~24), and the two axis titles."""
    draw = ImageDraw.Draw(canvas)
    cell_w, cell_h = cell
    grid_w, grid_h = cell_w * len(columns), cell_h * len(layers)
    for index, name in enumerate(columns):
        text(draw, (left + index * cell_w + cell_w // 2, top + grid_h + 4), name, 10, anchor="ma")
    for index in range(0, len(layers), max(1, len(layers) // 24)):
        text(draw, (left - 6, top + index * cell_h + cell_h // 2), str(layers[index]), 10, anchor="rm")
    text(draw, (left + grid_w // 2, top + grid_h + 20), "head", 12, anchor="ma")
    rotated_text(canvas, (6, top + grid_h // 2 - 30), "layer", 12, 60)


def head_grid(scores: np.ndarray, title: str = "", layers: list[int] | None = None,
              mlps: np.ndarray | None = None, label: str = "contribution to cosine score",
              marked: list[tuple[int, int]] = ()) -> Image.Image:
    """Layer x head heatmap of contributions `[L, H]` (rows: layers, first at the top), optionally with the
    MLPs as an extra column, on a diverging scale centred at zero; `label`: what the colour bar shows; `marked`
    (layer, head) cells crossed out (heads removed)."""
    scores = np.asarray(scores, dtype=np.float64)
    layers = list(range(scores.shape[0])) if layers is None else list(layers)
    table = scores if mlps is None else np.concatenate([scores, np.asarray(mlps, dtype=np.float64)[:, None]], 1)
    rows, columns = table.shape
    cell_w, cell_h = max(22, min(46, 640 // columns)), max(14, min(36, 520 // rows))
    left, top = 62, 34 + title_height(title, 560)
    grid_w, grid_h = cell_w * columns, cell_h * rows
    canvas = Image.new("RGB", (left + grid_w + 120, top + grid_h + 46), WHITE)
    canvas.paste(Image.fromarray(diverging_colours(table).repeat(cell_h, axis=0).repeat(cell_w, axis=1)),
                 (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left - 1, top - 1, left + grid_w, top + grid_h), outline=BLACK)
    if mlps is not None:
        x = left + cell_w * scores.shape[1]
        draw.line((x, top, x, top + grid_h), fill=BLACK, width=2)
    _layer_head_axes(canvas, left, top, (cell_w, cell_h), layers,
                     [str(h) for h in range(scores.shape[1])] + ([] if mlps is None else ["MLP"]))
    for layer, head in marked:
        if layer in layers and 0 <= head < scores.shape[1]:
            x, y = left + head * cell_w, top + layers.index(layer) * cell_h
            for ink, width in ((WHITE, 4), (BLACK, 2)):  # seen on dark and light cells alike
                draw.line((x + 3, y + 3, x + cell_w - 4, y + cell_h - 4), fill=ink, width=width)
                draw.line((x + 3, y + cell_h - 4, x + cell_w - 4, y + 3), fill=ink, width=width)
    draw_title(canvas, title)
    colour_bar(canvas, left + grid_w + 14, top, grid_h, DIVERGING, signed_ticks(_bound(table)), label, size=10)
    return canvas


def light_grey(image: Image.Image) -> np.ndarray:
    """`[H, W, 3]` uint8: the picture in grey, lightened halfway to white (a background for a coloured map)."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return np.repeat((127.5 + grey / 2)[..., None], 3, axis=2).astype(np.uint8)


def map_overlay(image: Image.Image, values: np.ndarray, opacity: float = 0.6, title: str = "",
                label: str = "contribution to cosine score",
                box: tuple[float, float, float, float] | None = None, bound: float | None = None) -> Image.Image:
    """The picture as it is (left) and a spatial map `[H, W]` (the picture's size) over a light grey copy of it
    (right), on a diverging scale centred at zero (red: adds to the score, blue: takes away), with a colour bar.
    The picture keeps its colours (a map laid over a colour picture changes them: a yellow object under red
    looks orange), and the map's colours are not mixed with the picture's. `opacity` in 0..1 is the map's;
    `box` (left, top, right, bottom), if given, is outlined on both; `bound`: the colour scale's end (default: the
    largest magnitude of `values`; a `SpatialMap` gives its `bound`, the one its summary states)."""
    values = np.asarray(values, dtype=np.float64)
    image = image.convert("RGB")
    width, height = image.size
    scale = 400 / max(width, height)
    panel = (max(1, round(width * scale)), max(1, round(height * scale)))
    alpha = float(np.clip(opacity, 0, 1))
    bound = bound or _bound(values)
    mapped = (1 - alpha) * light_grey(image) + alpha * diverging_colours(values, bound)
    left_panel = image.resize(panel, Image.NEAREST if scale >= 1 else Image.BILINEAR)
    right_panel = Image.fromarray(mapped.round().astype(np.uint8)).resize(panel, Image.NEAREST)
    canvas_width = 2 * panel[0] + 170
    top = title_height(title, canvas_width - 20, 18) + 34
    canvas = Image.new("RGB", (canvas_width, top + panel[1] + 16), WHITE)
    canvas.paste(left_panel, (10, top))
    canvas.paste(right_panel, (panel[0] + 30, top))
    draw = ImageDraw.Draw(canvas)
    draw_title(canvas, title, 18)
    text(draw, (10 + panel[0] // 2, top - 6), "the picture", 15, anchor="md")
    text(draw, (panel[0] + 30 + panel[0] // 2, top - 6), "the map", 15, anchor="md")
    if box is not None:
        for origin in (10, panel[0] + 30):
            dashed_rectangle(draw, (origin + box[0] * scale, top + box[1] * scale, origin + box[2] * scale,
                                    top + box[3] * scale))
    colour_bar(canvas, 2 * panel[0] + 40, top, panel[1], DIVERGING, signed_ticks(bound), label, size=14)
    return canvas


TOKENS_WIDE = 1100  # a strip of tokens wraps to rows this wide


def token_strip(tokens: list[str], values, title: str = "", chosen: list[int] | None = None,
                label: str = "") -> Image.Image:
    """Tokens as coloured boxes on a diverging scale centred at zero (red: adds to the score, blue: takes away;
    the maps' colours), each with its value below, in rows; `chosen` tokens are underlined; with `label`, a key of
    the scale under the title."""
    values = np.asarray(values, dtype=np.float64)
    colours, bound = diverging_colours(values), _bound(values)
    widths = [round(max(text_width(token, 13), text_width(signed_number(value), 10), 34)) + 14
              for token, value in zip(tokens, values)]
    places, x, row = [], 10, 0  # (x, row) of each box
    for width in widths:
        if x + width > TOKENS_WIDE and x > 10:
            x, row = 10, row + 1
        places.append((x, row))
        x += width + 4
    key_top = title_height(title, TOKENS_WIDE - 20) + 10
    top = key_top + 8 + (HORIZONTAL_BAR_HEIGHT if label else 0)
    row_height = 58
    wide = max(x for x, _ in places) + max(widths) + 10 if tokens else 300
    canvas = Image.new("RGB", (min(TOKENS_WIDE, max(wide, 640 if label else 0)), top + row_height * (row + 1) + 6),
                       WHITE)
    draw = ImageDraw.Draw(canvas)
    draw_title(canvas, title, 13)
    if label:
        horizontal_bar(canvas, 30, key_top, 200, DIVERGING, bound, label)
    for index, (token, value, colour, width, (x, row)) in enumerate(zip(tokens, values, colours, widths, places)):
        y = top + row * row_height
        draw.rectangle((x, y, x + width, y + 28), fill=tuple(int(c) for c in colour), outline=(85, 85, 85))
        dark = abs(value) / bound > 0.7
        text(draw, (x + width // 2, y + 14), token, 13, anchor="mm", fill=WHITE if dark else BLACK)
        text(draw, (x + width // 2, y + 34), signed_number(value), 10, anchor="ma")
        if chosen and index in chosen:
            draw.line((x, y + 50, x + width, y + 50), fill=BLACK, width=3)
    return canvas


def outline_box(image: Image.Image, box: tuple[float, float, float, float] | None,
                corner: tuple[float, float] | None = None) -> Image.Image:
    """A copy of the image with `box` (left, top, right, bottom) outlined, or a first `corner` marked."""
    picture = image.convert("RGB").copy()
    draw = ImageDraw.Draw(picture)
    line = max(1, round(max(picture.size) / 160))
    if box is not None:
        left, top, right, bottom = box
        draw.rectangle([min(left, right), min(top, bottom), max(left, right), max(top, bottom)], outline=BLACK,
                       width=line + 1)
        draw.rectangle([min(left, right) + line + 1, min(top, bottom) + line + 1, max(left, right) - line - 1,
                        max(top, bottom) - line - 1], outline=(255, 255, 0), width=line)
    if corner is not None:
        x, y = corner
        radius = 3 * line
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=BLACK, fill=(255, 255, 0))
    return picture


PROPERTY_COLOURS = {  # one colour per property, stable across models
    "colour": "#e6194b", "shape": "#3cb44b", "texture": "#911eb4", "location": "#4363d8", "animal": "#f58231",
    "object": "#42d4f4", "person": "#f032e6", "count": "#bfef45", "text": "#000075", "style": "#fabed4",
    "light": "#ffe119", "material": "#9a6324", "size": "#469990", "position": "#808000", "untagged": "#a9a9a9",
}
OTHER_PROPERTY = "#a9a9a9"


def property_grid(grid: list[list[str]], title: str = "", highlight: tuple[int, int] | None = None
                  ) -> Image.Image:
    """Layer x head map of property labels (`grid[layer][head]`, '' for heads not described), with a key."""
    layers, heads = len(grid), len(grid[0]) if grid else 0
    cell_w, cell_h = max(24, min(46, 600 // max(heads, 1))), max(16, min(34, 520 // max(layers, 1)))
    present = sorted({prop for row in grid for prop in row if prop})
    key_width = 30 + max((text_width(fitted(p, 11, 160), 11) for p in present), default=60)
    left, top = 56, 34 + title_height(title, 560)
    grid_w, grid_h = cell_w * heads, cell_h * layers
    canvas = Image.new("RGB", (round(left + grid_w + 24 + key_width + 10),
                               max(top + grid_h + 44, top + 26 + 20 * len(present))), WHITE)
    draw = ImageDraw.Draw(canvas)
    for layer, row in enumerate(grid):
        for head, prop in enumerate(row):
            x, y = left + head * cell_w, top + layer * cell_h
            colour = rgb(PROPERTY_COLOURS.get(prop, OTHER_PROPERTY)) if prop else WHITE
            draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=colour)
    draw.rectangle((left - 1, top - 1, left + grid_w, top + grid_h), outline=BLACK)
    if highlight is not None:
        x, y = left + highlight[1] * cell_w, top + highlight[0] * cell_h
        draw.rectangle((x - 2, y - 2, x + cell_w + 1, y + cell_h + 1), outline=BLACK, width=3)
    _layer_head_axes(canvas, left, top, (cell_w, cell_h), list(range(layers)), [str(h) for h in range(heads)])
    draw_title(canvas, title)
    text(draw, (left + grid_w + 24, top), "property", 11, bold=True)
    key(draw, (left + grid_w + 24, top + 20),
        [(rgb(PROPERTY_COLOURS.get(p, OTHER_PROPERTY)), fitted(p, 11, 160)) for p in present])
    return canvas


def missing_image(size: int = 160) -> Image.Image:
    """A grey tile that stands in for an image file that has gone missing."""
    tile = Image.new("RGB", (size, size), (215, 215, 215))
    draw = ImageDraw.Draw(tile)
    draw.line([(0, 0), (size, size)], fill=(170, 170, 170), width=3)
    draw.line([(0, size), (size, 0)], fill=(170, 170, 170), width=3)
    text(draw, (size // 2, size // 2), "missing", 12, anchor="mm", fill=(80, 80, 80))
    return tile


PART_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075")
PARTS_SIDE = 420  # the picture's longest side in the parts figure


def part_ids(parts: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """`[height, width]` part id of every pixel of a picture of `size` (width, height): the patch grid's ids
    (`parts`, `[grid_h, grid_w]`; -1 none) stretched over `box` (left, top, right, bottom; cut to the picture),
    -1 outside it."""
    width, height = size
    ids = np.full((height, width), -1)
    left, top, right, bottom = (int(round(v)) for v in box)
    inside = (max(left, 0), max(top, 0), min(right, width), min(bottom, height))
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        return ids
    stretched = np.asarray(Image.fromarray(np.asarray(parts).astype(np.int16) + 1).resize(
        (right - left, bottom - top), Image.NEAREST)).astype(np.int64) - 1
    ids[inside[1]:inside[3], inside[0]:inside[2]] = stretched[inside[1] - top:inside[3] - top,
                                                              inside[0] - left:inside[2] - left]
    return ids


def parts_overlay(image: Image.Image, parts: np.ndarray, box: tuple[int, int, int, int], labels: list[str],
                  title: str = "") -> Image.Image:
    """The image with its parts (`[grid_h, grid_w]` ids on the patch grid covering `box`; -1: none) outlined one
    colour each (a band inside each part, so that no outline leaves the picture) and numbered, the picture's own
    colours as they are, and under it a key of each part's label."""
    image = image.convert("RGB")
    scale = PARTS_SIDE / max(image.size)
    shown = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    picture = image.resize(shown, Image.NEAREST if scale >= 1 else Image.BILINEAR)
    scaled = tuple(v * scale for v in box)
    ids = part_ids(parts, scaled, shown)
    parts = np.asarray(parts)
    patch = ((scaled[2] - scaled[0]) / parts.shape[1], (scaled[3] - scaled[1]) / parts.shape[0])
    line = max(2, round(PARTS_SIDE / 140))
    pixels = np.asarray(picture).copy()
    numbers = []  # (part, where its number goes: the middle of its deepest patch, within the picture)
    for k in range(len(labels)):
        inside = ids == k
        if inside.any():
            pixels[inner_band(inside, 1)] = WHITE
            pixels[inner_band(inside, line, skip=1)] = rgb(PART_COLOURS[k % len(PART_COLOURS)])
            column, row = inside_point(parts == k)
            numbers.append((k, (min(max(scaled[0] + (column + 0.5) * patch[0], 12), shown[0] - 12),
                                min(max(scaled[1] + (row + 0.5) * patch[1], 12), shown[1] - 12))))
    picture = Image.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    for k, (x, y) in numbers:
        draw.ellipse((x - 11, y - 11, x + 11, y + 11), fill=rgb(PART_COLOURS[k % len(PART_COLOURS)]), outline=WHITE,
                     width=2)
        text(draw, (x, y), str(k), 13, anchor="mm", fill=WHITE, bold=True)
    width = max(shown[0] + 20, 460)
    entries = [(rgb(PART_COLOURS[k % len(PART_COLOURS)]), f"concept {k}: {label}") for k, label in enumerate(labels)]
    key_height = sum(max(round(13 * 1.25) * len(wrapped(words, 13, width - 50)), 19) + 3 for _, words in entries)
    top = title_height(title, width - 20) + 16
    canvas = Image.new("RGB", (width, top + shown[1] + 14 + key_height + 8), WHITE)
    canvas.paste(picture, ((width - shown[0]) // 2, top))
    draw_title(canvas, title)
    key(ImageDraw.Draw(canvas), (16, top + shown[1] + 14), entries, size=13, width=width - 50, outline_only=True)
    return canvas


VISION_BLUE, TEXT_RED = rgb("#4363d8"), rgb("#e6194b")


def concept_venn(visual_only: list[str], shared: list[str], textual_only: list[str], title: str = ""
                 ) -> Image.Image:
    """Two overlapping circles: the concepts only the vision side picks, those both pick, those only the text
    side picks (each wrapped to the width of its part of the circles, at most 8 listed)."""
    width, radius, apart = 560, 150, 90  # apart: each centre from the middle; the page shows it ~360 px wide
    top = title_height(title, width - 20, 16) + 18
    height = top + 2 * radius + 16
    centre_y = top + radius
    left_x, right_x = width // 2 - apart, width // 2 + apart
    canvas = Image.new("RGB", (width, height), WHITE)
    rows, columns = np.mgrid[0:height, 0:width]
    for x, colour in ((left_x, VISION_BLUE), (right_x, TEXT_RED)):
        mix(canvas, (columns - x) ** 2 + (rows - centre_y) ** 2 <= radius ** 2, colour, 0.25)
    draw = ImageDraw.Draw(canvas)
    draw_title(canvas, title, 16)
    lens = 2 * (radius - apart) + 10  # the shared part's width, and each side's
    for x, heading, words in ((left_x - 75, "vision only", visual_only), (width // 2, "shared", shared),
                              (right_x + 75, "text only", textual_only)):
        text(draw, (x, top + 30), heading, 16, anchor="ma", bold=True)
        lines = [line for word in words[:8] for line in wrapped(word, 15, lens + (0 if x == width // 2 else 20))]
        lines += [f"... {len(words) - 8} more"] if len(words) > 8 else []
        lines = (lines or ["(none)"])[:12]
        y = centre_y - len(lines) * 19 // 2 + 12
        for line in lines:
            text(draw, (x, y), line, 15, anchor="ma")
            y += 19
    return canvas


def mutual_curves(mi_curve: list[float], deletion: list[float], insertion: list[float], order: list[int]
                  ) -> Image.Image:
    """Two panels over the concepts taken in order of importance (`order`): the mutual information (bits) as
    they leave the vision side, and the predicted class's probability as they are blurred (deletion) or
    un-blurred on a blurred image (insertion)."""
    names = ["none"] + [str(k) for k in order]
    information = line_chart(
        [Series("mutual information", list(mi_curve), VISION_BLUE, fill=True)], names,
        "concepts removed (cumulative)", "mutual information (bits)", max(1.0, max(mi_curve) * 1.1),
        f"MI dynamics: AUC {sum(mi_curve) / len(mi_curve):.2f} bits")
    probability = line_chart(
        [Series("deletion (blurred)", list(deletion), TEXT_RED), Series("insertion (un-blurred)", list(insertion),
                                                                         rgb("#3cb44b"), marker="s")],
        names, "concepts blurred / un-blurred (cumulative)", "probability of the prediction", 1.02,
        "deletion (red) and insertion (green)")
    return side_by_side([information, probability])


PRUNING_COLOURS = {"high": rgb("#d62728"), "random": rgb("#7f7f7f"), "low": rgb("#1f77b4")}


def pruning_plot(models: list) -> Image.Image:
    """Zero-shot accuracy against the number of heads removed, one panel per model: the most consistent (red),
    layer-matched random (grey) and least consistent heads (blue); solid: zero-ablation in the forward pass,
    dashed: direct effect only. `models`: (label, `quantify.PruningCurves`) pairs. A key under the panels."""
    panels, shown = [], []
    for label, curves in models:
        series = [Series(f"{name} ({effect})", list(curves.curves[effect][name]), colour, dashed=effect == "direct")
                  for name, colour in PRUNING_COLOURS.items() for effect in ("zero", "direct")
                  if effect in curves.curves]
        shown += [s for s in series if s.label not in {t.label for t in shown}]
        panels.append(line_chart(series, [str(c) for c in curves.counts], "heads removed", "zero-shot accuracy",
                                 1.0, label, size=(420, 320), xs=list(curves.counts)))
    row = side_by_side(panels)
    places, x, line_number = [], 66, 0  # the key's entries flow in lines under the panels
    for series in shown:
        width = 40 + round(text_width(series.label, 10))
        if x + width > row.width and x > 66:
            x, line_number = 66, line_number + 1
        places.append((x, row.height + 12 + 20 * line_number))
        x += width
    canvas = Image.new("RGB", (row.width, row.height + 30 + 20 * line_number), WHITE)
    canvas.paste(row, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for series, (x, y) in zip(shown, places):
        for start, end in ((0, 6), (10, 16), (20, 24)) if series.dashed else ((0, 24),):
            draw.line((x + start, y, x + end, y), fill=series.colour, width=2)
        text(draw, (x + 30, y), series.label, 10, anchor="lm")
    return canvas


CONSISTENCY_FONT = 11


def consistency_grid(values: np.ndarray, properties: list[list[str]], title: str = "") -> Image.Image:
    """Layer x head grid of consistency (`values` `[L, H]`, 0..5: how many of a head's first five descriptions
    carry its label's tag), each cell with its value and its whole label (cells as wide as the longest label),
    the scale as a key under the grid (the top right is left to the page's image buttons)."""
    values = np.asarray(values, dtype=np.float64)
    layers, heads = values.shape
    longest = max((text_width(p, CONSISTENCY_FONT) for row in properties for p in row), default=30)
    cell_w, cell_h = round(min(max(longest, 30), 110)) + 8, 36
    left, top = 56, 34 + title_height(title, max(cell_w * heads, 400))
    grid_w, grid_h = cell_w * heads, cell_h * layers
    canvas = Image.new("RGB", (max(left + grid_w + 20, 420), top + grid_h + 86), WHITE)
    colours = table_colours(CONSISTENCY, values / 5)
    canvas.paste(Image.fromarray(colours.repeat(cell_h, axis=0).repeat(cell_w, axis=1)), (left, top))
    draw = ImageDraw.Draw(canvas)
    for layer in range(layers):
        for head in range(heads):
            x, y = left + head * cell_w + cell_w // 2, top + layer * cell_h
            ink = WHITE if values[layer, head] >= 4 else BLACK
            text(draw, (x, y + 10), f"{values[layer, head]:.0f}", CONSISTENCY_FONT, anchor="mm", fill=ink, bold=True)
            text(draw, (x, y + 25), fitted(properties[layer][head], CONSISTENCY_FONT, cell_w - 6), CONSISTENCY_FONT,
                 anchor="mm", fill=ink)
    for k in range(1, layers):
        draw.line((left, top + k * cell_h, left + grid_w - 1, top + k * cell_h), fill=WHITE)
    for k in range(1, heads):
        draw.line((left + k * cell_w, top, left + k * cell_w, top + grid_h - 1), fill=WHITE)
    draw.rectangle((left - 1, top - 1, left + grid_w, top + grid_h), outline=BLACK)
    _layer_head_axes(canvas, left, top, (cell_w, cell_h), list(range(layers)), [str(h) for h in range(heads)])
    draw_title(canvas, title)
    y = top + grid_h + 46
    text(draw, (left, y + 9), "consistency (of 5):", 11, anchor="lm")
    x = left + 130
    for value in range(6):
        draw.rectangle((x, y, x + 28, y + 18), fill=tuple(int(c) for c in table_colours(CONSISTENCY, value / 5)),
                       outline=(90, 90, 90))
        text(draw, (x + 14, y + 9), str(value), 11, anchor="mm", fill=WHITE if value >= 4 else BLACK)
        x += 32
    return canvas


def faithfulness_plot(rows: list[dict]) -> Image.Image:
    """Bars of every method's pointing, multi-object pointing and mIoU, one panel per model (rows of the
    `faithfulness` command's table; the command line's, drawn with matplotlib)."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    scores = ("pointing", "multi-object pointing", "mIoU")
    figure, axes = plt.subplots(1, len(models), figsize=(1.2 + 5.2 * len(models), 3.8), squeeze=False)
    for axis, model in zip(axes[0], models):
        chosen = [row for row in rows if row["model"] == model]
        positions = np.arange(len(chosen))
        for i, score in enumerate(scores):
            axis.bar(positions + (i - 1) * 0.27, [row[score] for row in chosen], 0.27, label=score)
        axis.set_xticks(positions, [row["method"] for row in chosen], rotation=40, ha="right", fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_title(model, fontsize=10)
    axes[0][0].legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    return figure_to_image(figure)


COMPARE_SIDE = 200  # each map's picture's longest side (the page shows the grid ~750 px wide: text stays legible)


def _heat(grey: np.ndarray, values, alpha: float) -> np.ndarray:
    """`values` `[H, W]` min-max normalised to 0..1 on the sequential scale, over a light grey picture `[H, W, 3]`."""
    values = np.asarray(values, dtype=np.float32 if grey.dtype == np.float32 else np.float64)
    low, high = float(values.min()), float(values.max())
    normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return (1 - alpha) * grey + alpha * table_colours(SEQUENTIAL, normalised)


def heat_thumbnail(image: Image.Image, values: np.ndarray, side: int = 128, opacity: float = 0.6) -> Image.Image:
    """A gallery picture: the picture as it is (left) and `values` `[H, W]` (the picture's size) min-max normalised
    over a light grey copy of it (right), each `side` pixels on its longest side (the picture's own colours stay
    visible: what a colour feature fires on). The heat map is made at the thumbnail's size, in float32: a large
    photo costs what a small one does."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.convert("RGB").resize(size, Image.BILINEAR)
    shown = np.asarray(Image.fromarray(np.asarray(values, np.float32), mode="F").resize(size, Image.BILINEAR))
    mapped = Image.fromarray(np.clip(_heat(light_grey(small).astype(np.float32), shown, float(np.clip(opacity, 0, 1)))
                                     .round(), 0, 255).astype(np.uint8))
    return side_by_side([small, mapped], gap=4)


def maps_side_by_side(image: Image.Image, maps: list[tuple[str, np.ndarray, str]], opacity: float = 0.6,
                      columns: int = 4, title: str = "") -> Image.Image:
    """Each (title, map `[H, W]` on the picture, note under it) min-max normalised to 0..1 and laid over a
    light grey copy of the picture, on one colour scale, `columns` a row; `title` (what they explain) above."""
    image = image.convert("RGB")
    scale = COMPARE_SIDE / max(image.size)
    shown = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    grey = light_grey(image).astype(np.float64)
    alpha = float(np.clip(opacity, 0, 1))
    columns = max(1, min(columns, len(maps)))
    rows = max(1, math.ceil(len(maps) / columns))
    cell_w = shown[0] + 20
    heading = max((title_height(name, cell_w - 8, 16) for name, _, _ in maps), default=0) + 6
    cell_h = heading + shown[1] + 34
    above = title_height(title, columns * cell_w + 90, 16) + 12 if title else 0
    canvas = Image.new("RGB", (columns * cell_w + 110, above + max(rows * cell_h, 160 + 60) + 10), WHITE)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw_title(canvas, title, 16)
    for index, (name, values, note) in enumerate(maps):
        mapped = _heat(grey, values, alpha)
        x, y = (index % columns) * cell_w + 10, above + (index // columns) * cell_h + 6
        text(draw, (x + shown[0] // 2, y), name, 16, anchor="ma", width=cell_w - 8)
        canvas.paste(Image.fromarray(mapped.round().astype(np.uint8)).resize(shown, Image.NEAREST), (x, y + heading))
        text(draw, (x + shown[0] // 2, y + heading + shown[1] + 6), fitted(note, 13, cell_w - 4), 13, anchor="ma")
    if maps:
        colour_bar(canvas, columns * cell_w + 12, above + 6 + 40, max(rows * cell_h - 60, 160), SEQUENTIAL,
                   [(1.0, "1"), (0.5, "0.5"), (0.0, "0")], "relevance (each map 0..1)", size=13)
    return canvas


def circuit_figure(groups: list, links: list, picture: Image.Image | None, title: str = "",
                   size: tuple[int, int] = (1240, 780), max_links: int = 60) -> Image.Image:
    """An attribution graph's groups (`circuits.group_nodes`: each with `key`, `kind`, `row`, `label`,
    `influence`) and the links between them ((source key, target key, weight)): rows from the token embeddings at
    the bottom (the picture beside them) through each layer's features and errors to the score at the top; a
    group's circle grows with its influence, a link's width with its weight (red: it adds to its target, blue: it
    takes away); each group's strongest incoming links are drawn, about `max_links` in all."""
    canvas = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(canvas)
    top = 24 + title_height(title, size[0] - 20)
    if title:
        draw_title(canvas, title)
    rows = sorted({group.row for group in groups})
    left, bottom = (200 if picture is not None else 110), size[1] - 70
    height = (bottom - top) / max(len(rows) - 1, 1)
    place = {}
    for number, row in enumerate(rows):
        members = sorted((g for g in groups if g.row == row), key=lambda g: g.influence, reverse=True)
        y = bottom - number * height
        step = (size[0] - left - 30) / max(len(members), 1)
        for index, group in enumerate(members):
            place[group.key] = (left + step * (index + 0.5), y, step)
        named = "patches" if row < 0 else ("score" if any(g.kind == "score" for g in members) else f"layer {row}")
        text(draw, (12, y), named, 12, anchor="lm", bold=True)
    incoming: dict = {}
    for link in sorted((link for link in links if link[0] in place and link[1] in place), key=lambda l: -abs(l[2])):
        incoming.setdefault(link[1], []).append(link)
    per_target = max(1, max_links // max(len(incoming), 1))  # every group's strongest inputs, the score's too
    drawn = sorted((link for inputs in incoming.values() for link in inputs[:per_target]), key=lambda l: abs(l[2]))
    bound = max((abs(weight) for _, _, weight in drawn), default=1.0) or 1.0
    for source, target, weight in drawn:
        colour = (214, 39, 40) if weight > 0 else (31, 119, 180)
        draw.line([place[source][:2], place[target][:2]], fill=colour, width=max(1, round(7 * abs(weight) / bound)))
    largest = max((group.influence for group in groups), default=1.0) or 1.0
    for group in groups:
        x, y, room = place[group.key]
        radius = 5 + 11 * (group.influence / largest) ** 0.5
        fill = {"feature": (253, 174, 97), "error": (190, 190, 190), "embedding": (171, 217, 233),
                "score": (120, 198, 121)}[group.kind]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=BLACK)
        text(draw, (x, y + radius + 2), fitted(group.label, 12, room - 12), 12, anchor="ma")
    if picture is not None:
        thumbnail = picture.convert("RGB").copy()
        thumbnail.thumbnail((84, 84))
        canvas.paste(thumbnail, (100, round(bottom - thumbnail.height / 2)))
    x = 12
    for colour, words in (((214, 39, 40), "a link that adds to its target"), ((31, 119, 180), "one that takes away"),
                          ((253, 174, 97), "features"), ((190, 190, 190), "errors (what the transcoders miss)"),
                          ((171, 217, 233), "token embeddings, by region")):
        draw.rectangle((x, size[1] - 22, x + 16, size[1] - 10), fill=colour, outline=(90, 90, 90))
        text(draw, (x + 22, size[1] - 16), words, 11, anchor="lm")
        x += 32 + round(text_width(words, 11))
    return canvas
