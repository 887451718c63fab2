"""Attacks, written before their fixes, with inputs a fuzzer makes rather than ones we listed: a session id that is
a path, visitor text that is HTML or Markdown, text that is not valid Unicode or shows nothing, pictures whose
cost hides in their mode or their EXIF, a database rebuilt under the same name, interactions asked at their most
expensive settings, a visitor who floods the queue. Handlers are called in-process here; tests/test_server_attacks.py
sends the same through HTTP to a running app."""
from __future__ import annotations

import io
import re
import string
import unicodedata
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from interpret import paths
from interpret.images import load_image
from interpret.limits import MAX_WAITING_PER_POOL, MAX_WAITING_PER_VISITOR
from interpret.toy.examples import toy_examples
from interpret.ui import (admission, atlas, common, contrastive, database, heads, interactions, property_neighbours,
                          text_neighbours, topic)
from interpret.ui import choose_model
from tests.local_server import tree_digest
from tests.markdown import elements, shown

TOY = common.ModelSpec("toy", None).label
EXAMPLE = toy_examples()[0][0]
MARKUP = string.punctuation + " \t\n\r\u2028\u00a0&;#<>[]()!*_`~|\\" + "aZ09é😀"
# The tags our own summaries are written with (bold, italics, lists, paragraphs) and nothing else: none with
# attributes, no link, image, script, heading, table or raw HTML.
OUR_TAGS = {"p", "strong", "em", "ul", "li", "br"}
ATTACKS = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "[click](javascript:alert(1))",
           "![x](http://127.0.0.1/x.png)", "# heading\n\n| a | b |\n|---|---|", "**bold** _em_ `code`",
           "&lt;img src=x&gt;", "<a href='x'>y</a>", "\\<b>escaped?</b>", "line\n\n    indented code"]


def only_our_tags(markdown: str) -> bool:
    return all(tag.lstrip("/").split()[0] in OUR_TAGS and " " not in tag for tag in elements(markdown))


def normalised(text: str) -> str:
    """`text` as a person reads it on the page: line breaks and control characters as spaces, runs of white
    space as one."""
    return " ".join("".join(" " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char
                            for char in text).split())


# --- Markdown: visitor text shows as itself, never as HTML or Markdown ---------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(MARKUP), max_size=60) | st.text(max_size=60))
def test_escaped_text_shows_exactly_itself_and_makes_no_element(text):
    markdown = f"Head 3.2, '{common.escaped(text)}': 12 nearest."
    assert only_our_tags(markdown) and set(elements(markdown)) <= {"p", "/p"}
    assert shown(markdown) == normalised(f"Head 3.2, '{text}': 12 nearest.")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(MARKUP), max_size=60) | st.text(max_size=60))
def test_escaped_text_shows_exactly_itself_at_the_start_of_a_line_too(text):
    markdown = common.escaped(text)
    assert set(elements(markdown)) <= {"p", "/p"} and shown(markdown) == normalised(text), markdown


@given(st.text(alphabet=st.sampled_from("abcXYZ0189 ,;:.?'\"()%/-+=#éß😀"), max_size=60))
def test_escaping_leaves_what_markdown_would_not_read_as_markup_alone(text):
    """API and MCP clients read these texts too: "2,000 images; the limit is 2,000." comes back as it is."""
    markdown = common.escaped(text)
    assert markdown.replace("\\", "") == re.sub(r"^\s+", " ", text) and markdown.count("\\") <= 1  # a first mark


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_markdown_output_shows_hostile_text_as_text(attack):
    """Every handler whose Markdown repeats what the visitor typed, with that text hostile: no element comes out
    of it, and the text is shown as typed."""
    visitor = SimpleNamespace(session_hash="attacker")
    outputs = {
        "topic": topic.run_topic(TOY, EXAMPLE, attack, "all", 0.5, attack)[1],
        "contrastive": contrastive.run_contrastive(TOY, EXAMPLE, attack, "a square", "all", 0.5)[1],
        "text neighbours": text_neighbours.run_text_neighbours(TOY, attack, -1, 0, 2, visitor)[1],
        "interactions": interactions.run_interaction(TOY, EXAMPLE, attack, -1, -1, 2)[2],
    }
    for name, markdown in outputs.items():
        assert only_our_tags(markdown), (name, elements(markdown))
    first_line = normalised(attack.split("\n")[0])
    for name in ("topic", "text neighbours"):
        assert first_line in shown(outputs[name]), (name, shown(outputs[name]))


