"""The explanation methods (`interpret.explanations`) and their scores (`interpret.faithfulness`): every method on
every model family, each checked against a property its paper states, and the scores against cases whose answer
is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from interpret import explain
from interpret.errors import InterpretError
from interpret.explanations import METHODS, Subject
from interpret.faithfulness import (Sample, area, evaluate_maps, folder_samples, perturbation_curves, pointing_hit,
                                    thresholded, toy_samples)
from interpret.models import load_model
from interpret.segment import SpatialMap
from tests.test_towers import CASES, model_of

PICTURE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
NEEDS_A_READ_TOKEN = {"readout-attention", "grad-eclip"}


@pytest.fixture(scope="module")
def toy():
    return load_model("toy")


@pytest.mark.parametrize("family, name", CASES)
def test_every_method_maps_every_family_or_says_why_not(family, name, tmp_path):
    from interpret.neurons import default_neuron_layers, neuron_directions, neurons_folder

    model = model_of(family, name)
    subject = Subject.of(model, PICTURE, "a red circle")
    with pytest.raises(InterpretError, match="No neuron directions of layer"):  # none yet: it says how to get them
        explain(model, subject, method="neurons")
    for index in range(6):
        PICTURE.rotate(60 * index).save(tmp_path / f"{index}.png")
    for layer in default_neuron_layers(model):
        neuron_directions(model, tmp_path, layer, top=3, progress=False).save(neurons_folder(model.index_dir, layer))
    averaged = model.tower.fixed_pool and model.tower.read_token is None  # CLIPA: no token is read
    for method in METHODS:
        if averaged and method in NEEDS_A_READ_TOKEN:
            with pytest.raises(InterpretError, match="averages its patches"):
                explain(model, subject, method=method)
            continue
        result = explain(model, subject, method=method)
        assert result.map.grid.shape == model.geometry.grid, method
        assert bool(torch.isfinite(result.map.grid).all()), method
        assert result.map.image.shape == (PICTURE.height, PICTURE.width)


def test_the_limits_table_counts_every_method():
    from interpret.limits import COMPARED_METHODS

    assert len(METHODS) == COMPARED_METHODS  # the Compare tab's cost bound, as the README's limits say


def test_an_unknown_method_or_option_is_named(toy):
    with pytest.raises(InterpretError, match="Choose one of: decomposition"):
        explain(toy, PICTURE, "a red circle", method="saliency")
    with pytest.raises(InterpretError, match="does not take these options"):
        explain(toy, PICTURE, "a red circle", method="rollout", start_layer=2)
    with pytest.raises(InterpretError, match="Type a text"):
        explain(toy, PICTURE, "  ", method="rollout")


def test_rollout_of_uniform_attention_is_uniform_over_the_patches(toy, monkeypatch):
    """Abnar & Zuidema: with every block mixing its tokens uniformly, the rolled-out attention spreads evenly."""
    uniform = lambda layer, q, k: torch.full((*q.shape[:3], k.shape[2]), 1 / k.shape[2])  # noqa: E731
    monkeypatch.setattr(toy.tower, "attention_weights", uniform)
    grid = explain(toy, PICTURE, "a red circle", method="rollout").map.grid
    assert torch.allclose(grid, torch.full_like(grid, float(grid.mean())), rtol=1e-5)


@pytest.mark.parametrize("name", ["toy", "toy-pooled"])
def test_the_readout_attention_is_a_distribution(name):
    """A softmax row: over the patches (and the class token, where there is one) it sums to 1."""
    model = load_model(name)
    grid = explain(model, PICTURE, "a red circle", method="readout-attention").map.grid
    assert float(grid.min()) >= 0
    if model.geometry.prefix == 0:
        assert float(grid.sum()) == pytest.approx(1.0, abs=1e-5)
    else:
        assert float(grid.sum()) < 1.0


def test_grad_cam_weighs_the_features_by_their_mean_gradient(toy):
    """Selvaraju et al.: the map is relu(sum_c mean_t(dS/dx_tc) x_pc) at the stream entering the last block;
    computed here again with torch.func on the score as a function of that stream."""
    subject = Subject.of(toy, PICTURE, "a red circle")
    tower = toy.tower
    with torch.no_grad():
        entering = tower.forward(subject.batch, blocks=tower.layers - 1)

    def score(stream):
        return subject.score(tower.embedding(tower.block(tower.layers - 1, stream)[0]))[0]

    gradient = torch.func.grad(score)(entering)[0]  # [T, W]
    expected = (entering[0] @ gradient.mean(dim=0)).clamp(min=0)[1:].reshape(toy.geometry.grid)
    assert torch.allclose(explain(toy, subject, method="grad-cam").map.grid, expected, atol=1e-6)


def test_gradient_methods_are_non_negative_and_legrad_is_normalised(toy):
    subject = Subject.of(toy, PICTURE, "a blue square")
    for method in ("chefer", "grad-cam", "grad-eclip", "legrad"):
        assert float(explain(toy, subject, method=method).map.grid.min()) >= 0, method
    legrad = explain(toy, subject, method="legrad").map.grid
    assert float(legrad.max()) == pytest.approx(1.0)


def test_chefer_with_no_gradient_layers_is_the_readout_row(toy, monkeypatch):
    """Chefer et al.: R starts as the identity and only blocks whose attention gets gradient add to it; with the
    gradient zeroed the map is the class token's row of I: nothing on the patches."""
    from interpret import explanations

    monkeypatch.setattr(explanations, "_gradient", lambda output, inputs: [torch.zeros_like(x) for x in inputs])
    assert float(explain(toy, PICTURE, "a red circle", method="chefer").map.grid.abs().max()) == 0


