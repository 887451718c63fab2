"""Pictures of results (matplotlib, Agg backend): PIL images the app shows and the CLI saves as PNG."""
from __future__ import annotations

import functools
import io
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

# A font for every script a caption may hold: DejaVu Sans, then Noto CJK where it is installed (the Dockerfile adds
# fonts-noto-cjk); matplotlib (3.6+) falls back glyph by glyph along the list.


def _cjk_font() -> tuple[str, str] | None:
    """(family, file) of Noto Sans CJK's regular face as matplotlib knows it (added from the system when it was
    installed after matplotlib cached its font list), or None."""
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
plt.rcParams["font.family"] = ["DejaVu Sans", *CJK_FONTS]


def figure_to_image(figure) -> Image.Image:
    """Render a matplotlib figure to an RGB PIL image and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def diverging_norm(values: np.ndarray) -> TwoSlopeNorm:
    """A colour scale symmetric about zero, so that white always means 'no contribution'."""
    bound = float(np.abs(values).max()) or 1e-12
    return TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)


# --- figures drawn with numpy and PIL (no matplotlib in the request: it holds the GIL for ~0.1 s a figure) -------

def _colour_table(name: str) -> np.ndarray:
    """`[256, 3]` uint8: a matplotlib colour map sampled once (the same colours as matplotlib draws)."""
    return (plt.get_cmap(name)(np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


DIVERGING = _colour_table("RdBu_r")
DEJAVU = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.lru_cache(maxsize=32)
def _font(size: int, cjk: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(CJK_FONT[1] if cjk else str(DEJAVU), size, index=0)


def _font_for(text: str, size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, or Noto Sans CJK where the text holds CJK characters and the font is installed."""
    return _font(size, cjk=bool(CJK_FONTS) and any(0x2E80 <= ord(char) <= 0xFFEF for char in text))


def diverging_colours(values: np.ndarray) -> np.ndarray:
    """`[..., 3]` uint8: `values` on the diverging scale symmetric about zero (white: 0; red: +; blue: -)."""
    values = np.asarray(values, dtype=np.float64)
    bound = float(np.abs(values).max()) or 1e-12
    index = np.clip(np.round((values / bound + 1) / 2 * 255), 0, 255).astype(np.int64)
    return DIVERGING[index]


def _text(draw: ImageDraw.ImageDraw, xy, text: str, size: int, anchor: str = "la", fill=(0, 0, 0),
          width: int | None = None) -> None:
    """`text` at `xy`, wrapped to `width` pixels when given (words kept whole, long ones cut)."""
    font = _font_for(text, size)
    lines = [text] if width is None else _wrapped(text, font, width)
    x, y = xy
    for index, line in enumerate(lines):
        draw.text((x, y + index * int(size * 1.25)), line, font=font, fill=fill, anchor=anchor)


