"""The Models tab: how interpretable the model is. Each head's consistency with its label, the model's scores
beside those of every model whose head labels are on this machine, and, where an evaluation set is at hand (the
toy world), the zero-shot accuracy as its most consistent, random and least consistent heads are removed."""
from __future__ import annotations

import threading

import gradio as gr
import numpy as np

from ..folders import stored_labels
from ..errors import InterpretError
from ..models import is_toy
from ..quantify import ModelScores, PruningCurves, pruning_curves, score_heads
from ..textspan import HeadAtlas
from ..render import consistency_grid, pruning_plot
from .atlas import atlas_for
from .common import Shared, connect, friendly_errors, model_for, offered_models, status_box
from .database import session_of

TITLE = "Models"
HEADERS = ["model", "heads", "consistency 5..0 (heads)", "high", "moderate", "low", "association", "entanglement"]
COLUMN_WIDTHS = ["18%", "8%", "17%", "7%", "12%", "6%", "15%", "17%"]  # every column in view at 1400 px
_scored: dict[str, ModelScores] = {}  # model label -> its scores, for the table (the ones scored here)
_curves: dict[str, PruningCurves] = {}
_lock = threading.Lock()
TOY_SCENES = 200  # single-object toy scenes the toy's pruning curves are measured on


def toy_curves(model, scores: ModelScores, progress=None) -> PruningCurves:
    """Pruning curves of a toy model on `TOY_SCENES` single-object toy scenes (24 colour x shape classes), measured
    once (a few seconds; `progress(fraction)` as they go) for the two effects the plot draws."""
    from ..toy.evaluate import COLOUR_SHAPE_PAIRS, COLOUR_SHAPE_PROMPTS
    from ..toy.train import toy_scene

    with _lock:
        if model.label not in _curves:
            scenes = [toy_scene(30_000 + i, count=1) for i in range(TOY_SCENES)]
            labels = [COLOUR_SHAPE_PAIRS.index((s.objects[0].colour, s.objects[0].shape)) for s in scenes]
            _curves[model.label] = pruning_curves(model, [s.image for s in scenes], labels,
                                                  model.encode_texts(list(COLOUR_SHAPE_PROMPTS)), scores,
                                                  counts=[0, 4, 8, 12], effects=("direct", "zero"),
                                                  progress=progress)
        return _curves[model.label]


def stored_scores() -> dict[str, ModelScores]:
    """The scores of every offered model whose head labels are on this machine, read from the labels alone (no
    model is loaded; a damaged labels file is left out)."""
    found = {}
    for spec in offered_models():
        path = stored_labels(spec)
        if path is not None:
            try:
                found[spec.label] = score_heads(HeadAtlas.load(path))
            except InterpretError:
                continue
    return found


@friendly_errors
def run_scores(label: str, request: gr.Request = None, progress=gr.Progress()):
    """The model's scores (summary), the table of every model scored here, its consistency grid, and its
    pruning curves (the toy models, measured on first use with a progress bar; other models: None, and the
    summary gives the command that draws them from a labelled image folder)."""
    model = model_for(label)
    atlas = atlas_for(model, session_of(request))
    scores = score_heads(atlas)
    _scored[model.label] = scores
    g = model.geometry
    values = np.zeros((g.layers, g.heads))
    for (layer, head), value in scores.by_head.items():
        values[layer, head] = value
    grid = consistency_grid(values, atlas.property_grid(g.layers, g.heads), f"{model.label}: head consistency")
    table = {**stored_scores(), **_scored}
    rows = [[name, s.heads, " ".join(str(n) for n in s.by_consistency.values()), len(s.high), len(s.moderate),
             len(s.low), round(s.association, 3), round(s.entanglement, 3)] for name, s in table.items()]
    summary = (f"**{model.label}**: {scores.heads} heads; association **{scores.association:.3f}**, entanglement "
               f"**{scores.entanglement:.3f}**. A head's *consistency* is how many of its first 5 TextSpan "
               "descriptions are about its own label's property (5: all, the CCS paper's *high*; 3: *moderate*; "
               "1 or 0: *low*). *Association* is the mean consistency over 5. *Entanglement* says how much the "
               "high-consistency heads share properties (0: each has its own; near 1: all share one).")
    curves = None
    if is_toy(model.name):
        measured = toy_curves(model, scores, lambda done: progress(
            done, desc=f"Measuring the pruning curves on {TOY_SCENES} toy scenes (once)"))
        curves = pruning_plot([(model.label, measured)])
        summary += (f" The curves: zero-shot accuracy on {TOY_SCENES} toy scenes as the most consistent (red), random "
                    "(grey) and least consistent (blue) heads are removed.")
    else:
        summary += (" Pruning curves need a labelled image set: `python -m interpret score-models --models ... "
                    "--images DIR` (one sub-folder per class).")
    return summary, rows, grid, curves


def build(shared: Shared) -> None:
    gr.Markdown("How interpretable is this model? Each head's **consistency** with its label, the model's "
                "scores next to every model scored here, and what removing heads does to zero-shot accuracy.")
    button = gr.Button("Score the model", variant="primary", elem_id="models-run")
    status = status_box("models")
    summary = gr.Markdown(elem_id="models-summary")
    table = gr.Dataframe(headers=HEADERS, label="Every model with head labels here", elem_id="models-table",
                         interactive=False, wrap=True, column_widths=COLUMN_WIDTHS)
    with gr.Row():
        grid = gr.Image(label="Consistency of every head", type="pil", format="png", interactive=False,
                        elem_id="models-grid", show_label=False)
        curves = gr.Image(label="Pruning curves", type="pil", format="png", interactive=False, elem_id="models-curves",
                          show_label=False, visible=False)  # shown where there are curves (the toy models)
    connect(button.click, run_scores, [shared.model], [summary, table, grid, curves], status,
            api_name="model_scores").then(lambda picture: gr.update(visible=picture is not None), curves, curves,
                                          api_visibility="private")
