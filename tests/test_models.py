import time

import pytest
import torch

import interpret
from interpret import models
from interpret.errors import CaptionError, ModelLoadError
from interpret.models import catalogue, load_model, model_from_config, spec_from_label
from tests.conftest import TINY_LAYERSCALE_CONFIG


def test_load_model_is_cached_and_has_geometry():
    first = load_model("ViT-B-32")
    assert load_model("ViT-B-32", None, "cpu") is first
    g = first.geometry
    assert (g.layers, g.heads, g.width, g.head_dim, g.embed_dim) == (12, 12, 768, 64, 512)
    assert g.grid == (7, 7) and g.tokens == 50 and g.image_size == (224, 224) and g.context_length == 77
    assert not first.model.training


def test_random_init_is_the_same_in_every_load():
    first = load_model("ViT-B-32")
    models._load_cached.cache_clear()
    second = load_model("ViT-B-32")
    assert second is not first
    assert torch.equal(first.visual.proj, second.visual.proj)


def test_embeddings_are_normalised(tiny_model, photo):
    images = tiny_model.encode_images([photo, photo])
    texts = tiny_model.encode_texts(["a dog", "a cat", "a bird"])
    assert images.shape == (2, 24) and texts.shape == (3, 24)
    assert torch.allclose(images.norm(dim=-1), torch.ones(2)) and torch.allclose(texts.norm(dim=-1), torch.ones(3))
    batch = tiny_model.preprocess_images(photo)
    assert torch.allclose(tiny_model.encode_images(batch), images[:1], atol=1e-6)


def test_preprocessed_batch_of_the_wrong_size_is_refused(tiny_model):
    with pytest.raises(ValueError, match="preprocessed batch"):
        tiny_model.preprocess_images(torch.zeros(1, 3, 224, 224))


@pytest.mark.parametrize("name, pretrained, message", [
    ("ViT-B-33", None, "Unknown model 'ViT-B-33'. Did you mean ViT-B-32"),
    ("RN50", None, "ResNet"),
    ("convnext_base", None, "timm image tower"),
    ("ViTamin-S", None, "timm image tower \\(vitamin_small_224"),
    ("ViT-B-32", "no-such-tag", "neither a pretrained tag of ViT-B-32 nor a checkpoint file"),
])
def test_bad_model_requests_are_named_in_the_error(name, pretrained, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(name, pretrained)


def test_offline_download_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"Could not download the weights of ViT-B-16 \(openai\).*offline"):
        load_model("ViT-B-16", "openai")
    assert time.monotonic() - started < 30  # no minute of retries (a bound on behaviour, not a benchmark)


def test_local_checkpoint_path(tmp_path):
    source = load_model("ViT-B-32")
    checkpoint = tmp_path / "weights.pt"
    torch.save(source.model.state_dict(), checkpoint)
    loaded = load_model("ViT-B-32", str(checkpoint))
    assert loaded is not source and torch.equal(loaded.visual.proj, source.visual.proj)


def test_catalogue_has_the_six_clip_interpret_models_and_newer_towers():
    import open_clip

    pretrained = {(spec.name, spec.pretrained) for spec in catalogue() if spec.pretrained}
    assert pretrained == {("ViT-B-16", "laion2b_s34b_b88k"), ("ViT-B-16", "openai"),
                          ("ViT-B-32", "datacomp_m_s128m_b4k"), ("ViT-B-32", "openai"),
                          ("ViT-L-14", "laion2b_s32b_b82k"), ("ViT-L-14", "openai"),
                          ("ViT-B-16", "dfn2b"), ("EVA02-B-16", "merged2b_s8b_b131k"),
                          ("ViT-B-16-SigLIP2", "webli"), ("PE-Core-B-16", "meta"),
                          ("coca_ViT-B-32", "laion2b_s13b_b90k")}
    bundled = [spec.label for spec in catalogue() if spec.pretrained is None and "bundled" in spec.label]
    assert bundled == ["toy (bundled)", "toy-pooled (bundled)"]
    for name, tag in pretrained:  # every tag is one open_clip knows
        assert tag in open_clip.list_pretrained_tags_by_model(name)
    for spec in catalogue():
        assert spec_from_label(spec.label) == spec
    with pytest.raises(ModelLoadError, match="Unknown model"):
        spec_from_label("nothing")


@pytest.mark.parametrize("caption", ["", "   ", "\n"])
def test_empty_captions_are_refused(tiny_model, caption):
    with pytest.raises(CaptionError, match="empty"):
        tiny_model.encode_texts(caption)


def test_non_text_caption_is_refused(tiny_model):
    with pytest.raises(CaptionError, match="not text"):
        tiny_model.tokenize([3])


def test_long_captions_are_cut_and_reported(tiny_model):
    long = " ".join(["red"] * 40)  # the tiny model's context is 16 tokens
    encoded = tiny_model.tokenize(["a dog", long])
    assert encoded.truncated == [False, True]
    assert encoded.kept[1].split() == ["red"] * 14
    assert len(encoded.warnings()) == 1 and "cut" in encoded.warnings()[0]
    assert tiny_model.encode_texts(long).shape == (1, 24)
    assert tiny_model.token_strings(long) == ["<start>"] + ["red"] * 14 + ["<end>"]


