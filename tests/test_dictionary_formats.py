"""Dictionaries in the field's formats: SAELens's (written here, read back, and read as SAELens's own code computes,
written out from their saes/*.py; with SAELens installed, loaded by `SAE.load_from_disk` itself), ViT-Prisma's
transcoders; a dictionary for another hook, model or width refused with a message that says which."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from interpret.dictionaries import Dictionary, DictionaryConfig, load_pretrained, save_saelens
from interpret.dictionaries.formats import SAELENS_CONFIG, SAELENS_WEIGHTS
from interpret.errors import InterpretError


def random_dictionary(width: int, kind: str, activation: str, skip: bool = False, features: int = 40,
                      seed: int = 0, **options) -> Dictionary:
    generator = torch.Generator().manual_seed(seed)
    dictionary = Dictionary(DictionaryConfig(width, features, 1, activation, k=5, kind=kind, skip=skip, **options))
    with torch.no_grad():
        for name, parameter in dictionary.named_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            if name == "threshold":
                parameter.abs_()
    return dictionary


def saelens_forward(cfg: dict, state: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, output) of a SAELens dictionary as their code computes them (normalize_activations "none")."""
    architecture = cfg["architecture"]
    sae_in = x - state["b_dec"] * cfg["apply_b_dec_to_input"] if "transcoder" not in architecture else x
    pre = sae_in @ state["W_enc"] + state["b_enc"]
    if architecture == "topk":
        values, indices = pre.topk(cfg["k"], dim=-1, sorted=False)
        codes = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    elif "jumprelu" in architecture:
        codes = pre.relu() * (pre > state["threshold"])
    else:
        codes = pre.relu()
    out = codes @ state["W_dec"] + state["b_dec"]
    if "skip" in architecture:
        out = out + x @ state["W_skip"].T
    return codes, out


@pytest.mark.parametrize("kind, activation, skip, architecture", [
    ("sae", "topk", False, "topk"), ("sae", "relu", False, "standard"), ("sae", "jumprelu", False, "jumprelu"),
    ("transcoder", "relu", False, "transcoder"), ("transcoder", "relu", True, "skip_transcoder"),
    ("transcoder", "jumprelu", False, "jumprelu_transcoder"),
    ("transcoder", "jumprelu", True, "jumprelu_skip_transcoder")])
