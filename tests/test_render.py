"""The figures drawn with numpy and PIL: matplotlib's colours, outlines that stay inside their region and the
picture, labels whole, and keys where the page's image buttons do not cover them."""
import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from interpret import drawing, render


def matplotlib_colour(name: str, fraction: float) -> np.ndarray:
    return np.asarray(matplotlib.colormaps[name](fraction)[:3]) * 255


@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.integers(1, 12))
@settings(max_examples=20, deadline=None)
def test_the_consistency_grid_has_matplotlibs_colours_and_whole_labels(flat, heads):
    values = np.resize(np.array(flat), (max(1, len(flat) // heads), heads))
    properties = [["material" if (l + h) % 2 else "colour" for h in range(heads)] for l in range(values.shape[0])]
    grid = render.consistency_grid(values, properties, "a title")
    pixels = np.asarray(grid)
    longest = drawing.text_width("material", render.CONSISTENCY_FONT)
    cell_w, cell_h = round(longest) + 8, 36
    assert cell_w - 6 >= longest  # "material" fits its cell whole: not cut to "mater"
    top = 34 + drawing.title_height("a title", max(cell_w * heads, 400))
    for (layer, head), value in np.ndenumerate(values):
        corner = pixels[top + layer * cell_h + 2, 56 + head * cell_w + 2]  # a corner: no text there
        assert np.abs(corner - matplotlib_colour("YlGn", value / 5)).max() <= 1


@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=12))
@settings(max_examples=20, deadline=None)
def test_token_boxes_have_the_diverging_scales_colours(values):
    tokens = [f"t{i}" for i in range(len(values))]
    strip = np.asarray(render.token_strip(tokens, values))
    top = 18  # no title
    bound = max(abs(v) for v in values) or 1e-12
    x = 10
    for token, value in zip(tokens, values):
        width = round(max(drawing.text_width(token, 13), drawing.text_width(f"{value:+.3g}", 10), 34)) + 14
        inside = strip[top + 3, x + 2]
        expected = matplotlib_colour("RdBu_r", np.clip(np.round((value / bound + 1) / 2 * 255), 0, 255) / 255)
        assert np.abs(inside - expected).max() <= 1
        x += width + 4


@st.composite
def parts_and_boxes(draw):
    rows, columns = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    parts = np.array(draw(st.lists(st.integers(-1, 3), min_size=rows * columns, max_size=rows * columns)))
    width, height = draw(st.integers(8, 90)), draw(st.integers(8, 90))
    left, top = draw(st.integers(-20, width - 2)), draw(st.integers(-20, height - 2))
    right, bottom = draw(st.integers(left + 2, width + 20)), draw(st.integers(top + 2, height + 20))
    return parts.reshape(rows, columns), (left, top, right, bottom), (width, height)


@given(parts_and_boxes())
@settings(max_examples=60, deadline=None)
def test_part_outlines_stay_inside_their_part_and_the_picture(case):
    parts, box, size = case
    ids = drawing_ids = render.part_ids(parts, box, size)
    assert drawing_ids.shape == (size[1], size[0])
    left, top, right, bottom = box
    rows, columns = np.nonzero(ids >= 0)
    assert (columns >= left).all() and (columns < right).all() and (rows >= top).all() and (rows < bottom).all()
    for k in range(4):
        inside = ids == k
        band = drawing.inner_band(inside, 2, skip=1) | drawing.inner_band(inside, 1)
        assert not (band & ~inside).any()  # never outside the part (so never past the picture's edge)
        edge = np.zeros_like(inside)
        edge[0], edge[-1], edge[:, 0], edge[:, -1] = True, True, True, True
        assert (drawing.inner_band(inside, 1) >= (inside & edge)).all()  # a part at the edge is outlined there
        if inside.any():
            x, y = drawing.inside_point(inside)
            assert inside[y, x]


def test_the_parts_figure_outlines_a_part_that_runs_to_the_pictures_edge():
    picture = Image.new("RGB", (300, 200), (120, 160, 200))
    parts = np.full((4, 4), -1)
    parts[:, 3] = 0  # the right column of patches, at the picture's right edge
    figure = np.asarray(render.parts_overlay(picture, parts, (0, 0, 300, 200), ["red"]))
    colour = np.asarray(drawing.rgb(render.PART_COLOURS[0]))
    outlined = (np.abs(figure.astype(int) - colour).max(axis=2) <= 2)
    columns = np.nonzero(outlined.any(axis=0))[0]
    scale = render.PARTS_SIDE / 300
    left = (figure.shape[1] - round(300 * scale)) // 2
    assert columns.max() < left + round(300 * scale)  # the outline ends inside the picture
    assert columns.max() >= left + round(300 * scale) - 6  # and runs along its edge


@pytest.mark.parametrize("heads", [4, 12, 16])
def test_keys_and_colour_bars_leave_the_top_right_corner_to_the_pages_buttons(heads):
    values = np.arange(heads * heads, dtype=float).reshape(heads, heads) % 6
    properties = [["colour"] * heads for _ in range(heads)]
    for figure in (render.consistency_grid(values, properties, "consistency"),
                   render.head_grid(values - 2.5, "a title"),
                   render.property_grid(properties, "labels")):
        corner = np.asarray(figure)[:34, -110:]
        assert (corner == 255).all()


def test_line_charts_put_points_where_their_values_are():
    chart = np.asarray(drawing.line_chart([drawing.Series("s", [0.0, 1.0], (255, 0, 0))], ["a", "b"], "x", "y", 1.0))
    red = np.nonzero((chart[..., 0] == 255) & (chart[..., 1] == 0))
    assert red[0].max() > red[0].min() + 200  # from the bottom of the axes to the top
    assert drawing.nice_ticks(1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and drawing.nice_ticks(1.65)[-1] >= 1.65


@given(st.text(min_size=1, max_size=80), st.integers(20, 300))
@settings(max_examples=60, deadline=None)
def test_wrapped_text_keeps_every_character_and_fits(words, width):
    lines = drawing.wrapped(words, 12, width)
    assert "".join(lines).replace(" ", "") == words.replace(" ", "")
    for line in lines:
        assert len(line) == 1 or drawing.text_width(line, 12) <= width


@pytest.mark.parametrize("length", [30, 72, 140, 400])
def test_a_colour_bar_label_longer_than_its_bar_is_wrapped_whole_not_cut(monkeypatch, length):
    """The neuron head split's key beside a two-row grid cut its label to 'hare of its effec'."""
    from PIL import Image

    from interpret import drawing

    drawn = []
    real = drawing.text
    monkeypatch.setattr(drawing, "text", lambda draw, xy, words, size, **options: drawn.append((words, size))
                        or real(draw, xy, words, size, **options))
    label = "share of its effect along its direction"
    drawing.rotated_text(Image.new("RGB", (200, 500), "white"), (10, 10), label, 10, length)
    assert "".join(words for words, _ in drawn).replace(" ", "") == label.replace(" ", "")  # every letter, in order
    assert all(drawing.text_width(words, size) <= max(length - 4, size) + size for words, size in drawn)


def test_the_heads_grid_crosses_out_the_removed_heads():
    import numpy as np

    from interpret.render import head_grid

    scores = np.zeros((4, 8))
    plain, marked = head_grid(scores), head_grid(scores, marked=[(3, 0)])
    difference = np.abs(np.asarray(plain, dtype=int) - np.asarray(marked, dtype=int)).sum(axis=2)
    rows, columns = np.nonzero(difference)
    assert len(rows) and columns.max() - columns.min() < 50 and rows.min() > plain.height / 2  # one cell, low left