def test_the_decomposition_map_is_the_topic_map_and_its_parts_sum_to_the_score(toy):
    """Ours: the raw map is every head's part at each patch; with the parts at the class token, the MLPs and the
    rest it adds up to the cosine score (the decomposition is exact)."""
    from interpret.decompose import decompose_image
    from interpret.segment import topic_map

    result = explain(toy, PICTURE, "a red circle", method="decomposition")
    assert torch.allclose(result.map.grid, topic_map(toy, PICTURE, "a red circle").grid)
    parts = decompose_image(toy, toy.preprocess_images([PICTURE]), spatial=True)
    text = toy.encode_texts(["a red circle"])[0]
    heads = parts.token_scores(text[None])[0].sum(dim=(0, 1))[:, 0]  # [T]: every token's head parts
    norm = parts.embedding[0].norm()
    others = float((parts.mlps[0].sum(dim=0) + parts.rest[0]) @ text / norm)
    assert float(heads.sum()) + others == pytest.approx(result.score, abs=1e-5)
    assert float(result.map.grid.sum()) + float(heads[0]) + others == pytest.approx(result.score, abs=1e-5)


def test_pointing_and_thresholding_on_known_maps():
    image = np.zeros((8, 8), np.float32)
    image[5, 6] = 2.0
    image[1, 1] = 1.0
    spatial = SpatialMap(torch.zeros(2, 2), image, (0, 0, 8, 8), "x", "test")
    mask = np.zeros((8, 8), bool)
    mask[4:7, 5:8] = True
    assert pointing_hit(spatial, mask) and not pointing_hit(spatial, ~mask)
    cropped = SpatialMap(torch.zeros(2, 2), image, (0, 0, 4, 4), "x", "test")  # the peak outside what was seen
    assert pointing_hit(cropped, np.eye(8, dtype=bool))
    above = thresholded(spatial)
    assert above[5, 6] and above[1, 1] and above.sum() == 2
    # the pointing game's tolerance: 15 pixels at 224 (a peak 10 px beside the object counts, 20 px does not)
    mask = np.zeros((224, 224), bool)
    mask[100:120, 100:120] = True
    for distance, hit in ((10, True), (14, True), (20, False)):
        image = np.zeros((224, 224), np.float32)
        image[110, 119 + distance] = 1.0
        spatial = SpatialMap(torch.zeros(2, 2), image, (0, 0, 224, 224), "x", "test")
        assert pointing_hit(spatial, mask) == hit and not pointing_hit(spatial, mask, tolerance=0)


