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

import open_clip
import pytest
import torch

from interpret import towers
from interpret.decompose import STREAM_LAYERS, decompose_image
from interpret.interact import interaction_map
from interpret.models import ClipModel, model_from_config
from interpret.mutual import last_layer_keys
from interpret.quantify import ablated_embeddings
from tests.conftest import random_batch, randomise_small_parameters

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
CONFIGS = {
    "open_clip ViT": {
        "class token, LayerScale": {"embed_dim": 24, "text_cfg": TEXT, "vision_cfg": {
            "image_size": [40, 56], "patch_size": 8, "width": 48, "layers": 3, "head_width": 16,
            "ls_init_value": 0.5}},
        "average pool, norm after it (CLIPA)": {"embed_dim": 24, "text_cfg": TEXT, "vision_cfg": {
            "image_size": 48, "patch_size": 8, "width": 48, "layers": 3, "head_width": 12, "no_ln_pre": True,
            "pool_type": "avg", "final_ln_after_pool": True}},
        "attention pooler (CoCa)": {"embed_dim": 24, "text_cfg": {**TEXT, "embed_cls": True, "output_tokens": True},
                                    "multimodal_cfg": {**TEXT, "layers": 1}, "vision_cfg": {
            "image_size": 32, "patch_size": 8, "width": 48, "layers": 3, "head_width": 16, "attentional_pool": True,
            "attn_pooler_heads": 4, "attn_pooler_queries": 5, "output_tokens": True}},
    },
}

TIMM_EVA = {"embed_dim": 24, "text_cfg": TEXT,  # the open_clip tower is replaced by a timm one
            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 48, "head_width": 16, "layers": 1}}
# timm Eva trunks of a few blocks, at EVA-02-B-16's settings otherwise (RoPE, sub-LN, SwiGLU), in open_clip's
# TimmModel as `create_model("EVA02-B-16")` makes it
CONFIGS["timm Eva"] = {
    "EVA-02, class token, 32 px": ("eva02_base_patch16_clip_224", {"global_pool": "token", "num_classes": 24}),
    "EVA-02, average pool, LayerScale": ("eva02_base_patch16_clip_224", {"global_pool": "avg", "init_values": 0.5,
                                                                         "num_classes": 24}),
    "PE-Core, attention pooling": ("vit_pe_core_base_patch16_224", {"global_pool": "map", "num_classes": 24}),
}
# timm ViT trunks: SigLIP 2's (no class token, attention pooling) and a class-token one with LayerScale; their
# embedding is the trunk's width (48), so the text side projects to 48 too
CONFIGS["timm ViT"] = {
    "SigLIP 2, attention pooling": ("vit_base_patch16_siglip_224", {"global_pool": "map", "num_classes": 0}),
    "class token, LayerScale": ("vit_base_patch16_224", {"global_pool": "token", "num_classes": 0,
                                                         "init_values": 0.5}),
}
CASES = [(family, name) for family, configs in CONFIGS.items() for name in configs]


def timm_clip(timm_name: str, settings: dict) -> torch.nn.Module:
    """A CLIP whose image tower is open_clip's TimmModel around a small timm trunk of `timm_name`'s kind."""
    import timm
    from open_clip.timm_model import TimmModel

    embed_dim = settings["num_classes"] or 48
    clip = open_clip.CLIP(**{**TIMM_EVA, "embed_dim": embed_dim})
    visual = TimmModel.__new__(TimmModel)
    torch.nn.Module.__init__(visual)
    visual.trunk = timm.create_model(timm_name, pretrained=False, img_size=32, patch_size=8, embed_dim=48, depth=3,
                                     num_heads=3, **settings)
    visual.head = torch.nn.Sequential()
    visual.image_size = (32, 32)
    clip.visual = visual
    return clip


