"""The Circuits tab: the picture's score with the caption (or with it rather than another text) traced through the
tower as an attribution graph: the token embeddings at the bottom, each layer's transcoder features and errors, the
score at the top, grouped (a feature over its tokens, an MLP's errors, the embeddings of a region) so that a graph
reads as tens of groups; its replacement and completeness scores; the graph as JSON in circuit-tracer's schema."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import gradio as gr

from ..circuits import EDGE_THRESHOLD, NODE_THRESHOLD, attribution_graph, group_nodes, to_json
from ..dictionaries import described, stored_dictionary
from ..errors import InterpretError
from ..limits import MAX_CIRCUIT_FEATURES, check_number
from ..paths import is_toy
from ..render import circuit_figure
from .common import (ANALYSIS, Shared, connect, escaped, friendly_errors, model_for, picture_of, status_box,
                     with_warnings)

TITLE = "Circuits"


def feature_names(model, layers: list[int]) -> dict:
    """{(layer, feature): name} from the transcoders' atlases (a toy's made on first use)."""
    names = {}
    for layer in layers:
        try:
            _, atlas = described(model, "transcoder", layer) if is_toy(model.name) else \
                stored_dictionary(model, "transcoder", layer)
        except InterpretError:
            continue
        if atlas is not None and atlas.labels:
            names.update({(layer, feature): label[0] for feature, label in enumerate(atlas.labels) if label[0]})
    return names


@friendly_errors
def run_circuits(label: str, image_path: str | None, caption: str, contrast: str = "", features: float = 1000,
                 node_threshold: float = NODE_THRESHOLD, edge_threshold: float = EDGE_THRESHOLD):
    """The attribution graph of the picture's score with `caption` (rather than `contrast`, when given): its
    figure, its most influential groups, a summary with its scores, and the graph as JSON."""
    features = check_number(features, "The features kept", 1, MAX_CIRCUIT_FEATURES, integer=True)
    node_threshold = check_number(node_threshold, "The node threshold", 0, 1)
    edge_threshold = check_number(edge_threshold, "The edge threshold", 0, 1)
    model = model_for(label)
    if not (caption or "").strip():
        raise InterpretError("Type a caption: the graph traces its score.")
    warnings = model.tokenize(caption).warnings() + (model.tokenize(contrast).warnings() if contrast else [])
    layers = [layer for layer in range(model.geometry.layers) if _has_transcoder(model, layer)]
    if not layers:
        raise InterpretError(f"{model.label} has no transcoders here: the Build a database tab trains them on a zip "
                             "of your images (tick the transcoders), or python -m interpret features train --kind "
                             f"transcoder --model {model.name} --images DIR.")
    picture = picture_of(image_path)
    graph = attribution_graph(model, picture, caption, contrast or None, max_feature_nodes=features,
                              node_threshold=node_threshold, edge_threshold=edge_threshold)
    names = feature_names(model, layers)
    groups, links = group_nodes(graph, model, names)
    scores = graph.scores
    what = f"'{caption}'" + (f" rather than '{contrast}'" if contrast else "")
    figure = circuit_figure(groups, links, picture, f"How the score of {what} is made: {graph.score:+.4f}")
    rows = [[group.label, group.kind, "patches" if group.row < 0 else group.row, round(group.influence, 4),
             len(group.members)] for group in sorted(groups, key=lambda g: -g.influence) if group.kind != "score"]
    summary = (f"Score of **{escaped(what)}**: **{graph.score:+.4f}**. Transcoders of MLPs "
               f"{', '.join(map(str, graph.transcoder_layers))} (the other MLPs are errors); "
               f"{scores['features active']:,} features active, the {min(features, scores['features active']):,} "
               f"of largest effect kept, then pruned to {scores['nodes kept']:,} nodes and {scores['edges kept']:,} "
               f"edges (node threshold {node_threshold:g}, edge threshold {edge_threshold:g}). **Replacement score "
               f"{scores['replacement']:.3f}** (the share of the score's influence that starts at the token "
               f"embeddings rather than at errors), **completeness {scores['completeness']:.3f}** (the share of "
               "the edges into the nodes, weighted by their influence, that come from features and embeddings). The "
               "figure groups the nodes (a feature over the tokens it is kept at, an MLP's errors, the embeddings "
               "of a third of the picture), shows each row's 6 most influential groups and each group's strongest links in; "
               "the table lists them, the JSON holds every kept node and edge.")
    return figure, rows, with_warnings(summary, warnings), _saved(to_json(graph, model, names=names))


JSON_LIFETIME_S = 600  # a graph's JSON file waits this long for its download (Gradio serves a copy of it)


def _saved(exported: dict) -> str:
    """The graph's JSON in a file of our own temporary folder (those older than `JSON_LIFETIME_S` removed first)."""
    folder = Path(tempfile.gettempdir()) / "interpret-circuits"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("circuit-*.json"):
        try:
            if time.time() - old.stat().st_mtime > JSON_LIFETIME_S:
                old.unlink()
        except OSError:
            continue
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="circuit-", dir=folder, delete=False) as stream:
        json.dump(exported, stream)
    return stream.name


def _has_transcoder(model, layer: int) -> bool:
    try:
        stored_dictionary(model, "transcoder", layer)
        return True
    except InterpretError:
        return False


def build(shared: Shared) -> None:
    gr.Markdown("Trace the caption's score through the tower: each MLP replaced by its transcoder's features (and "
                "what they miss, an error node), attention and norms fixed at this picture, and the graph of how "
                "the token embeddings, the features and the errors make the score, exactly (circuit-tracer's "
                "method). Uses the picture and caption on the left.")
    with gr.Row():
        contrast = gr.Textbox(label="Rather than (optional)", elem_id="circuits-contrast", max_lines=1)
        features = gr.Slider(10, MAX_CIRCUIT_FEATURES, value=MAX_CIRCUIT_FEATURES, step=10,
                             label="Features kept (by their effect on the score)", elem_id="circuits-features")
    with gr.Row():
        nodes = gr.Slider(0.1, 1.0, value=NODE_THRESHOLD, step=0.01, label="Node threshold (influence kept)",
                          elem_id="circuits-nodes")
        edges = gr.Slider(0.5, 1.0, value=EDGE_THRESHOLD, step=0.005, label="Edge threshold (influence kept)",
                          elem_id="circuits-edges")
    button = gr.Button("Trace the score", variant="primary", elem_id="circuits-run")
    status = status_box("circuits")
    summary = gr.Markdown(elem_id="circuits-summary")
    figure = gr.Image(label="The graph", type="pil", format="png", elem_id="circuits-graph", interactive=False,
                      show_label=False)
    table = gr.Dataframe(headers=["group", "kind", "layer", "influence", "nodes"], label="The groups, most "
                         "influential first", elem_id="circuits-table", interactive=False, wrap=True)
    download = gr.File(label="The graph as JSON (circuit-tracer's schema, with each node's patch and the picture)",
                       elem_id="circuits-json", interactive=False)
    shared.link(TITLE, contrast=contrast, features=features, nodes=nodes, edges=edges)
    connect(button.click, run_circuits, [shared.model, shared.image, shared.caption, contrast, features, nodes,
                                         edges], [figure, table, summary, download], status, api_name="circuits",
            pool=ANALYSIS)
