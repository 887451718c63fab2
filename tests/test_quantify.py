"""Interpretability scores and head removal: the definitions by hand, the forward-pass ablation against an
independent one (weight surgery on a copy), and the toy model's truth (its high-consistency heads matter)."""
from __future__ import annotations

import copy

import pytest
import torch

from interpret.decompose import decompose_image
from interpret.quantify import (ablated_embeddings, accuracy, consistency, direct_embeddings, head_means,
                                layer_matched_random, pruning_curves, score_heads)
from interpret.textspan import HeadAtlas, HeadLabel


def label(layer, head, tags, prop, confidence=0.5):
    return HeadLabel(layer, head, [f"d{i}" for i in range(len(tags))], list(tags), [0.1] * len(tags), 0.5, prop,
                     confidence)


def test_consistency_and_model_scores_follow_their_definitions():
    labels = {
        (0, 0): label(0, 0, ["colour"] * 5 + ["shape"], "colour", 0.9),      # 5: high
        (0, 1): label(0, 1, ["colour"] * 5, "colour", 0.6),                   # 5: high
        (1, 0): label(1, 0, ["shape"] * 5, "shape", 0.7),                     # 5: high
        (1, 1): label(1, 1, ["shape", "colour", "shape", "size", "shape"], "shape"),  # 3: moderate
        (2, 0): label(2, 0, ["size", "colour", "shape", "colour", "x"], "size"),      # 1: low
        (2, 1): label(2, 1, ["size", "size", "colour", "shape", "x"], "size"),        # 2
    }
    assert consistency(labels[(1, 1)]) == 3 and consistency(labels[(0, 0)], top=6) == 5
    scores = score_heads(HeadAtlas("m", "bank", 5, 10, 100, labels, "w"))
    assert scores.distribution == [0, 1, 1, 1, 0, 3] and scores.heads == 6
    assert scores.high == [(0, 0), (1, 0), (0, 1)]  # by consistency, then label confidence
    assert scores.moderate == [(1, 1)] and scores.low == [(2, 0)]
    assert scores.association == pytest.approx((5 + 5 + 5 + 3 + 1 + 2) / 30)
    assert scores.entanglement == pytest.approx(1 - 2 / 3)  # 3 high heads share 2 properties


def test_a_property_with_fewer_descriptions_than_five_is_judged_out_of_what_the_bank_has():
    """TextSpan picks a description once: with 4 shape texts a shape head has at most 4 shape descriptions."""
    every_shape = label(0, 0, ["shape", "shape", "position", "shape", "shape"], "shape")
    three_of_four = label(0, 1, ["shape", "position", "shape", "position", "shape"], "shape")
    two_of_four = label(0, 2, ["shape", "position", "position", "shape", "colour"], "shape")
    assert [consistency(x, available=4) for x in (every_shape, three_of_four, two_of_four)] == [5, 4, 3]
    assert [consistency(x) for x in (every_shape, three_of_four, two_of_four)] == [4, 3, 2]
    assert consistency(every_shape, available=50) == 4  # a big bank: the plain count
    labels = {(0, 0): every_shape, (0, 1): label(0, 1, ["colour"] * 4 + ["shape"], "colour")}
    sized = score_heads(HeadAtlas("m", "bank", 5, 10, 100, labels, "w", {"shape": 4, "colour": 6}))
    assert sized.by_head == {(0, 0): 5, (0, 1): 4} and sized.high == [(0, 0)]
    unsized = score_heads(HeadAtlas("m", "no such bank", 5, 10, 100, labels, "w"))
    assert unsized.by_head == {(0, 0): 4, (0, 1): 4}  # sizes unknown: the plain count


def test_removing_nothing_changes_nothing(tiny_model):
    images = torch.randn(3, 3, *tiny_model.geometry.image_size, generator=torch.Generator().manual_seed(0))
    reference = tiny_model.model.encode_image(images)
    assert torch.allclose(ablated_embeddings(tiny_model, images, []), reference, atol=1e-5)
    assert torch.allclose(direct_embeddings(tiny_model, images, []), reference, atol=1e-4)


def test_zero_and_mean_ablation_equal_weight_surgery_on_a_copy(tiny_model):
    """Zeroing a head's output is zeroing its columns of the output projection; replacing it by a constant m is
    that plus W_h m in the bias: an independent implementation."""
    images = torch.randn(4, 3, *tiny_model.geometry.image_size, generator=torch.Generator().manual_seed(1))
    heads = [(0, 1), (2, 0), (2, 2)]
    surgery = copy.deepcopy(tiny_model.model)
    head_dim = tiny_model.geometry.head_dim
    constant = torch.randn(tiny_model.geometry.layers, tiny_model.geometry.heads, head_dim)
    with torch.no_grad():
        for layer, head in heads:
            out = surgery.visual.transformer.resblocks[layer].attn.out_proj
            columns = slice(head * head_dim, (head + 1) * head_dim)
            out.bias += out.weight[:, columns] @ constant[layer, head]
            out.weight[:, columns] = 0
    expected = surgery.encode_image(images)
    tokens = tiny_model.geometry.tokens
    means = constant[:, :, None, :].expand(-1, -1, tokens, -1)  # the same constant at every token
    assert torch.allclose(ablated_embeddings(tiny_model, images, heads, means), expected, atol=1e-5)
    with torch.no_grad():
        for layer, head in heads:
            out = surgery.visual.transformer.resblocks[layer].attn.out_proj
            out.bias -= out.weight[:, slice(head * head_dim, (head + 1) * head_dim)] @ constant[layer, head] * 0
    zeroed = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        for layer, head in heads:
            zeroed.visual.transformer.resblocks[layer].attn.out_proj.weight[:, head * head_dim:(head + 1) * head_dim] = 0
    assert torch.allclose(ablated_embeddings(tiny_model, images, heads), zeroed.encode_image(images), atol=1e-5)
    assert head_means(tiny_model, images).shape == (tiny_model.geometry.layers, tiny_model.geometry.heads, tokens,
                                                     head_dim)