@pytest.mark.parametrize("attack", ATTACKS[:4])
def test_error_messages_quoting_the_visitor_are_escaped_in_their_panel(attack):
    """Errors repeat what the visitor sent (a model label, a heads list, a property): in the panel they are
    text, not HTML."""
    panels = [
        choose_model(attack, TOY)[3],
        common.in_panel(heads.run_heads, 3)(TOY, EXAMPLE, "a circle", 5, attack)[-1],
        common.in_panel(topic.run_topic, 2)(TOY, EXAMPLE, "a circle", attack, 0.5)[-1],
        common.in_panel(property_neighbours.run_property_neighbours, 2)(TOY, EXAMPLE, attack, 3)[-1],
        common.in_panel(atlas.run_atlas, 3)(attack, 0, 0)[-1],
    ]
    for panel in panels:
        assert panel.startswith("⚠️") and only_our_tags(panel), (panel, elements(panel))


def test_names_in_a_visitor_zip_are_escaped_in_the_build_status(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPRET_HOME", str(tmp_path / "home"))
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("<img src=x onerror=alert(1)>.txt", b"not an image")
        writer.writestr("[a](javascript:alert(1)).md", b"not an image")
        writer.writestr("one.png", Path(EXAMPLE).read_bytes())
    status = next(database.run_build(TOY, str(archive), "", request=SimpleNamespace(session_hash="a")))
    assert only_our_tags(status) and "<img src=x onerror=alert(1)>.txt" in shown(status)


# --- a session id is never a path --------------------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(session=st.one_of(st.none(), st.text(max_size=300),
                         st.lists(st.sampled_from(["..", "/", ".", "indexes", "~", "\x00", "\\", "built", ""]),
                                  max_size=10).map("".join)))
def test_any_session_id_becomes_a_folder_name_the_server_made(session):
    for kind in database.VISITOR_KINDS:
        folder = database.visitor_folder(kind, session, "toy")
        assert folder.parent.parent == (paths.home() / kind).resolve() and folder.name == "toy"
        assert re.fullmatch(r"v[0-9a-f]{32}|local", folder.parent.name)
    assert paths.visitor_name(session) == paths.visitor_name(session)  # the same visitor finds their folder again


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_a_session_id_aimed_at_the_shared_database_changes_nothing_there(tmp_path, monkeypatch, how):
    """The attack that replaced every visitor's toy database: a build whose session id names the shared index
    folder. It builds the visitor's own database, in a folder named by the server, and the shared one is
    untouched, byte for byte."""
    home = tmp_path / "home"
    monkeypatch.setenv("INTERPRET_HOME", str(home))
    shared = paths.INDEXES
    text_neighbours.run_text_neighbours(TOY, "something red", -1, 0, 2)  # the shared toy database exists
    before = tree_digest(shared)
    session = str(shared) if how == "absolute" else "../../" + "../" * len(home.parts) + str(shared).lstrip("/")
    archive = tmp_path / "planted.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for number in range(3):
            writer.writestr(f"planted_{number:04d}.png", Path(EXAMPLE).read_bytes())
    updates = list(database.run_build(TOY, str(archive), "", request=SimpleNamespace(session_hash=session)))
    assert updates[-1].startswith("Done in"), updates
    assert tree_digest(shared) == before
    written = {path for path in tmp_path.rglob("*") if path.is_file()} - {archive}
    assert written and all(path.is_relative_to(home) for path in written)
    items, note = text_neighbours.run_text_neighbours(TOY, "something red", -1, 0, 3,
                                                      SimpleNamespace(session_hash="someone-else"))
    assert "planted" not in " ".join(caption for _, caption in items) and "of 600 images" in note