def _wrapped(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return [*lines, line] if line else lines or [""]


def _colour_bar(canvas: Image.Image, left: int, top: int, height: int, bound: float, label: str,
                size: int = 11) -> None:
    """A vertical bar of the diverging scale from -bound (bottom) to +bound (top), three ticks and a label."""
    bar = DIVERGING[::-1][np.linspace(0, 255, height).round().astype(int)]  # [height, 3], + at the top
    canvas.paste(Image.fromarray(np.repeat(bar[:, None], 14, axis=1)), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left, top, left + 13, top + height - 1), outline=(0, 0, 0))
    for fraction, value in ((0.0, bound), (0.5, 0.0), (1.0, -bound)):
        y = top + round(fraction * (height - 1))
        draw.line((left + 14, y, left + 18, y), fill=(0, 0, 0))
        _text(draw, (left + 21, y), f"{value:+.3g}" if value else "0", size, anchor="lm")
    label_image = Image.new("RGB", (height, size + 6), "white")
    _text(ImageDraw.Draw(label_image), (height // 2, (size + 6) // 2), label, size, anchor="mm")
    canvas.paste(label_image.rotate(90, expand=True), (left + 70, top))


def head_grid(scores: np.ndarray, title: str = "", layers: list[int] | None = None,
              mlps: np.ndarray | None = None) -> Image.Image:
    """Layer x head heatmap of contributions `[L, H]` (rows: layers, first at the top), optionally with the
    MLPs as an extra column, on a diverging scale centred at zero."""
    scores = np.asarray(scores, dtype=np.float64)
    layers = list(range(scores.shape[0])) if layers is None else list(layers)
    table = scores if mlps is None else np.concatenate([scores, np.asarray(mlps, dtype=np.float64)[:, None]], 1)
    rows, columns = table.shape
    cell_w, cell_h = max(22, min(46, 640 // columns)), max(14, min(36, 520 // rows))
    margin_left, margin_top = 62, 44 + 18 * len(_wrapped(title, _font_for(title, 14), 560))
    grid_w, grid_h = cell_w * columns, cell_h * rows
    canvas = Image.new("RGB", (margin_left + grid_w + 120, margin_top + grid_h + 46), "white")
    cells = diverging_colours(table).repeat(cell_h, axis=0).repeat(cell_w, axis=1)
    canvas.paste(Image.fromarray(cells), (margin_left, margin_top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((margin_left - 1, margin_top - 1, margin_left + grid_w, margin_top + grid_h), outline=(0, 0, 0))
    if mlps is not None:
        x = margin_left + cell_w * scores.shape[1]
        draw.line((x, margin_top, x, margin_top + grid_h), fill=(0, 0, 0), width=2)
    labels = [str(h) for h in range(scores.shape[1])] + ([] if mlps is None else ["MLP"])
    step = max(1, rows // 24)  # at most ~24 layer numbers
    for index, name in enumerate(labels):
        _text(draw, (margin_left + index * cell_w + cell_w // 2, margin_top + grid_h + 4), name, 10, anchor="ma")
    for index in range(0, rows, step):
        _text(draw, (margin_left - 6, margin_top + index * cell_h + cell_h // 2), str(layers[index]), 10, anchor="rm")
    _text(draw, (margin_left + grid_w // 2, margin_top + grid_h + 22), "head", 12, anchor="ma")
    layer_label = Image.new("RGB", (60, 18), "white")
    _text(ImageDraw.Draw(layer_label), (30, 9), "layer", 12, anchor="mm")
    canvas.paste(layer_label.rotate(90, expand=True), (6, margin_top + grid_h // 2 - 30))
    _text(draw, (canvas.width // 2, 10), title, 14, anchor="ma", width=canvas.width - 20)
    _colour_bar(canvas, margin_left + grid_w + 14, margin_top, grid_h, float(np.abs(table).max()) or 1e-12,
                "contribution to cosine score", size=10)
    return canvas


def map_overlay(image: Image.Image, values: np.ndarray, opacity: float = 0.6, title: str = "",
                label: str = "contribution to cosine score",
                box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """The picture as it is (left) and a spatial map `[H, W]` (the picture's size) over a light grey copy of it
    (right), on a diverging scale centred at zero (red: adds to the score, blue: takes away), with a colour bar.
    The picture keeps its colours (a map laid over a colour picture changes them: a yellow object under red
    looks orange), and the map's colours are not mixed with the picture's. `opacity` in 0..1 is the map's;
    `box` (left, top, right, bottom), if given, is outlined on both. Drawn with numpy and PIL."""
    values = np.asarray(values, dtype=np.float64)
    image = image.convert("RGB")
    width, height = image.size
    scale = 400 / max(width, height)
    panel = (max(1, round(width * scale)), max(1, round(height * scale)))
    alpha = float(np.clip(opacity, 0, 1))
    mapped = (1 - alpha) * light_grey(image) + alpha * diverging_colours(values)
    resample = Image.NEAREST if scale >= 1 else Image.BILINEAR
    left_panel = image.resize(panel, resample)
    right_panel = Image.fromarray(mapped.round().astype(np.uint8)).resize(panel, Image.NEAREST)
    title_lines = len(_wrapped(title, _font_for(title, 15), 2 * panel[0] + 120))
    top = 20 * title_lines + 34
    canvas = Image.new("RGB", (2 * panel[0] + 150, top + panel[1] + 16), "white")
    canvas.paste(left_panel, (10, top))
    canvas.paste(right_panel, (panel[0] + 30, top))
    draw = ImageDraw.Draw(canvas)
    _text(draw, (canvas.width // 2, 8), title, 15, anchor="ma", width=canvas.width - 20)
    _text(draw, (10 + panel[0] // 2, top - 6), "the picture", 12, anchor="md")
    _text(draw, (panel[0] + 30 + panel[0] // 2, top - 6), "the map", 12, anchor="md")
    if box is not None:
        for origin in (10, panel[0] + 30):
            x0, y0, x1, y1 = (origin + box[0] * scale, top + box[1] * scale, origin + box[2] * scale,
                              top + box[3] * scale)
            _dashed_rectangle(draw, (x0, y0, x1, y1))
    _colour_bar(canvas, 2 * panel[0] + 40, top, panel[1], float(np.abs(values).max()) or 1e-12, label)
    return canvas


def _dashed_rectangle(draw: ImageDraw.ImageDraw, corners, dash: int = 6) -> None:
    x0, y0, x1, y1 = corners
    for a, b, horizontal in (((x0, y0), (x1, y0), True), ((x0, y1), (x1, y1), True), ((x0, y0), (x0, y1), False),
                             ((x1, y0), (x1, y1), False)):
        length = (b[0] - a[0]) if horizontal else (b[1] - a[1])
        for start in np.arange(0, max(length, 0), 2 * dash):
            end = min(start + dash, length)
            if horizontal:
                draw.line((a[0] + start, a[1], a[0] + end, a[1]), fill=(0, 0, 0), width=2)
            else:
                draw.line((a[0], a[1] + start, a[0], a[1] + end), fill=(0, 0, 0), width=2)


def light_grey(image: Image.Image) -> np.ndarray:
    """`[H, W, 3]` uint8: the picture in grey, lightened halfway to white (a background for a coloured map)."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return np.repeat((127.5 + grey / 2)[..., None], 3, axis=2).astype(np.uint8)


def token_strip(tokens: list[str], values, title: str = "", chosen: list[int] | None = None) -> Image.Image:
    """Tokens as coloured boxes on a diverging scale centred at zero (red: adds to the score), each with its
    value below; `chosen` tokens are underlined."""
    from matplotlib.patches import Rectangle

    values = np.asarray(values, dtype=np.float64)
    norm = diverging_norm(values)
    colours = plt.get_cmap("RdBu_r")(norm(values))
    widths = [0.35 + 0.11 * max(len(token), 4) for token in tokens]
    figure, axis = plt.subplots(figsize=(min(max(sum(widths) + 0.4, 3.0), 40.0), 1.3))
    x = 0.0
    for index, (token, value, colour, width) in enumerate(zip(tokens, values, colours, widths)):
        axis.add_patch(Rectangle((x, 0.35), width - 0.06, 0.55, facecolor=colour, edgecolor="#555555", linewidth=0.5))
        dark = abs(norm(value) - 0.5) > 0.35
        axis.text(x + (width - 0.06) / 2, 0.62, token, ha="center", va="center", fontsize=9,
                  color="white" if dark else "black")
        axis.text(x + (width - 0.06) / 2, 0.15, f"{value:+.3g}", ha="center", va="center", fontsize=7)
        if chosen and index in chosen:
            axis.plot([x, x + width - 0.06], [0.3, 0.3], color="black", linewidth=2)
        x += width
    axis.set_xlim(-0.05, x + 0.05)
    axis.set_ylim(0, 1)
    axis.set_axis_off()
    axis.set_title(title, fontsize=11, wrap=True)
    return figure_to_image(figure)


def outline_box(image: Image.Image, box: tuple[float, float, float, float] | None,
                corner: tuple[float, float] | None = None) -> Image.Image:
    """A copy of the image with `box` (left, top, right, bottom) outlined, or a first `corner` marked."""
    picture = image.convert("RGB").copy()
    draw = ImageDraw.Draw(picture)
    line = max(1, round(max(picture.size) / 160))
    if box is not None:
        left, top, right, bottom = box
        draw.rectangle([min(left, right), min(top, bottom), max(left, right), max(top, bottom)], outline=(0, 0, 0),
                       width=line + 1)
        draw.rectangle([min(left, right) + line + 1, min(top, bottom) + line + 1, max(left, right) - line - 1,
                        max(top, bottom) - line - 1], outline=(255, 255, 0), width=line)
    if corner is not None:
        x, y = corner
        radius = 3 * line
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(0, 0, 0), fill=(255, 255, 0))
    return picture


PROPERTY_COLOURS = {  # one colour per property, stable across models
    "colour": "#e6194b", "shape": "#3cb44b", "texture": "#911eb4", "location": "#4363d8", "animal": "#f58231",
    "object": "#42d4f4", "person": "#f032e6", "count": "#bfef45", "text": "#000075", "style": "#fabed4",
    "light": "#ffe119", "material": "#9a6324", "size": "#469990", "position": "#808000", "untagged": "#a9a9a9",
}


def property_grid(grid: list[list[str]], title: str = "", highlight: tuple[int, int] | None = None) -> Image.Image:
    """Layer x head map of property labels (`grid[layer][head]`, '' for heads not described), with a legend."""
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch, Rectangle

    layers, heads = len(grid), len(grid[0]) if grid else 0
    pixels = np.ones((layers, heads, 3))
    for l, row in enumerate(grid):
        for h, prop in enumerate(row):
            if prop:
                pixels[l, h] = to_rgb(PROPERTY_COLOURS.get(prop, "#a9a9a9"))
    figure, axis = plt.subplots(figsize=(max(4.0, 2.8 + 0.42 * heads), max(2.5, 1.2 + 0.32 * layers)))
    axis.imshow(pixels, aspect="auto")
    axis.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=8)
    axis.set_yticks(range(layers), [str(l) for l in range(layers)], fontsize=8)
    axis.set_xlabel("head")
    axis.set_ylabel("layer")
    axis.set_title(title, fontsize=11, wrap=True)
    if highlight is not None:
        axis.add_patch(Rectangle((highlight[1] - 0.5, highlight[0] - 0.5), 1, 1, fill=False, linewidth=2.5))
    present = sorted({prop for row in grid for prop in row if prop})
    axis.legend(handles=[Patch(color=PROPERTY_COLOURS.get(p, "#a9a9a9"), label=p) for p in present],
                bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, title="property")
    return figure_to_image(figure)


def missing_image(size: int = 160) -> Image.Image:
    """A grey tile that stands in for an image file that has gone missing."""
    tile = Image.new("RGB", (size, size), (215, 215, 215))
    draw = ImageDraw.Draw(tile)
    draw.line([(0, 0), (size, size)], fill=(170, 170, 170), width=3)
    draw.line([(0, size), (size, 0)], fill=(170, 170, 170), width=3)
    draw.text((size // 2, size // 2), "missing", fill=(80, 80, 80), anchor="mm")
    return tile


PART_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075")


def parts_overlay(image: Image.Image, parts: np.ndarray, box: tuple[int, int, int, int], labels: list[str],
                  title: str = "") -> Image.Image:
    """The image with its parts (`[grid_h, grid_w]` ids on the patch grid covering `box`; -1: none) outlined one
    colour each and numbered (the picture's own colours stay as they are), and a legend of each one's label."""
    from matplotlib.patches import Patch

    parts = np.asarray(parts)
    left, top, right, bottom = box
    width, height = image.size
    ids = np.full((height, width), -1)
    ids[top:bottom, left:right] = np.asarray(Image.fromarray(parts.astype(np.uint8)).resize(
        (right - left, bottom - top), Image.NEAREST))
    scale = 4.0 / max(width, height)
    legend_height = 0.28 * sum(textwrap.fill(label, 60).count("\n") + 1 for label in labels)
    figure, axis = plt.subplots(figsize=(6.4, max(height * scale, 2.0) + legend_height + 0.8))
    axis.imshow(image)
    for k in range(len(labels)):
        inside = (ids == k).astype(float)
        if inside.any():
            colour = PART_COLOURS[k % len(PART_COLOURS)]
            axis.contour(inside, levels=[0.5], colors=["white"], linewidths=4.0)
            axis.contour(inside, levels=[0.5], colors=[colour], linewidths=2.2)
            rows, columns = np.nonzero(inside)
            middle = np.argmin((rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2)  # a point inside
            axis.text(columns[middle], rows[middle], str(k), color="white", fontsize=11, fontweight="bold",
                      ha="center", va="center", bbox={"boxstyle": "circle", "facecolor": colour, "edgecolor": "white"})
    axis.set_axis_off()
    axis.set_title(title, fontsize=11, wrap=True)
    axis.legend(handles=[Patch(facecolor="white", edgecolor=PART_COLOURS[k % len(PART_COLOURS)], linewidth=2.2,
                               label=textwrap.fill(f"concept {k}: {label}", 60)) for k, label in enumerate(labels)],
                bbox_to_anchor=(0.5, -0.02), loc="upper center", fontsize=11, frameon=False)
    return figure_to_image(figure)


def concept_venn(visual_only: list[str], shared: list[str], textual_only: list[str], title: str = "") -> Image.Image:
    """Two overlapping circles: the concepts only the vision side picks, those both pick, those only the text
    side picks (each wrapped to 12 characters a line, so that the three columns never run into each other)."""
    from matplotlib.patches import Circle

    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    axis.add_patch(Circle((0.36, 0.5), 0.33, color="#4363d8", alpha=0.25))
    axis.add_patch(Circle((0.64, 0.5), 0.33, color="#e6194b", alpha=0.25))
    for x, heading, words in ((0.2, "vision only", visual_only), (0.5, "shared", shared),
                              (0.8, "text only", textual_only)):
        axis.text(x, 0.88, heading, ha="center", va="center", fontsize=11, fontweight="bold")
        lines = [textwrap.fill(word, 12) for word in words[:8]] + ([f"... {len(words) - 8} more"]
                                                                  if len(words) > 8 else [])
        axis.text(x, 0.5, "\n".join(lines) or "(none)", ha="center", va="center", fontsize=9.5)
    axis.set_xlim(0, 1)
    axis.set_ylim(0.1, 0.95)
    axis.set_aspect("equal")
    axis.set_axis_off()
    axis.set_title(title, fontsize=11, wrap=True)
    return figure_to_image(figure)


def mutual_curves(mi_curve: list[float], deletion: list[float], insertion: list[float], order: list[int]
                  ) -> Image.Image:
    """Two panels over the concepts taken in order of importance (`order`): the mutual information (bits) as
    they leave the vision side, and the predicted class's probability as they are blurred (deletion) or
    un-blurred on a blurred image (insertion)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.3))
    steps = np.arange(len(mi_curve))
    names = ["none"] + [f"{k}" for k in order]
    left.plot(steps, mi_curve, marker="o", color="#4363d8")
    left.fill_between(steps, mi_curve, alpha=0.15, color="#4363d8")
    left.set_ylabel("mutual information (bits)", fontsize=10)
    left.set_xlabel("concepts removed (cumulative)", fontsize=10)
    left.set_ylim(0, max(1.0, max(mi_curve) * 1.1))
    left.set_title(f"MI dynamics: AUC {sum(mi_curve) / len(mi_curve):.2f} bits", fontsize=11, loc="left")
    right.plot(steps, deletion, marker="o", color="#e6194b", label="deletion (blurred)")
    right.plot(steps, insertion, marker="s", color="#3cb44b", label="insertion (un-blurred)")
    right.set_ylim(0, 1.02)
    right.set_ylabel("probability of the prediction", fontsize=10)
    right.set_xlabel("concepts blurred / un-blurred (cumulative)", fontsize=10)
    right.legend(fontsize=9, loc="center right")
    right.set_title("deletion and insertion", fontsize=11, loc="left")  # left: clear of the page's buttons
    for axis in (left, right):
        axis.set_xticks(steps, names, fontsize=9)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure_to_image(figure)


def pruning_plot(models: list) -> Image.Image:
    """Zero-shot accuracy against the number of heads removed, one panel per model: the most consistent (red),
    layer-matched random (grey) and least consistent heads (blue); solid: zero-ablation in the forward pass,
    dashed: direct effect only. `models`: (label, `quantify.PruningCurves`) pairs."""
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    colours = {"high": "#d62728", "random": "#7f7f7f", "low": "#1f77b4"}
    for axis, (label, curves) in zip(axes[0], models):
        for name, colour in colours.items():
            for effect, style in (("zero", "-"), ("direct", "--")):
                if effect in curves.curves:
                    axis.plot(curves.counts, curves.curves[effect][name], style, color=colour, marker="o",
                              label=f"{name} ({effect})")
        axis.set_title(label, fontsize=11)
        axis.set_xlabel("heads removed", fontsize=10)
        axis.set_ylabel("zero-shot accuracy", fontsize=10)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return figure_to_image(figure)


def consistency_grid(values: np.ndarray, properties: list[list[str]], title: str = "") -> Image.Image:
    """Layer x head grid of consistency (`values` `[L, H]`, 0..5: how many of a head's first five descriptions
    carry its label's tag), each cell marked with its label (`properties` `[L][H]`)."""
    values = np.asarray(values, dtype=np.float64)
    layers, heads = values.shape
    figure, axis = plt.subplots(figsize=(max(4.0, 1.6 + 0.62 * heads), max(2.4, 1.0 + 0.42 * layers)))
    picture = axis.imshow(values, cmap="YlGn", vmin=0, vmax=5, aspect="auto")
    for layer in range(layers):
        for head in range(heads):
            axis.text(head, layer, f"{values[layer, head]:.0f}\n{properties[layer][head][:5]}", ha="center",
                      va="center", fontsize=7, color="black" if values[layer, head] < 4 else "white")
    axis.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=8)
    axis.set_yticks(range(layers), [str(layer) for layer in range(layers)], fontsize=8)
    axis.set_xlabel("head")
    axis.set_ylabel("layer")
    axis.set_title(title, fontsize=11, wrap=True)
    figure.colorbar(picture, ax=axis, label="consistency (of 5)")
    return figure_to_image(figure)


def faithfulness_plot(rows: list[dict]) -> Image.Image:
    """Bars of every method's pointing, multi-object pointing and mIoU, one panel per model (rows of the
    `faithfulness` command's table)."""
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


def maps_side_by_side(image: Image.Image, maps: list[tuple[str, np.ndarray, str]], opacity: float = 0.6,
                      columns: int = 4) -> Image.Image:
    """Each (title, map `[H, W]` on the picture, note under it) min-max normalised to 0..1 and laid over the
    picture, on one colour scale, `columns` a row."""
    rows = max(1, math.ceil(len(maps) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.1 * columns, 3.3 * rows), squeeze=False)
    grey = light_grey(image)
    shown = None
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, values, note) in zip(axes.flat, maps):
        low, high = float(values.min()), float(values.max())
        normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
        axis.imshow(grey)
        shown = axis.imshow(normalised, cmap="inferno", vmin=0, vmax=1, alpha=opacity)
        axis.set_title("\n".join(textwrap.wrap(title, 28)), fontsize=10)
        axis.text(0.5, -0.04, note, transform=axis.transAxes, ha="center", va="top", fontsize=8)
    if shown is not None:
        figure.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01, label="relevance (each map 0..1)")
    return figure_to_image(figure)