def test_a_cut_caption_never_ends_in_half_a_character(tiny_model):
    """CLIP's byte-level tokens split a CJK character in two or three; the kept text drops a part at the cut."""
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=25, deadline=None)
    @given(st.text(alphabet="你好世界猫狗红圆🐈", min_size=20, max_size=40))
    def check(caption):
        encoded = tiny_model.tokenize(caption)
        assert "\ufffd" not in encoded.kept[0] and caption.startswith(encoded.kept[0].replace(" ", "")[:1])

    check()


def test_figures_have_a_font_for_chinese_where_one_is_installed():
    from interpret import drawing, render

    if not drawing.CJK_FONTS:
        pytest.skip("no Noto CJK font here (apt-get install fonts-noto-cjk)")
    assert "NotoSansCJK" in drawing.font_for("一只红色的猫 a red cat", 12).path
    assert "DejaVu" in drawing.font_for("a red cat", 12).path
    assert "Noto Sans CJK" in render.plt.rcParams["font.family"][1]  # the command line's matplotlib plots


@pytest.mark.parametrize("fixture", ["tiny_model", "vit_b32"])
def test_text_embeddings_cut_at_the_end_token_are_open_clips(fixture, request):
    model = request.getfixturevalue(fixture)
    encoded = model.tokenize(["a dog", "a photo of a big red car parked by the sea at night", "cat " * 100])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.model.encode_text(encoded.tokens).float(), dim=-1)
    assert model.causal_text_tower() is not None
    assert torch.allclose(model.embed_tokens(encoded), expected, atol=1e-6)


def test_other_text_towers_use_open_clips_own_encoder():
    from interpret.models import model_from_config
    from tests.conftest import TINY_LAYERSCALE_CONFIG

    config = {**TINY_LAYERSCALE_CONFIG, "text_cfg": {**TINY_LAYERSCALE_CONFIG["text_cfg"], "pool_type": "first"}}
    model = model_from_config(config, name="first-token")
    assert model.causal_text_tower() is None
    encoded = model.tokenize(["a dog", "a red car"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.model.encode_text(encoded.tokens).float(), dim=-1)
    assert torch.allclose(model.embed_tokens(encoded), expected, atol=1e-6)


def test_public_api():
    for name in interpret.__all__:
        assert hasattr(interpret, name)


def test_text_embeddings_are_kept_bounded_and_forgotten_when_the_weights_change(monkeypatch):
    from interpret.models import KeptByBytes

    model = model_from_config(TINY_LAYERSCALE_CONFIG, name="cache-test")
    texts = [f"a {colour} {shape}" for colour in ("red", "green", "blue") for shape in ("disc", "box")]
    first = model.encode_texts(texts)
    runs = []
    embed_batch = model._embed_batch
    monkeypatch.setattr(model, "_embed_batch", lambda tokens: runs.append(len(tokens)) or embed_batch(tokens))
    again = model.encode_texts([*reversed(texts), "a red disc", "a new one"])
    assert runs == [1]  # only the caption not seen before went through the tower
    assert torch.equal(again[:len(texts)], first.flip(0)) and torch.equal(again[len(texts)], first[0])

    with torch.no_grad():
        model.model.text_projection.mul_(2.0)  # the tower changes: every kept embedding is stale
    runs.clear()
    model.encode_texts(texts)
    assert runs == [len(texts)]

    cache = KeptByBytes(size=3_000)
    embeddings = torch.randn(10, 128)  # 512 bytes each, and a key of 8
    cache.keep([bytes([i]) * 8 for i in range(10)], list(embeddings), version=1)
    assert cache.bytes <= 3_000 and len(cache) == 5
    found = cache.lookup([bytes([i]) * 8 for i in range(10)], version=1)
    assert [f is None for f in found] == [True] * 5 + [False] * 5  # the least recently kept went first
    assert torch.equal(found[9], embeddings[9])
    assert cache.lookup([bytes([9]) * 8], version=2) == [None]  # another version: nothing kept


def test_kept_text_embeddings_are_the_towers(tiny_model):
    texts = ["a dog", "a photo of a big red car parked by the sea at night"]
    tiny_model.encode_texts(texts[:1])  # kept from a batch of its own
    encoded = tiny_model.tokenize(texts)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(tiny_model.model.encode_text(encoded.tokens).float(), dim=-1)
    assert torch.allclose(tiny_model.embed_tokens(encoded), expected, atol=1e-6)


def test_tokenised_captions_are_kept_with_their_cuts(monkeypatch):
    model = model_from_config(TINY_LAYERSCALE_CONFIG, name="token-cache-test")
    long = "a photo of " + "a very big red car " * 10
    first = model.tokenize(["a dog", long])
    calls = []
    tokenizer = model.tokenizer
    monkeypatch.setattr(model, "tokenizer", lambda texts: calls.append(list(texts)) or tokenizer(texts))
    again = model.tokenize([long, "a cat", "a dog", "a cat"])
    assert calls == [["a cat"]]  # once, however many times it is asked for
    assert torch.equal(again.tokens[0], first.tokens[1]) and torch.equal(again.tokens[2], first.tokens[0])
    assert torch.equal(again.tokens[1], tokenizer(["a cat"])[0])
    assert again.truncated == [True, False, False, False] and again.kept[0] == first.kept[1] != long
