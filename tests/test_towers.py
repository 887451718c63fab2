"""Every registered image-tower family (`towers.FAMILIES`), on small configs of its own architecture with every
norm, bias and LayerScale randomised, keeps the decomposition's invariants:
- the parts add up to the model's own `encode_image`;
- each head's part is that head's and no other's: permuting a block's heads in a copy of the weights leaves the
  embedding unchanged and permutes that layer's head parts the same way;
- removing a head in the forward pass equals removing its columns of the output projection in a copy;
- spatial parts summed over the source tokens equal the per-head parts;
- interaction maps are complete (they add up to what they explain);
- mutual knowledge's keys leave the prefix tokens out.
A new family adds its configs to `CONFIGS`; a family without one fails `test_every_family_has_configs`."""
from __future__ import annotations

import copy

import pytest
import torch

from interpret import towers
from interpret.decompose import decompose_image
from interpret.interact import interaction_map
from interpret.models import ClipModel, model_from_config
from interpret.mutual import last_layer_keys
from interpret.quantify import ablated_embeddings
from tests.conftest import randomise_small_parameters

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
CONFIGS = {
    "open_clip ViT": {
        "class token, LayerScale": {"embed_dim": 24, "text_cfg": TEXT, "vision_cfg": {
            "image_size": [40, 56], "patch_size": 8, "width": 48, "layers": 3, "head_width": 16,
            "ls_init_value": 0.5}},
        "average pool, norm after it (CLIPA)": {"embed_dim": 24, "text_cfg": TEXT, "vision_cfg": {
            "image_size": 48, "patch_size": 8, "width": 48, "layers": 3, "head_width": 12, "no_ln_pre": True,
            "pool_type": "avg", "final_ln_after_pool": True}},
    },
}
CASES = [(family, name) for family, configs in CONFIGS.items() for name in configs]


def model_of(family: str, name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = randomise_small_parameters(model_from_config(CONFIGS[family][name], name=f"{family}: {name}"), seed)
    assert type(model.tower).name == family
    return model


def images(model, count: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, *model.geometry.image_size, generator=torch.Generator().manual_seed(seed))


def test_every_family_has_configs():
    assert {family.name for family in towers.FAMILIES} == set(CONFIGS)


@pytest.mark.parametrize("family, name", CASES)
def test_parts_add_up_to_the_model_s_embedding(family, name):
    model = model_of(family, name)
    batch = images(model)
    with torch.no_grad():
        reference = model.model.encode_image(batch)
    scale = float(reference.norm(dim=-1).min())
    for spatial in (True, False):
        parts = decompose_image(model, batch, spatial=spatial)
        assert torch.allclose(parts.embedding, reference, atol=1e-5 * scale)
        assert float((parts.total() - reference).abs().max()) <= 1e-4 * scale
    spatial, flat = decompose_image(model, batch), decompose_image(model, batch, spatial=False)
    assert torch.allclose(spatial.heads.sum(dim=3), flat.heads, atol=1e-5 * float(flat.heads.abs().max()))


def copy_of(model) -> ClipModel:
    """A copy with weights of its own (to operate on)."""
    return ClipModel(copy.deepcopy(model.model), model.preprocess, model.tokenizer, model.name, None)


def permuted_heads(model, layer: int, order: list[int]):
    """A copy of `model` whose block `layer` has its heads in `order` (new head i is old head order[i])."""
    copied = copy_of(model)
    g = copied.geometry
    rows = torch.cat([torch.arange(h * g.head_dim, (h + 1) * g.head_dim) for h in order])
    attention = copied.visual.transformer.resblocks[layer].attn
    with torch.no_grad():
        for part in range(3):  # queries, keys, values
            span = slice(part * g.width, (part + 1) * g.width)
            attention.in_proj_weight[span] = attention.in_proj_weight[span][rows]
            attention.in_proj_bias[span] = attention.in_proj_bias[span][rows]
        attention.out_proj.weight.copy_(attention.out_proj.weight[:, rows])
    return copied


@pytest.mark.parametrize("family, name", CASES)
def test_a_head_s_part_is_its_own(family, name):
    model = model_of(family, name)
    batch = images(model)
    layer = model.geometry.layers // 2
    order = list(reversed(range(model.geometry.heads)))
    before = decompose_image(model, batch, spatial=False)
    after = decompose_image(permuted_heads(model, layer, order), batch, spatial=False)
    scale = float(before.embedding.norm(dim=-1).min())
    assert torch.allclose(after.embedding, before.embedding, atol=1e-5 * scale)
    assert torch.allclose(after.heads[:, layer], before.heads[:, layer, order], atol=1e-5 * scale)
    others = [index for index in range(model.geometry.layers) if index != layer]
    assert torch.allclose(after.heads[:, others], before.heads[:, others], atol=1e-5 * scale)


@pytest.mark.parametrize("family, name", CASES)
def test_removing_a_head_equals_zeroing_its_columns_of_the_output_projection(family, name):
    model = model_of(family, name)
    batch = images(model)
    g = model.geometry
    removed = [(0, 1), (g.layers - 1, 0)]
    surgery = copy_of(model)
    with torch.no_grad():
        for layer, head in removed:
            out = surgery.visual.transformer.resblocks[layer].attn.out_proj
            out.weight[:, head * g.head_dim:(head + 1) * g.head_dim] = 0
        expected = surgery.model.encode_image(batch)
    assert torch.allclose(ablated_embeddings(model, batch, removed), expected,
                          atol=1e-5 * float(expected.norm(dim=-1).min()))


@pytest.mark.parametrize("family, name", CASES)
def test_interaction_maps_are_complete(family, name):
    model = model_of(family, name)
    picture = images(model, 1)
    result = interaction_map(model, picture, "a red circle", image_layer=-2, text_layer=-1, steps=40)
    assert result.scores.shape[1:] == model.geometry.grid
    assert abs(result.residual) <= 0.02 * abs(result.explained) + 1e-6


@pytest.mark.parametrize("family, name", CASES)
def test_mutual_knowledge_keys_are_the_patches(family, name):
    model = model_of(family, name)
    keys = last_layer_keys(model, images(model, 2))
    g = model.geometry
    assert keys.shape == (2, g.grid[0] * g.grid[1], g.width)


def test_a_tower_no_family_reads_is_refused_with_each_family_s_reason():
    import open_clip

    from interpret.errors import ModelLoadError

    coca = open_clip.create_model("coca_ViT-B-32", pretrained=None)
    with pytest.raises(ModelLoadError, match="no model family here can read .*attention pooler"):
        towers.tower_of(coca.visual, "coca")


def test_the_readme_has_the_support_table():
    from tests.conftest import ROOT

    assert towers.support_table() in (ROOT / "README.md").read_text()
