"""The door's checks of every event's arguments (`interpret.ui.arguments`), on the page's own events: a value of
every JSON kind in every position of every named endpoint is refused, with a message that names the argument,
exactly when its component cannot take it."""
from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from gradio.utils import get_upload_folder

from interpret.models import ModelSpec
from interpret.ui import build_app
from interpret.ui.arguments import MAX_FIELD_CHARS, Refusal, refused_arguments
from interpret.ui.common import ANY_INDEX

TOY = ModelSpec("toy", None).label
UPLOADS = str(Path(get_upload_folder()).resolve())  # where Gradio keeps uploads: the only files an input may name
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20) | st.sampled_from(["all", "blur", "midpoint", "decomposition", "http://x/a.png"])
    | st.fixed_dictionaries({"path": st.sampled_from(["/tmp/x.png", "https://x/y.png", "", f"{UPLOADS}/a/x.png",
                                                     f"{UPLOADS}/../x.png", "/etc/passwd"])}),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def endpoints():
    page = build_app(TOY)
    named = {fn.api_name: fn for fn in page.fns.values()
             if fn.api_name and fn.api_name != "load_example" and getattr(fn, "api_visibility", "") != "private"}
    return named


def takes(component, value) -> bool:
    """Whether `component` may be sent `value` (the rule the door must keep, written out plainly)."""
    if value is None:  # an empty field the page may send; sliders, boxes to tick and radio buttons always have one
        return not isinstance(component, (gr.Slider, gr.Checkbox, gr.Radio, gr.CheckboxGroup))
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(component, (gr.Image, gr.File)):
        path = value.get("path") if isinstance(value, dict) else None
        return isinstance(path, str) and path.startswith(UPLOADS + "/") and "://" not in path
    if isinstance(component, gr.Slider):
        return is_number and math.isfinite(value) and component.minimum <= value <= component.maximum
    if isinstance(component, gr.Number):
        return is_number and math.isfinite(value) and abs(value) <= ANY_INDEX
    if isinstance(component, gr.Checkbox):
        return isinstance(value, bool)
    choices = [choice[1] if isinstance(choice, tuple) else choice for choice in (component.choices or [])] \
        if hasattr(component, "choices") else []
    if isinstance(component, gr.CheckboxGroup):
        return isinstance(value, list) and all(isinstance(item, str) and item in choices for item in value)
    if isinstance(component, gr.Radio):
        return isinstance(value, str) and value in choices
    if isinstance(component, (gr.Dropdown, gr.Textbox)):
        return isinstance(value, str) and len(value) <= MAX_FIELD_CHARS
    return True


ALWAYS_SET = (gr.Slider, gr.Checkbox, gr.Radio, gr.CheckboxGroup)  # the page never sends null for these


def filler(block_fn) -> list:
    """Arguments the door lets through: the page's own values where a component always has one, else null."""
    return [component.value if isinstance(component, ALWAYS_SET) else None for component in block_fn.inputs]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_value_of_any_kind_in_any_position_is_refused_exactly_when_it_cannot_be_taken(endpoints, data):
    name = data.draw(st.sampled_from(sorted(endpoints)))
    block_fn = endpoints[name]
    position = data.draw(st.integers(0, len(block_fn.inputs) - 1))
    value = data.draw(JSON_VALUES)
    arguments = filler(block_fn)
    arguments[position] = value
    refused = refused_arguments(block_fn, arguments)
    component = block_fn.inputs[position]
    assert (refused is None) == takes(component, value), (name, position, value, refused)
    if refused is not None:
        assert refused.position == position and f"/{name}" in refused.message
        assert f"`{refused.parameter}`" in refused.message and component.label in refused.message
        detail = refused.detail(len(arguments))
        assert [entry["is_valid"] for entry in detail].count(False) == 1 and not detail[position]["is_valid"]


def test_choices_are_checked_against_the_visitor_s_own(endpoints):
    """A caption's tokens to tick are the visitor's choices (Gradio's session state holds them), not the page's."""
    compare = endpoints["compare_explanations"]
    arguments = filler(compare)
    arguments[4] = "sepia"  # the baseline: blur or mean
    refused = refused_arguments(compare, arguments)
    assert refused is not None and "'sepia' is not one of" in refused.message and "`baseline`" in refused.message
    own = gr.Radio(["blur", "mean", "sepia"])
    assert refused_arguments(compare, arguments, {compare.inputs[4]._id: own}) is None