# --- text that is not valid Unicode, or shows nothing ---------------------------------------------------------------

@pytest.mark.parametrize("caption", ["a \ud800 circle", "\udfff", "a red\udbff"])
def test_a_lone_surrogate_is_refused_before_any_work(caption):
    for call in (lambda: heads.run_heads(TOY, EXAMPLE, caption, 5),
                 lambda: topic.run_topic(TOY, EXAMPLE, "a circle", "all", 0.5, caption),
                 lambda: interactions.run_interaction(TOY, EXAMPLE, caption)):
        with pytest.raises(gr.Error, match="invalid character .*lone surrogate"):
            call()


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet=st.sampled_from("\u200b\u200c\u200d\u2060\ufeff\u00ad \t\n\u3000\u202e"), min_size=1,
               max_size=20))
def test_a_caption_of_invisible_characters_is_refused(caption):
    with pytest.raises(gr.Error, match="caption is empty"):
        heads.run_heads(TOY, EXAMPLE, caption, 5)


@pytest.mark.parametrize("caption", ["a 🔴 circle 😀", "مرحبا بالعالم الأحمر", "一个红色的圆圈",
                                     "Ünïcödé naïve café",
                                     "👩‍👩‍👧 family", "ㄱㄴㄷ 한국어"])
def test_token_labels_never_split_a_character(caption):
    model = common.model_for(TOY)
    labels = model.token_strings(caption)
    assert not any("\ufffd" in label for label in labels), labels
    assert len(labels) == len(model._encode_ids(caption)) + 2  # one label a token: the maps stay aligned
    seen = "".join(re.sub(r" \d+/\d+$", "", label) for label in labels[1:-1])
    assert all(char in seen for char in caption.lower() if not char.isspace() and char != "\u200d")  # CLIP lowercases


# --- pictures: cost and orientation ---------------------------------------------------------------------------------

def test_a_palette_picture_is_reduced_before_it_is_converted(tmp_path, monkeypatch):
    """A 36-megapixel palette PNG is a few KB; converted whole it would be 144 MB of RGBA. Every conversion to RGB
    is of a strip (or of the reduced picture), never of the whole."""
    from interpret import images

    picture = Image.new("P", (7200, 5000))
    picture.putpalette([value % 256 for value in range(768)])
    path = tmp_path / "palette.png"
    picture.save(path)
    largest = []
    convert = images._to_rgb
    monkeypatch.setattr(images, "_to_rgb", lambda image, *rest: largest.append(image.width * image.height)
                        or convert(image, *rest))
    shrunk = load_image(path, max_side=1024)
    assert shrunk.size == (1024, 711) and max(largest) <= images.STRIP_PIXELS * 2


