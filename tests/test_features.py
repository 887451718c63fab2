"""Sparse-autoencoder features (`interpret.features`): the SAE's two encodings (ours and ViT-Prisma's subtract the
decoder bias, saev's does not) read checkpoints written in their authors' formats exactly, and refuse the ones this app
cannot read with a message; training recovers a planted sparse dictionary; the shuffle buffer gives every token once in
bounded memory; a feature's pre-activation splits exactly over the heads, neurons, embedding layer and biases on every
family; removing a feature in the forward pass is the stream minus its write, run again."""
from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F

from interpret.errors import InterpretError
from interpret.dictionaries import (ActivationBuffer, Dictionary, DictionaryConfig, embedding_from, evaluate,
                                    feature_writes, image_features, intervened_scores, load_pretrained,
                                    pre_activation_parts, token_states, train_sae)
from tests.conftest import random_batch
from tests.test_towers import CASES, model_of


def random_sae(width: int, layer: int, features: int = 64, seed: int = 0, **options) -> Dictionary:
    generator = torch.Generator().manual_seed(seed)
    sae = Dictionary(DictionaryConfig(width, features, layer, **options))
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return sae


def prisma_encoding(x, state, normalisation: str, activation: str, k: int):
    """ViT-Prisma's `encode`, written out from their sae.py: run-time norm, minus b_dec, W_enc, b_enc, activation."""
    if normalisation == "layer_norm":
        x = (x - x.mean(-1, keepdim=True))
        x = x / (x.std(-1, keepdim=True) + 1e-5)
    elif normalisation == "constant_norm_rescale":
        x = x * (x.shape[-1] ** 0.5) / x.norm(dim=-1, keepdim=True)
    pre = (x - state["b_dec"]) @ state["W_enc"] + state["b_enc"]
    if activation == "relu":
        return F.relu(pre)
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))


@pytest.mark.parametrize("normalisation, activation", [("layer_norm", "relu"), ("none", "topk"),
                                                       ("constant_norm_rescale", "relu")])
