"""The neurons' second-order effects (`interpret.neurons`) equal a brute-force computation of the paper's definition on
a small config of every family: one neuron's write (found by scaling its unit in the MLP's own forward, forward-mode
autodiff) pushed through each later head's value path with the attention and every norm's statistics fixed, straight
to the readout (its attention, norms and the pooler's MLP fixed too); the per-head shares add up to the effect; the
scores are the effects' parts of the cosine score."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

from interpret.errors import InterpretError
from interpret.neurons import second_order_effects
from tests.conftest import random_batch
from tests.test_towers import CASES, model_of


def tangent(function, primal: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The directional derivative of `function` at `primal` along `direction` (forward mode)."""
    with forward_ad.dual_level():
        return forward_ad.unpack_dual(function(forward_ad.make_dual(primal, direction))).tangent


@contextlib.contextmanager
def statistics_fixed(tower):
    """Every LayerNorm divides by its standard deviation as a constant, softmaxes (the attention poolers') are
    constants, and a pooler's MLP sees the stream as it was: derivatives then follow only the linear paths."""
    layer_norm, softmax = F.layer_norm, torch.softmax

    def fixed_layer_norm(input, shape, weight=None, bias=None, eps=1e-5):
        mean = input.mean(dim=-1, keepdim=True)
        std = torch.sqrt(input.var(dim=-1, unbiased=False, keepdim=True) + eps).detach()
        out = (input - mean) / std
        out = out * weight if weight is not None else out
        return out + bias if bias is not None else out

    F.layer_norm = fixed_layer_norm
    torch.softmax = lambda *args, **kwargs: softmax(*args, **kwargs).detach()
    readout_mlp = getattr(tower, "readout_mlp", None)
    if readout_mlp is not None:
        tower.readout_mlp = lambda out: readout_mlp(out.detach())
    try:
        yield
    finally:
        F.layer_norm, torch.softmax = layer_norm, softmax
        if readout_mlp is not None:
            del tower.readout_mlp


def unit_module(tower, layer: int):
    """The module whose output is block `layer`'s MLP units (after the activation, SwiGLU's gated units)."""
    mlp = tower.blocks[layer].mlp
    return mlp.gelu if hasattr(mlp, "gelu") else mlp.drop1


def brute_force(model, batch: torch.Tensor, layer: int, neuron: int) -> torch.Tensor:
    """`[B, L', H, D]`: neuron `neuron`'s effect through each later head, by the definition."""
    tower = model.tower
    with torch.no_grad(), statistics_fixed(tower):
        x, entering = tower.embed(batch), []
        for index in range(tower.layers):
            entering.append(x)
            x = x + tower.heads_output(index, tower.attend(index, *tower.qkv(index, x)))
            if index == layer:
                after_attention = x
            x = x + tower.mlp(index, x)
        final = x

        def scaled_unit(output_scale):
            def hook(module, inputs, output):
                return output * output_scale
            return hook

        with forward_ad.dual_level():
            one = torch.zeros(tower.mlp_writes(layer).shape[0])
            one[neuron] = 1
            handle = unit_module(tower, layer).register_forward_hook(scaled_unit(
                forward_ad.make_dual(torch.ones_like(one), one)))
            try:
                write = forward_ad.unpack_dual(tower.mlp(layer, after_attention)).tangent  # [B, T, W]
            finally:
                handle.remove()
        shares = []
        for later in range(layer + 1, tower.layers):
            stream = entering[later]
            q, k, v = tower.qkv(later, stream)
            weights = tower.attention_weights(later, q, k)  # the attention, fixed
            values = tangent(lambda s: tower.qkv(later, s)[2], stream, write)
            per_head = []
            for head in range(tower.heads):
                mixed = torch.zeros_like(v)
                mixed[:, head] = weights[:, head] @ values[:, head]
                out = tangent(lambda m: tower.heads_output(later, m), weights @ v, mixed)
                per_head.append(tangent(tower.embedding, final, out))
            shares.append(torch.stack(per_head, dim=1))
        return torch.stack(shares, dim=1)


