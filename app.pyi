"""The web explorer: `python app.py` (a laptop) or a Hugging Face Space. A thin skin over `interpret`.

Every handler turns bad input into a readable message (never a stack trace) and the app keeps serving.
"""
from __future__ import annotations

import functools
import logging
import os

import gradio as gr

from interpret.decompose import explain_caption
from interpret.errors import InterpretError, ModelLoadError
from interpret.models import ClipModel, ModelSpec, catalogue, load_model, spec_from_label
from interpret.render import head_grid

log = logging.getLogger("interpret.app")

ONLINE_DEFAULT = ModelSpec("ViT-B-32", "openai")
OFFLINE_DEFAULTS = (ModelSpec("toy", None), ModelSpec("ViT-B-32", None))

from gradio.events import Dependency

class ImageInput(gr.Image):
    """An image upload that hands the uploaded file's path to the handler untouched: the handler reads and
    checks it (so a broken file gets our message, not a decoder's traceback)."""

    is_template = True  # rendered by the front end as a plain gr.Image

    def preprocess(self, payload):
        if payload is None or payload.path is None:
            return super().preprocess(payload) if payload is not None else None
        return str(payload.path)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def friendly_errors(handler):
    """Show a user's mistake as a message and an unexpected failure as a short note; never a traceback."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except InterpretError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # a bug: keep serving, log it for us, tell the user briefly
            log.exception("handler %s failed", handler.__name__)
            raise gr.Error(f"Something went wrong ({type(error).__name__}: {error}). The app is still running; "
                           "please try another input.", print_exception=False) from None

    return wrapper


def model_for(label: str) -> ClipModel:
    if not label:
        raise ModelLoadError("Pick a model first.")
    spec = spec_from_label(label)
    return load_model(spec.name, spec.pretrained)


def choose_default_model() -> tuple[str, str]:
    """(label of the model to start with, a note for the page). Tries the real CLIP; offline, the toy model."""
    wanted = os.environ.get("INTERPRET_DEFAULT_MODEL")
    labels = [spec.label for spec in catalogue()]
    if wanted in labels:
        return wanted, ""
    try:
        load_model(ONLINE_DEFAULT.name, ONLINE_DEFAULT.pretrained)
        return ONLINE_DEFAULT.label, ""
    except ModelLoadError as error:
        fallback = next(spec.label for spec in OFFLINE_DEFAULTS if spec.label in labels)
        return fallback, f"⚠️ {error} Starting with **{fallback}** instead."


@friendly_errors
def describe_model(label: str) -> str:
    model = model_for(label)
    g = model.geometry
    return (f"**{model.label}**: {g.layers} layers x {g.heads} heads, width {g.width}, joint space {g.embed_dim}, "
            f"{g.image_size[0]}x{g.image_size[1]} px input, {g.grid[0]}x{g.grid[1]} patches, "
            f"{g.context_length} text tokens.")


@friendly_errors
def run_heads(label: str, image_path: str | None, caption: str, top: float = 10):
    """Heads tab: the layer x head grid of contributions to the image-caption score and the top heads."""
    if image_path is None:
        raise InterpretError("Upload an image first.")
    model = model_for(label)
    report = explain_caption(model, image_path, caption or "")
    grid = head_grid(report.heads.numpy(), f"{model.label}: '{caption.strip()}'", mlps=report.mlps.numpy())
    rows = [[rank, layer, head, round(value, 5)]
            for rank, (layer, head, value) in enumerate(report.top_heads(int(top)), start=1)]
    summary = (f"Cosine score **{report.cosine:+.4f}** = heads {float(report.heads.sum()):+.4f} "
               f"+ MLPs {float(report.mlps.sum()):+.4f} + rest {report.rest:+.4f}")
    for warning in report.warnings:
        gr.Warning(warning)
        summary += f"\n\n⚠️ {warning}"
    return grid, rows, summary


def build_app(default_label: str | None = None, note: str = "") -> gr.Blocks:
    if default_label is None:
        default_label, note = choose_default_model()
    labels = [spec.label for spec in catalogue()]
    with gr.Blocks(title="CLIP interpret") as app:
        gr.Markdown("# CLIP interpret\nUpload an image, type a caption, and see which layers and attention heads "
                    "of CLIP carry their match.")
        gr.Markdown(note, elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                model_picker = gr.Dropdown(labels, value=default_label, label="Model", elem_id="model")
                model_info = gr.Markdown(describe_model(default_label), elem_id="model-info")
                image = ImageInput(type="filepath", label="Image", elem_id="image")
                caption = gr.Textbox(label="Caption", placeholder="a photo of a dog", elem_id="caption")
            with gr.Column(scale=2):
                with gr.Tab("Heads"):
                    top = gr.Slider(1, 50, value=10, step=1, label="Top heads to list")
                    heads_button = gr.Button("Explain the score", variant="primary", elem_id="heads-run")
                    heads_summary = gr.Markdown(elem_id="heads-summary")
                    heads_grid = gr.Image(label="Contribution of each layer and head", type="pil",
                                          elem_id="heads-grid", interactive=False)
                    heads_table = gr.Dataframe(headers=["rank", "layer", "head", "contribution"],
                                               label="Top heads", elem_id="heads-table", interactive=False)
        model_picker.change(describe_model, model_picker, model_info, api_name="model_info")
        heads_button.click(run_heads, [model_picker, image, caption, top], [heads_grid, heads_table, heads_summary],
                           api_name="heads")
        caption.submit(run_heads, [model_picker, image, caption, top], [heads_grid, heads_table, heads_summary],
                       api_name=False)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build_app().queue(default_concurrency_limit=2).launch()