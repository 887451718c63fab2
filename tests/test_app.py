"""The app's handlers: results for good input, a readable gr.Error for bad input, and the app keeps serving."""
from pathlib import Path

import gradio as gr
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from interpret import ui
from tests.markdown import shown
from interpret.models import ModelSpec
from interpret.toy.examples import toy_examples
from interpret.ui import (atlas, common, contrastive, heads, image_neighbours, interactions, maps, mutual, neighbours,
                          property_neighbours, text_neighbours, topic)

RANDOM_B32 = ModelSpec("ViT-B-32", None).label
ROOT_EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


@pytest.fixture(autouse=True)
def no_matplotlib_in_requests(monkeypatch):
    """Every figure a handler returns is drawn with numpy and PIL: matplotlib holds the GIL for a tenth of a
    second a figure, which made every request wait on every other under load."""
    import matplotlib.figure

    def refuse(*args, **kwargs):
        raise AssertionError("a handler drew a figure with matplotlib")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", refuse)
    monkeypatch.setattr(matplotlib.figure.Figure, "draw", refuse)


def test_heads_handler_returns_grid_table_and_summary(photo):
    grid, rows, summary = heads.run_heads(RANDOM_B32, str(photo), "a dog and a cat", 7)
    assert isinstance(grid, Image.Image) and grid.size[0] > 200
    assert len(rows) == 7 and [row[0] for row in rows] == list(range(1, 8))
    assert "Cosine score" in summary


@pytest.mark.parametrize("image, caption, message", [
    (None, "a dog", "Upload an image first"),
    ("PHOTO", "", "caption is empty"),
    ("TEXTFILE", "a dog", "is not an image"),
    ("TINY", "a dog", "too small"),
])
def test_bad_inputs_give_clear_messages(photo, tmp_path, image, caption, message):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    path = {"PHOTO": str(photo), "TEXTFILE": str(text_file), "TINY": str(tiny), None: None}[image]
    with pytest.raises(gr.Error, match=message):
        heads.run_heads(RANDOM_B32, path, caption, 5)


def test_unknown_model_label(photo):
    with pytest.raises(gr.Error, match="Unknown model"):
        heads.run_heads("ViT-Z / nothing", str(photo), "a dog", 5)


def test_long_caption_is_cut_and_said(photo):
    _, _, summary = heads.run_heads(RANDOM_B32, str(photo), "dog " * 100, 3)
    assert "was longer than the model's context" in shown(summary)


def test_unexpected_failures_are_reported_briefly(monkeypatch, photo):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(heads, "explain_caption", broken)
    with pytest.raises(gr.Error, match="Something went wrong .*boom.*still running"):
        heads.run_heads(RANDOM_B32, str(photo), "a dog", 5)


def test_offline_default_falls_back_with_a_note(monkeypatch):
    monkeypatch.delenv("INTERPRET_DEFAULT_MODEL", raising=False)
    monkeypatch.setattr(common, "ONLINE_DEFAULT", ModelSpec("ViT-B-32", "no-such-tag"))
    label, note = common.choose_default_model()
    assert label in [spec.label for spec in common.OFFLINE_DEFAULTS]
    assert "instead" in note


def test_offline_default_is_the_toy_model_when_bundled(monkeypatch):
    monkeypatch.delenv("INTERPRET_DEFAULT_MODEL", raising=False)
    monkeypatch.setattr(common, "ONLINE_DEFAULT", ModelSpec("ViT-B-32", "no-such-tag"))
    label, _ = common.choose_default_model()
    assert label == ModelSpec("toy", None).label


def test_the_remove_heads_example_fits_the_model_in_use():
    """The label's example names heads the model has: '3.4, 2.*' on the toy model (4 x 8), not 11.4."""
    assert heads.remove_label(ModelSpec("toy", None).label)["label"] == "Remove heads (optional: 3.4, 2.*)"
    assert heads.remove_label(RANDOM_B32)["label"] == "Remove heads (optional: 11.6, 10.*)"
    grid, rows, summary = heads.run_heads(ModelSpec("toy", None).label, str(ROOT_EXAMPLES / "toy-1001.png"),
                                          "a blue circle", 5, "3.4, 2.*")
    assert "Without heads 3.4, 2.* (9 heads)" in shown(summary)


def test_toy_examples_run_on_the_toy_model():
    for path, caption in toy_examples()[:2]:
        grid, rows, summary = heads.run_heads(ModelSpec("toy", None).label, path, caption, 5)
        assert len(rows) == 5 and "Cosine score" in summary


def test_app_builds_with_named_endpoints():
    demo = ui.build_app(RANDOM_B32, "")
    names = {dependency.get("api_name") for dependency in demo.config["dependencies"]}
    assert {"heads", "model_info"} <= names


def test_atlas_on_the_toy_model_builds_its_labels():
    summary, rows, picture = atlas.run_atlas(ModelSpec("toy", None).label, 3, 2)
    assert "Head 3.2" in summary and len(rows) == 20 and picture.size[0] > 200
    assert all(row[2] in {"colour", "shape", "size", "position"} for row in rows)


def test_atlas_without_labels_says_how_to_build_them():
    with pytest.raises(gr.Error, match="describe-heads --model ViT-B-32 --images.*the Build a database tab"):
        atlas.run_atlas(RANDOM_B32, 0, 0)


def test_atlas_out_of_range_head():
    with pytest.raises(gr.Error, match="heads 0..7"):
        atlas.run_atlas(ModelSpec("toy", None).label, 0, 8)