def test_a_vit_prisma_checkpoint_encodes_as_their_code(tiny_model, tmp_path, normalisation, activation):
    width = tiny_model.geometry.width
    state = {name: torch.randn(shape) * 0.2 for name, shape in
             (("W_enc", (width, 96)), ("b_enc", (96,)), ("W_dec", (96, width)), ("b_dec", (width,)))}
    torch.save(state, tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text(json.dumps({
        "model_name": tiny_model.name, "hook_point": "blocks.1.hook_resid_post", "hook_point_layer": 1,
        "d_in": width, "d_sae": 96, "activation_fn_str": activation, "activation_fn_kwargs": {"k": 8},
        "normalize_activations": normalisation}))
    sae = load_pretrained(tmp_path, tiny_model)
    assert (sae.config.layer, sae.config.source, sae.config.features) == (1, "ViT-Prisma", 96)
    states = token_states(tiny_model, random_batch(tiny_model, 2), 1)
    torch.testing.assert_close(sae.encode(states), prisma_encoding(states, state, normalisation, activation, 8),
                               atol=1e-5, rtol=1e-4)


def write_saev(path, width: int, features: int, layer: int | None, tokens: str = "content"):
    state = {"W_enc": torch.randn(width, features) * 0.2, "b_enc": torch.randn(features) * 0.1,
             "W_dec": torch.randn(features, width) * 0.2, "b_dec": torch.randn(width) * 0.1}
    header = {"schema": 5, "cfg": {"d_model": width, "d_sae": features,
                                   "activation": {"key": "top-k", "top_k": 6}}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.mkdir(parents=True, exist_ok=True)
    (path / "sae.pt").write_bytes(json.dumps(header).encode() + b"\n" + buffer.getvalue())
    if layer is not None:
        (path / "config.json").write_text(json.dumps({"train_data": {"layer": layer, "tokens": tokens}}))
    return state


def test_a_saev_checkpoint_encodes_as_their_code(tiny_model, tmp_path):
    width = tiny_model.geometry.width
    state = write_saev(tmp_path / "run", width, 80, 2)
    sae = load_pretrained(tmp_path / "run", tiny_model)
    assert (sae.config.layer, sae.config.tokens, sae.config.subtract_decoder_bias) == (2, "patches", False)
    x = token_states(tiny_model, random_batch(tiny_model, 2), 2)
    pre = x @ state["W_enc"] + state["b_enc"]  # saev's encode: no b_dec taken away
    values, indices = pre.topk(6, dim=-1)
    torch.testing.assert_close(sae.encode(x), torch.zeros_like(pre).scatter(-1, indices, F.relu(values)),
                               atol=1e-5, rtol=1e-4)
    _, _, codes = image_features(tiny_model, sae, random_batch(tiny_model, 1))
    assert not codes[:, :tiny_model.geometry.prefix].any()  # it reads the patches only


@pytest.mark.parametrize("change, message", [
    ({"hook_point": "blocks.1.hook_mlp_out"}, "reads blocks.1.hook_mlp_out; read here: SAEs"),
    ({"d_in": 7}, "7-wide states"),
    ({"model_name": "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"}, "was trained on open-clip:"),
    ({"cls_token_only": True}, "class token alone"),
    ({"normalize_activations": "expected_average_only_in"}, "not read here"),
])
def test_a_vit_prisma_checkpoint_for_something_else_is_refused_by_what_differs(tiny_model, tmp_path, change, message):
    width = tiny_model.geometry.width
    torch.save({"W_enc": torch.zeros(width, 8), "b_enc": torch.zeros(8), "W_dec": torch.zeros(8, width),
                "b_dec": torch.zeros(width)}, tmp_path / "weights.pt")
    config = {"model_name": tiny_model.name, "hook_point": "blocks.1.hook_resid_post", "hook_point_layer": 1,
              "d_in": width, "activation_fn_str": "relu", **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InterpretError, match=message):
        load_pretrained(tmp_path, tiny_model)


def test_saev_checkpoints_without_a_layer_or_with_pickled_objects_are_refused(tiny_model, tmp_path):
    width = tiny_model.geometry.width
    write_saev(tmp_path / "bare", width, 8, None)
    with pytest.raises(InterpretError, match="does not say its layer"):
        load_pretrained(tmp_path / "bare", tiny_model)
    assert load_pretrained(tmp_path / "bare", tiny_model, layer=1).config.layer == 1
    write_saev(tmp_path / "other", width + 1, 8, 1)
    with pytest.raises(InterpretError, match="wide"):
        load_pretrained(tmp_path / "other", tiny_model)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    buffer = io.BytesIO()
    torch.save({"W_enc": torch.zeros(1), "payload": DictionaryConfig(1, 1, 0)}, buffer)  # a pickled object
    (hostile / "sae.pt").write_bytes(b'{"schema": 5, "cfg": {}}\n' + buffer.getvalue())
    with pytest.raises(InterpretError, match="not a saev checkpoint"):
        load_pretrained(hostile, tiny_model, layer=1)
    with pytest.raises(InterpretError, match="holds no dictionary"):
        load_pretrained(tmp_path, tiny_model)


def test_the_shuffle_buffer_gives_every_token_once_in_bounded_memory():
    blocks = [torch.arange(i * 30, (i + 1) * 30, dtype=torch.float32).reshape(3, 10, 1).expand(3, 10, 4)
              for i in range(20)]  # 600 tokens, each a distinct value
    buffer = ActivationBuffer(iter(blocks), size=64, seed=1)
    seen = torch.cat([batch[:, 0] for batch in buffer.batches(16)])
    assert sorted(seen.tolist()) == list(range(600)) and buffer.buffer.shape == (64, 4)
    assert seen[:100].tolist() != sorted(seen[:100].tolist())  # mixed, not in the stream's order


def test_training_recovers_a_planted_sparse_dictionary():
    generator = torch.Generator().manual_seed(0)
    width, atoms = 24, 48
    dictionary = F.normalize(torch.randn(atoms, width, generator=generator), dim=-1)

    def blocks(count: int, seed: int):
        local = torch.Generator().manual_seed(seed)
        for _ in range(count):
            codes = torch.zeros(64, atoms)
            chosen = torch.randint(atoms, (64, 3), generator=local)
            codes.scatter_(1, chosen, torch.rand(64, 3, generator=local) * 2 + 0.5)
            yield (codes @ dictionary + 0.3).reshape(8, 8, width)

    sae, _ = train_sae(blocks(2000, 1), width, 0, features=96, k=4, batch_size=256, buffer_size=4096, warmup=50,
                       learning_rate=3e-3, progress=False)
    report = evaluate(sae, [block.reshape(-1, width) for block in blocks(20, 2)])
    assert report.explained_variance > 0.9 and report.l0 <= 4
    matched = (F.normalize(sae.W_dec.detach(), dim=-1) @ dictionary.T).max(dim=0).values  # each planted atom's best
    assert (matched > 0.9).float().mean() > 0.8, matched


@pytest.mark.parametrize("family, name", CASES)
@pytest.mark.parametrize("normalisation", ["scale", "layer_norm"])
def test_a_feature_s_pre_activation_splits_exactly_over_heads_neurons_and_biases(family, name, normalisation):
    model = model_of(family, name)
    tower = model.tower
    layer = tower.layers - 2
    sae = random_sae(model.geometry.width, layer, normalisation=normalisation, input_scale=0.7)
    batch = random_batch(model, 2, seed=5)
    heads, neurons, embedding, rest, pre = pre_activation_parts(model, sae, batch, 3)
    states = token_states(model, batch, layer)
    torch.testing.assert_close(pre, sae.pre_activations(sae.normalised(states)[0])[..., 3], atol=1e-5, rtol=1e-4)
    if normalisation == "scale":  # the rest is the biases' part, computed apart
        read = sae.W_enc[:, 3].detach()
        biases = sum((tower.out_bias(i) + tower.mlp_bias(i)).float() @ read for i in range(layer + 1)) * 0.7
        expected = biases + sae.b_enc[3] - sae.b_dec.detach() @ read
        torch.testing.assert_close(rest, expected.detach().expand_as(rest), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(heads.sum(dim=(1, 2)) + neurons.sum(dim=(1, 2)) + embedding + rest, pre)


@pytest.mark.parametrize("family, name", CASES[:1] + CASES[-2:-1])
def test_removing_or_adding_a_feature_runs_the_rest_of_the_tower_on_the_changed_stream(family, name):
    model = model_of(family, name)
    layer = 1
    sae = random_sae(model.geometry.width, layer, k=5)
    batch = random_batch(model, 1, seed=2)
    states, _, codes = image_features(model, sae, batch)
    whole = model.tower.embedding(model.tower.forward(batch)).float()  # the tower in one go
    torch.testing.assert_close(embedding_from(model, states, layer), whole, atol=1e-5, rtol=1e-4)
    texts = F.normalize(torch.randn(2, model.geometry.embed_dim), dim=-1)
    feature = int(codes[0].sum(dim=0).argmax())
    base, removed = intervened_scores(model, sae, batch, texts, [feature])
    by_hand = states - feature_writes(sae, states, codes, [feature])[:, :, 0]
    expected = F.normalize(embedding_from(model, by_hand, layer), dim=-1) @ texts.T
    torch.testing.assert_close(removed[0], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(removed[0], base)
    _, added = intervened_scores(model, sae, batch, texts, [feature], strength=2.0)
    assert added.shape == (1, 1, 2) and not torch.allclose(added[0], base)


def test_an_sae_trained_on_images_whose_last_ones_are_unreadable_holds_out_among_those_read(tmp_path):
    """The held-out images are chosen among what could be read: a folder whose last files (by name) are damaged
    still trains and reports its reconstruction on images of its own."""
    from interpret.dictionaries import HOLD_OUT_EVERY, train_features
    from interpret.models import load_model
    from interpret.toy.train import toy_scene

    model = load_model("toy", None, "cpu")
    for number in range(24):
        toy_scene(9_100_000 + number).image.save(tmp_path / f"a_{number:03d}.png")
    for number in range(4):
        (tmp_path / f"z_{number}.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    report, folder = train_features(model, 1, images=tmp_path, tokens=2_000, features=256, bank="toy",
                                    out=tmp_path / "out", progress=False)
    assert report.tokens >= 1_000 and report.explained_variance > 0.5  # was -254 with the old start (issue 42)
    assert json.loads((folder / "sae.json").read_text())["report"]["features"] == 256
    assert HOLD_OUT_EVERY == 10  # 2 of the 24 readable images held out


def test_token_state_passes_hold_a_bounded_number_of_bytes(tiny_model):
    from interpret.dictionaries import TOKEN_BLOCK_BYTES, images_within

    for per_token in (1, 64, 16 * 768, 10 ** 9):
        count = images_within(tiny_model, per_token)
        assert count >= 1 and (count == 1 or count * tiny_model.geometry.tokens * per_token * 4 <= TOKEN_BLOCK_BYTES)


def test_a_stored_sae_is_replaced_only_when_asked_and_a_poor_one_is_no_model_s_default(tmp_path, monkeypatch):
    from interpret.dictionaries import store
    from interpret.folders import model_folder
    from interpret.models import load_model
    from tests.local_server import tree_digest

    model = load_model("toy", None, "cpu")
    report, folder = store.train_features(model, 2, tokens=3_000, out=tmp_path, progress=False)
    assert report.explained_variance > 0.5
    written = tree_digest(folder)
    with pytest.raises(InterpretError, match="stored in .* already; give another out folder, or replace=True"):
        store.train_features(model, 2, tokens=3_000, out=tmp_path, progress=False)
    assert tree_digest(folder) == written
    own = model_folder(model) / "features" / "layer-02"
    before = tree_digest(own) if own.is_dir() else {}
    monkeypatch.setattr(store, "MIN_EXPLAINED_VARIANCE", 1.01)
    with pytest.raises(InterpretError, match="SAE of block 2 explains .* not stored as toy"):
        store.train_features(model, 2, tokens=3_000, progress=False, replace=True)
    assert (tree_digest(own) if own.is_dir() else {}) == before
