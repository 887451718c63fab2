"""Attribution graphs (`interpret.circuits`): exact on every family's small configs (each feature's pre-activation
is the sum of its incoming edges and its bias, the score the sum of the edges into it and its bias, the bias
computed on its own from the replacement model with every node at zero); the influence, pruning and scores as
circuit-tracer defines them, checked by hand on a small graph; the JSON in circuit-tracer's schema."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from interpret.circuits import AttributionGraph, Node, attribution_graph, prune, to_json
from tests.conftest import random_batch
from tests.test_towers import CASES, model_of
from tests.test_transcoders import random_transcoder


def transcoders_of(model, skip_layer: int | None = None, **options) -> dict:
    """A random transcoder (TopK k = 4) for every MLP but `skip_layer` (that one stays all error)."""
    return {layer: random_transcoder(model.geometry.width, layer, features=48, seed=layer, k=4, **options)
            for layer in range(model.tower.layers) if layer != skip_layer}


@pytest.mark.parametrize("family, name", CASES)
def test_every_target_is_the_sum_of_its_edges_and_its_bias(family, name):
    model = model_of(family, name)
    picture = random_batch(model, 1, seed=4)[0]
    transcoders = transcoders_of(model, skip_layer=1, input_scale=0.7, output_scale=1.6)
    graph = attribution_graph(model, picture, "a photo of a cat", transcoders=transcoders, max_feature_nodes=None)
    features = graph.kind_slice("feature")
    targets = list(range(features.start, features.stop)) + [graph.score_index]
    assert len(targets) > 10
    total = graph.adjacency[targets].sum(dim=1) + graph.biases[targets]
    torch.testing.assert_close(total, graph.values[targets], atol=2e-4, rtol=1e-4)
    text = model.encode_texts(["a photo of a cat"])[0].float()
    with torch.no_grad():
        real = float(F.normalize(model.tower.embedding(model.tower.forward(picture[None])).float(), dim=-1)[0] @ text)
    assert graph.score == pytest.approx(real, abs=1e-5)
    errors = graph.kind_slice("error")
    tokens = len(graph.tokens)
    pooler_mlp = model.tower.readout_mlp_part(model.tower.forward(picture[None])) is not None  # one more error
    assert errors.stop - errors.start == model.tower.layers * tokens + pooler_mlp
    assert graph.adjacency[:, errors.start + tokens:errors.start + 2 * tokens].abs().sum() > 0  # MLP 1: all error


@pytest.mark.parametrize("family, name", CASES[:1] + CASES[-1:])
def test_a_contrast_and_a_skip_connection_keep_it_exact(family, name):
    model = model_of(family, name)
    picture = random_batch(model, 1, seed=6)[0]
    graph = attribution_graph(model, picture, "a dog", contrast="a cat", transcoders=transcoders_of(
        model, skip=True), max_feature_nodes=None)
    targets = list(range(graph.kind_slice("feature").stop)) + [graph.score_index]
    torch.testing.assert_close(graph.adjacency[targets].sum(dim=1) + graph.biases[targets], graph.values[targets],
                               atol=2e-4, rtol=1e-4)
    texts = model.encode_texts(["a dog", "a cat"]).float()
    unit = F.normalize(model.tower.embedding(model.tower.forward(picture[None])).float(), dim=-1)[0]
    assert graph.score == pytest.approx(float(unit @ (texts[0] - texts[1])), abs=1e-5)


def test_the_features_kept_are_those_of_largest_effect_and_edges_stay_exact_among_them():
    model = model_of(*CASES[0])
    picture = random_batch(model, 1, seed=7)[0]
    transcoders = transcoders_of(model)
    every = attribution_graph(model, picture, "a cat", transcoders=transcoders, max_feature_nodes=None)
    some = attribution_graph(model, picture, "a cat", transcoders=transcoders, max_feature_nodes=20)
    assert len(some.nodes) == len(every.nodes) - (every.features_active - 20)
    assert some.features_active == every.features_active
    kept = [(n.layer, n.token, n.feature) for n in some.nodes if n.kind == "feature"]
    index = {(n.layer, n.token, n.feature): i for i, n in enumerate(every.nodes) if n.kind == "feature"}
    rows = [index[key] for key in kept]  # in the same order (by layer, token, feature)
    assert rows == sorted(rows)
    torch.testing.assert_close(some.adjacency[some.kind_slice("feature"), some.kind_slice("embedding")],
                               every.adjacency[rows][:, every.kind_slice("embedding")])
    effects = every.adjacency[every.score_index, every.kind_slice("feature")].abs()
    assert effects[[r - every.kind_slice("feature").start for r in rows]].mean() >= effects.mean()


def hand_graph() -> AttributionGraph:
    """score <- feature (1), score <- error (1), feature <- embedding (1)."""
    nodes = [Node("feature", 0, 0, 3, 1.0), Node("error", 0, 0), Node("embedding", -1, 0), Node("score", 1, 0)]
    adjacency = torch.zeros(4, 4)
    adjacency[3, 0], adjacency[3, 1], adjacency[0, 2] = 1.0, -1.0, 2.0
    return AttributionGraph(nodes, adjacency, torch.zeros(4), torch.zeros(4), ["class"], "a", None, 0.0, [0], 1)


def test_influence_pruning_and_scores_are_circuit_tracer_s():
    graph = prune(hand_graph(), node_threshold=1.0, edge_threshold=1.0)
    # influence on the score: feature 0.5, error 0.5, embedding 0.5 (through the feature)
    assert graph.scores["replacement"] == pytest.approx(0.5)
    # completeness: rows' non-error shares (score 0.5, others 1) weighted by influence + the score's own weight
    assert graph.scores["completeness"] == pytest.approx((0.5 * 1 + 1 * 0.5 + 1 * 0.5 + 1 * 0.5) / 2.5)
    assert graph.node_mask.all()
    tight = prune(hand_graph(), node_threshold=0.3, edge_threshold=0.5)
    assert tight.node_mask[2] and tight.node_mask[3]  # embeddings and the score always stay


def test_the_graph_exports_in_circuit_tracer_s_schema_with_patches_and_the_picture():
    from interpret.models import load_model
    from interpret.toy.examples import toy_examples

    model = load_model("toy", None, "cpu")
    path, caption = toy_examples()[0]
    graph = attribution_graph(model, path, "something blue", max_feature_nodes=200)
    exported = json.loads(json.dumps(to_json(graph, model)))
    assert set(exported) == {"metadata", "qParams", "nodes", "links"}
    ids = {node["node_id"] for node in exported["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in exported["links"])
    kinds = {node["feature_type"] for node in exported["nodes"]}
    assert {"embedding", "logit"} <= kinds and "cross layer transcoder" in kinds
    patches = [node["patch"] for node in exported["nodes"] if node["feature_type"] == "embedding"]
    assert patches[0] is None and [0, 0] in patches  # the class token, then the grid
    assert exported["metadata"]["image"].startswith("data:image/png;base64,")
    scores = exported["metadata"]["scores"]
    assert 0 < scores["replacement"] <= 1 and 0 < scores["completeness"] <= 1
