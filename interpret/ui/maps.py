"""What the two segmentation tabs share: one spatial decomposition per image, and their controls."""
from __future__ import annotations

import gradio as gr

from ..limits import check_number
from ..models import ClipModel
from ..parts import DEFAULT_PARTS, MAP_PARTS, PARTS_NAMES
from ..segment import ImageMaps
from .common import RecentResults, escaped, file_key, picture_of, status_box, with_warnings

_image_maps = RecentResults()
HEADS_LABEL = "Heads: all, a layer (3), a head (3.2) or heads (3.2, 2.5)"
PARTS_CHOICES = [(PARTS_NAMES[key][0].upper() + PARTS_NAMES[key][1:], key) for key in MAP_PARTS]  # "MLPs", not "Mlps"


def image_maps_for(model: ClipModel, image_path: str | None) -> ImageMaps:
    """The image's spatial decomposition, kept for the last few images."""
    key = (model.slug, *file_key(image_path))
    return _image_maps.get(key, lambda: ImageMaps(model, picture_of(image_path)))


def checked_opacity(opacity: float) -> float:
    return check_number(opacity, "The opacity", 0, 1)


def map_summary(spatial, model: ClipModel, warnings: list[str]) -> str:
    return with_warnings(f"**{escaped(spatial.text)}**, {spatial.heads} of {model.label}: {spatial.summary()}. "
                         "Red adds to the score, blue takes away.", warnings)


def map_controls(prefix: str):
    """A segmentation tab's what-to-map choice, heads box, opacity slider, run button, error status, summary and
    map (`<prefix>-parts`, `-heads`, `-opacity`, `-run`, `-error`, `-summary`, `-map`)."""
    with gr.Row():
        parts = gr.Dropdown(PARTS_CHOICES, value=DEFAULT_PARTS, label="What to map", elem_id=f"{prefix}-parts",
                            info="all parts: heads where they read, MLPs and the embedding where they write")
        heads = gr.Textbox(value="all", label=HEADS_LABEL, elem_id=f"{prefix}-heads")
        opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Map opacity", elem_id=f"{prefix}-opacity")
    button = gr.Button("Map it", variant="primary", elem_id=f"{prefix}-run")
    status = status_box(prefix)
    summary = gr.Markdown(elem_id=f"{prefix}-summary")
    picture = gr.Image(label="Map (PNG)", type="pil", format="png", elem_id=f"{prefix}-map", interactive=False,
                       show_label=False, buttons=["download", "fullscreen"])
    return parts, heads, opacity, button, status, summary, picture
