"""Limits: every hostile request gets a message naming the limit, before any work; the checks themselves; the
README's table is the one `limits_table()` makes."""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from interpret import limits
from interpret.errors import InterpretError
from interpret.images import load_image
from interpret.toy.examples import toy_examples
from interpret.ui import (atlas, circuits, common, contrastive, features, heads, image_neighbours, interactions, maps, mutual,
                          neurons, topic)
from tests.conftest import ROOT
from tests.hostile import Upload, hostile_requests, png_header

TOY = common.ModelSpec("toy", None).label
HANDLERS = {
    "heads": heads.run_heads, "head_atlas": atlas.run_atlas, "topic_segmentation": topic.run_topic,
    "contrastive_segmentation": contrastive.run_contrastive, "interaction": interactions.run_interaction,
    "mutual_knowledge": mutual.run_mutual, "image_neighbours": image_neighbours.run_image_neighbours,
    "neurons": neurons.run_neurons, "neuron": neurons.run_neuron, "features": features.run_features,
    "feature": features.run_feature, "feature_intervention": features.run_intervention,
    "circuits": circuits.run_circuits,
}


def in_process(value):
    return str(value.path) if isinstance(value, Upload) else value


@pytest.mark.parametrize("hostile", hostile_requests(Path("/tmp/interpret-hostile"), TOY,
                                                     Path(toy_examples()[0][0])), ids=lambda h: h.name)
def test_hostile_requests_get_their_message(hostile, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    for module, expensive in ((heads, "explain_caption"), (interactions, "interaction_map"),
                              (mutual, "mutual_knowledge"), (maps, "ImageMaps"), (atlas, "atlas_for"),
                              (image_neighbours, "database_for"), (neurons, "explain_neurons"),
                              (neurons, "stored_directions"), (features, "stored_dictionary"), (features, "described"),
                              (features, "explain_features"), (features, "intervened_scores"),
                              (circuits, "attribution_graph")):
        monkeypatch.setattr(module, expensive, no_work)
    with pytest.raises(gr.Error) as refused:
        HANDLERS[hostile.api_name](*(in_process(value) for value in hostile.arguments))
    assert re.search(hostile.message, str(refused.value)), str(refused.value)
    assert "/tmp/" not in str(refused.value)  # no server paths


def test_images_are_checked_on_the_header_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header(7000, 7000))
    with pytest.raises(InterpretError, match="too large .*49 megapixels|too large .*megapixels"):
        load_image(tmp_path / "bomb.png")
    (tmp_path / "wide.png").write_bytes(png_header(12_500, 1_000))
    with pytest.raises(InterpretError, match="too elongated|12,000 pixels a side"):
        load_image(tmp_path / "wide.png")
    big = tmp_path / "big.bin"
    with big.open("wb") as stream:
        stream.truncate(limits.MAX_IMAGE_BYTES + 1)
    with pytest.raises(InterpretError, match="MB file; the limit is"):
        load_image(big)


def test_the_app_shrinks_large_pictures_to_its_working_size(tmp_path):
    Image.new("RGB", (3000, 1500), (10, 200, 10)).save(tmp_path / "large.jpg")
    assert common.picture_of(str(tmp_path / "large.jpg")).size == (limits.WORKING_SIDE, limits.WORKING_SIDE // 2)
    Image.new("RGB", (300, 150)).save(tmp_path / "small.png")
    assert common.picture_of(str(tmp_path / "small.png")).size == (300, 150)


@pytest.mark.parametrize("value, message", [
    (float("nan"), "a finite number, not nan"), (float("inf"), "a finite number, not inf"),
    ("seven", "a number, not 'seven'"), (2.5, "a whole number, not 2.5"), (0, "from 1 to 10, not 0"),
    (11, "from 1 to 10, not 11"), (None, "a number, not None"),
])
def test_check_number_names_the_limit_and_the_value(value, message):
    with pytest.raises(InterpretError, match=f"^Steps must be {message}"):
        limits.check_number(value, "Steps", 1, 10, integer=True)


def test_check_number_returns_the_number():
    assert limits.check_number(3.0, "k", 1, 10, integer=True) == 3
    assert isinstance(limits.check_number("3", "k", integer=True), int)
    assert limits.check_number(0.25, "opacity", 0, 1) == 0.25


@pytest.mark.parametrize("template", ["{0:>50000000}{{}}", "{}{}", "a photo", "{} of {name}", "}{}", "{"])
def test_templates_need_exactly_one_pair_of_braces(template):
    with pytest.raises(InterpretError, match="exactly one"):
        limits.check_template(template)


def test_good_templates_pass():
    assert limits.check_template("a photo of a {}.") == "a photo of a {}."


def test_the_readme_lists_every_limit():
    assert limits.limits_table() in (ROOT / "README.md").read_text()


def test_models_offered_follow_the_allow_list(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("INTERPRET_MODELS", raising=False)
    assert common.ModelSpec("ViT-L-14", None) in common.offered_models()
    monkeypatch.setenv("INTERPRET_HOSTED", "1")
    assert common.ModelSpec("ViT-L-14", None) not in common.offered_models()
    assert common.ModelSpec("ViT-B-32", None) in common.offered_models()
    with pytest.raises(gr.Error, match="not offered here"):
        atlas.run_atlas("ViT-L-14 / random init", 0, 0)
    monkeypatch.setenv("INTERPRET_MODELS", f"{TOY}, ViT-B-32 / openai")
    assert [spec.label for spec in common.offered_models()] == [TOY, "ViT-B-32 / openai"]


def test_messages_do_not_show_server_paths():
    message = (f"The database in {common.ROOT}/indexes/toy is damaged. Rebuild it:  python -m interpret build-index "
               f"--images {common.ROOT}/indexes/toy/images --out {common.ROOT}/indexes/toy; upload /tmp/gradio/abc/x.png.")
    shown = common.public(message)
    assert str(common.ROOT) not in shown and "/tmp" not in shown
    assert "--images indexes/toy/images --out indexes/toy;" in shown and "upload x.png." in shown


def test_the_hostile_list_names_the_app_s_preset():
    from tests.hostile import TOY_CLASSES

    assert TOY_CLASSES == mutual.TOY_CLASSES
