"""The Contrastive segmentation tab: where the chosen heads find text A rather than text B."""
from __future__ import annotations

import gradio as gr

from ..render import map_overlay
from ..parts import DEFAULT_PARTS, checked_parts
from ..segment import parse_heads
from .common import QUICK, Shared, connect, friendly_errors, model_for
from .maps import checked_opacity, image_maps_for, map_controls, map_summary

TITLE = "Contrastive segmentation"


@friendly_errors
def run_contrastive(label: str, image_path: str | None, text_a: str, text_b: str, heads: str = "all",
                    opacity: float = 0.6, parts: str = DEFAULT_PARTS):
    """map(A) − map(B) for the chosen parts (all, heads, mlps, embedding; narrowed by the heads box)."""
    opacity = checked_opacity(opacity)
    model = model_for(label)
    parts = checked_parts(parts)
    choice = parse_heads(heads)
    encoded = model.tokenize([text_a or "", text_b or ""])
    maps = image_maps_for(model, image_path)
    spatial = maps.contrastive(text_a, text_b, **choice, parts=parts)
    picture = map_overlay(maps.picture, spatial.image, opacity, f"'{spatial.text}' ({spatial.heads})",
                          label="contribution to score(A) − score(B)", bound=spatial.bound)
    return picture, map_summary(spatial, model, encoded.warnings())


def build(shared: Shared) -> None:
    gr.Markdown("Where do the chosen parts of the tower find text A **rather than** text B? map(A) − map(B).")
    with gr.Row():
        text_a = gr.Textbox(label="Text A", placeholder="something red", elem_id="contrast-a")
        text_b = gr.Textbox(label="Text B", placeholder="something blue", elem_id="contrast-b")
    parts, heads, opacity, button, status, summary, picture = map_controls("contrast")
    shared.link(TITLE, text_a=text_a, text_b=text_b, parts=parts, heads=heads, opacity=opacity)
    inputs = [shared.model, shared.image, text_a, text_b, heads, opacity, parts]
    connect(button.click, run_contrastive, inputs, [picture, summary], status, api_name="contrastive_segmentation",
            pool=QUICK)
    connect(opacity.release, run_contrastive, inputs, [picture, summary], status, pool=QUICK)