TOY = ModelSpec("toy", None).label


def test_property_neighbours_on_the_toy_model_build_its_database_and_share_the_colour():
    from interpret.toy.examples import EXAMPLE_SEEDS, example_path
    from interpret.toy.world import generate

    seed = EXAMPLE_SEEDS[0]
    items, summary = property_neighbours.run_property_neighbours(TOY, str(example_path(seed)), "colour", 8)
    assert len(items) == 8 and "heads labelled so" in summary and "of 600 images" in summary
    path, caption = items[0]
    assert caption.split(" · ")[1].startswith("scene-") and float(caption.split(" · ")[0]) > 0.5
    colours = {obj.colour for obj in generate(seed).objects}
    database_scenes = [int(item[1].split("scene-")[1].split(".")[0]) for item in items]
    from interpret.toy.train import toy_scene

    shared = [bool(colours & {obj.colour for obj in toy_scene(s).objects}) for s in database_scenes]
    assert sum(shared) >= 6


def test_image_and_text_neighbours_per_head():
    from interpret.toy.examples import toy_examples

    path, _ = toy_examples()[1]
    items, summary = image_neighbours.run_image_neighbours(TOY, path, -1, 3, 5)
    assert len(items) == 5 and "Head 3.3" in summary
    items, summary = text_neighbours.run_text_neighbours(TOY, "something red", 3, 6, 4)
    assert len(items) == 4 and "'something red'" in summary
    with pytest.raises(gr.Error, match="Type a text to search"):
        text_neighbours.run_text_neighbours(TOY, "  ", 3, 6, 4)
    with pytest.raises(gr.Error, match=r"layers 0..3 \(or -4..-1\); there is no layer 4"):
        image_neighbours.run_image_neighbours(TOY, path, 4, 0, 4)
    with pytest.raises(gr.Error, match="heads 0..7; there is no head 8"):
        text_neighbours.run_text_neighbours(TOY, "something red", -1, 8, 4)


def test_neighbours_without_a_database_say_how_to_build_one(photo):
    with pytest.raises(gr.Error, match="No image database for .*python -m interpret build-index --model ViT-B-32"):
        image_neighbours.run_image_neighbours(RANDOM_B32, str(photo), -1, 0, 4)


def test_a_neighbour_file_missing_at_display_time_is_shown_as_such(tmp_path):
    from pathlib import Path
    from types import SimpleNamespace

    from interpret.index import Neighbour

    present = tmp_path / "here.png"
    Image.new("RGB", (20, 20)).save(present)
    results = [Neighbour(present, 0.9), Neighbour(Path(tmp_path / "gone.png"), 0.8)]
    items, note = neighbours.gallery(results, SimpleNamespace(count=2, folder=tmp_path / "db", root=tmp_path), "db")
    assert items[0][0].size == (20, 20) and items[0][1] == "+0.900 · here.png"
    assert isinstance(items[1][0], Image.Image) and "file missing" in items[1][1]
    assert "no longer where the database saw them (gone.png)" in shown(note)
    thumbnail = tmp_path / "db" / "thumbnails" / "gone.png.webp"  # a bundle's thumbnail stands in for the image
    thumbnail.parent.mkdir(parents=True)
    Image.new("RGB", (16, 12), (200, 10, 10)).save(thumbnail)
    items, note = neighbours.gallery(results, SimpleNamespace(count=2, folder=tmp_path / "db", root=tmp_path), "db")
    assert items[1][0].size == (16, 12) and "missing" not in items[1][1] and "no longer" not in note


@given(st.text(min_size=1, max_size=300), st.integers(8, 60))
@settings(max_examples=60, deadline=None)
def test_a_name_cut_in_the_middle_keeps_its_start_and_its_end(name, width):
    cut = neighbours.middle_cut(name, width)
    assert len(cut) == min(len(name), width)
    if len(name) > width:
        assert "…" in cut and name.startswith(cut.split("…")[0]) and name.endswith(cut.rsplit("…")[-1])
        assert len(cut.rsplit("…")[-1]) >= (width - 1) // 2  # the end, where a collection's names differ
    else:
        assert cut == name


def test_a_zip_members_shown_name_has_no_control_or_format_characters():
    from interpret.archives import shown_name

    assert shown_name("photos/\u202egnp.cat\x00.png") == "photos/gnp.cat.png"
    assert shown_name("\u200b") == "image"


def test_topic_and_contrastive_maps_reuse_one_decomposition(monkeypatch):
    from interpret.toy.examples import toy_examples

    built = []
    real = maps.ImageMaps

    def counting(*args, **kwargs):
        built.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(maps, "ImageMaps", counting)
    path, _ = toy_examples()[3]
    picture, summary = topic.run_topic(TOY, path, "something red", "all", 0.5)
    assert isinstance(picture, Image.Image) and "8x8 grid" in summary and "all parts" in summary
    picture, summary = topic.run_topic(TOY, path, "a circle", "3.2", 0.9)
    assert "head 3.2" in summary
    picture, summary = contrastive.run_contrastive(TOY, path, "something red", "something blue", "2", 0.6)
    assert "something red − something blue" in summary
    picture, summary = contrastive.run_contrastive(TOY, path, "a circle", "a square", "3.1, 2.0", 0.6)
    assert "heads 3.1, 2.0" in summary
    picture, summary = topic.run_topic(TOY, path, "something red", "all", 0.6, "something blue\n\n something green ")
    assert "something red − mean(something blue, something green)" in shown(summary)
    picture, summary = topic.run_topic(TOY, path, "something red", "all", 0.6, " \n")
    assert "**something red**," in summary
    assert len(built) == 1 and built[0].size == Image.open(path).size  # the picture, decoded once


