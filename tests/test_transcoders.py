"""Transcoders (`interpret.dictionaries`), on every family's small configs and the toys: one forward pass gives every
layer's MLP inputs and outputs; training recovers a planted sparse function; a feature's pre-activation splits
exactly over the parts of the stream; removing a feature edits the stream as its write says; the tower with every
MLP replaced runs each replacement where the MLP was; the shipped toy transcoders predict their MLPs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interpret.dictionaries import (Dictionary, DictionaryConfig, dictionary_inputs, embedding_from, evaluate,
                                    feature_writes, image_features, intervened_scores, mlp_pairs,
                                    pre_activation_parts, replaced_embeddings, stored_dictionary, token_states,
                                    toy_blocks, train_dictionaries)
from interpret.errors import InterpretError
from tests.conftest import random_batch
from tests.test_towers import CASES, model_of


def random_transcoder(width: int, layer: int, features: int = 64, seed: int = 0, **options) -> Dictionary:
    generator = torch.Generator().manual_seed(seed)
    transcoder = Dictionary(DictionaryConfig(width, features, layer, kind="transcoder", **options))
    with torch.no_grad():
        for parameter in transcoder.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return transcoder


@pytest.mark.parametrize("family, name", CASES)
def test_one_pass_gives_every_layer_s_mlp_input_and_output_and_stream(family, name):
    model = model_of(family, name)
    tower = model.tower
    batch = random_batch(model, 2, seed=1)
    layers = list(range(tower.layers))
    pairs = dictionary_inputs(model, model.preprocess_images(batch), "transcoder", layers)
    streams = dictionary_inputs(model, model.preprocess_images(batch), "sae", layers)
    x = tower.embed(model.preprocess_images(batch))
    for layer in layers:  # by hand, block by block
        middle = x + tower.heads_output(layer, tower.attend(layer, *tower.qkv(layer, x)))
        read, written = pairs[layer].chunk(2, dim=-1)
        torch.testing.assert_close(read, tower.mlp_norm(layer)(middle).float())
        torch.testing.assert_close(written, tower.mlp(layer, middle).float(), atol=1e-6, rtol=1e-5)
        x = tower.block(layer, x)[0]
        torch.testing.assert_close(streams[layer], x.float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(streams[layers[-1]], token_states(model, batch, -1))
    read, written = mlp_pairs(model, batch, 1)
    torch.testing.assert_close(torch.cat([read, written], -1), pairs[1])


def test_training_every_layer_reads_each_image_once(monkeypatch, tmp_path):
    """The transcoders of all 4 toy blocks train from one pass: the tower embeds each batch of images once."""
    from interpret.dictionaries import train_dictionaries_of
    from interpret.models import load_model
    from interpret.toy.train import toy_scene

    model = load_model("toy", None, "cpu")
    for number in range(40):
        toy_scene(9_300_000 + number).image.save(tmp_path / f"{number:03d}.png")
    embedded = []
    original = type(model.tower).embed
    monkeypatch.setattr(type(model.tower), "embed", lambda self, batch: embedded.append(len(batch)) or
                        original(self, batch))
    results = train_dictionaries_of(model, "transcoder", [0, 1, 2, 3], images=tmp_path, features=128,
                                    out=tmp_path / "out", progress=False, describe=False, batch_size=8)
    assert sum(embedded) == 40 and sorted(results) == [0, 1, 2, 3]  # 40 images, once each, for 4 transcoders
    for layer, (report, folder) in results.items():
        transcoder, manifest = Dictionary.load(folder)
        assert transcoder.config.kind == "transcoder" and transcoder.config.layer == layer
        assert manifest["report"]["tokens"] == report.tokens == 36 * model.geometry.tokens  # 4 images held out


@pytest.mark.parametrize("activation, skip, seed", [("topk", False, 0), ("topk", True, 1), ("jumprelu", False, 2)])
def test_training_recovers_a_planted_sparse_function(activation, skip, seed):
    """Outputs that a few of 48 directions write where the input reads them past a threshold (an MLP of ReLU units;
    with a skip connection, plus a linear map of the inputs): the transcoder predicts them on other inputs (TopK;
    JumpReLU learns the function's own sparsity, about 3.2 units a row)."""
    generator = torch.Generator().manual_seed(seed)
    width, atoms = 24, 48
    readers = F.normalize(torch.randn(width, atoms, generator=generator), dim=0)
    writers = F.normalize(torch.randn(atoms, width, generator=generator), dim=-1)
    linear = torch.randn(width, width, generator=generator) * 0.3

    def rows(count: int, seed: int) -> torch.Tensor:
        local = torch.Generator().manual_seed(seed)
        x = torch.randn(count, width, generator=local)
        y = (x @ readers - 1.5).relu() * 2 @ writers + 0.2 + (x @ linear if skip else 0)
        return torch.cat([x, y], dim=-1)

    blocks = ({0: rows(512, seed).reshape(8, 64, 2 * width)} for seed in range(1500))
    (transcoder, _), = train_dictionaries(blocks, "transcoder", width, [0], batch_size=256, buffer_size=4096,
                                          features=96, k=8, warmup=50, learning_rate=3e-3, skip=skip,
                                          activation=activation, dead_after=4096, progress=False).values()
    report = evaluate(transcoder, [rows(4096, 10_000)])
    assert report.fvu < 0.05 and report.l0 <= (8 if activation == "topk" else 5), report.line()
    assert transcoder.config.skip == skip and (not skip or float(transcoder.W_skip.detach().abs().mean()) > 0.05)


@pytest.mark.parametrize("family, name", CASES)
def test_a_transcoder_feature_s_pre_activation_splits_exactly_over_heads_neurons_and_biases(family, name):
    model = model_of(family, name)
    tower = model.tower
    layer = tower.layers - 1
    transcoder = random_transcoder(model.geometry.width, layer, input_scale=0.7, output_scale=1.3)
    batch = random_batch(model, 2, seed=5)
    heads, neurons, embedding, rest, pre = pre_activation_parts(model, transcoder, batch, 3)
    read, _ = mlp_pairs(model, batch, layer)
    torch.testing.assert_close(pre, transcoder.pre_activations(transcoder.normalised(read)[0])[..., 3], atol=1e-5,
                               rtol=1e-4)
    assert heads.shape[1] == layer + 1 and neurons.shape[1] == layer  # its own MLP does not write what it reads
    torch.testing.assert_close(heads.sum(dim=(1, 2)) + neurons.sum(dim=(1, 2)) + embedding + rest, pre)
    other = random_transcoder(model.geometry.width, layer, seed=9, input_scale=0.7)  # the parts move with the input
    assert not torch.allclose(pre_activation_parts(model, other, batch, 3)[0], heads)


@pytest.mark.parametrize("family, name", CASES[:1] + CASES[-2:-1])
def test_removing_a_transcoder_feature_takes_its_write_out_of_the_mlp_s_output(family, name):
    model = model_of(family, name)
    tower = model.tower
    layer = 1
    transcoder = random_transcoder(model.geometry.width, layer, k=5, input_scale=0.8, output_scale=2.0)
    batch = random_batch(model, 1, seed=2)
    states, inputs, codes = image_features(model, transcoder, batch)
    torch.testing.assert_close(states, token_states(model, batch, layer))
    feature = int(codes[0].sum(dim=0).argmax())
    write = feature_writes(transcoder, inputs, codes, [feature])[:, :, 0]
    torch.testing.assert_close(write, codes[..., feature, None] * transcoder.W_dec[feature].detach() / 2.0)
    texts = F.normalize(torch.randn(2, model.geometry.embed_dim), dim=-1)
    base, removed = intervened_scores(model, transcoder, batch, texts, [feature])
    x = tower.embed(model.preprocess_images(batch))  # by hand: the MLP of block 1 writes less
    for index in range(tower.layers):
        middle = x + tower.heads_output(index, tower.attend(index, *tower.qkv(index, x)))
        x = middle + tower.mlp(index, middle) - (write.to(middle) if index == layer else 0)
    expected = F.normalize(tower.embedding(x).float(), dim=-1) @ texts.T
    torch.testing.assert_close(removed[0], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(base, F.normalize(embedding_from(model, states, layer), dim=-1) @ texts.T)


class _Exact(Dictionary):
    """A stand-in transcoder that returns what the MLP itself writes (so the replaced tower is the real one)."""

    def __init__(self, model, layer):
        super().__init__(DictionaryConfig(model.geometry.width, 4, layer, kind="transcoder"))
        self.mlp = lambda z: model.tower.mlp_from_input(layer, z)

    def forward(self, x):
        return self.mlp(x)


@pytest.mark.parametrize("family, name", CASES)
def test_the_tower_with_its_mlps_replaced_runs_each_replacement_where_the_mlp_was(family, name):
    model = model_of(family, name)
    batch = random_batch(model, 2, seed=3)
    layers = range(model.tower.layers)
    exact = replaced_embeddings(model, batch, {layer: _Exact(model, layer) for layer in layers})
    torch.testing.assert_close(exact, model.tower.embedding(model.tower.forward(batch)).float(), atol=1e-5,
                               rtol=1e-4)
    zero = random_transcoder(model.geometry.width, 0)
    assert not torch.allclose(replaced_embeddings(model, batch, {0: zero}), exact)
    with pytest.raises(InterpretError, match="cannot stand in for MLP 1"):
        replaced_embeddings(model, batch, {1: zero})


@pytest.mark.parametrize("name", ["toy", "toy-pooled"])
def test_the_toys_ship_a_transcoder_for_every_mlp_that_predicts_it(name):
    """On 60 fresh scenes (seeds no training used): FVU <= 0.10 at every block, and the model with every MLP
    replaced scores its own captions within 0.05 of the real one (benchmarks/toy_transcoders.py: 200 scenes)."""
    from interpret.models import load_model
    from interpret.toy.train import toy_scene

    model = load_model(name, None, "cpu")
    layers = list(range(model.geometry.layers))
    transcoders = {layer: stored_dictionary(model, "transcoder", layer)[0] for layer in layers}
    blocks = list(toy_blocks(model, "transcoder", layers, 60, seed=7_700_000))
    for layer, transcoder in transcoders.items():
        assert transcoder.config.source == "trained here" and transcoder.report["tokens"] >= 1_000_000
        report = evaluate(transcoder, [torch.from_numpy(block[layer]).reshape(-1, 2 * model.geometry.width)
                                       for block in blocks])
        assert report.fvu <= 0.10, (layer, report.line())
    scenes = [toy_scene(7_800_000 + i) for i in range(30)]
    texts = F.normalize(model.encode_texts([scene.captions[0] for scene in scenes]).float(), dim=-1)
    pictures = [scene.image for scene in scenes]
    real = (F.normalize(model.encode_images(pictures).float(), dim=-1) * texts).sum(-1)
    replaced = (F.normalize(replaced_embeddings(model, pictures, transcoders), dim=-1) * texts).sum(-1)
    assert (replaced - real).abs().mean() <= 0.05
