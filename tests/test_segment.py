"""Topic and contrastive maps: they are the decomposition's per-token scores laid on the grid, on any grid, drawn
on the image the user gave; zero-shot segmentation and its metrics."""
import numpy as np
import pytest
import torch
from PIL import Image

from interpret.decompose import decompose_image
from interpret.errors import InterpretError
from interpret.models import load_model
from interpret.render import map_overlay
from interpret.errors import CaptionError
from interpret.segment import (ImageMaps, average_precision, contrastive_map, crop_box, evaluate_segmentation,
                               mean_iou, overlap, topic_map)


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))  # wider than tall


def test_maps_are_the_token_scores_on_the_grid(tiny_model, picture):
    parts = decompose_image(tiny_model, [picture])
    token = parts.token_scores(tiny_model.encode_texts(["a red square"]))[0, ..., 0]  # [L, H, T]
    rows, columns = tiny_model.geometry.grid
    everything = topic_map(tiny_model, picture, "a red square", parts="heads")
    assert everything.grid.shape == (rows, columns) and everything.heads == "all heads"
    assert torch.allclose(everything.grid, token.sum(dim=(0, 1))[1:].reshape(rows, columns), atol=1e-6)
    one = topic_map(tiny_model, picture, "a red square", layer=-1, head=2)
    assert one.heads == "head 2.2" and torch.allclose(one.grid, token[2, 2, 1:].reshape(rows, columns), atol=1e-6)
    layer = topic_map(tiny_model, picture, "a red square", layer=1)
    assert torch.allclose(layer.grid, token[1].sum(0)[1:].reshape(rows, columns), atol=1e-6)
    chosen = topic_map(tiny_model, picture, "a red square", heads=[(0, 1), (2, 0)])
    assert torch.allclose(chosen.grid, (token[0, 1] + token[2, 0])[1:].reshape(rows, columns), atol=1e-6)


def test_all_heads_map_plus_class_token_is_the_heads_share_of_the_score(vit_b16, picture):
    maps = ImageMaps(vit_b16, picture)
    assert maps.topic("a dog").grid.shape == (14, 14)
    texts = vit_b16.encode_texts(["a dog"])
    heads_total = maps.decomposition.scores(texts).heads.sum()
    class_token = maps.decomposition.token_scores(texts)[0, :, :, 0, 0].sum()
    assert float(maps.topic("a dog").grid.sum() + class_token) == pytest.approx(float(heads_total), abs=1e-5)


def test_contrastive_is_the_difference_of_two_topic_maps(tiny_model, picture):
    maps = ImageMaps(tiny_model, picture)
    difference = contrastive_map(tiny_model, picture, "a dog", "a cat", layer=2)
    assert torch.allclose(difference.grid, maps.topic("a dog", layer=2).grid - maps.topic("a cat", layer=2).grid,
                          atol=1e-6)
    assert difference.text == "a dog − a cat"


def test_relative_maps_take_away_the_mean_map_of_other_texts(tiny_model, picture):
    maps = ImageMaps(tiny_model, picture)
    one = maps.topic("a dog", layer=1, relative_to="a cat")
    assert torch.allclose(one.grid, maps.topic("a dog", layer=1).grid - maps.topic("a cat", layer=1).grid, atol=1e-6)
    assert one.text == "a dog − a cat"
    several = topic_map(tiny_model, picture, "a dog", relative_to=["a cat", "a bird"])
    mean = (maps.topic("a cat").grid + maps.topic("a bird").grid) / 2
    assert torch.allclose(several.grid, maps.topic("a dog").grid - mean, atol=1e-6)
    assert several.text == "a dog − mean(a cat, a bird)"
    assert np.allclose(several.image, maps.topic("a dog").image - (maps.topic("a cat").image +
                                                                    maps.topic("a bird").image) / 2, atol=1e-6)
    assert torch.equal(maps.topic("a dog", relative_to=[]).grid, maps.topic("a dog").grid)
    with pytest.raises(CaptionError, match="empty"):
        maps.topic("a dog", relative_to=["a cat", " "])


def test_any_grid(vit_b32, picture):
    assert topic_map(vit_b32, picture, "a dog").grid.shape == (7, 7)
    toy = load_model("toy")
    assert topic_map(toy, picture, "something red").grid.shape == (8, 8)