@pytest.mark.parametrize("orientation, size", [(1, (60, 40)), (3, (60, 40)), (6, (40, 60)), (8, (40, 60))])
def test_exif_orientation_is_applied_when_an_image_is_read(tmp_path, orientation, size):
    picture = Image.new("RGB", (60, 40), "white")
    picture.paste((255, 0, 0), (0, 0, 10, 10))  # a red corner: top left as stored
    exif = picture.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    picture.save(path, exif=exif, quality=95)
    for shown_picture in (load_image(path), load_image(path, max_side=30), common.picture_of(str(path))):
        assert shown_picture.size == size or shown_picture.size == tuple(side // 2 for side in size)
    upright = load_image(path)
    assert load_image(upright).size == size  # read again (the app reads an upload more than once): not turned twice
    corner = {1: (0, 0), 3: (59, 39), 6: (39, 0), 8: (0, 59)}[orientation]
    assert upright.getpixel(corner)[0] > 200 and upright.getpixel(corner)[1] < 80


def test_only_the_named_formats_are_decoded(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="EPS")
    for name, data in (("x.eps", buffer.getvalue()), ("x.png", buffer.getvalue())):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(Exception, match="expected JPEG, PNG"):
            load_image(tmp_path / name)


# --- a rebuilt database is the one described --------------------------------------------------------------------

def test_the_head_atlas_follows_a_visitor_s_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPRET_HOME", str(tmp_path / "home"))
    visitor = SimpleNamespace(session_hash="rebuilder")
    for count in (3, 5):
        archive = tmp_path / f"{count}.zip"
        with zipfile.ZipFile(archive, "w") as writer:
            for number in range(count):
                writer.writestr(f"{number}.png", Path(toy_examples()[number % 3][0]).read_bytes())
        assert list(database.run_build(TOY, str(archive), "", request=visitor))[-1].startswith("Done in")
        summary = atlas.run_atlas(TOY, 0, 0, visitor)[0]
        assert f"over {count} images" in summary


# --- an interaction map has a bounded cost ------------------------------------------------------------------------

def test_interactions_beyond_the_budget_get_fewer_steps_and_say_so(monkeypatch):
    from interpret import interact

    steps_run = []
    real = interact.interaction_map
    monkeypatch.setattr(interactions, "interaction_map", lambda *args, **kwargs: steps_run.append(args[5])
                        or real(*args, **kwargs))
    model = common.model_for(TOY)
    per_step = interact.interaction_work(model, "a red circle", 0, 0, 1)
    monkeypatch.setattr(interactions, "MAX_INTERACTION_WORK", 7.5 * per_step)
    _, _, summary, _ = interactions.run_interaction(TOY, EXAMPLE, "a red circle", 0, 0, 50)
    assert steps_run == [7] and "Steps lowered from 50 to 7" in shown(summary)
    monkeypatch.setattr(interactions, "MAX_INTERACTION_WORK", 0.5 * per_step)
    with pytest.raises(gr.Error, match="even with 1 step.*Choose later layers"):
        interactions.run_interaction(TOY, EXAMPLE, "a red circle", 0, 0, 2)
    assert steps_run == [7]  # refused before any work


def test_the_work_estimate_grows_as_the_work_does():
    from interpret.interact import interaction_work

    model = common.model_for(TOY)
    work = {(layer, steps): interaction_work(model, "a red circle", layer, layer, steps)
            for layer in (0, 2, -1) for steps in (1, 10)}
    assert work[0, 10] == pytest.approx(10 * work[0, 1]) and work[0, 10] > work[2, 10] > work[-1, 10]
    longer = interaction_work(model, "a red circle on a blue square next to a green triangle", 0, 0, 10)
    assert longer > work[0, 10]


# --- one visitor cannot fill the queue -----------------------------------------------------------------------------

def fake_queue(waiting: dict[str, list[str]]):
    """A stand-in for Gradio's queue: pool -> the session ids of its waiting events."""
    return SimpleNamespace(event_queue_per_concurrency_id={
        pool: SimpleNamespace(queue=[SimpleNamespace(session_hash=session) for session in sessions])
        for pool, sessions in waiting.items()})


def test_a_visitor_with_many_requests_waiting_is_refused_and_others_are_not():
    queue = fake_queue({"analysis": ["flooder"] * MAX_WAITING_PER_VISITOR, "lookup": []})
    assert "You have" in admission.refusal(queue, "flooder", "analysis")
    assert "You have" in admission.refusal(queue, "flooder", "lookup")
    assert admission.refusal(queue, "someone", "analysis") is None
    assert admission.refusal(queue, "someone", "lookup") is None


def test_an_empty_session_id_is_refused_with_a_message_and_none_is_a_visitor_of_its_own():
    queue = fake_queue({"lookup": []})
    assert "session id is empty" in admission.refusal(queue, "", "lookup")
    assert admission.refusal(queue, None, "lookup") is None  # Gradio's API page's cURL call: the event's id is its own
    crowded = fake_queue({"lookup": ["someone"] * MAX_WAITING_PER_VISITOR})
    assert admission.refusal(crowded, None, "lookup") is None


def test_a_flood_from_many_session_ids_leaves_look_ups_answerable():
    queue = fake_queue({"analysis": [f"id-{n}" for n in range(MAX_WAITING_PER_POOL)], "lookup": []})
    assert "busy" in admission.refusal(queue, "fresh-id", "analysis")
    assert admission.refusal(queue, "fresh-id", "lookup") is None