@pytest.mark.parametrize("family, name", CASES)
def test_effects_equal_the_definition_computed_by_brute_force(family, name):
    model = model_of(family, name)
    batch = random_batch(model, 2, seed=3)
    layer = 0
    effects = second_order_effects(model, batch, layer)
    neurons = [0, 5, effects.neurons - 1]
    shares = effects.head_effects(neurons)  # [B, n, L', H, D]
    for position, neuron in enumerate(neurons):
        expected = brute_force(model, batch, layer, neuron)
        scale = expected.abs().max()
        assert scale > 0
        torch.testing.assert_close(shares[:, position], expected, atol=2e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(shares.sum(dim=(2, 3)), effects.effects[:, neurons], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(effects.effects_of(neurons), effects.effects[:, neurons], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family, name", CASES)
def test_an_mlp_is_its_neurons_writes_plus_its_bias(family, name):
    model = model_of(family, name)
    tower = model.tower
    with torch.no_grad():
        x = tower.embed(random_batch(model, 2, seed=1))
        for layer in range(tower.layers):
            x = x + tower.heads_output(layer, tower.attend(layer, *tower.qkv(layer, x)))
            rebuilt = tower.mlp_neurons(layer, x) @ tower.mlp_writes(layer) + tower.mlp_bias(layer)
            torch.testing.assert_close(rebuilt, tower.mlp(layer, x), atol=1e-5, rtol=1e-4)
            x = x + tower.mlp(layer, x)


@pytest.mark.parametrize("family, name", CASES[:1] + CASES[-2:-1])
def test_scores_are_the_effects_parts_of_the_cosine_score(family, name):
    model = model_of(family, name)
    effects = second_order_effects(model, random_batch(model, 2), -2)
    texts = F.normalize(torch.randn(3, model.geometry.embed_dim), dim=-1)
    expected = effects.effects @ texts.T / effects.embedding.norm(dim=-1)[:, None, None]
    torch.testing.assert_close(effects.scores(texts), expected, atol=1e-6, rtol=1e-4)
    shares = effects.head_scores(texts, [1, 2])
    torch.testing.assert_close(shares.sum(dim=(2, 3)), expected[:, [1, 2]], atol=1e-6, rtol=1e-4)


def test_the_last_mlp_has_no_later_heads(tiny_model):
    with pytest.raises(InterpretError, match="no later heads"):
        second_order_effects(tiny_model, random_batch(tiny_model, 1), -1)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """14 drawn pictures (rectangles of other colours and places) in two folders, and a file that is no image."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pictures")
    generator = torch.Generator().manual_seed(7)
    for number in range(14):
        target = folder / ("more" if number % 3 == 0 else ".") / f"picture{number:02d}.png"
        target.parent.mkdir(exist_ok=True)
        image = Image.new("RGB", (64, 48), tuple(int(v) for v in torch.randint(0, 255, (3,), generator=generator)))
        left, top = (int(v) for v in torch.randint(0, 30, (2,), generator=generator))
        image.paste(tuple(int(v) for v in torch.randint(0, 255, (3,), generator=generator)),
                    (left, top, left + 20, top + 16))
        image.save(target)
    (folder / "broken.png").write_bytes(b"not a picture")
    return folder


def dense_reference(model, folder, layer: int, top: int):
    """The paper's protocol on every effect held at once `[images, N, D]` (as the authors' code stores them)."""
    from interpret.images import list_images, load_image

    paths = [path for path in list_images(folder) if path.name != "broken.png"]
    effects = second_order_effects(model, [load_image(path) for path in paths], layer).effects  # [I, N, D]
    centred = effects - effects.mean(dim=0)
    norms = centred.norm(dim=-1).T  # [N, I]
    best = norms.topk(top, dim=1)
    directions = []
    for neuron in range(effects.shape[1]):
        chosen = centred[best.indices[neuron], neuron]  # [top, D]
        direction = torch.linalg.svd(chosen, full_matrices=False).Vh[0]
        directions.append(direction if (chosen @ direction > 0).sum() > top // 2 else -direction)
    names = [path.relative_to(folder).as_posix() for path in paths]
    return torch.stack(directions), effects.mean(dim=0), best, names


def test_directions_over_a_folder_equal_the_protocol_on_every_effect_held_at_once(tiny_model, pictures):
    from interpret.neurons import neuron_directions

    found = neuron_directions(tiny_model, pictures, 1, top=5, batch_size=3, block_size=4, progress=False)
    directions, mean, best, names = dense_reference(tiny_model, pictures, 1, 5)
    assert sorted(found.names) == sorted(names) and found.count == 14
    order = [found.names.index(name) for name in names]  # the folder is listed in the same order either way
    assert order == list(range(14))
    torch.testing.assert_close(found.mean_effects, mean, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(found.top_norms, best.values, atol=1e-5, rtol=1e-4)
    assert torch.equal(found.top_rows, best.indices)
    torch.testing.assert_close(found.thresholds, best.values[:, -1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(found.directions, directions, atol=1e-4, rtol=1e-3)
    assert ((found.variance > 0) & (found.variance <= 1 + 1e-6)).all()


def test_directions_are_saved_and_loaded_and_refused_for_other_weights(tiny_model, pictures, tmp_path):
    from interpret.neurons import NeuronDirections, neuron_directions, neurons_folder

    found = neuron_directions(tiny_model, pictures, 0, top=3, progress=False)
    folder = found.save(neurons_folder(tmp_path, 0))
    loaded = NeuronDirections.load(folder, tiny_model)
    assert loaded.names == found.names and loaded.layer == 0 and torch.equal(loaded.top_rows, found.top_rows)
    torch.testing.assert_close(loaded.directions, found.directions)
    other = model_of("open_clip ViT", "class token, LayerScale", seed=1)
    with pytest.raises(InterpretError, match="other weights"):
        NeuronDirections.load(folder, other)
    significant = loaded.significant(second_order_effects(tiny_model, random_batch(tiny_model, 2), 0))
    assert significant.shape == (2, found.directions.shape[0]) and significant.dtype == torch.bool
