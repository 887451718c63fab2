"""The Mutual knowledge tab: why a zero-shot class, by the concepts CLIP's vision and text sides share."""
from __future__ import annotations

import gradio as gr

from ..errors import InterpretError
from ..limits import MAX_PARTS, MIN_PARTS, check_number
from ..mutual import load_descriptors, mutual_knowledge
from ..render import concept_venn, deletion_plot, parts_overlay
from ..toy.evaluate import toy_descriptors
from .common import Shared, connect, friendly_errors, model_for, picture_of, status_box

TITLE = "Mutual knowledge"
TOY_CLASSES = "toy world: 24 classes 'a {colour} {shape}'"
OWN_CLASSES = "my descriptor file (JSON)"


@friendly_errors
def run_mutual(label: str, image_path: str | None, preset: str = TOY_CLASSES, descriptor_file: str | None = None,
               template: str = "{}", parts: float = 3, method: str = "prompts"):
    """The zero-shot prediction, the image's parts and the concepts the vision and text sides share, and the
    deletion curve of the shared concepts' parts."""
    parts = check_number(parts, "Parts", MIN_PARTS, MAX_PARTS, integer=True)
    model = model_for(label)
    if preset == OWN_CLASSES:
        if not descriptor_file:
            raise InterpretError('Upload a JSON file of classes and their descriptions: {"class": ["description", '
                                 '...], ...}.')
        descriptors = load_descriptors(descriptor_file, template=template or "{}")
    else:
        descriptors = toy_descriptors()
    result = mutual_knowledge(model, picture_of(image_path), descriptors, parts=parts, method=method)
    labels = [", ".join(concepts) for concepts in result.part_concepts]
    overlay = parts_overlay(result.picture, result.parts.numpy(), result.box, labels,
                            title=f"{len(labels)} parts and the descriptors that match them (vision side)")
    venn = concept_venn([d for d in result.visual if d not in result.shared], result.shared,
                        [d for d in result.textual if d not in result.shared],
                        f"predicted: '{result.predicted}'")
    curve = deletion_plot(result.deletion, [f"part {k}" for k in result.deleted_parts],
                          f"deleting the shared concepts' parts\nAUC {result.auc:.3f}")
    summary = (f"Predicted **{result.predicted}** (probability {result.probability:.3f} among "
               f"{len(result.classes)} classes). Shared concepts: **{', '.join(result.shared) or 'none'}**; "
               f"mutual information {result.mutual_information:.3f} bits, score **{result.score:.3f}** (0..1); "
               f"deletion AUC **{result.auc:.3f}** (lower: the shared concepts carry the prediction).")
    return summary, overlay, venn, curve


def build(shared: Shared) -> None:
    gr.Markdown("Why this zero-shot class? The concepts that CLIP's **vision side** sees in the image's parts and "
                "its **text side** associates with the predicted class, and what is left of the prediction when "
                "the shared concepts' parts are removed (Sammani & Deligiannis).")
    with gr.Row():
        preset = gr.Radio([TOY_CLASSES, OWN_CLASSES], value=TOY_CLASSES, label="Classes", elem_id="mutual-preset")
        descriptor_file = gr.File(label='Descriptors: JSON {"class": ["description", ...]}', file_types=[".json"],
                                  type="filepath", elem_id="mutual-file")
    with gr.Row():
        template = gr.Textbox(value="{}", label="Class prompt ({} is the class)", elem_id="mutual-template")
        parts = gr.Slider(2, 8, value=3, step=1, label="Parts", elem_id="mutual-parts")
        method = gr.Radio(["prompts", "contributions"], value="prompts", label="Part embedding",
                          elem_id="mutual-method")
    button = gr.Button("Explain the prediction", variant="primary", elem_id="mutual-run")
    status = status_box("mutual")
    summary = gr.Markdown(elem_id="mutual-summary")
    parts_picture = gr.Image(label="Parts", type="pil", interactive=False, elem_id="mutual-parts-map",
                             show_label=False)
    with gr.Row():
        venn = gr.Image(label="Concepts", type="pil", interactive=False, elem_id="mutual-venn", show_label=False)
        curve = gr.Image(label="Deletion curve", type="pil", interactive=False, elem_id="mutual-curve",
                         show_label=False)
    connect(button.click, run_mutual, [shared.model, shared.image, preset, descriptor_file, template, parts, method],
            [summary, parts_picture, venn, curve], status, api_name="mutual_knowledge")