@pytest.mark.parametrize("heads, text, message", [
    ("3.x", "a circle", "Heads '3.x' not understood"),
    ("9", "a circle", "there is no layer 9"),
    ("all", "", "caption is empty"),
])
def test_bad_map_requests(heads, text, message):
    from interpret.toy.examples import toy_examples

    with pytest.raises(gr.Error, match=message):
        topic.run_topic(TOY, toy_examples()[0][0], text, heads, 0.5)


def test_over_long_map_texts_are_cut_and_said_so():
    from interpret.toy.examples import toy_examples

    _, summary = topic.run_topic(TOY, toy_examples()[0][0], "something red", "all", 0.5, "something " * 40)
    assert "Caption 2 was longer than the model's context" in shown(summary)
    _, summary = contrastive.run_contrastive(TOY, toy_examples()[0][0], "a circle " * 20, "a square", "all", 0.5)
    assert "Caption 1 was longer than the model's context" in shown(summary)


def test_maps_need_an_image():
    with pytest.raises(gr.Error, match="Upload an image first"):
        contrastive.run_contrastive(TOY, None, "a", "b", "all", 0.5)


def test_interactions_map_a_span_and_score_a_box(monkeypatch):
    from interpret.toy.examples import toy_examples

    made = []
    real = interactions.interaction_map
    monkeypatch.setattr(interactions, "interaction_map", lambda *args, **kwargs: made.append(args) or real(*args, **kwargs))
    path, _ = toy_examples()[0]
    caption = "a red circle and a blue square"
    picture, strip, summary, scores = interactions.run_interaction(TOY, path, caption, 2, 0, 5, "right", "2", "", 0.6)
    assert isinstance(picture, Image.Image) and isinstance(strip, Image.Image)
    assert [token for token, _ in scores] == ["<start>", "a", "red", "circle", "and", "a", "blue", "square", "<end>"]
    best = max(scores[1:-1], key=lambda pair: pair[1])
    said = (f"'{best[0]}' adds most to the score ({best[1]:+.3g})" if best[1] > 0 else
            f"every word takes some away, '{best[0]}' least ({best[1]:+.3g})")
    assert said in summary  # the number under that token on the strip, in words that agree with its sign
    ends = max(scores[0][1], scores[-1][1])
    assert ("start and end tokens, left out here" in summary) == (ends > best[1])
    assert "'red'" in summary and "whole image" in summary and "residual" in summary
    picture, strip, summary, scores = interactions.run_interaction(TOY, path, caption, 2, 0, 5, "right", "2-3",
                                                                   "0, 0, 30, 30")
    assert "'red circle'" in summary and "the box (0, 0, 30, 30)" in summary
    choices, picker = interactions.interaction_controls(TOY, path, caption, 2, 0, 5, "right", "0, 0, 30, 30")
    assert choices["choices"][2] == "2: red" and isinstance(picker, Image.Image)
    assert interactions.tokens_from_checkboxes(["2: red", "3: circle"]) == "2, 3"
    assert len(made) == 1  # one computation served every span and box


def test_picking_a_box_by_two_clicks():
    from interpret.toy.examples import toy_examples

    path, _ = toy_examples()[0]  # 64 x 64 pixels, shown 6 times larger to click on
    box, picture = interactions.pick_corner(path, "", gr.SelectData(None, {"index": [60, 12], "value": None}))
    assert box == "10, 2" and picture.size == (384, 384)
    box, picture = interactions.pick_corner(path, box, gr.SelectData(None, {"index": [30, 48], "value": None}))
    assert box == "5, 2, 10, 8"
    assert interactions.run_after_pick(TOY, path, "a cat", -1, -1, 2, "right", "", "10, 2", 0.6) == (gr.skip(),) * 4


@pytest.mark.parametrize("tokens, box, caption, message", [
    ("x", "", "a red circle", "Tokens 'x' not understood"),
    ("", "1,2,3", "a red circle", "Box '1,2,3' not understood"),
    ("9", "", "a red circle", "no token 9"),
    ("", "", "", "caption is empty"),
    ("", "-9,-9,-5,-5", "a red circle", "reaches outside the picture"),
])
def test_bad_interaction_requests(tokens, box, caption, message):
    from interpret.toy.examples import toy_examples

    with pytest.raises(gr.Error, match=message):
        interactions.run_interaction(TOY, toy_examples()[0][0], caption, -1, -1, 2, "right", tokens, box, 0.5)


def test_mutual_knowledge_on_the_toy_preset_and_an_uploaded_file(tmp_path):
    import json

    from interpret.toy.examples import toy_examples

    path, _ = toy_examples()[0]  # a green cross
    summary, parts, venn, curve = mutual.run_mutual(TOY, path, mutual.TOY_CLASSES, None, "{}", 5)
    assert "Predicted **a green cross**" in summary and "something green" in summary and "AUC" in summary
    assert "One shared concept gives 0 bits" in summary  # the score's meaning, next to it
    assert all(isinstance(picture, Image.Image) for picture in (parts, venn, curve))
    summary, *_ = mutual.run_mutual(TOY, path, mutual.TOY_PHRASINGS, None, "{}", 3)
    assert "green" in summary.split("share")[1]
    own = tmp_path / "classes.json"
    own.write_text(json.dumps({"green": ["something green"], "red": ["something red"]}))
    summary, *_ = mutual.run_mutual(TOY, path, mutual.OWN_CLASSES, str(own), "something {}", 3)
    assert "among 2 classes" in summary
    with pytest.raises(gr.Error, match="Upload a JSON file"):
        mutual.run_mutual(TOY, path, mutual.OWN_CLASSES, None, "{}", 3)
    own.write_text("[1, 2]")
    with pytest.raises(gr.Error, match="map each class"):
        mutual.run_mutual(TOY, path, mutual.OWN_CLASSES, str(own), "{}", 3)
    with pytest.raises(gr.Error, match="Upload an image first"):
        mutual.run_mutual(TOY, None, mutual.TOY_CLASSES, None, "{}", 3)