def test_direct_removal_takes_out_exactly_the_heads_contributions(tiny_model):
    images = torch.randn(2, 3, *tiny_model.geometry.image_size, generator=torch.Generator().manual_seed(2))
    parts = decompose_image(tiny_model, images, spatial=False)
    removed = direct_embeddings(tiny_model, images, [(1, 0), (2, 2)])
    expected = parts.embedding - parts.head_totals()[:, 1, 0] - parts.head_totals()[:, 2, 2]
    assert torch.allclose(removed, expected, atol=1e-5)


def test_random_heads_are_layer_matched_and_distinct():
    chosen = layer_matched_random([(0, 0), (0, 1), (3, 2)], {(0, 0), (0, 1), (3, 2)}, 8, seed=0)
    assert [layer for layer, _ in chosen] == [0, 0, 3] and len(set(chosen)) == 3
    assert not set(chosen) & {(0, 0), (0, 1), (3, 2)}
    assert accuracy(torch.eye(3), torch.eye(3), [0, 1, 2]) == 1.0


def test_toy_truth_high_consistency_heads_matter_more_than_random_or_low_ones():
    """On the toy model (its head labels from toy scenes and the toy bank), heads labelled colour and heads labelled
    shape reach high consistency, and removing its most consistent heads
    drops 24-way colour x shape accuracy more than layer-matched random heads and than its least consistent
    heads, in both the direct and the total (zero-ablation) effect."""
    from interpret.banks import toy_bank
    from interpret.models import load_model
    from interpret.textspan import describe_heads
    from interpret.toy.evaluate import COLOUR_SHAPE_PAIRS, COLOUR_SHAPE_PROMPTS
    from interpret.toy.train import toy_images, toy_scene

    model = load_model("toy")
    atlas = describe_heads(model, toy_images(400), toy_bank(), progress=False)
    scores = score_heads(atlas)
    assert {atlas.labels[h].property for h in scores.high} >= {"colour", "shape"}  # both reach high consistency
    scenes = [toy_scene(30_000 + i, count=1) for i in range(300)]
    images = [scene.image for scene in scenes]
    labels = [COLOUR_SHAPE_PAIRS.index((s.objects[0].colour, s.objects[0].shape)) for s in scenes]
    reference = [toy_scene(31_000 + i).image for i in range(100)]
    curves = pruning_curves(model, images, labels, model.encode_texts(list(COLOUR_SHAPE_PROMPTS)), scores,
                            counts=[0, 12], reference=reference, seeds=3, effects=("direct", "zero"))
    for effect in ("direct", "zero"):
        high, random_, low = (curves.curves[effect][name][-1] for name in ("high", "random", "low"))
        assert curves.curves[effect]["high"][0] == curves.curves[effect]["low"][0] > 0.8  # nothing removed
        assert high < random_ - 0.03 and high < low - 0.03, (effect, high, random_, low)


def test_the_random_sets_are_as_large_as_the_removed_ones(tiny_model, monkeypatch):
    from interpret import quantify

    labels = {(layer, head): label(layer, head, ["a"] * (head % 6), "a") for layer in range(3) for head in range(3)}
    scores = score_heads(HeadAtlas("m", "b", 5, 10, 10, labels, "w"))
    drawn = []
    real = quantify.layer_matched_random
    monkeypatch.setattr(quantify, "layer_matched_random", lambda *args: drawn.append(real(*args)) or drawn[-1])
    images = torch.randn(2, 3, *tiny_model.geometry.image_size, generator=torch.Generator().manual_seed(3))
    texts = torch.nn.functional.normalize(torch.randn(3, tiny_model.geometry.embed_dim), dim=-1)
    curves = pruning_curves(tiny_model, images, [0, 1], texts, scores, counts=[0, 3], seeds=2, effects=("direct",))
    assert curves.counts == [0, 3] and all(len(chosen) == 3 for chosen in drawn)
    assert all(not set(chosen) & set(scores.ranked[:3]) for chosen in drawn)


def test_head_lists_are_parsed_and_checked():
    from interpret.errors import InterpretError
    from interpret.quantify import parse_head_list

    assert parse_head_list("3.1, 2.*; -1.0", 4, 3) == [(3, 1), (2, 0), (2, 1), (2, 2), (3, 0)]
    assert parse_head_list("", 4, 3) == []
    for bad, message in (("x", "not understood"), ("5.1", "no layer 5"), ("1.9", "no head 9"), ("1." * 200, "limit")):
        with pytest.raises(InterpretError, match=message):
            parse_head_list(bad, 4, 3)
