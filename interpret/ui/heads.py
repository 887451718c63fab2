"""The Heads tab: which layers and heads carry the image-caption score."""
from __future__ import annotations

import gradio as gr
import torch.nn.functional as F

from ..decompose import explain_caption
from ..limits import MAX_TOP_HEADS, check_number
from ..quantify import ablated_embeddings, direct_embeddings, parse_head_list
from ..render import head_grid
from .common import (LOOKUP, QUICK, Shared, connect, escaped, friendly_errors, model_for, picture_of, status_box,
                     with_warnings)

TITLE = "Heads"


@friendly_errors
def run_heads(label: str, image_path: str | None, caption: str, top: float = 10, remove: str = ""):
    """The layer x head grid of contributions to the image-caption score, the heads that move it most (either
    way) and a summary; with `remove` ('11.4, 10.*'), also the score without those heads."""
    top = check_number(top, "The number of top heads", 1, MAX_TOP_HEADS, integer=True)
    model = model_for(label)
    model.tokenize(caption or "")  # an unusable caption gets its message before any image work
    removed = parse_head_list(remove or "", model.geometry.layers, model.geometry.heads)
    picture = picture_of(image_path)
    report = explain_caption(model, picture, caption)
    title = f"{model.label}: '{report.caption.strip()}'" + (" (crossed out: the heads removed)" if removed
                                                           else "")
    grid = head_grid(report.heads.numpy(), title, mlps=report.mlps.numpy(), marked=removed)
    rows = [[rank, layer, head, round(value, 5), "raises" if value > 0 else "lowers"]
            for rank, (layer, head, value) in enumerate(report.top_heads(top), start=1)]
    summary = (f"Cosine score **{report.cosine:+.4f}** = heads {float(report.heads.sum()):+.4f} "
               f"+ MLPs {float(report.mlps.sum()):+.4f} + rest {report.rest:+.4f}. The table lists the heads that "
               "move the score most, either way: red in the grid raises it, blue lowers it.")
    if removed:
        summary += "\n\n" + _without(model, picture, caption, removed, report.cosine, remove)
    return grid, rows, with_warnings(summary, report.warnings)


def _without(model, picture, caption: str, removed: list, cosine: float, spec: str) -> str:
    """The score without the heads: by their direct effect, and with their outputs zeroed in the forward pass."""
    text = model.encode_texts(caption)[0]
    direct = float(F.normalize(direct_embeddings(model, picture, removed).float(), dim=-1)[0] @ text)
    total = float(F.normalize(ablated_embeddings(model, picture, removed).float(), dim=-1)[0] @ text)
    return (f"**Without heads {escaped(spec.strip())}** ({len(removed)} heads): score **{direct:+.4f}** "
            f"({direct - cosine:+.4f}) "
            f"by their direct effect only; **{total:+.4f}** ({total - cosine:+.4f}) with their outputs zeroed in the "
            "forward pass, so that later layers see the change too.")


def remove_label(label: str):
    """The Remove heads box's label, with an example that fits the model in use ('3.4, 2.*' on the toy model)."""
    try:
        geometry = model_for(label).geometry
    except Exception:  # noqa: BLE001  (a model that cannot be loaded: its message shows elsewhere)
        return gr.update()
    return gr.update(label=f"Remove heads (optional: {geometry.layers - 1}.{geometry.heads // 2}, "
                           f"{geometry.layers - 2}.*)")


def build(shared: Shared) -> None:
    with gr.Row():
        top = gr.Slider(1, MAX_TOP_HEADS, value=10, step=1, label="Top heads to list")
        remove = gr.Textbox(value="", label="Remove heads (optional: a head 3.4, a layer 2.*)",
                            elem_id="heads-remove")
    button = gr.Button("Explain the score", variant="primary", elem_id="heads-run")
    status = status_box("heads")
    summary = gr.Markdown(elem_id="heads-summary")
    grid = gr.Image(label="Contribution of each layer and head", type="pil", format="png", elem_id="heads-grid",
                    interactive=False, show_label=False)
    table = gr.Dataframe(headers=["rank", "layer", "head", "contribution", "the score"],
                         label="Top heads (by size, either sign)", elem_id="heads-table", interactive=False)
    inputs, outputs = [shared.model, shared.image, shared.caption, top, remove], [grid, table, summary]
    shared.link(TITLE, top=top, remove=remove)
    connect(button.click, run_heads, inputs, outputs, status, api_name="heads", pool=QUICK)
    for trigger in (shared.model.change, shared.page.load):
        trigger(remove_label, shared.model, remove, api_visibility="private", **LOOKUP)
    connect(shared.caption.submit, run_heads, inputs, outputs, status)
