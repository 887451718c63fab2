"""Mutual knowledge: its pieces (contingency information, Sinkhorn matching, prominent patches, k-means, areas),
bad input, a real architecture's shapes, the model table, and the toy world's ground truth on two descriptor
sets."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from interpret import InterpretError, load_model
from interpret.errors import ImageError
from interpret.mutual import (ModelMutual, accuracy_on_auc, boosted_class_texts, class_mutual_knowledge,
                              contingency_information, deletion_area, descriptor_set, evaluate_model, kmeans,
                              load_descriptors, match_descriptors, mi_dynamics, mutual_knowledge, prominent_patches,
                              sinkhorn)
from interpret.toy.evaluate import mutual_truth, toy_descriptors

DESCRIPTORS = {"a dog": ["a furry animal", "four legs"], "a car": ["wheels", "a metal body"],
               "a tree": ["green leaves", "four legs"]}


def test_contingency_information_by_hand():
    assert contingency_information(["red", "circle"], ["blue", "square"]) == 0.0  # nothing shared
    assert contingency_information(["red", "circle"], ["red", "square"]) == 0.0  # one shared: nothing to tell apart
    assert contingency_information(["red", "circle", "x"], ["red", "circle"]) == pytest.approx(1.0)
    assert contingency_information(list("abcd"), list("dcba")) == pytest.approx(2.0)  # log2(4)
    # "a" picked by two vision concepts: knowing the concept tells which one with 0.918 bits
    entropy = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert contingency_information(["a", "a", "b"], ["a", "b"]) == pytest.approx(entropy)
    assert contingency_information([], ["a"]) == 0.0
    assert mi_dynamics([["a"], ["b"], ["c"]], [2, 0, 1], ["a", "b", "c"]) == pytest.approx(
        [math.log2(3), 1.0, 0.0, 0.0])


def test_sinkhorn_balances_and_matching_spreads_descriptors():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.85, 0.2, 0.1]])
    plan = sinkhorn(scores)
    assert torch.allclose(plan.sum(dim=0), torch.ones(3), atol=1e-4)
    texts = F.normalize(torch.eye(4), dim=-1)
    concepts = torch.tensor([[1.0, 0.9, 0.0, 0.0], [1.0, 0.0, 0.9, 0.0]])
    matched = match_descriptors(concepts, texts, per_concept=2, percentile=50)
    assert matched[0][0] == 1 and matched[1][0] == 2  # each concept first gets the descriptor only it is near


@pytest.mark.parametrize("top, left, size", [(2, 3, 3), (0, 0, 2), (4, 1, 2), (1, 2, 4)])
def test_prominent_patches_find_a_distinct_region_anywhere(top, left, size):
    generator = torch.Generator().manual_seed(top * 7 + left)
    keys = torch.randn(1, 16, generator=generator) + 0.1 * torch.randn(8 * 8, 16, generator=generator)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[top:top + size, left:left + size] = True
    keys[region.flatten()] = torch.randn(1, 16, generator=generator) + 0.1 * torch.randn(int(region.sum()), 16,
                                                                                         generator=generator)
    assert torch.equal(prominent_patches(keys, (8, 8)), region.flatten())


def test_kmeans_separates_two_directions():
    points = torch.cat([torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(10, 2, generator=torch.Generator().manual_seed(0)),
                        torch.tensor([0.0, 1.0]) + 0.05 * torch.randn(6, 2, generator=torch.Generator().manual_seed(1))])
    labels = kmeans(points, 2)
    assert set(labels[:10].tolist()) != set(labels[10:].tolist())
    assert len(set(labels[:10].tolist())) == len(set(labels[10:].tolist())) == 1
    assert kmeans(points[:3], 8).max() <= 2  # never more parts than points


def test_deletion_area():
    assert deletion_area([0.8]) == 0.8
    assert deletion_area([1.0, 0.0]) == pytest.approx(0.5)
    assert deletion_area([1.0, 0.5, 0.0]) == pytest.approx(0.5)


def test_on_a_real_architecture(vit_b32, photo):
    result = mutual_knowledge(vit_b32, photo, descriptor_set(DESCRIPTORS), parts=4)
    assert result.parts.shape == (7, 7) and -1 <= int(result.parts.min()) and int(result.parts.max()) < 4
    count = int(result.parts.max()) + 1
    assert result.predicted in DESCRIPTORS and result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert set(result.shared) <= set(result.visual) & set(result.textual)
    assert len(result.part_concepts) == len(result.importance) == count
    assert len(result.deletion) == count + 1 and len(result.insertion) == count + 1
    assert result.deletion[0] == pytest.approx(result.probability, abs=1e-4)
    assert len(result.mi_curve) == count + 1 and result.mi_curve[-1] == 0.0
    assert result.mi_curve[0] == result.mutual_information
    many = class_mutual_knowledge(vit_b32, [photo, photo], DESCRIPTORS, "a dog", parts=3)
    assert many.predicted == "a dog" and len(many.deletion) >= 2


def test_bad_input_gets_clear_errors(tiny_model, tmp_path):
    with pytest.raises(InterpretError, match="at least two classes"):
        descriptor_set({"a dog": ["fur"]})
    with pytest.raises(InterpretError, match="non-empty list"):
        descriptor_set({"a dog": "fur", "a cat": ["whiskers"]})
    with pytest.raises(InterpretError, match="No descriptors for the class"):
        descriptor_set(DESCRIPTORS, classes=["a dog", "a horse"])
    with pytest.raises(InterpretError, match="template"):
        descriptor_set(DESCRIPTORS, template="a photo")
    broken = tmp_path / "d.json"
    broken.write_text("{not json")
    with pytest.raises(InterpretError, match="not a JSON file"):
        load_descriptors(broken)
    with pytest.raises(InterpretError, match="No descriptor file"):
        load_descriptors(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(DESCRIPTORS))
    assert load_descriptors(good, ["a car", "a dog"], "a photo of {}").prompts() == ["a photo of a car",
                                                                                     "a photo of a dog"]
    image = Image.new("RGB", (56, 40), (200, 30, 30))
    with pytest.raises(InterpretError, match="Concepts must be"):
        mutual_knowledge(tiny_model, image, DESCRIPTORS, parts=0)
    with pytest.raises(InterpretError, match="not one of the descriptor set's classes"):
        class_mutual_knowledge(tiny_model, [image], DESCRIPTORS, "a horse")
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"nope")
    with pytest.raises(ImageError):
        mutual_knowledge(tiny_model, bad_image, DESCRIPTORS)


def test_toy_descriptors_come_in_two_forms():
    grammar, phrasings = toy_descriptors("grammar"), toy_descriptors("phrasings")
    assert len(grammar.classes) == len(phrasings.classes) == 24
    assert grammar.descriptors["an orange cross"] == ["something orange", "a cross"]
    assert phrasings.descriptors["an orange cross"] == ["orange", "cross", "something orange", "a cross shape"]
    assert (len(grammar.pool), len(phrasings.pool)) == (10, 20)


@pytest.mark.parametrize("form", ["grammar", "phrasings"])
def test_toy_truth_the_shared_concepts_name_the_colour_and_the_shape(form):
    """Single objects (scenes never trained on nor tuned on): the shared concepts name the object's colour and
    shape in either descriptor set, and the most important concept lies on the object
    (benchmarks/toy_mutual.py has more scenes)."""
    figures = mutual_truth(load_model("toy"), toy_descriptors(form), count=200, seed=97_000)
    assert figures["colour and shape shared"] >= 0.9, figures
    assert figures["top concept on the object"] >= 0.85, figures
    assert figures["accuracy"] >= 0.9, figures


def test_a_model_table_and_the_fit_of_accuracy_on_auc():
    from interpret.toy.evaluate import toy_class_samples

    model = load_model("toy")
    samples = {name: images for name, images in list(toy_class_samples(1).items())[:6]}
    row = evaluate_model(model, samples, toy_descriptors(), per_class=1)
    assert (row.images, row.classes) == (6, 6) and 0 <= row.accuracy <= 1 and row.mutual_information >= 0
    assert set(row.shared) == set(samples)
    assert boosted_class_texts(model, toy_descriptors(), {}).shape == (24, model.geometry.embed_dim)
    rows = [ModelMutual("m", 1, 1, accuracy, 0, auc, 0, 0, {}) for accuracy, auc in ((0.5, 1), (0.6, 2), (0.7, 3))]
    slope, intercept, r = accuracy_on_auc(rows)
    assert (slope, intercept, r) == pytest.approx((0.1, 0.4, 1.0))
    assert accuracy_on_auc(rows[:2]) is None