def model_of(family: str, name: str, seed: int = 0):
    torch.manual_seed(seed)
    config = CONFIGS[family][name]
    if isinstance(config, tuple):
        clip = timm_clip(*config)
        tokenizer = open_clip.get_tokenizer("", context_length=TEXT["context_length"])
        model = ClipModel(clip, open_clip.image_transform(32, is_train=False), tokenizer, f"{family}: {name}", None)
    else:
        model = model_from_config(config, name=f"{family}: {name}")
    model = randomise_small_parameters(model, seed)
    assert type(model.tower).name == family
    return model


def test_every_family_has_configs():
    assert {family.name for family in towers.FAMILIES} == set(CONFIGS)


@pytest.mark.parametrize("family, name", CASES)
def test_parts_add_up_to_the_model_s_embedding(family, name):
    model = model_of(family, name)
    batch = random_batch(model, 2)
    with torch.no_grad():
        reference = model.model.encode_image(batch, normalize=False)
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


def permuted_heads(model, layer: int, order: list[int]):  # noqa: C901
    """A copy of `model` whose block `layer` has its heads in `order` (new head i is old head order[i]): the
    rows of the query, key and value maps and the columns of the output projection (and of a norm between the
    heads and the projection) move together."""
    copied = copy_of(model)
    g = copied.geometry
    rows = torch.cat([torch.arange(h * g.head_dim, (h + 1) * g.head_dim) for h in order])
    with torch.no_grad():
        if hasattr(copied.visual, "trunk"):  # timm: Eva's q, k, v maps, or ViT's fused one
            attention = copied.visual.trunk.blocks[layer].attn
            fused = getattr(attention, "qkv", None)
            parts = [fused] if fused is not None else [attention.q_proj, attention.k_proj, attention.v_proj]
            for projection in parts:
                spans = range(projection.weight.shape[0] // g.width)
                order_rows = torch.cat([rows + span * g.width for span in spans])
                projection.weight.copy_(projection.weight[order_rows])
                if projection.bias is not None:
                    projection.bias.copy_(projection.bias[order_rows])
            attention.proj.weight.copy_(attention.proj.weight[:, rows])
            if isinstance(attention.norm, torch.nn.LayerNorm):
                attention.norm.weight.copy_(attention.norm.weight[rows])
                attention.norm.bias.copy_(attention.norm.bias[rows])
            return copied
        attention = copied.visual.transformer.resblocks[layer].attn
        for part in range(3):  # queries, keys, values
            span = slice(part * g.width, (part + 1) * g.width)
            attention.in_proj_weight[span] = attention.in_proj_weight[span][rows]
            attention.in_proj_bias[span] = attention.in_proj_bias[span][rows]
        attention.out_proj.weight.copy_(attention.out_proj.weight[:, rows])
    return copied


def output_projection(model, layer: int) -> torch.nn.Linear:
    if hasattr(model.visual, "trunk"):
        return model.visual.trunk.blocks[layer].attn.proj
    return model.visual.transformer.resblocks[layer].attn.out_proj


@pytest.mark.parametrize("family, name", CASES)
def test_a_head_s_part_is_its_own(family, name):
    model = model_of(family, name)
    batch = random_batch(model, 2)
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
    batch = random_batch(model, 2)
    g = model.geometry
    removed = [(0, 1), (g.layers - 1, 0)]
    surgery = copy_of(model)
    with torch.no_grad():
        for layer, head in removed:
            output_projection(surgery, layer).weight[:, head * g.head_dim:(head + 1) * g.head_dim] = 0
        expected = surgery.model.encode_image(batch, normalize=False)
    assert torch.allclose(ablated_embeddings(model, batch, removed), expected,
                          atol=1e-5 * float(expected.norm(dim=-1).min()))


@pytest.mark.parametrize("family, name", CASES)
def test_interaction_maps_are_complete(family, name):
    model = model_of(family, name)
    picture = random_batch(model, 1)
    result = interaction_map(model, picture, "a red circle", image_layer=-2, text_layer=-1, steps=40)
    assert result.scores.shape[1:] == model.geometry.grid
    assert abs(result.residual) <= 0.02 * abs(result.explained) + 1e-6


@pytest.mark.parametrize("family, name", CASES)
def test_reverse_mode_pairs_equal_the_forward_tangents(family, name):
    """Where a caption has fewer tokens than the image, the image side is done in reverse mode (one pass per
    caption token): the same numbers as forward mode's one pass per image token."""
    from interpret.interact import _image_tower

    model = model_of(family, name)
    tower = _image_tower(model, random_batch(model, 1), -2)
    others = torch.randn(3, model.geometry.embed_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        forward = others @ tower.tangents(5, "midpoint", fast=False).T
        reverse = tower.paired_with(others, 5, "midpoint")
    assert tower.reverse_pays(3) and reverse.shape == (3, model.geometry.tokens)
    assert torch.allclose(reverse, forward, atol=1e-5 * float(forward.abs().max()))


@pytest.mark.parametrize("family, name", CASES)
def test_mutual_knowledge_keys_are_the_patches(family, name):
    model = model_of(family, name)
    keys = last_layer_keys(model, random_batch(model, 2))
    g = model.geometry
    assert keys.shape == (2, g.grid[0] * g.grid[1], g.width)


def test_a_tower_no_family_reads_is_refused_with_each_family_s_reason():
    from interpret.errors import ModelLoadError

    from open_clip.model import _build_vision_tower

    parallel = _build_vision_tower(24, {"image_size": 32, "patch_size": 8, "width": 48, "layers": 1, "head_width": 16,
                                        "attentional_pool": "parallel", "attn_pooler_queries": 4})
    with pytest.raises(ModelLoadError, match="no model family here can read .*'parallel' or 'cascade'"):
        towers.tower_of(parallel, "CoCa, parallel poolers")


def test_the_readme_has_the_support_table():
    from tests.conftest import ROOT

    assert towers.support_table() in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("family, name", CASES)
def test_every_analysis_runs_on_every_family(family, name, tmp_path):
    """What the tabs call, on the family's small config: head scores, topic and contrastive maps, a bundle (TextSpan
    labels, a database, thumbnails: what the in-app build makes) verified as the app verifies it, the three
    searches, mutual knowledge, and head removal."""
    from interpret.bundles import build_bundle
    from interpret.folders import verify_bundle
    from interpret.decompose import explain_caption
    from interpret.index import ImageIndex, load_head_labels
    from interpret.mutual import mutual_knowledge
    from interpret.segment import ImageMaps
    from interpret.toy.evaluate import toy_descriptors
    from interpret.toy.train import toy_images

    model = model_of(family, name)
    pictures = toy_images(6)
    report = explain_caption(model, pictures[0], "a red circle")
    assert report.heads.shape == (model.geometry.layers, model.geometry.heads)
    assert abs(float(report.heads.sum() + report.mlps.sum()) + report.rest - report.cosine) < 1e-4
    maps = ImageMaps(model, pictures[0])
    assert maps.topic("something red").grid.shape == model.geometry.grid
    assert maps.topic("something red", relative_to=["something blue"]).grid.shape == model.geometry.grid
    folder = tmp_path / "images"
    folder.mkdir()
    for number, picture in enumerate(pictures):
        picture.save(folder / f"{number}.png")
    bundle = build_bundle(model, folder, tmp_path / "bundles", bank="toy", layers=[-1], progress=False)
    verify_bundle(bundle, model)  # what the app does before it serves a bundle (or a visitor's own build)
    atlas = load_head_labels(model, bundle)
    assert len(atlas.labels) == model.geometry.layers * model.geometry.heads
    database = ImageIndex.open(bundle, model)
    assert len(database.image_neighbours(pictures[0], -1, 0, k=3)) == 3
    assert len(database.text_neighbours("something red", -1, 0, k=3)) == 3
    assert database.property_neighbours(pictures[0], atlas.get(-1 % model.geometry.layers, 0).property, k=2,
                                        atlas=atlas)
    result = mutual_knowledge(model, pictures[0], toy_descriptors("grammar"), parts=2)
    assert result.predicted and result.parts.shape == model.geometry.grid
    assert ablated_embeddings(model, pictures[:2], [(0, 0)]).shape == (2, model.geometry.embed_dim)


SIGLIP_TEXT = {"embed_dim": 24, "vision_cfg": CONFIGS["open_clip ViT"]["class token, LayerScale"]["vision_cfg"],
               "text_cfg": {**TEXT, "no_causal_mask": True, "pool_type": "last", "proj_bias": True}}


def test_interaction_maps_read_a_text_tower_without_a_causal_mask():
    """SigLIP's text tower: no causal mask, read at its last position (CLIP's tokenizer stands in for SigLIP's,
    which comes from the hub). Every position, padding included, is a token of the map; the map is complete,
    and the closed form of the last block agrees with the generic path."""
    torch.manual_seed(0)
    model = randomise_small_parameters(model_from_config(SIGLIP_TEXT, name="siglip-like text"))
    assert model.causal_text_tower() is None and model.text_tower() is not None
    picture = random_batch(model, 1)
    with torch.no_grad():
        cosine = float(torch.nn.functional.cosine_similarity(
            model.model.encode_image(picture), model.model.encode_text(model.tokenize("a red circle").tokens)))
    fast = interaction_map(model, picture, "a red circle", image_layer=-1, text_layer=-1, steps=20)
    generic = interaction_map(model, picture, "a red circle", image_layer=-1, text_layer=-1, steps=20, fast=False)
    assert len(fast.tokens) == TEXT["context_length"] and fast.tokens[-1] == "<pad>"
    assert fast.cosine == pytest.approx(cosine, abs=1e-5)
    assert torch.allclose(fast.scores, generic.scores, atol=1e-5 * float(generic.scores.abs().max()))
    deeper = interaction_map(model, picture, "a red circle", image_layer=-2, text_layer=0, steps=40)
    assert abs(deeper.residual) <= 0.02 * abs(deeper.explained) + 1e-6


@pytest.fixture(scope="module")
def hugging_face_tokenizer(tmp_path_factory):
    """A local stand-in for SigLIP's tokenizer (a Hugging Face tokenizer that ends a caption with '</s>' and has
    no start token), loaded by open_clip's HFTokenizer from a folder as it loads SigLIP's from the hub."""
    from open_clip.tokenizer import HFTokenizer
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square", "and", "photo", "of", "the"]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder = tmp_path_factory.mktemp("siglip-like-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    return HFTokenizer(str(folder), context_length=TEXT["context_length"], clean="canonicalize")


def test_a_hugging_face_tokenizer_s_tokens_are_labelled_where_the_model_sees_them(hugging_face_tokenizer):
    torch.manual_seed(0)
    clip = randomise_small_parameters(model_from_config(SIGLIP_TEXT, name="siglip-like text"))
    model = ClipModel(clip.model, clip.preprocess, hugging_face_tokenizer, "siglip-like text", None)
    assert model.token_strings("A red circle.") == ["a", "red", "circle", "</s>"]
    ids = model.tokenize("A red circle.").tokens[0]
    assert ids[:5].tolist() == [3, 4, 6, 1, 0]
    long = model.tokenize(" ".join(["a blue square"] * 8))  # 24 words: 15 fit before '</s>'
    assert long.truncated == [True] and len(long.kept[0].split()) == TEXT["context_length"] - 1
    picture = random_batch(model, 1)
    result = interaction_map(model, picture, "a red circle", image_layer=-1, text_layer=-1, steps=10)
    assert result.tokens[:5] == ["a", "red", "circle", "</s>", "<pad>"] and len(result.tokens) == len(ids)
    with torch.no_grad():
        cosine = float(torch.nn.functional.cosine_similarity(
            model.model.encode_image(picture), model.model.encode_text(model.tokenize("a red circle").tokens)))
    assert result.cosine == pytest.approx(cosine, abs=1e-5)


@pytest.mark.parametrize("legacy_mask", [True, False])
def test_interaction_maps_read_coca_s_text_tower(legacy_mask):
    """CoCa's text tower appends a class token after the whole context and reads it out; no token attends to
    padding (with the released weights' key mask shifted by one place, `correct_cls_mask` off). The map's
    cosine is the model's own, the closed form agrees with the generic path, and the map is complete."""
    model = model_of("open_clip ViT", "attention pooler (CoCa)")
    model.model.text.correct_cls_mask = not legacy_mask
    picture, caption = random_batch(model, 1), "a red circle!"  # '!' is id 0: CoCa's padding id
    with torch.no_grad():
        cosine = float(torch.nn.functional.cosine_similarity(model.model.encode_image(picture),
                                                             model.model.encode_text(model.tokenize(caption).tokens)))
    fast = interaction_map(model, picture, caption, image_layer=-1, text_layer=-1, steps=20)
    generic = interaction_map(model, picture, caption, image_layer=-1, text_layer=-1, steps=20, fast=False)
    assert len(fast.tokens) == TEXT["context_length"] + 1 and fast.tokens[-1] == "<cls>"
    assert fast.cosine == pytest.approx(cosine, abs=1e-5)
    assert torch.allclose(fast.scores, generic.scores, atol=1e-5 * float(generic.scores.abs().max()))
    deeper = interaction_map(model, picture, caption, image_layer=-2, text_layer=0, steps=40)
    assert abs(deeper.residual) <= 0.02 * abs(deeper.explained) + 1e-6


@pytest.mark.parametrize("family, name", CASES)
def test_token_parts_add_up_to_head_parts(family, name):
    model = model_of(family, name)
    batch = random_batch(model, 2)
    spatial, flat = decompose_image(model, batch), decompose_image(model, batch, spatial=False)
    texts = torch.nn.functional.normalize(torch.randn(3, model.geometry.embed_dim), dim=-1)
    scale = float(flat.scores(texts).heads.abs().max())
    assert torch.allclose(spatial.token_scores(texts).sum(dim=3), flat.scores(texts).heads, atol=1e-5 * scale)
    assert torch.allclose(spatial.token_totals(), spatial.heads.sum(dim=(1, 2)),
                          atol=1e-5 * float(spatial.heads.abs().max()))


@pytest.mark.parametrize("family, name", CASES)
def test_every_token_s_parts_add_up_to_the_cosine_score(family, name):
    """The stream's parts at each token (embedding, biases, MLPs) with the heads' parts at the tokens they read and
    what no token holds are the cosine score; each layer's attention where it is written equals its heads' part."""
    model = model_of(family, name)
    batch = random_batch(model, 2)
    parts = decompose_image(model, batch)
    texts = torch.nn.functional.normalize(torch.randn(3, model.geometry.embed_dim), dim=-1)
    streams = parts.stream_scores(texts)  # [B, K, T, M]
    layers = model.geometry.layers
    written = streams[:, STREAM_LAYERS:STREAM_LAYERS + layers].sum(dim=2)  # [B, L, M]
    heads = parts.token_scores(texts).sum(dim=(2, 3))  # [B, L, M]
    scale = float(heads.abs().max())
    assert torch.allclose(written, heads, atol=1e-5 * scale)
    total = (streams.sum(dim=(1, 2)) - written.sum(dim=1) + heads.sum(dim=1)
             + parts.readout_rest @ texts.T / parts.embedding.norm(dim=-1)[:, None])
    cosine = torch.nn.functional.normalize(parts.embedding, dim=-1) @ texts.T
    assert torch.allclose(total, cosine, atol=1e-5)
    assert torch.allclose(cosine, torch.nn.functional.normalize(model.model.encode_image(batch), dim=-1) @ texts.T,
                          atol=1e-5)