def test_a_failed_run_shows_its_message_in_the_panel_and_clears_the_outputs():
    page_handler = common.in_panel(heads.run_heads, 3)
    grid, table, summary, status = page_handler(RANDOM_B32, None, "a dog", 5)
    assert (grid, table, summary) == (None, None, None) and "Upload an image first" in status
    *outputs, status = page_handler(TOY, toy_examples()[0][0], "a red circle", 3)
    assert status == "" and outputs[0] is not None and "Cosine score" in outputs[2]


def test_a_model_that_cannot_be_loaded_leaves_the_previous_one_in_use(monkeypatch):
    monkeypatch.delenv("INTERPRET_MODELS", raising=False)
    monkeypatch.delenv("INTERPRET_HOSTED", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    value, info, in_use, status, note = ui.choose_model("ViT-B-32 / openai", TOY)  # offline: the hub cannot be reached
    assert value == TOY and in_use == TOY and "could not be loaded" in status and f"{TOY} is still in use" in shown(status)
    assert note == gr.skip()  # the start-up note stays: the model it is about is still in use
    value, info, in_use, status, note = ui.choose_model(TOY, RANDOM_B32)
    assert value == in_use == TOY and status == "" and "4 layers x 8 heads" in info
    assert note == ""  # "Starting with ... instead" was about the first model


def test_analyses_get_a_gpu_under_zero_gpu_and_nothing_needs_one(monkeypatch):
    import sys
    import types

    decorated = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda function: decorated.append(function.__name__) or function
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("INTERPRET_DEVICE", raising=False)
    assert common.analysis_device() in ("cpu", "cuda") and common.on_gpu(heads.run_heads) is heads.run_heads
    ui.build_app(TOY, "")
    assert decorated == []  # not on ZeroGPU: nothing is wrapped
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert common.analysis_device() == "cuda"
    monkeypatch.setenv("INTERPRET_DEVICE", "cpu")  # this machine has no GPU to lend
    assert common.analysis_device() == "cpu"
    ui.build_app(TOY, "")
    assert {"run_heads", "run_interaction", "run_mutual", "run_topic"} <= set(decorated)
    assert "run_atlas" not in decorated and "run_text_neighbours" not in decorated  # look-ups stay on the CPU


def zip_of(folder, path):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for image in sorted(folder.glob("*.png")):
            archive.write(image, f"mine/{image.name}")
        archive.writestr("readme.txt", "not an image")
    return path


def test_a_visitor_builds_a_database_from_a_zip_and_searches_it_in_their_session(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from interpret.ui import database

    monkeypatch.setenv("INTERPRET_HOME", str(tmp_path / "home"))
    archive = zip_of(ROOT_EXAMPLES, tmp_path / "photos.zip")
    visitor = SimpleNamespace(session_hash="visitor-1")
    updates = list(database.run_build(TOY, str(archive), "", request=visitor))
    assert "6 images" in updates[0] and "readme.txt" in shown(updates[0]) and "measuring" in updates[0]
    assert "1 file that is not an image skipped" in updates[0]
    assert updates[-1].startswith("Done in") and "now search them" in updates[-1] and "estimated" in updates[-1]
    assert (database.built_folder("visitor-1", "toy") / "bundle.json").is_file()
    items, summary = image_neighbours.run_image_neighbours(TOY, str(ROOT_EXAMPLES / "toy-1001.png"), -1, 0, 3,
                                                           visitor)
    assert "of 6 images in your own database" in summary  # the visitor's own database, named so
    assert items[0][1].endswith("· mine/toy-1001.png")  # by its name in the zip file, not the name it was saved as
    items, summary = image_neighbours.run_image_neighbours(TOY, str(ROOT_EXAMPLES / "toy-1001.png"), -1, 0, 3,
                                                           SimpleNamespace(session_hash="someone-else"))
    assert "of 600 images in toy (bundled)'s database" in summary  # another visitor searches the model's own


def test_a_visitor_s_build_holds_neuron_directions_and_an_sae_that_only_their_session_reads(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from interpret.ui import database, features, neurons

    monkeypatch.setenv("INTERPRET_HOME", str(tmp_path / "home"))
    archive = zip_of(ROOT_EXAMPLES, tmp_path / "photos.zip")
    visitor, other = SimpleNamespace(session_hash="visitor-2"), SimpleNamespace(session_hash="someone-else")
    refused = list(database.run_build(TOY, str(archive), "", False, True, 9, request=visitor))
    assert len(refused) == 1 and refused[0].startswith("⚠️") and "layer 9" in refused[0]  # before any work
    updates = list(database.run_build(TOY, str(archive), "", True, True, -3, request=visitor))
    assert updates[-1].startswith("Done in") and "estimated" in updates[-1], updates
    assert "the Neurons tab reads the neurons of layers 0, 1, 2" in updates[-1] and "block 1's SAE" in updates[-1]
    summary, words, gallery, _ = neurons.run_neuron(TOY, -3, 0, visitor)
    assert "of 6 images" in summary and len(gallery) == 6 and words
    assert all("· mine/toy-" in caption for _, caption in gallery)  # by their names in the zip file
    figure, rows, _, summary = neurons.run_neurons(TOY, str(ROOT_EXAMPLES / "toy-1001.png"), "a red circle", -3, 3,
                                                   visitor)
    assert len(rows) == 3 and all(row[4] for row in rows)  # described: their words, from the visitor's directions
    assert "of 6 images" not in neurons.run_neuron(TOY, -3, 0, other)[0]  # another visitor: the toy's own
    alone = {who.session_hash: neurons.run_neuron(TOY, -3, 0, who)[0] for who in (visitor, other)}
    with ThreadPoolExecutor(8) as pool:  # both visitors at once: each gets their own, as one at a time
        together = list(pool.map(lambda who: (who, neurons.run_neuron(TOY, -3, 0, who)[0]), [visitor, other] * 4))
    assert all(found == alone[who.session_hash] for who, found in together)
    summary, gallery, writers = features.run_feature(TOY, 1, 0, request=visitor)
    assert "tokens of 6 images" in summary and writers and all("· mine/toy-" in caption for _, caption in gallery)
    try:
        assert "tokens of 6 images" not in features.run_feature(TOY, 1, 0, request=other)[0]
    except gr.Error as error:  # the toy's own SAE of block 1 is not trained in this test run
        assert "No SAE of block 1" in str(error)


@pytest.mark.parametrize("archive, folder, message", [
    (None, "", "Upload a zip file of images first"),
    ("NOTZIP", "", "not a zip file"),
    (None, "/etc", "Naming a folder of this machine is off here"),
])
def test_bad_builds_get_a_message_in_the_panel(tmp_path, monkeypatch, archive, folder, message):
    from interpret.ui import database

    monkeypatch.setenv("INTERPRET_HOME", str(tmp_path / "home"))
    if archive == "NOTZIP":
        archive = str(tmp_path / "x.zip")
        (tmp_path / "x.zip").write_text("plain")
    updates = list(database.run_build(TOY, archive, folder))
    assert len(updates) == 1 and message in updates[0] and updates[0].startswith("⚠️")
    assert not (tmp_path / "home" / "built").exists()


def test_the_real_spaces_package_leaves_the_app_unchanged_off_zero_gpu(monkeypatch):
    spaces = pytest.importorskip("spaces", reason="the optional spaces package (requirements-space.txt)")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert common.on_gpu(heads.run_heads) is heads.run_heads
    assert spaces.GPU(heads.run_heads) is heads.run_heads  # off a Space the decorator is the identity
    ui.build_app(TOY, "")


def test_the_heads_tab_scores_without_chosen_heads():
    path, caption = toy_examples()[1]
    _, _, summary = heads.run_heads(TOY, path, caption, 3, "3.*, 2.5")
    assert "Without heads 3.*, 2.5 (9 heads)" in shown(summary) and "direct effect" in summary and "zeroed" in summary
    _, _, plain = heads.run_heads(TOY, path, caption, 3)
    assert "Without heads" not in plain
    with pytest.raises(gr.Error, match="there is no layer 9"):
        heads.run_heads(TOY, path, caption, 3, "9.1")


def test_the_models_tab_scores_the_toy_model_with_its_pruning_curves():
    from interpret.ui import models

    summary, rows, grid, curves = models.run_scores(TOY)
    assert "association" in summary and "entanglement" in summary and "most consistent (red)" in summary
    assert rows[-1][0] == TOY and rows[-1][1] == 32 and len(rows[-1][2].split()) == 6
    assert grid.size[0] > 300 and curves.size[0] > 200


def test_the_models_table_lists_every_model_with_labels_on_this_machine(tmp_path, monkeypatch):
    import shutil

    from interpret.paths import INDEXES
    from interpret.ui import models

    models.run_scores(TOY)  # the toy's labels exist once it has been scored
    b32 = ModelSpec("ViT-B-32", None)
    monkeypatch.setenv("INTERPRET_BUNDLES", str(tmp_path))
    (tmp_path / b32.slug).mkdir()
    shutil.copy(INDEXES / "toy" / "head_labels.json", tmp_path / b32.slug / "head_labels.json")
    found = models.stored_scores()  # read from the labels files: no model is loaded
    assert set(found) >= {TOY, b32.label} and found[TOY].heads == 32
    (tmp_path / b32.slug / "head_labels.json").write_text("{damaged")
    assert b32.label not in models.stored_scores()


def test_a_build_that_fails_unexpectedly_says_so_in_its_status(tmp_path, monkeypatch):
    from interpret.ui import database

    monkeypatch.setenv("INTERPRET_HOME", str(tmp_path / "home"))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(database, "build_bundle", broken)
    updates = list(database.run_build(TOY, str(zip_of(ROOT_EXAMPLES, tmp_path / "photos.zip")), ""))
    assert "6 images" in updates[0]
    assert updates[-1].startswith("⚠️") and "failed (RuntimeError); the error was logged" in shown(updates[-1])
    from interpret.paths import visitor_name

    assert not (tmp_path / "home" / "built" / visitor_name(None) / "toy").exists()  # what it wrote: removed
    assert list(database.run_build(TOY, str(tmp_path / "photos.zip"), ""))[-1].startswith("⚠️")  # the line is free


def test_every_tab_runs_on_the_attention_pooled_toy_model():
    """`toy-pooled` reads out with SigLIP's attention pooler (a timm trunk, no class token): every tab's handler
    answers on it, with its own labels, database and maps."""
    pooled = ModelSpec("toy-pooled", None).label
    path, caption = toy_examples()[0]
    grid, rows, summary = heads.run_heads(pooled, path, caption, 5)
    assert len(rows) == 5 and "Cosine score" in summary
    summary, rows, picture = atlas.run_atlas(pooled, 3, 2)
    assert "Head 3.2" in summary and all(row[2] in {"colour", "shape", "size", "position"} for row in rows)
    items, summary = property_neighbours.run_property_neighbours(pooled, path, "colour", 4)
    assert len(items) == 4 and "of 600 images" in summary
    items, _ = image_neighbours.run_image_neighbours(pooled, path, -1, 3, 4)
    assert len(items) == 4
    items, _ = text_neighbours.run_text_neighbours(pooled, "something red", 3, 6, 4)
    assert len(items) == 4
    picture, summary = topic.run_topic(pooled, path, "something green", "all", 0.5)
    assert isinstance(picture, Image.Image) and "8x8 grid" in summary
    picture, summary = contrastive.run_contrastive(pooled, path, "a cross", "a circle", "3", 0.6)
    assert isinstance(picture, Image.Image) and "layer 3: heads and MLP" in summary
    for parts, name in (("heads", "all heads"), ("mlps", "all MLPs"), ("embedding", "the embedding layer")):
        picture, summary = topic.run_topic(pooled, path, "something green", "all", 0.5, "", parts)
        assert isinstance(picture, Image.Image) and f", {name} of" in summary
    with pytest.raises(gr.Error, match="A head is chosen: it has no MLPs"):
        contrastive.run_contrastive(pooled, path, "a cross", "a circle", "3.1", 0.6, "mlps")
    with pytest.raises(gr.Error, match="Unknown parts .* choose one of all, heads, mlps, embedding"):
        topic.run_topic(pooled, path, "a cross", "all", 0.6, "", "neurons")
    picture, strip, summary, scores = interactions.run_interaction(pooled, path, "a green cross", -1, -1, 5,
                                                                   "midpoint", "2", "", 0.6)
    assert [token for token, _ in scores] == ["<start>", "a", "green", "cross", "<end>"] and "residual" in summary
    summary, *pictures = mutual.run_mutual(pooled, path, mutual.TOY_CLASSES, None, "{}", 3)
    assert "Predicted" in summary and all(isinstance(picture, Image.Image) for picture in pictures)
    # the Models tab reads the same labels and removes heads through the same seam (tested on toy below)


def test_compare_explanations_side_by_side_with_their_deletion_and_insertion():
    from concurrent.futures import ThreadPoolExecutor

    from interpret.explanations import METHODS
    from interpret.ui import compare

    path, _ = toy_examples()[1]  # a blue circle and a yellow square
    figure, rows, summary = compare.run_compare(TOY, path, "a blue circle", list(METHODS), "mean", 0.6)
    assert isinstance(figure, Image.Image) and figure.size[0] > 800 and len(rows) == len(METHODS)
    assert "*deletion*" in summary and "*insertion*" in summary and "cosine" in summary
    assert all(isinstance(value, float) for row in rows for value in row[1:])
    with pytest.raises(gr.Error, match="Tick at least one"):
        compare.run_compare(TOY, path, "a blue circle", [], "blur", 0.6)
    with pytest.raises(gr.Error, match="Unknown method"):
        compare.run_compare(TOY, path, "a blue circle", ["<img src=x onerror=alert(1)>"], "blur", 0.6)
    with pytest.raises(gr.Error, match="Unknown baseline"):
        compare.run_compare(TOY, path, "a blue circle", ["rollout"], "noise", 0.6)
    with pytest.raises(gr.Error, match="Upload an image"):
        compare.run_compare(TOY, None, "a blue circle", ["rollout"], "blur", 0.6)
    assert "about **" in compare.estimate_compare(TOY, "a blue circle", list(METHODS))
    with pytest.MonkeyPatch.context() as patch:  # a request that would cost too much keeps the maps, not the curves
        patch.setattr(compare, "MAX_COMPARE_WORK", 1e6)
        _, rows, summary = compare.run_compare(TOY, path, "a blue circle", ["rollout"], "blur", 0.6)
        assert "Deletion and insertion left out" in summary and rows[0][1] != rows[0][1]  # NaN
    chosen = ["decomposition-relative", "legrad", "interaction"]
    alone = compare.run_compare(TOY, path, "a blue circle", chosen, "blur", 0.6)[1]
    with ThreadPoolExecutor(3) as pool:  # several visitors at once get what one alone gets
        together = list(pool.map(lambda _: compare.run_compare(TOY, path, "a blue circle", chosen, "blur", 0.6)[1],
                                 range(3)))
    assert all(rows == alone for rows in together)
    with pytest.raises(gr.Error, match="Tick at least one"):
        compare.estimate_compare(TOY, "a blue circle", [])
    _, _, summary = compare.run_compare(TOY, path, "a blue circle", ["rollout", "legrad"], "auto", 0.6)
    assert "replaced by the image's mean colour" in summary  # on the toys' flat colours a blur tells nothing apart
    assert "random patch orders give" in summary


@given(st.lists(st.floats(-1, 1), min_size=2, max_size=9), st.lists(st.floats(-1, 1), min_size=3, max_size=3))
@settings(max_examples=80, deadline=None)
def test_a_winner_is_named_only_beyond_the_noise_of_random_orders(gaps, noise):
    import numpy as np

    from interpret.ui import compare

    rows = [[f"method {i}", 0.0, gap, gap] for i, gap in enumerate(gaps)]
    said = compare.verdict(rows, noise)
    mean, spread = float(np.mean(noise)), float(np.std(noise, ddof=1))
    best = max(gaps)
    named = [f"**method {i}**" for i, gap in enumerate(gaps)
             if best - gap <= spread and gap - mean > compare.NOISE_SPREADS * spread]
    assert ("no method separates them by more than noise" in said) == (not named), said
    assert all(name in said for name in named) and said.count("**method") == len(named), said
    if named:
        assert f"**method {gaps.index(best)}**" in said


def test_a_link_s_values_are_checked_before_they_are_shown():
    """Everything a link holds is hostile: only a model and tab of the page, a bundled example by name, texts
    within their limit and finite numbers are kept."""
    from hypothesis import given, settings, strategies as st

    from interpret.ui import links

    labels, titles = [TOY, RANDOM_B32], ["Heads", "Topic segmentation"]
    linked = {"Topic segmentation": {"text": gr.Textbox(), "layer": gr.Number()},
              "Heads": {"rule": gr.Radio(["midpoint", "right"]), "methods": gr.CheckboxGroup(["a", "b"])}}
    example = sorted(links.examples())[0]

    values = st.one_of(st.text(max_size=30), st.sampled_from(["../app.py", "/etc/passwd", "1e999", "nan", "x" * 2000,
                                                              example, TOY, "right", "a"]))

    @settings(max_examples=60, deadline=None)

    @given(st.dictionaries(st.sampled_from(["model", "tab", "example", "caption", "text", "layer", "rule", "methods",
                                            "other"]), st.one_of(values, st.lists(values, max_size=3))))
    def check(query):
        view = links.checked_view(query, labels, titles, linked)
        assert view.get("model", TOY) in labels and view.get("tab", "Heads") in titles
        assert view.get("example", example) in links.examples() and "other" not in view
        assert all(len(str(value)) <= 1000 for value in view.values())
        assert "layer" not in view or abs(view["layer"]) <= 10 ** 6
        assert set(view) - {"model", "tab", "example", "caption"} <= set(linked.get(view.get("tab"), {}))  # its tab's
        assert view.get("rule", "right") in ("midpoint", "right") and set(view.get("methods", [])) <= {"a", "b"}

    check()
    fields = (("Topic segmentation", "text"), ("Topic segmentation", "layer"), ("Heads", "methods"))
    query = links.link_query(TOY, "Topic segmentation", "a cat", links.examples()[example], "something red", 3,
                             ["a", "b"], fields=fields)
    assert query.startswith("?model=toy+%28bundled%29") and f"example={example}" in query and "layer=3" in query
    assert "methods" not in query  # only the shown tab's inputs
    assert "methods=a&methods=b" in links.link_query(TOY, "Heads", "", None, "x", 3, ["a", "b"], fields=fields)
    assert links.link_query(TOY, "Heads", "", None) == "?model=toy+%28bundled%29&tab=Heads"  # no upload, no empty


def test_an_example_is_linked_by_its_content_and_an_upload_never(tmp_path):
    import shutil

    from interpret.ui import links

    name, path = sorted(links.examples().items())[0]
    copy = tmp_path / "upload.png"  # Gradio hands over a copy of a clicked example
    shutil.copy(path, copy)
    assert links.example_of(str(copy)) == name
    same_size = bytearray(copy.read_bytes())
    same_size[-1] ^= 1  # as long as the example, another content
    copy.write_bytes(bytes(same_size))
    assert links.example_of(str(copy)) is None
    Image.new("RGB", (40, 40)).save(copy)
    assert links.example_of(str(copy)) is None and links.example_of(None) is None


def test_the_neurons_tab_finds_an_image_s_neurons_and_shows_one(monkeypatch):
    """On the toy model (its neuron directions computed over its database on first use): the neurons that move
    the score, each with its map, words, label and carrying heads; one neuron's words, top images and head split;
    a click on a carrying head's row opens that head."""
    from interpret.ui import neurons

    path, caption = toy_examples()[0]
    figure, rows, carriers, summary = neurons.run_neurons(TOY, path, caption, -3, 4)
    assert isinstance(figure, Image.Image) and len(rows) == 4 and "layer 1" in summary
    assert all(row[3] in {"colour", "shape", "size", "position", "untagged"} and row[4] for row in rows)
    assert len(carriers) == 12 and all(2 <= row[1] <= 3 for row in carriers)  # the heads after layer 1
    summary, words, gallery, grid = neurons.run_neuron(TOY, -3, rows[0][1])
    assert f"Neuron {rows[0][1]} of layer 1" in summary and words and len(gallery) == 12
    assert isinstance(grid, Image.Image)

    import pandas

    class Click:  # Gradio's SelectData: the cell, and the row's values where it sends them
        index, row_value = (1, 0), None

    expected = (carriers[1][1], carriers[1][2])
    frame = pandas.DataFrame(carriers, columns=["neuron", "layer", "head", "part"])
    assert neurons.open_head(frame, Click()) == expected
    Click.row_value = carriers[1]
    assert neurons.open_head(None, Click()) == expected
    with pytest.raises(gr.Error, match="no later heads"):
        neurons.run_neurons(TOY, path, caption, -1, 4)
    with pytest.raises(gr.Error, match="The neuron must be"):
        neurons.run_neuron(TOY, 1, 10_000)
    with pytest.raises(gr.Error, match="No neuron directions of layer 9 for ViT-B-32"):
        neurons.run_neuron(RANDOM_B32, -3, 0)


def test_the_features_tab_trains_a_toy_sae_and_shows_an_image_s_features_and_one(monkeypatch):
    """On the toy model: no SAE yet (the message says how to train one); trained here (the estimate first, then
    the training; fewer tokens for the test); then an image's features with the score without each, one feature's
    top images and writers, and the caption's score with it removed and added."""
    from interpret.dictionaries import store as library
    from interpret.ui import features

    path, caption = toy_examples()[0]
    with pytest.raises(gr.Error, match="No SAE of block 2 for toy .* press Train"):
        features.run_features(TOY, path, caption, 2, 5)
    monkeypatch.setattr(features, "TOY_TRAINING_TOKENS", 30_000)
    monkeypatch.setattr(library, "TOY_TRAINING_TOKENS", 30_000)
    steps = list(features.run_training(TOY, 2))
    assert "of about 4 s" in steps[0] and steps[-1].startswith("Done: block 2: explained variance")
    figure, rows, summary = features.run_features(TOY, path, caption, 2, 5)
    assert isinstance(figure, Image.Image) and 1 <= len(rows) <= 5 and "Cosine score" in summary
    assert all(isinstance(row[3], float) and row[4] for row in rows)  # a score change and a name each
    summary, gallery, writers = features.run_feature(TOY, 2, rows[0][0])
    assert f"Feature {rows[0][0]} of the SAE of block 2" in summary and gallery and writers
    assert any(row[0].startswith("head ") for row in writers) and any(row[0].startswith("neuron ") for row in writers)
    assert [abs(row[1]) for row in writers] == sorted((abs(row[1]) for row in writers), reverse=True)  # largest first
    assert "trained here on 30,0" in summary and "explains 0." in summary  # where it comes from, how well it fits
    removed = features.run_intervention(TOY, path, caption, 2, rows[0][0], 0)
    added = features.run_intervention(TOY, path, caption, 2, rows[0][0], 5)
    assert "removed from every token" in removed and "added at every token (5)" in added
    refused = list(features.run_training(RANDOM_B32, 2))
    assert len(refused) == 1 and "for the toy models only" in refused[0]


@pytest.mark.parametrize("values, said", [
    ([0.0112, 0.002, 0.00906, -0.001, 0.003], "'yellow' adds most to the score (+0.00906) (of the words: the start "
                                              "and end tokens, left out here, reach +0.0112)"),
    ([-0.01, -0.002, -0.000643, -0.004, -0.02], "no word adds to the score: every word takes some away, 'yellow' "
                                                "least (-0.000643)"),
])
def test_the_word_said_to_match_agrees_with_the_strip(values, said):
    import torch

    tokens = ["<start>", "a", "yellow", "square", "<end>"]
    assert interactions.word_that_matches(tokens, torch.tensor(values)) == said


@pytest.mark.parametrize("query, runs, said", [
    ({"tab": ["Heads", "Heads"], "example": "toy-1001.png"}, False, "link's tab could not be used"),
    ({"tab": "Heads", "example": ["toy-1001.png", "toy-1000.png"]}, False, "the link holds no picture"),
    ({"tab": "Heads", "example": "toy-1001.png", "top": ["5", "7"]}, True, "link's top could not be used"),
    ({"tab": "Heads", "example": "toy-1001.png", "__theme": "dark"}, True, ""),
    ({"tab": "Heads", "example": "toy-1001.png", "<img src=x onerror=alert(1)>": "1"}, True,
     "link's \\<img src=x onerror=alert(1)\\> could not be used"),  # a name it left out, shown as text
])
def test_a_link_that_cannot_be_opened_whole_says_what_was_left_out(query, runs, said):
    """A parameter given twice left the Heads view without an answer, and without a word."""
    from interpret.ui import links

    view = links.checked_view(query, [TOY], ["Heads"], {"Heads": {"top": gr.Slider(1, 100)}})
    note = links.opened_note(query, view, view.get("tab"), runs)
    assert (said in note) if said else note == "", note


def test_the_circuits_tab_traces_a_toy_score_and_refuses_a_model_without_transcoders(tmp_path):
    """On the toy model: the graph's figure, its groups (the most influential first), the summary with its scores,
    and the JSON in circuit-tracer's schema; a score rather than another text; a model with no transcoders says
    how to get them."""
    import json

    from interpret.ui import circuits

    path, caption = toy_examples()[0]
    figure, rows, summary, saved = circuits.run_circuits(TOY, path, "something blue", "", 300)
    assert isinstance(figure, Image.Image) and figure.size == (1240, 780)
    assert rows and [row[3] for row in rows] == sorted((row[3] for row in rows), reverse=True)
    assert "Replacement score" in summary and "completeness" in summary and "300 of largest effect" in summary
    graph = json.loads(Path(saved).read_text())
    assert {"metadata", "qParams", "nodes", "links"} <= set(graph) and graph["metadata"]["prompt"] == "something blue"
    _, _, rather, _ = circuits.run_circuits(TOY, path, "something blue", "something yellow", 300)
    assert "rather than 'something yellow'" in rather
    with pytest.raises(gr.Error, match="has no transcoders here: the Build a database tab trains them"):
        circuits.run_circuits(RANDOM_B32, path, "a photo", "", 100)