def test_the_map_covers_the_centre_crop_of_the_users_image(vit_b32, picture):
    assert crop_box(vit_b32, picture.size) == (15, 0, 105, 90)
    spatial = topic_map(vit_b32, picture, "a dog")
    assert spatial.image.shape == (90, 120) and spatial.box == (15, 0, 105, 90)
    assert np.all(spatial.image[:, :15] == 0) and np.all(spatial.image[:, 105:] == 0)
    inside = spatial.image[:, 15:105]
    assert np.sign(inside[5, 5]) == np.sign(float(spatial.grid[0, 0]))  # top-left patch at the top left
    assert inside.max() <= float(spatial.grid.max()) + 1e-6 and inside.min() >= float(spatial.grid.min()) - 1e-6


def test_bad_head_choices(tiny_model, picture):
    maps = ImageMaps(tiny_model, picture)
    with pytest.raises(InterpretError, match=r"layers 0..2 \(or -3..-1\); there is no layer 5"):
        maps.topic("a dog", layer=5)
    with pytest.raises(InterpretError, match="heads 0..2; there is no head 3"):
        maps.topic("a dog", layer=1, head=3)
    with pytest.raises(InterpretError, match="Choose a layer"):
        maps.topic("a dog", head=1)
    with pytest.raises(InterpretError, match="caption is empty"):
        maps.topic(" ")


def test_overlay_draws_any_size(picture):
    values = np.linspace(-1, 2, 90 * 120).reshape(90, 120)
    drawn = map_overlay(picture, values, opacity=0.3, title="a dog")
    assert drawn.size[0] > 200 and drawn.mode == "RGB"


def test_average_precision_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    truth = np.array([1, 0, 1, 0], bool)
    assert average_precision(scores, truth) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision(scores, np.array([1, 1, 0, 0], bool)) == pytest.approx(1.0)


def test_overlap_and_mean_iou_by_hand():
    truth = np.array([[1, 1, 0, 0, 0]], bool)
    predicted = np.array([[1, 0, 0, 0, 0]], bool)
    counts = overlap(predicted, truth)  # background: 3 of 4; foreground: 1 of 2
    assert counts.tolist() == [[3, 1], [4, 2]]
    assert mean_iou(*counts) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert mean_iou(*(counts + overlap(truth, truth))) == pytest.approx((6 / 7 + 3 / 4) / 2)  # summed, then divided


def test_toy_colour_maps_find_their_objects():
    """The issue's truth check on 20 two-object scenes (figures on 300: benchmarks/toy_segmentation.py)."""
    from interpret.toy.evaluate import segmentation_truth, two_object_scenes

    rows = segmentation_truth(load_model("toy"), two_object_scenes(20))
    ours, perfect, nothing = rows["all heads"], rows["perfect patch-level map"], rows["all background"]
    # the colour word's map relative to the colour words, thresholded at its mean (the TextSpan protocol)
    assert ours["colour mIoU relative"] >= 0.5
    assert ours["colour mIoU relative"] > nothing["mIoU"] + 0.1
    assert ours["colour object IoU relative"] > perfect["object IoU"] - 0.05  # as good as the patch grid allows
    # the raw map also holds what every text gets from the image: thresholded, it takes in the background
    assert ours["colour mIoU raw"] < nothing["mIoU"]
    assert ours["colour contrastive pointing"] >= 0.9 and ours["red − blue pointing"] == 1.0
    assert ours["colour pointing"] >= 0.85


def test_zero_shot_segmentation_of_toy_objects():
    from interpret.toy.train import toy_scene
    from interpret.toy.world import COLOURS, SHAPES, with_article

    toy = load_model("toy")
    scenes = [toy_scene(40_000 + i, count=1) for i in range(12)]
    classes = [with_article(f"{c} {s}") for c in COLOURS for s in SHAPES]
    metrics = evaluate_segmentation(toy, [(scene.image, scene.masks[0]) for scene in scenes], classes)
    assert metrics["images"] == 12
    assert metrics["pixel accuracy"] > 0.8 and metrics["mIoU"] > 0.5 and metrics["mAP"] > 0.5


