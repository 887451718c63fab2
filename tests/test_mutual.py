"""Mutual knowledge: its pieces (k-means, mutual information, part removal, deletion AUC), bad input, a real
architecture's shapes, and the toy world's ground truth."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from interpret import InterpretError, load_model
from interpret.errors import ImageError
from interpret.mutual import (binary_mutual_information, deletion_area, descriptor_set, kmeans, load_descriptors,
                              mutual_knowledge, remove_parts)
from interpret.toy.evaluate import mutual_truth, toy_descriptors

DESCRIPTORS = {"a dog": ["a furry animal", "four legs"], "a car": ["wheels", "a metal body"],
               "a tree": ["green leaves", "four legs"]}


def test_mutual_information_by_hand():
    same = torch.tensor([1, 1, 0, 0, 0, 0])
    information, score = binary_mutual_information(same, same)
    entropy = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    assert information == pytest.approx(entropy) and score == pytest.approx(1.0)
    assert binary_mutual_information(torch.tensor([1, 0, 1, 0]), torch.tensor([1, 1, 0, 0])) == (0.0, 0.0)
    assert binary_mutual_information(torch.ones(4), torch.tensor([1, 0, 0, 0]))[1] == 0.0  # a constant side
    opposite = binary_mutual_information(torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 1, 1]))
    assert opposite[0] == pytest.approx(1.0)


def test_kmeans_separates_two_directions():
    points = torch.cat([torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(10, 2, generator=torch.Generator().manual_seed(0)),
                        torch.tensor([0.0, 1.0]) + 0.05 * torch.randn(6, 2, generator=torch.Generator().manual_seed(1))])
    labels = kmeans(points, 2)
    assert set(labels[:10].tolist()) != set(labels[10:].tolist())
    assert len(set(labels[:10].tolist())) == len(set(labels[10:].tolist())) == 1
    assert kmeans(points[:3], 8).max() <= 2  # never more parts than points


def test_deletion_area_and_part_removal(tiny_model):
    assert deletion_area([0.8]) == 0.8
    assert deletion_area([1.0, 0.0]) == pytest.approx(0.5)
    assert deletion_area([1.0, 0.5, 0.0]) == pytest.approx(0.5)
    batch = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    parts = torch.zeros(5, 7, dtype=torch.long)
    parts[1:3, 2:4] = 1
    removed = remove_parts(tiny_model, batch, parts, [1])
    assert torch.equal(removed[..., :8, :], batch[..., :8, :])  # the first patch row is kept
    filled = removed[..., 8:24, 16:32]
    assert torch.allclose(filled, batch.mean(dim=(-2, -1), keepdim=True).expand_as(filled))


def test_on_a_real_architecture(vit_b32, photo):
    result = mutual_knowledge(vit_b32, photo, descriptor_set(DESCRIPTORS), parts=4)
    assert result.parts.shape == (7, 7) and int(result.parts.max()) < 4
    assert result.predicted in DESCRIPTORS and result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert set(result.shared) <= set(result.visual) & set(result.textual)
    assert 0.0 <= result.score <= 1.0 and 0.0 <= result.auc <= 1.0
    assert len(result.deletion) == len(result.deleted_parts) + 1
    assert result.deletion[0] == pytest.approx(result.probability)
    contributions = mutual_knowledge(vit_b32, photo, DESCRIPTORS, parts=4, method="contributions")
    assert torch.equal(contributions.parts, result.parts)  # the parts do not depend on how they are embedded


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
    with pytest.raises(InterpretError, match="Unknown method"):
        mutual_knowledge(tiny_model, image, DESCRIPTORS, method="magic")
    with pytest.raises(InterpretError, match="Parts must be"):
        mutual_knowledge(tiny_model, image, DESCRIPTORS, parts=0)
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"nope")
    with pytest.raises(ImageError):
        mutual_knowledge(tiny_model, bad_image, DESCRIPTORS)


def test_toy_descriptors_follow_the_grammar():
    descriptors = toy_descriptors()
    assert len(descriptors.classes) == 24 and descriptors.descriptors["an orange cross"] == ["something orange",
                                                                                             "a cross"]
    assert len(descriptors.pool) == 10


def test_toy_truth_shared_concepts_and_object_deletion():
    """A single object on a plain background (two parts): the shared concepts name its colour and shape, and
    removing its part lowers the prediction most (40 evaluation scenes; benchmarks/toy_mutual.py has more)."""
    figures = mutual_truth(load_model("toy"), count=40, parts=2)
    assert figures["shared both"] >= 0.9
    assert figures["object part drops most"] >= 0.9
    assert figures["accuracy"] >= 0.9