def test_deletion_and_insertion_start_and_end_where_they_must(toy):
    """Deletion starts at the image's own score and ends at the baseline's; insertion the other way round, for
    any order of the patches."""
    subject = Subject.of(toy, PICTURE, "a red circle")
    grid = torch.randn(*toy.geometry.grid, generator=torch.Generator().manual_seed(0))
    for baseline in ("blur", "mean"):
        deletion, insertion = perturbation_curves(toy, subject, grid, steps=4, baseline=baseline)
        assert deletion[0] == pytest.approx(insertion[-1], abs=1e-6)
        assert deletion[-1] == pytest.approx(insertion[0], abs=1e-6)
        assert len(deletion) == 5
    assert area(np.array([0.0, 1.0, 1.0])) == pytest.approx(0.75)


def test_toy_samples_name_one_object_that_no_other_shares():
    samples = toy_samples(6, 9, seed=123)
    assert [sample.objects for sample in samples[:6]] == [1] * 6
    assert {sample.objects for sample in samples[6:]} == {2, 3, 4}
    assert len({sample.text for sample in samples}) > 5  # phrasings vary
    for sample in samples:
        assert sample.mask.shape == (64, 64) and sample.mask.any()
        assert not sample.text.startswith("a photo of a o") and " a a" not in sample.text


def test_scores_on_toy_scenes_and_on_a_folder_of_images_with_masks(toy, tmp_path, capsys):
    table = evaluate_maps(toy, toy_samples(2, 2), ["decomposition-relative", "rollout"], steps=4)
    assert set(table) == {"decomposition-relative", "rollout"}
    assert set(table["rollout"]) >= {"pointing", "multi-object pointing", "mIoU", "pixel accuracy",
                                     "deletion AUC (blur)", "insertion AUC (mean)"}
    for name in ("circle", "square"):  # the documented folder layout, with a sub-folder per class
        (tmp_path / "images" / name).mkdir(parents=True)
        (tmp_path / "masks" / name).mkdir(parents=True)
    from interpret.toy.train import toy_scene

    for index, name in enumerate(("circle", "square", "circle")):
        scene = toy_scene(70_000 + index, count=1)
        scene.image.save(tmp_path / "images" / name / f"{index}.png")
        Image.fromarray(scene.masks[0].astype(np.uint8) * 255).save(tmp_path / "masks" / name / f"{index}.png")
    samples = list(folder_samples(tmp_path / "images", tmp_path / "masks", "a {}"))
    assert [sample.text for sample in samples] == ["a circle", "a circle", "a square"]
    from interpret.cli import main

    assert main(["faithfulness", "--models", "toy", "--methods", "rollout", "grad-eclip", "--images",
                 str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--steps", "4",
                 "--out", str(tmp_path / "f.csv"), "--plot", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "3 images of" in out and "| rollout |" in out and Image.open(tmp_path / "f.png").size[0] > 200
    with pytest.raises(InterpretError, match="mask of"):
        evaluate_maps(toy, [Sample(PICTURE, "a red circle", np.zeros((3, 3), bool))], ["rollout"])


def test_the_imagenet_s_script_runs_end_to_end_on_its_demo_layout(tmp_path):
    """ImageNet-S's layout and mask encoding (class id in red + 256 x green, 1000 left out), written from toy
    scenes; the toy model stands in for real weights here (the note has a random-init run)."""
    import csv
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "s.csv"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "faithfulness_imagenet_s.py"), "--demo",
                             "--models", "toy", "--methods", "rollout", "grad-eclip", "--limit", "4", "--steps", "4",
                             "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert [row["method"] for row in rows] == ["rollout", "grad-eclip"] and rows[0]["images"] == "4"
    assert "| rollout |" in result.stdout