def test_a_dictionary_written_for_saelens_computes_there_what_it_computes_here(tiny_model, tmp_path, kind,
                                                                               activation, skip, architecture):
    from safetensors.torch import load_file

    width = tiny_model.geometry.width
    dictionary = random_dictionary(width, kind, activation, skip, input_scale=0.6, output_scale=1.7)
    folder = save_saelens(dictionary, tmp_path / "saelens", tiny_model)
    cfg = json.loads((folder / SAELENS_CONFIG).read_text())
    state = load_file(str(folder / SAELENS_WEIGHTS))
    assert cfg["architecture"] == architecture and cfg["d_in"] == width and cfg["d_sae"] == 40
    assert cfg["normalize_activations"] == "none"  # the scales are folded into the weights
    hook = "hook_resid_post" if kind == "sae" else "ln2.hook_normalized"
    assert cfg["metadata"]["hook_name"] == f"blocks.1.{hook}" and cfg["metadata"]["model_name"] == tiny_model.label
    assert (cfg.get("d_out"), cfg["metadata"].get("hook_name_out")) == (
        (width, "blocks.1.hook_mlp_out") if kind == "transcoder" else (None, None))
    x = torch.randn(2, 7, width) * 3
    codes, out = saelens_forward(cfg, state, x)
    torch.testing.assert_close(codes, dictionary.encode(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out, dictionary(x), atol=1e-5, rtol=1e-4)
    loaded = load_pretrained(folder, tiny_model)  # and back
    assert (loaded.config.kind, loaded.config.layer, loaded.config.activation, loaded.config.skip) == (
        kind, 1, activation, skip)
    torch.testing.assert_close(loaded(x), dictionary(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loaded.encode(x), dictionary.encode(x), atol=1e-5, rtol=1e-4)


def test_a_topk_transcoder_goes_to_saelens_as_jumprelu_at_its_typical_threshold(tiny_model, tmp_path):
    """SAELens has no TopK transcoder: the threshold kept in training makes a JumpReLU of about the same L0."""
    from interpret.dictionaries import train_dictionaries

    width = tiny_model.geometry.width
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 64, 2 * width, generator=generator)
    rows[..., width:] = torch.tanh(rows[..., :width] @ torch.randn(width, width, generator=generator))
    (transcoder, _), = train_dictionaries([{1: block[None]} for block in rows], "transcoder", width, [1],
                                          features=96, k=8, batch_size=256, buffer_size=1024, warmup=10,
                                          progress=False).values()
    assert transcoder.config.threshold > 0
    loaded = load_pretrained(save_saelens(transcoder, tmp_path / "tc", tiny_model), tiny_model)
    assert loaded.config.activation == "jumprelu"
    x = rows[:5, :, :width].reshape(-1, width)
    l0 = (loaded.encode(x) > 0).float().sum(-1).mean()
    assert 2 <= float(l0) <= 32  # about TopK's 8 (the threshold is one number for every feature)


@pytest.mark.parametrize("change, message", [
    ({"metadata": {"hook_name": "blocks.1.hook_mlp_out"}}, "reads blocks.1.hook_mlp_out"),
    ({"metadata": {"hook_name": "blocks.1.hook_resid_mid"}}, "reads blocks.1.hook_resid_mid"),
    ({"metadata": {"hook_name": "blocks.9.hook_resid_post"}}, "reads block 9; .* has 3 blocks"),
    ({"d_in": 7}, "7-wide states"),
    ({"metadata": {"hook_name": "blocks.1.hook_resid_post", "model_name": "gpt2-small"}}, "trained on gpt2-small"),
    ({"architecture": "gated"}, "architecture 'gated' is not read here"),
    ({"architecture": "transcoder"}, "is a 'transcoder' but reads blocks.1.hook_resid_post"),
    ({"normalize_activations": "expected_average_only_in"}, "not read here"),
    ({"rescale_acts_by_decoder_norm": True}, "rescales its activations"),
])
def test_a_saelens_dictionary_for_something_else_is_refused_by_what_differs(tiny_model, tmp_path, change, message):
    folder = save_saelens(random_dictionary(tiny_model.geometry.width, "sae", "topk"), tmp_path / "d", tiny_model)
    cfg = json.loads((folder / SAELENS_CONFIG).read_text())
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    (folder / SAELENS_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(InterpretError, match=message):
        load_pretrained(folder, tiny_model)


@settings(max_examples=25, deadline=None)
@given(cfg=st.dictionaries(st.sampled_from(["architecture", "d_in", "d_sae", "d_out", "k", "metadata",
                                            "normalize_activations", "apply_b_dec_to_input"]),
                           st.one_of(st.none(), st.integers(-5, 10 ** 6), st.text(max_size=30),
                                     st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=3))))
def test_a_hostile_saelens_config_is_refused_with_a_message(tiny_model, tmp_path_factory, cfg):
    folder = save_saelens(random_dictionary(tiny_model.geometry.width, "sae", "relu"),
                          tmp_path_factory.mktemp("hostile"), tiny_model)
    (folder / SAELENS_CONFIG).write_text(json.dumps(cfg))
    try:
        load_pretrained(folder, tiny_model)
    except InterpretError:
        pass  # every other exception is a failure


def prisma_transcoder(x, state):
    """ViT-Prisma's Transcoder.forward (normalize_activations "none"), written out from their transcoder.py."""
    codes = F.relu((x - state["b_dec"]) @ state["W_enc"] + state["b_enc"])
    return codes, codes @ state["W_dec"] + state["b_dec_out"] + x @ state["W_skip"].T


def test_a_vit_prisma_transcoder_computes_as_their_code(tiny_model, tmp_path):
    width = tiny_model.geometry.width
    generator = torch.Generator().manual_seed(1)
    state = {name: torch.randn(*shape, generator=generator) * 0.3 for name, shape in (
        ("W_enc", (width, 30)), ("b_enc", (30,)), ("W_dec", (30, width)), ("b_dec", (width,)),
        ("b_dec_out", (width,)), ("W_skip", (width, width)))}
    torch.save(state, tmp_path / "weights.pt")
    (tmp_path / "config.json").write_text(json.dumps({
        "model_name": tiny_model.name, "hook_point": "blocks.2.ln2.hook_normalized", "hook_point_layer": 2,
        "is_transcoder": True, "transcoder_with_skip_connection": True, "out_hook_point_layer": 2,
        "layer_out_subtype": "hook_mlp_out", "d_in": width, "d_out": width, "activation_fn_str": "relu",
        "normalize_activations": "none"}))
    transcoder = load_pretrained(tmp_path, tiny_model)
    assert (transcoder.config.kind, transcoder.config.layer, transcoder.config.skip) == ("transcoder", 2, True)
    x = torch.randn(3, 5, width)
    codes, out = prisma_transcoder(x, state)
    torch.testing.assert_close(transcoder.encode(x), codes, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(transcoder(x), out, atol=1e-5, rtol=1e-4)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "layer_out_subtype": "hook_resid_post"}))
    with pytest.raises(InterpretError, match="writes blocks.2.hook_resid_post"):
        load_pretrained(tmp_path, tiny_model)


def test_saelens_loads_what_is_written_here(tiny_model, tmp_path):
    """With SAELens installed (requirements-formats.txt): its own loader reads a transcoder and an SAE written here
    and computes what they compute here."""
    sae_lens = pytest.importorskip("sae_lens")
    width = tiny_model.geometry.width
    for kind, activation, skip in (("sae", "topk", False), ("transcoder", "relu", True)):
        dictionary = random_dictionary(width, kind, activation, skip, input_scale=0.5, output_scale=2.0)
        folder = save_saelens(dictionary, tmp_path / kind, tiny_model)
        theirs = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
        x = torch.randn(4, width)
        with torch.no_grad():
            torch.testing.assert_close(theirs(x), dictionary(x), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(theirs.encode(x), dictionary.encode(x), atol=1e-5, rtol=1e-4)
