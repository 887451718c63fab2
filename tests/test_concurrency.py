"""Many requests at once: every answer is the one-at-a-time answer (interactions use forward-mode AD, whose
levels PyTorch keeps for the whole process), and a result is cached only when it is valid."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from interpret import InterpretError, load_model
from interpret.interact import interaction_map
from interpret.toy.examples import toy_examples


@pytest.fixture(scope="module")
def toy():
    return load_model("toy")


def test_interactions_from_several_threads_equal_the_one_at_a_time_answers(toy):
    examples = toy_examples()
    # both paths: the closed-form last block (layers -1) and forward-mode AD through several blocks (2, 0)
    jobs = [(examples[i % len(examples)][0], examples[i % len(examples)][1], *((-1, -1) if i % 2 else (2, 0)))
            for i in range(8)]

    def run(job):
        path, caption, image_layer, text_layer = job
        return interaction_map(toy, path, caption, image_layer, text_layer, steps=6, rule="midpoint")

    alone = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(run, jobs * 3))
    for index, result in enumerate(together):
        expected = alone[index % len(jobs)]
        assert torch.allclose(result.scores, expected.scores, rtol=1e-4, atol=1e-6), index
        assert result.residual == pytest.approx(expected.residual, abs=1e-6)
        assert float(result.scores.abs().sum()) > 0


def test_app_handlers_from_several_threads_equal_the_one_at_a_time_answers(tmp_path):
    from interpret.dictionaries import DictionaryConfig, Dictionary, feature_atlas, features_folder
    from interpret.ui import (atlas, common, features, heads, image_neighbours, interactions, models, mutual, neurons,
                              text_neighbours, topic)

    label = common.ModelSpec("toy", None).label
    examples = toy_examples()
    toy = load_model("toy")
    sae = Dictionary(DictionaryConfig(toy.geometry.width, 256, 1, k=8))  # an untrained SAE, for the Features tab
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(0, 0.2)
    for index, (path, _) in enumerate(examples):
        Image.open(path).save(tmp_path / f"{index}.png")
    folder = sae.save(features_folder(toy.index_dir, 1), weights_sha256=toy.weights_hash)
    feature_atlas(toy, sae, tmp_path, progress=False).save(folder)
    calls = [(neurons.run_neuron, (label, 1, 3)), (features.run_feature, (label, 1, 5))]
    for number, (path, caption) in enumerate(examples[:4]):
        calls += [
            (heads.run_heads, (label, path, caption, 5)),
            (topic.run_topic, (label, path, "something red", "all", 0.6, "something blue")),
            (interactions.run_interaction, (label, path, caption, 2, 0, 4, "midpoint", "1", "", 0.6)),
            (image_neighbours.run_image_neighbours, (label, path, -1, number, 4)),
            (text_neighbours.run_text_neighbours, (label, "something red", -1, number, 4)),
            (atlas.run_atlas, (label, 3, number)),
            (neurons.run_neurons, (label, path, caption, -3, 4)),
            (features.run_features, (label, path, caption, 1, 4)),
            (features.run_intervention, (label, path, caption, 1, number, 2.0 * number)),
        ]
    calls += [(models.run_scores, (label,)),
              (mutual.run_mutual, (label, examples[0][0], mutual.TOY_CLASSES, None, "{}", 3))]

    def text_of(outputs):  # an answer's numbers and words (tables, summaries, token scores) and its figures' pixels
        return [item if isinstance(item, (str, list)) else np.asarray(item).tobytes() for item in outputs
                if isinstance(item, (str, list, Image.Image))]

    alone = [text_of(handler(*inputs)) for handler, inputs in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda call: text_of(call[0](*call[1])), calls * 2))
    for index, answer in enumerate(together):
        assert answer == alone[index % len(calls)], calls[index % len(calls)][0].__name__


def test_only_valid_results_are_cached():
    from interpret.ui.common import RecentResults

    cache = RecentResults(max_bytes=10 ** 6)
    made = []

    def make(value):
        made.append(value)
        return value

    assert cache.get("a", lambda: make(1), valid=lambda value: value > 1) == 1
    assert cache.get("a", lambda: make(2), valid=lambda value: value > 1) == 2
    assert cache.get("a", lambda: make(3), valid=lambda value: value > 1) == 2
    assert made == [1, 2]
    with pytest.raises(InterpretError):
        cache.get("b", lambda: (_ for _ in ()).throw(InterpretError("no")))
    assert "b" not in cache


def test_caches_are_bounded_by_bytes():
    from interpret.ui.common import RecentResults

    cache = RecentResults(max_bytes=3 * 4000)
    for key in range(10):
        cache.get(key, lambda: torch.zeros(1000))  # 4,000 bytes each
    assert len(cache) == 3 and cache.bytes <= 3 * 4000 and 9 in cache and 0 not in cache
    cache.get("huge", lambda: torch.zeros(10_000))  # larger than the whole cache: returned, never kept
    assert "huge" not in cache and 9 in cache
