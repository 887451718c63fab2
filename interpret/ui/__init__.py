"""The web page: one module per tab (layout and handlers), grouped by what the visitor holds; the shared pieces
are in `common`. A new tab is one new module with `TITLE` and `build(shared)`, named in `GROUPS`.

`python app.py` calls `build_app()` and `serve()`.
"""
from __future__ import annotations

import os
import threading

import gradio as gr
import torch
from starlette.middleware import Middleware

from ..errors import InterpretError
from ..limits import ANALYSIS_SLOTS, MAX_UPLOAD_BYTES, QUICK_SLOTS, UPLOAD_LIFETIME_S
from ..paths import is_toy
from ..toy.examples import toy_examples
from . import (atlas, circuits, compare, contrastive, database, features, heads, image_neighbours, interactions,
               models, mutual, neurons, property_neighbours, text_neighbours, topic)
from . import common, links, neighbours, upstream
from .admission import ReadableMcpBodies, fair_admission, http_errors
from .tools import described
from .common import (LOOKUP, ImageInput, Shared, choose_default_model, error_text, friendly_errors, log,
                     message_for, model_for, model_summary, offered_models)
from .neighbours import database_for

# (group title, its tabs): the groups are what the visitor holds; each group's tabs fit its bar at 1280 px.
GROUPS = (
    ("Image and caption", (heads, topic, contrastive, interactions, compare, circuits)),
    ("The model", (atlas, neurons, features, models)),
    ("A database", (property_neighbours, image_neighbours, text_neighbours, database)),
    ("Zero-shot classes", (mutual,)),
)


@friendly_errors
def describe_model(label: str) -> str:
    """The model's geometry (the /model_info endpoint)."""
    return model_summary(model_for(label))


def choose_model(label: str, previous: str):
    """The picker's choice: the new model when it loads, else the previous one again with the reason.
    Returns (picker value, model info, the model in use, status, the start-up note: cleared once another model is
    in use, since it was about the first one)."""
    try:
        return label, model_summary(model_for(label)), label, "", ""
    except InterpretError as error:  # an unknown label, a model not offered here, weights that cannot be had
        return previous, gr.skip(), previous, error_text(f"{label} could not be loaded, so {previous} is still in "
                                                         f"use. {message_for(error, 'choose_model')}"), gr.skip()


