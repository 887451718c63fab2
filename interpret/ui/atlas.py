"""The Head atlas tab: what each head means (its TextSpan descriptions and property label), and a map of all
heads coloured by property. Also the home of the model's head labels, which the property search uses."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..banks import toy_bank
from ..folders import HEAD_LABELS
from ..errors import InterpretError
from ..index import load_head_labels
from ..models import ClipModel, is_toy
from ..render import property_grid
from ..textspan import HeadAtlas, describe_heads
from ..toy.train import toy_images
from ..integrity import LoadedFiles
from .common import (LOOKUP, Shared, connect, escaped, friendly_errors, layer_and_head, model_for,
                     status_box)
from .database import session_of
from .neighbours import database_folder

TITLE = "Head atlas"

ATLASES_KEPT = 16  # head labels kept loaded (visitors' own come and go; the least recently used goes)
_atlases = LoadedFiles(ATLASES_KEPT)


def atlas_for(model: ClipModel, session: str | None = None) -> HeadAtlas:
    """The head labels beside the model's database (the visitor's own, its index folder or its bundle), loaded
    once per folder and again when the file changes (a visitor's rebuild); for the toy model they are built on
    first use (seconds), and rebuilt when they were made with other toy weights."""
    folder = database_folder(model, session)
    try:
        return _atlases.get(folder / HEAD_LABELS, lambda: _labels_in(model, folder))
    except InterpretError as error:
        said = str(error).rstrip()
        said += "" if said.endswith((".", "!", "?")) else "."  # the message may end on a command: end it first
        raise InterpretError(f"{said} Or in this page: the Build a database tab (A database) describes the heads "
                             "from a zip of your images, for your session.") from None


def _labels_in(model: ClipModel, folder: Path) -> HeadAtlas:
    """The head labels in `folder`; for the toy model's own folder, described now when they are not there."""
    try:
        return load_head_labels(model, folder)
    except InterpretError:
        if not is_toy(model.name) or folder != model.index_dir:
            raise
        return describe_heads(model, toy_images(1000), toy_bank(), out_path=folder / HEAD_LABELS, progress=False)


@friendly_errors
def run_atlas(label: str, layer: float, head: float, request: gr.Request = None):
    """One head's TextSpan descriptions and label, and the property map of all heads."""
    model = model_for(label)
    g = model.geometry
    layer, head = layer_and_head(model, layer, head)
    atlas = atlas_for(model, session_of(request))
    chosen = atlas.get(layer, head)
    rows = [[pick, text, tag, round(gain, 4)]
            for pick, (text, tag, gain) in enumerate(zip(chosen.descriptions, chosen.tags, chosen.gains), start=1)]
    summary = (f"**Head {layer}.{head}**: property **{escaped(chosen.property)}** "
               f"(confidence {chosen.confidence:.0%}); "
               f"its {len(rows)} descriptions explain {chosen.explained:.0%} of its variance over {atlas.images} "
               f"images (bank: {escaped(atlas.bank)}). They are listed in the order TextSpan picked them; each one's "
               "variance is what it adds after the earlier picks are taken out, so a later pick can add more.")
    picture = property_grid(atlas.property_grid(g.layers, g.heads), f"{model.label}: head property labels",
                            highlight=(layer, head))
    return summary, rows, picture


def build(shared: Shared) -> None:
    with gr.Row():
        layer = gr.Number(value=0, precision=0, label="Layer", elem_id="atlas-layer")
        head = gr.Number(value=0, precision=0, label="Head", elem_id="atlas-head")
    shared.link(TITLE, layer=layer, head=head)
    button = gr.Button("Describe the head", variant="primary", elem_id="atlas-run")
    status = status_box("atlas")
    summary = gr.Markdown(elem_id="atlas-summary")
    table = gr.Dataframe(headers=["pick", "description", "property", "variance added"],
                         label="TextSpan descriptions", elem_id="atlas-table", interactive=False)
    grid = gr.Image(label="Property label of every head", type="pil", format="png", elem_id="atlas-grid",
                    interactive=False, show_label=False)
    connect(button.click, run_atlas, [shared.model, layer, head], [summary, table, grid], status,
            api_name="head_atlas", pool=LOOKUP)