@given(count=st.integers(0, 12), whole=st.sampled_from([None, 3, "x", {"data": 1}]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_missing_or_extra_argument_or_a_body_that_is_no_list_is_refused(endpoints, count, whole):
    block_fn = endpoints["heads"]
    refused = refused_arguments(block_fn, (filler(block_fn) + [None] * 12)[:count] if whole is None else whole)
    if whole is None and count == len(block_fn.inputs):
        assert refused is None
    else:
        assert isinstance(refused, Refusal) and refused.position is None and "/heads takes" in refused.message


def test_trailing_arguments_left_out_take_the_handler_s_defaults_and_no_others(endpoints):
    """A client written before `parts` was added to the segmentation endpoints sends one argument fewer: it gets the
    handler's default. An argument without a default may not be left out."""
    from interpret.ui.arguments import with_defaults

    topic = endpoints["topic_segmentation"]
    old_call = [TOY, None, "something red", "all", 0.5, ""]
    assert with_defaults(topic, old_call) == [*old_call, "all"] and refused_arguments(topic, [*old_call, "all"]) is None
    for shorter in ([TOY, None, "something red"], [TOY], []):
        completed = with_defaults(topic, shorter)
        assert (len(completed) == len(topic.inputs)) == (len(shorter) >= 3), completed  # label, image, text: none
    build = endpoints["build_database"]  # neurons, features, the SAE's block and transcoders came later: off, off, 1, off
    assert with_defaults(build, [TOY, None, ""]) == [TOY, None, "", False, False, 1, False]
    heads = endpoints["heads"]
    assert with_defaults(heads, [TOY]) == [TOY]  # the image has no default
    assert with_defaults(heads, "x") == "x" and with_defaults(heads, [None] * 9) == [None] * 9


def test_every_slider_reaches_its_documented_limit(endpoints):
    from interpret.limits import MAX_NEIGHBOURS, MAX_PARTS, MAX_STEPS, MAX_TOP_HEADS

    maxima = {(name, component.label): component.maximum for name, fn in endpoints.items()
              for component in fn.inputs if isinstance(component, gr.Slider)}
    assert maxima[("heads", "Top heads to list")] == MAX_TOP_HEADS
    assert maxima[("interaction", "Steps")] == MAX_STEPS
    assert maxima[("mutual_knowledge", "Visual concepts")] == MAX_PARTS
    assert maxima[("text_neighbours", "Neighbours")] == MAX_NEIGHBOURS


def test_an_inverted_token_span_is_refused_not_read_as_every_word():
    from interpret.errors import InterpretError
    from interpret.interact import parse_tokens

    assert parse_tokens("1-3", 6) == [1, 2, 3]
    with pytest.raises(InterpretError, match="run backwards"):
        parse_tokens("3-1", 6)


def test_a_descriptor_file_that_names_a_class_twice_is_refused(tmp_path):
    from interpret.errors import InterpretError
    from interpret.mutual import load_descriptors

    path = tmp_path / "classes.json"
    path.write_text('{"dog": ["a tail"], "cat": ["whiskers"], "dog": ["four legs"]}')
    with pytest.raises(InterpretError, match="names the class 'dog' twice"):
        load_descriptors(path)


def test_a_zip_member_named_thousands_of_folders_deep_is_refused_before_its_folders_are_listed(tmp_path):
    import zipfile

    from interpret.archives import plan_archive
    from interpret.errors import InterpretError

    archive = tmp_path / "deep.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("a/" * 30_000 + "x.png", b"not read")
    with pytest.raises(InterpretError, match="folders deep"):
        plan_archive(archive)


def test_a_link_s_slider_value_out_of_range_is_dropped():
    from interpret.ui.links import checked_view

    opacity = gr.Slider(0, 1, value=0.6)
    linked = {"Topic segmentation": {"opacity": opacity}}
    assert checked_view({"tab": "Topic segmentation", "opacity": "1e6"}, [], ["Topic segmentation"], linked) == {
        "tab": "Topic segmentation"}
    assert checked_view({"tab": "Topic segmentation", "opacity": "0.3"}, [], ["Topic segmentation"], linked) == {
        "tab": "Topic segmentation", "opacity": 0.3}


def test_a_number_just_past_its_limit_is_shown_as_it_was_sent(endpoints):
    intervention = endpoints["feature_intervention"]
    arguments = filler(intervention)
    position = next(n for n, component in enumerate(intervention.inputs) if isinstance(component, gr.Slider))
    arguments[position] = 50.000001
    refused = refused_arguments(intervention, arguments)
    assert refused is not None and "from 0 to 50; it was 50.000001." in refused.message


@given(path=st.sampled_from(["/etc/passwd", __file__, "relative/x.png", "/tmp/x.png"]) | st.text(min_size=1))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_file_reference_that_names_a_server_path_is_refused_with_a_message(endpoints, path):
    heads = endpoints["heads"]
    arguments = filler(heads)
    arguments[1] = {"path": path, "meta": {"_type": "gradio.FileData"}}
    refused = refused_arguments(heads, arguments)
    assert refused is not None and refused.position == 1 and "`image_path` (Image)" in refused.message
    assert "uploaded" in refused.message or "upload" in refused.message
