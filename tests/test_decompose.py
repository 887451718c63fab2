"""The decomposition must add back up to the model's own embedding, on real architectures and odd ones."""
import pytest
import torch
import torch.nn.functional as F

from interpret.decompose import decompose_image, explain_caption, normalise_layers
from interpret.errors import InterpretError
from tests.conftest import random_batch


def relative_error(decomposition, model, batch) -> float:
    with torch.no_grad():
        reference = model.model.encode_image(batch)
    return float((decomposition.total() - reference).abs().max() / reference.norm(dim=-1).min())


@pytest.mark.parametrize("fixture", ["vit_b32", "vit_b16", "tiny_model"])
def test_parts_add_up_to_the_embedding(fixture, request):
    model = request.getfixturevalue(fixture)
    batch = random_batch(model, 2)
    decomposition = decompose_image(model, batch)
    assert relative_error(decomposition, model, batch) <= 1e-4
    with torch.no_grad():
        reference = model.model.encode_image(batch)
    assert torch.allclose(decomposition.embedding, reference, atol=1e-4 * float(reference.norm(dim=-1).min()))


@pytest.mark.parametrize("fixture", ["vit_b32", "tiny_model"])
def test_shapes(fixture, request):
    model = request.getfixturevalue(fixture)
    g = model.geometry
    batch = random_batch(model, 2)
    spatial = decompose_image(model, batch)
    assert spatial.heads.shape == (2, g.layers, g.heads, g.tokens, g.embed_dim)
    assert spatial.mlps.shape == (2, g.layers, g.embed_dim)
    assert spatial.rest.shape == (2, g.embed_dim)
    assert spatial.grid == g.grid
    flat = decompose_image(model, batch, spatial=False)
    assert flat.heads.shape == (2, g.layers, g.heads, g.embed_dim)


def test_tiny_model_geometry_is_odd(tiny_model):
    g = tiny_model.geometry
    assert g.grid == (5, 7) and g.heads == 3 and g.layers == 3
    assert tiny_model.visual.transformer.resblocks[0].ls_1.gamma.std() > 0  # LayerScale really present


@pytest.mark.parametrize("fixture", ["vit_b16", "tiny_model"])
def test_spatial_summed_over_tokens_equals_non_spatial(fixture, request):
    model = request.getfixturevalue(fixture)
    batch = random_batch(model, 2)
    spatial = decompose_image(model, batch, spatial=True)
    flat = decompose_image(model, batch, spatial=False)
    scale = float(flat.heads.abs().max())
    assert torch.allclose(spatial.heads.sum(dim=3), flat.heads, atol=1e-5 * scale)
    assert torch.allclose(spatial.head_totals(), flat.heads, atol=1e-5 * scale)


def test_batch_of_three_equals_three_batches_of_one(vit_b32):
    batch = random_batch(vit_b32, 3)
    together = decompose_image(vit_b32, batch)
    for i in range(3):
        alone = decompose_image(vit_b32, batch[i:i + 1])
        scale = float(alone.embedding.norm())
        assert torch.allclose(together.heads[i:i + 1], alone.heads, atol=1e-5 * scale)
        assert torch.allclose(together.mlps[i:i + 1], alone.mlps, atol=1e-5 * scale)
        assert torch.allclose(together.rest[i:i + 1], alone.rest, atol=1e-5 * scale)


@pytest.mark.parametrize("layers", [[-1], [0, 5, 11], [11, 3, 3]])
def test_a_subset_of_layers_still_adds_up(vit_b32, layers):
    batch = random_batch(vit_b32, 1)
    decomposition = decompose_image(vit_b32, batch, layers=layers)
    assert decomposition.layers == normalise_layers(layers, 12)
    assert decomposition.heads.shape[1] == len(set(layers))
    assert relative_error(decomposition, vit_b32, batch) <= 1e-4


def test_subset_heads_equal_the_full_decompositions_heads(vit_b32):
    batch = random_batch(vit_b32, 1)
    full = decompose_image(vit_b32, batch, spatial=False)
    part = decompose_image(vit_b32, batch, layers=[2, 9], spatial=False)
    assert torch.allclose(part.heads, full.heads[:, [2, 9]], atol=1e-6)


def test_bad_layers_are_refused(tiny_model):
    with pytest.raises(InterpretError, match="there is no layer 3"):
        decompose_image(tiny_model, random_batch(tiny_model, 1), layers=[3])
    with pytest.raises(InterpretError, match="No layers"):
        decompose_image(tiny_model, random_batch(tiny_model, 1), layers=[])


@pytest.mark.parametrize("fixture", ["vit_b32", "tiny_model"])
def test_scores_add_up_to_the_cosine(fixture, request):
    model = request.getfixturevalue(fixture)
    batch = random_batch(model, 2)
    texts = model.encode_texts(["a dog", "a red circle", "something else entirely"])
    decomposition = decompose_image(model, batch)
    scores = decomposition.scores(texts)
    with torch.no_grad():
        cosine = F.normalize(model.model.encode_image(batch), dim=-1) @ texts.T
    assert torch.allclose(scores.total(), cosine, atol=1e-5)
    # the factorised scores equal the explicit contributions dotted with the texts
    explicit = decomposition.head_totals() @ texts.T / decomposition.embedding.norm(dim=-1)[:, None, None, None]
    assert torch.allclose(scores.heads, explicit, atol=1e-6)
    tokens = decomposition.token_scores(texts)
    assert torch.allclose(tokens.sum(dim=3), scores.heads, atol=1e-6)


def test_token_scores_need_a_spatial_decomposition(tiny_model):
    flat = decompose_image(tiny_model, random_batch(tiny_model, 1), spatial=False)
    with pytest.raises(ValueError, match="spatial"):
        flat.token_scores(tiny_model.encode_texts("x"))


def test_explain_caption_on_a_photo(vit_b32, photo):
    report = explain_caption(vit_b32, photo, "a dog and a cat")
    assert report.heads.shape == (12, 12) and report.mlps.shape == (12,)
    total = float(report.heads.sum() + report.mlps.sum()) + report.rest
    expected = float(vit_b32.encode_images(photo) @ vit_b32.encode_texts("a dog and a cat").T)
    assert abs(total - report.cosine) < 1e-5 and abs(report.cosine - expected) < 1e-5
    top = report.top_heads(5)
    assert [abs(value) for _, _, value in top] == sorted((abs(value) for _, _, value in top), reverse=True)
    assert abs(top[0][2]) == pytest.approx(float(report.heads.abs().max()))
    assert any(value < 0 for _, _, value in report.top_heads(144))  # signed: heads that lower the score too
    assert report.warnings == []
