"""Views you can link: the page's state in its URL, a button that gives the link, and a link that opens the
same view and computes it again.

A link holds `model` (a label of the picker), `tab` (a tab's title), `caption`, `example` (a bundled example
picture, by file name: an uploaded picture is never put in a link, and the page says so), and the inputs the
shown tab registers with `Shared.link` (every input of its view: the Interactions tab's layers, steps, span and
box, Compare's methods and baseline, a neighbour tab's layer, head and k...), and only those. Every value of a
link is hostile until checked: a model or tab not on the page, an example that is not one of the bundled files,
a text over its limit, a number out of range or a choice the input does not offer is dropped (the page's default
stays). The link box empties when the view changes (another tab, model, picture or caption)."""
from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path
from urllib.parse import urlencode

import gradio as gr

from ..limits import MAX_TEXT_CHARS
from ..toy.examples import toy_examples
from .arguments import choices_of
from .common import ANY_INDEX, Shared, escaped

RUN_BUTTONS = {"Heads": "heads-run", "Topic segmentation": "topic-run", "Contrastive segmentation": "contrast-run",
               "Interactions": "inter-run", "Compare explanations": "compare-run", "Head atlas": "atlas-run",
               "Models": "models-run", "Property neighbours": "property-run", "Image neighbours per head":
               "image-nn-run", "Text neighbours per head": "text-nn-run", "Mutual knowledge": "mutual-run",
               "Neurons": "neurons-run", "Features": "features-run"}


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


def _choice(value, component) -> object | None:
    """A link's value for a radio, dropdown or checkbox group: only what the input offers."""
    offered = choices_of(component)
    if isinstance(component, gr.CheckboxGroup):
        values = value if isinstance(value, list) else [value]
        return values if values and all(item in offered for item in values) else None
    return value if value in offered else None


def _value(value, component):
    if isinstance(component, (gr.Number, gr.Slider)):
        return _number(value, component)
    if isinstance(component, (gr.Radio, gr.Dropdown, gr.CheckboxGroup)):
        return _choice(value, component)
    return _text(value) if isinstance(value, str) else None


def checked_view(query: dict, labels: list[str], titles: list[str], linked: dict) -> dict:
    """The parts of a link's `query` ({field: value, or a list of values for a repeated field}) that are safe to
    show: {field: value}; the rest is dropped. `linked`: tab title -> {field: input}; only the link's tab's fields
    are read."""
    single = {key: value for key, value in query.items() if isinstance(value, str)}  # a repeated key is no name
    view = {}
    if single.get("model") in labels:
        view["model"] = single["model"]
    if single.get("tab") in titles:
        view["tab"] = single["tab"]
    if single.get("example") in examples():
        view["example"] = single["example"]
    if "caption" in single and _text(single["caption"]) is not None:
        view["caption"] = single["caption"]
    for field, component in linked.get(view.get("tab"), {}).items():
        if field in query and field not in view:
            value = _value(query[field], component)
            if value is not None:
                view[field] = value
    return view


def link_query(model: str, tab: str, caption: str, image_path: str | None, *values,
               fields: tuple[tuple[str, str], ...] = ()) -> str:
    """`?model=...&tab=...`: the view as a URL's query (the page adds its own address). `values`: one for each of
    `fields`, (tab title, field) pairs; only the shown `tab`'s go in."""
    query = {"model": model, "tab": tab}
    example = example_of(image_path)
    if example:
        query["example"] = example
    if caption not in (None, ""):
        query["caption"] = caption
    for (title, field), value in zip(fields, values):
        if title == tab and value not in (None, "", []):
            query[field] = value
    return "?" + urlencode(query, doseq=True)


UPLOAD_NOT_LINKED = ("The picture you uploaded is not in the link (only the bundled examples are): whoever opens "
                     "it uploads the picture again, then runs the tab.")


def link_note(image_path: str | None) -> str:
    """What the link leaves out: an uploaded picture."""
    return f"ℹ️ {UPLOAD_NOT_LINKED}" if image_path and example_of(image_path) is None else ""


def link_controls() -> tuple[gr.Button, gr.Textbox, gr.Markdown, gr.Markdown]:
    """The button that gives a link to the view, the box that shows it (with a copy button), a note of what it
    leaves out, and a note of what a link the page was opened with could not hold (`opened_note`: kept while the
    view it opened changes, unlike the first note)."""
    button = gr.Button("Link to this view", size="sm", elem_id="link-button")
    box = gr.Textbox(show_label=False, interactive=False, elem_id="link", max_lines=2, buttons=["copy"],
                     placeholder="the model, the tab and every input of its view, the caption and an example "
                                 "picture (an upload is not linked)")
    note = gr.Markdown(elem_id="link-note")
    opened = gr.Markdown(elem_id="link-opened")
    return button, box, note, opened


GRADIO_PARAMETERS = {"__theme", "view"}  # Gradio's own (a theme, the API page): not the view's