def build_app(default_label: str | None = None, note: str = "", allow_folders: bool = False) -> gr.Blocks:
    """The page. `allow_folders`: the Build a database tab may also read a folder of this machine (a local user's
    own app; never on a hosted one)."""
    database.FOLDERS["allowed"] = allow_folders
    if default_label is None:
        default_label, note = choose_default_model()
    labels = [spec.label for spec in offered_models()]
    with gr.Blocks(title="CLIP interpret", delete_cache=(UPLOAD_LIFETIME_S, UPLOAD_LIFETIME_S)) as page:
        gr.Markdown("# CLIP interpret\nUpload an image, type a caption, and see which layers and attention heads "
                    "of CLIP carry their match. Pick an analysis on the right: the tabs are grouped by what you "
                    "give them.")
        start_note = gr.Markdown(note, elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                picker = gr.Dropdown(labels, value=default_label, label="Model", elem_id="model")
                in_use = gr.State(default_label)
                model_status = gr.Markdown(elem_id="model-error", elem_classes=["panel-error"])
                model_info = gr.Markdown(describe_model(default_label), elem_id="model-info")
                image = ImageInput(type="filepath", label="Image", elem_id="image")
                caption = gr.Textbox(label="Caption", placeholder="a photo of a dog", elem_id="caption")
                link_button, link_box, link_note, link_opened = links.link_controls()
                examples = toy_examples()
                if examples:
                    gr.Examples([list(example) for example in examples], [image, caption],
                                label="Toy-world examples (for the toy model)", examples_per_page=len(examples))
            with gr.Column(scale=2):
                shared = Shared(page, picker, image, caption)
                inner = {}
                with gr.Tabs(elem_id="groups") as outer:
                    for group, tabs in GROUPS:
                        with gr.Tab(group, id=group, elem_id=f"group-{group.split()[0].lower()}"):
                            with gr.Tabs() as inner[group]:
                                for tab in tabs:
                                    with gr.Tab(tab.TITLE, id=tab.TITLE) as shared.tab_of[tab.TITLE]:
                                        tab.build(shared)
                links.attach(shared, GROUPS, outer, inner, choose_model,
                             [model_info, in_use, model_status, start_note], link_button, link_box, link_note,
                             link_opened)
                links.attach_head_links(shared, GROUPS, outer, inner)
        picker.input(choose_model, [picker, in_use], [picker, model_info, in_use, model_status, start_note],
                     api_visibility="private", **LOOKUP)
        gr.Button(visible=False, elem_classes=["api-only"]).click(described(describe_model, "model_info"), picker,
                                                                  model_info, api_name="model_info", **LOOKUP)
    page.default_label = default_label
    return page


def warm_up(label: str) -> None:
    """Load the default model, and its head labels and database: fetched and verified from INTERPRET_BUNDLES,
    or built for the toy model, so that the first request does not wait for them; a toy model's neuron directions
    too (made on first use: the Compare tab's neurons method waited 8 s for them), and the atlas of its shipped
    transcoder of the default block (4 s, made on first use otherwise)."""
    try:
        model = model_for(label)
        atlas.atlas_for(model)
        database_for(model)
        if is_toy(model.name):
            from ..neurons import default_neuron_layers, stored_directions

            for layer in default_neuron_layers(model):
                stored_directions(model, layer)
            from ..dictionaries import default_layer, described

            described(model, "transcoder", default_layer(model))
    except InterpretError as error:  # no labels or database for this model here: the tabs say so when asked
        log.info("warm-up of %s: %s", label, error)
    except Exception:
        log.warning("warm-up of %s failed", label, exc_info=True)


def mcp_wanted(flag: bool | None = None) -> bool:
    """Whether to serve the analyses as MCP tools: the flag when given; else INTERPRET_MCP ('1' / '0'), or else
    Gradio's own switch GRADIO_MCP_SERVER ('True' / 'False'); else on a Hugging Face Space (idle tools cost nothing:
    Gradio answers them from the same handlers)."""
    if flag is not None:
        return flag
    for variable in ("INTERPRET_MCP", "GRADIO_MCP_SERVER"):
        setting = os.environ.get(variable, "").strip().lower()
        if setting:
            return setting in ("1", "true", "yes", "on")
    return bool(os.environ.get("SPACE_ID"))


def serve(page: gr.Blocks, mcp: bool | None = None, **launch_options) -> None:
    """Launch with the limits of `interpret.limits`: a queue bounded per visitor and per pool of slots (see
    `admission`), analyses and look-ups in their pools of slots (set on each event), a cap on uploads; with
    `mcp` (see `mcp_wanted`), every named analysis is also an MCP tool (its docstring is the tool's description),
    each MCP session a visitor of its own (`upstream`)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // (ANALYSIS_SLOTS + QUICK_SLOTS)))  # the slots share the cores
    upstream.install()  # whole outputs, a visitor per MCP session
    page.queue(max_size=None)  # bounded by `admission` instead: per visitor and per pool
    fair_admission(page)
    threading.Thread(target=upstream.warm_mcp, args=(page,), daemon=True).start()
    page.launch(max_file_size=MAX_UPLOAD_BYTES, theme=common.THEME, css=common.CSS + neighbours.CSS, js=common.JS,
                mcp_server=mcp_wanted(mcp), app_kwargs={"exception_handlers": http_errors(page),
                                                       "middleware": [Middleware(ReadableMcpBodies)]},
                **launch_options)


__all__ = ["GROUPS", "build_app", "describe_model", "mcp_wanted", "serve", "warm_up"]
