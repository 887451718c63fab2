"""The Topic segmentation tab: where in the image the chosen heads find a text."""
from __future__ import annotations

import gradio as gr

from ..explanations import NEUTRAL_TEXTS
from ..limits import check_texts
from ..render import map_overlay
from ..parts import DEFAULT_PARTS, checked_parts
from ..segment import parse_heads
from .common import QUICK, Shared, check_text_work, connect, friendly_errors, model_for
from .maps import checked_opacity, image_maps_for, map_controls, map_summary

TITLE = "Topic segmentation"


@friendly_errors
def run_topic(label: str, image_path: str | None, text: str, heads: str = "all", opacity: float = 0.6,
              relative_to: str = "", parts: str = DEFAULT_PARTS):
    """Where the chosen parts (all, heads, mlps, embedding; narrowed by the heads box) find the text;
    `relative_to`: other texts, one a line, whose mean map is taken away."""
    opacity = checked_opacity(opacity)
    model = model_for(label)
    parts = checked_parts(parts)
    choice = parse_heads(heads)
    others = check_texts([line.strip() for line in (relative_to or "").splitlines() if line.strip()], "Relative to")
    encoded = model.tokenize([text or "", *others])
    check_text_work(model, [text or "", *others], "These {count} texts (the text and those it is relative to)",
                    "Send fewer or shorter texts to map it relative to.")
    maps = image_maps_for(model, image_path)
    spatial = maps.topic(text, **choice, relative_to=others, parts=parts)
    picture = map_overlay(maps.picture, spatial.image, opacity, f"'{spatial.text}' ({spatial.heads})",
                          label="contribution to cosine score" + (" − the others' mean" if others else ""),
                          bound=spatial.bound)
    return picture, map_summary(spatial, model, encoded.warnings())


def build(shared: Shared) -> None:
    gr.Markdown("Where in the image do the chosen parts of the tower find the text? Each patch's contribution to "
                "the image-text score: by default every part (the heads at the patches they read, the MLPs and the "
                "patch's own embedding where they write: through an attention pooler these carry colour). A map alone also holds what the image gives *every* text, so it starts relative "
                "to a few neutral texts (their mean map is taken away, as in the TextSpan protocol; on the toy world "
                "this finds the named colour in 11 of the examples' 12 objects, the raw map in 8). List your own "
                "alternatives there, or clear the box for the raw map.")
    with gr.Row():
        text = gr.Textbox(label="Text", placeholder="something red", elem_id="topic-text")
        others = gr.Textbox(value="\n".join(NEUTRAL_TEXTS), label="Relative to (one text a line; empty: the raw map)",
                            lines=2, placeholder="something blue\nsomething green", elem_id="topic-relative")
    parts, heads, opacity, button, status, summary, picture = map_controls("topic")
    shared.link(TITLE, text=text, relative=others, parts=parts, heads=heads, opacity=opacity)
    inputs = [shared.model, shared.image, text, heads, opacity, others, parts]
    connect(button.click, run_topic, inputs, [picture, summary], status, api_name="topic_segmentation",
            pool=QUICK)
    connect(opacity.release, run_topic, inputs, [picture, summary], status, pool=QUICK)