def opened_note(query: dict, view: dict, tab: str | None, runs: bool) -> str:
    """What the page says of a link it opened: the parts it left out (given twice, or not a value the page offers)
    and, when the view does not run by itself, why (a view without its picture, a link without a tab)."""
    if not query:
        return ""
    dropped = sorted(key for key in query if key not in view and key not in GRADIO_PARAMETERS)[:8]
    said = []
    if dropped:
        said.append(f"This link's {', '.join(escaped(str(key)[:40]) for key in dropped)} could not be used (given "
                    "twice, or not a value this page offers), so the page left "
                    f"{'it' if len(dropped) == 1 else 'them'} out.")
    if not runs and view:
        said.append("Pick a tab and press its button to run it." if tab is None else
                    "Upload or pick a picture, then press the tab's button: the link holds no picture.")
    return f"ℹ️ {' '.join(said)}" if said else ""


NEEDS_IMAGE = {"Heads", "Topic segmentation", "Contrastive segmentation", "Interactions", "Compare explanations",
               "Property neighbours", "Image neighbours per head", "Mutual knowledge", "Neurons", "Features"}


def attach(shared: Shared, groups, outer: gr.Tabs, inner: dict, choose_model, model_outputs: list,
           button: gr.Button, box: gr.Textbox, note: gr.Markdown, opened: gr.Markdown) -> None:
    """Wire the link `button`, `box` and `note`, and the page's load event that opens a link's view (and says in
    `opened` what of it could not be used). `groups`:
    (group, tabs); `outer`: the groups' Tabs; `inner`: group -> its Tabs; `choose_model(label, previous)`: the
    picker's own handler, whose outputs (after the picker) are `model_outputs`."""
    titles = {tab.TITLE: group for group, tabs in groups for tab in tabs}
    fields = tuple((title, field) for title, inputs in shared.linked.items() for field in inputs)
    components = [shared.linked[title][field] for title, field in fields]
    current = gr.State("Heads")
    for title in titles:  # another tab: another view, whose link is not made yet
        shared.tab_of[title].select(lambda title=title: (title, "", ""), None, [current, box, note],
                                    api_visibility="private")
    for changed in (shared.model.change, shared.image.change, shared.caption.input):
        changed(lambda: ("", ""), None, [box, note], api_visibility="private")
    inputs = [shared.model, current, shared.caption, shared.image, *components]
    button.click(lambda *values: (link_query(*values, fields=fields), link_note(values[3])), inputs, [box, note],
                 api_visibility="private").then(
        None, box, box, js="(query) => query ? location.origin + location.pathname + query : query")

    def open_view(request: gr.Request):
        labels = choices_of(shared.model)
        query = {}
        if request:
            for key in request.query_params.keys():
                values = request.query_params.getlist(key)
                query[key] = values if len(values) > 1 else values[0]
        view = checked_view(query, labels, list(titles), shared.linked)
        chosen = choose_model(view["model"], shared.model.value) if "model" in view else None
        updates = [gr.update(value=chosen[0]) if chosen else gr.update(),
                   *(chosen[1:] if chosen else [gr.update()] * len(model_outputs)),
                   gr.update(value=view["caption"]) if "caption" in view else gr.update(),
                   gr.update(value=examples()[view["example"]]) if "example" in view else gr.update()]
        tab = view.get("tab")
        updates += [gr.update(value=view[field]) if title == tab and field in view else gr.update()
                    for title, field in fields]
        group = titles.get(tab)
        updates.append(gr.update(selected=group) if group else gr.update())
        updates += [gr.update(selected=tab) if titles.get(tab) == name else gr.update() for name in inner]
        runnable = view and ("example" in view or tab not in NEEDS_IMAGE)
        updates.append(RUN_BUTTONS.get(tab, "") if runnable else "")
        updates.append(tab or "Heads")
        updates.append(opened_note(query, view, tab, bool(runnable and RUN_BUTTONS.get(tab))))
        return updates

    run = gr.Textbox(visible=False)
    outputs = [shared.model, *model_outputs, shared.caption, shared.image, *components, outer, *inner.values(), run,
               current, opened]
    shared.page.load(open_view, None, outputs, api_visibility="private").then(
        None, run, None, js="(button) => { if (button) setTimeout(() => "
                            "document.querySelector('#' + button)?.click(), 500); }")


def attach_head_links(shared: Shared, groups, outer: gr.Tabs, inner: dict) -> None:
    """A click on a row of each table in `shared.head_links` opens the head it names in the Head atlas: its layer
    and head there, that tab shown, and its description run."""
    atlas_group = next(group for group, tabs in groups for tab in tabs if tab.TITLE == "Head atlas")
    atlas = shared.linked["Head atlas"]
    for table, handler in shared.head_links:
        table.select(handler, table, [atlas["layer"], atlas["head"]], api_visibility="private").then(
            lambda: (gr.update(selected=atlas_group), gr.update(selected="Head atlas")), None,
            [outer, inner[atlas_group]], api_visibility="private").then(
            None, None, None, js="() => setTimeout(() => document.querySelector('#atlas-run')?.click(), 300)")


__all__ = ["attach", "attach_head_links", "checked_view", "example_of", "link_note", "link_query"]
