"""Views you can link: the page's state in its URL, a button that gives the link, and a link that opens the
same view and computes it again.

A link holds `model` (a label of the picker), `tab` (a tab's title), `caption`, `example` (a bundled example
picture, by file name: an uploaded picture is never put in a link), and the inputs a tab registers in
`Shared.linked` (the Topic tab's `text` and `relative`, the Head atlas's `layer` and `head`, `opacity`...). Every
value of a link is hostile until checked: a model or tab not on the page, an example that is not one of the
bundled files, a text over its limit, or a number out of range is dropped (the page's default stays)."""
from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path
from urllib.parse import urlencode

import gradio as gr

from ..limits import MAX_TEXT_CHARS
from ..toy.examples import toy_examples
from .common import ANY_INDEX, Shared

RUN_BUTTONS = {"Heads": "heads-run", "Topic segmentation": "topic-run", "Contrastive segmentation": "contrast-run",
               "Interactions": "inter-run", "Compare explanations": "compare-run", "Head atlas": "atlas-run",
               "Models": "models-run", "Property neighbours": "property-run", "Image neighbours per head":
               "image-nn-run", "Text neighbours per head": "text-nn-run", "Mutual knowledge": "mutual-run"}


def examples() -> dict[str, str]:
    """Bundled example pictures a link may name: file name -> path."""
    return {Path(path).name: path for path, _ in toy_examples()}


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.cache
def _example_contents() -> dict[tuple[int, str], str]:
    """(size, SHA-256) of each bundled example -> its file name (the bundled files are read once)."""
    return {(Path(path).stat().st_size, _digest(path)): name for name, path in examples().items()}


def example_of(image_path: str | None) -> str | None:
    """The bundled example's file name when the picture is one (by content: Gradio hands over a copy), else None.
    A picture of another size than every example is not read."""
    if not image_path or not Path(image_path).is_file():
        return None
    size = Path(image_path).stat().st_size
    if all(size != known for known, _ in _example_contents()):
        return None
    return _example_contents().get((size, _digest(image_path)))


def _text(value) -> str | None:
    text = str(value)
    return text if len(text) <= MAX_TEXT_CHARS else None


def _number(value, component) -> float | None:
    """A link's number for `component`: finite, and within a slider's range (else dropped)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if isinstance(component, gr.Slider):
        return number if component.minimum <= number <= component.maximum else None
    return number if math.isfinite(number) and abs(number) <= ANY_INDEX else None


def checked_view(query: dict, labels: list[str], titles: list[str], linked: dict) -> dict:
    """The parts of a link's `query` that are safe to show: {field: value}; the rest is dropped."""
    view = {}
    if query.get("model") in labels:
        view["model"] = query["model"]
    if query.get("tab") in titles:
        view["tab"] = query["tab"]
    if query.get("example") in examples():
        view["example"] = query["example"]
    for field in ("caption", *linked):
        if field not in query:
            continue
        component = linked.get(field)
        value = _number(query[field], component) if isinstance(component, (gr.Number, gr.Slider)) else _text(query[field])
        if value is not None:
            view[field] = value
    return view


def link_query(model: str, tab: str, caption: str, image_path: str | None, *values, fields: tuple = ()) -> str:
    """`?model=...&tab=...`: the view as a URL's query (the page adds its own address)."""
    query = {"model": model, "tab": tab}
    example = example_of(image_path)
    if example:
        query["example"] = example
    for field, value in (("caption", caption), *zip(fields, values)):
        if value not in (None, ""):
            query[field] = value
    return "?" + urlencode(query)


def link_controls() -> tuple[gr.Button, gr.Textbox]:
    """The button that gives a link to the view, and the box that shows it (with a copy button)."""
    button = gr.Button("Link to this view", size="sm", elem_id="link-button")
    box = gr.Textbox(show_label=False, interactive=False, elem_id="link", max_lines=2, buttons=["copy"],
                     placeholder="model, tab, caption, texts and example picture (an upload is not linked)")
    return button, box


def attach(shared: Shared, groups, outer: gr.Tabs, inner: dict, choose_model, model_outputs: list,
           button: gr.Button, box: gr.Textbox) -> None:
    """Wire the link `button` and `box`, and the page's load event that opens a link's view. `groups`: (group, tabs);
    `outer`: the groups' Tabs; `inner`: group -> its Tabs; `choose_model(label, previous)`: the picker's own
    handler, whose outputs (after the picker) are `model_outputs`."""
    titles = {tab.TITLE: group for group, tabs in groups for tab in tabs}
    fields = tuple(shared.linked)
    current = gr.State("Heads")
    for title in titles:
        shared.tab_of[title].select(lambda title=title: title, None, current, api_visibility="private")
    inputs = [shared.model, current, shared.caption, shared.image, *shared.linked.values()]
    button.click(lambda *values: link_query(*values, fields=fields), inputs, box, api_visibility="private").then(
        None, box, box, js="(query) => query ? location.origin + location.pathname + query : query")

    def open_view(request: gr.Request):
        labels = shared.model.choices and [choice[1] if isinstance(choice, tuple) else choice
                                           for choice in shared.model.choices]
        view = checked_view(dict(request.query_params) if request else {}, labels, list(titles), shared.linked)
        chosen = choose_model(view["model"], shared.model.value) if "model" in view else None
        updates = [gr.update(value=chosen[0]) if chosen else gr.update(),
                   *(chosen[1:] if chosen else [gr.update()] * len(model_outputs)),
                   gr.update(value=view["caption"]) if "caption" in view else gr.update(),
                   gr.update(value=examples()[view["example"]]) if "example" in view else gr.update()]
        updates += [gr.update(value=view[field]) if field in view else gr.update() for field in fields]
        tab = view.get("tab")
        group = titles.get(tab)
        updates.append(gr.update(selected=group) if group else gr.update())
        updates += [gr.update(selected=tab) if titles.get(tab) == name else gr.update() for name in inner]
        updates.append(RUN_BUTTONS.get(tab, "") if view else "")
        return updates

    run = gr.Textbox(visible=False)
    outputs = [shared.model, *model_outputs, shared.caption, shared.image, *shared.linked.values(), outer,
               *inner.values(), run]
    shared.page.load(open_view, None, outputs, api_visibility="private").then(
        None, run, None, js="(button) => { if (button) setTimeout(() => "
                            "document.querySelector('#' + button)?.click(), 500); }")


__all__ = ["attach", "checked_view", "example_of", "link_query"]