@pytest.mark.parametrize("grid", [
    [[0.010, -0.020], [0.0483, -0.0234]],  # the largest magnitude is positive
    [[-0.5, -0.1], [-0.25, -0.07]],  # no patch adds to the score
    [[0.0, 0.3], [-0.9, 0.2]],  # the largest magnitude is negative
])
def test_a_maps_summary_states_the_numbers_its_figure_shows(grid, picture):
    from interpret.drawing import DIVERGING, signed_number
    from interpret.segment import SpatialMap, upsample

    grid = torch.tensor(grid)
    box = (0, 0, 64, 64)
    spatial = SpatialMap(grid, upsample(grid, (64, 64), box), box, "something", "all heads")
    bound = float(grid.abs().max())
    assert spatial.bound == pytest.approx(bound) and float(np.abs(spatial.image).max()) <= bound + 1e-6
    summary = spatial.summary()
    assert f"coloured from {signed_number(-bound)} to {signed_number(bound)}" in summary
    assert f"from {signed_number(float(grid.min()))} to {signed_number(float(grid.max()))}" in summary
    assert "count from 0" in summary
    row, column = divmod(int(grid.argmax() if grid.max() > 0 else grid.argmin()), 2)
    assert f"at row {row}, column {column}" in summary
    assert ("no patch adds to the score" in summary) == bool(grid.max() <= 0)

    # the figure's scale is the summary's: a patch at -bound is the colour bar's end
    figure = np.asarray(map_overlay(Image.new("RGB", (64, 64)), spatial.image, 1.0, bound=spatial.bound))
    panels = figure[:, :2 * 400 + 30]  # the picture and the map (400 px each), not the colour bar after them
    darkest = np.abs(panels.astype(int) - DIVERGING[0]).sum(axis=-1).min()
    assert (darkest < 30) == (float(grid.min()) == -bound)


@pytest.fixture(scope="module")
def toy_pooled():
    return load_model("toy-pooled")


def test_through_a_class_token_all_parts_map_the_heads_alone(tiny_model, picture):
    maps = ImageMaps(tiny_model, picture)
    everything, heads = maps.topic("a red square"), maps.topic("a red square", parts="heads")
    assert everything.heads == "all parts" and heads.heads == "all heads"
    assert torch.allclose(everything.grid, heads.grid, atol=1e-6)
    assert not maps.topic("a red square", parts="mlps").grid.abs().any()  # only the class token's MLPs are read


@pytest.mark.parametrize("text", ["something green", "a small cross", "a photo of a large red circle"])
def test_through_an_attention_pooler_every_part_has_its_map_and_they_add_up(toy_pooled, text):
    from interpret.toy.train import toy_scene

    scene = toy_scene(777_001 + len(text), count=2)
    maps = ImageMaps(toy_pooled, scene.image)
    kinds = {parts: maps.topic(text, parts=parts).grid for parts in ("all", "heads", "mlps", "embedding")}
    assert all(grid.abs().max() > 0 for grid in kinds.values())
    biases = maps.part_scores([text], maps.select("all")) - maps.part_scores(
        [text], maps.select("heads")) - maps.part_scores([text], maps.select("mlps")) - maps.part_scores(
        [text], maps.select("embedding"))  # [T, 1]: the attention biases, where the pooler reads them
    assert torch.allclose(kinds["all"], kinds["heads"] + kinds["mlps"] + kinds["embedding"] + biases[:, 0].reshape(8, 8),
                          atol=1e-6)
    decomposition = maps.decomposition
    unit = toy_pooled.encode_texts([text])
    cosine = float(torch.nn.functional.normalize(decomposition.embedding, dim=-1)[0] @ unit[0])
    rest = float(decomposition.readout_rest[0] @ unit[0] / decomposition.embedding[0].norm())
    assert float(kinds["all"].sum()) + rest == pytest.approx(cosine, abs=1e-5)  # no prefix token: all are patches
    layer = maps.topic(text, layer=2, parts="all")
    assert layer.heads == "layer 2: heads and MLP"
    assert torch.allclose(layer.grid, maps.topic(text, layer=2, parts="heads").grid
                          + maps.topic(text, layer=2, parts="mlps").grid, atol=1e-6)
    assert maps.topic(text, layer=[1, 3], parts="mlps").heads == "the MLPs of layers 1, 3"


@pytest.mark.parametrize("choice, message", [
    ({"parts": "neurons"}, "Unknown parts 'neurons'"),
    ({"parts": 3}, "Unknown parts '3'"),
    ({"parts": "mlps", "layer": 1, "head": 2}, "A head is chosen: it has no MLPs"),
    ({"parts": "embedding", "heads": [(0, 1)]}, "A head is chosen: it has no embedding layer"),
    ({"parts": "embedding", "layer": 1}, "The embedding layer comes before the blocks"),
])
def test_bad_part_choices_are_refused(tiny_model, picture, choice, message):
    with pytest.raises(InterpretError, match=message):
        topic_map(tiny_model, picture, "a dog", **choice)
